"""1vsAll and KvsAll training steps on a graph of YAGO3-10's shape: steps/s and peak memory.

    python bench/all_entities.py                                   # the four models, d = 500
    python bench/all_entities.py --models complex --regimes 1vsAll KvsAll --batch 1000
    python bench/all_entities.py --random 2034 32888 42 --models transe --batch 500   # CoDEx-S' shape

The graph has ``--random E T R`` entities, training triples and relations (default YAGO3-10's: 123,182,
1,079,040, 37; only its valid and test splits are mirrored here, and a step's cost depends on the shape,
not on which entities are linked), heads and tails uniformly random. Each configuration runs in a fresh
subprocess (so its peak RSS is its own): a reciprocal model with the N3 regulariser and Adagrad, the
regime's own step (:mod:`kgexp.training.regimes`), ``backward`` and the optimiser step, as the
LightningModule runs them; ``--warmup`` steps, then ``--steps`` timed. Peak RSS covers everything: the
graph, its filter index, the tables, their gradients and Adagrad's state, and the ``(Q, E)`` scores.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch

from kgexp.data.filter_index import FilterIndex
from kgexp.models import MODELS
from kgexp.training.losses import SoftmaxCrossEntropy
from kgexp.training.regimes import ALL_ENTITY_REGIMES
from kgexp.training.regularizers import NormRegularizer

YAGO3_10 = (123_182, 1_079_040, 37)


def random_triples(num_entities: int, num_triples: int, num_relations: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    heads = torch.randint(num_entities, (num_triples,), generator=generator)
    tails = torch.randint(num_entities, (num_triples,), generator=generator)
    relations = torch.randint(num_relations, (num_triples,), generator=generator)
    return torch.stack([heads, relations, tails], 1)


def run_once(args: argparse.Namespace, model_name: str, regime_name: str) -> dict:
    num_entities, num_triples, num_relations = args.random
    train = random_triples(num_entities, num_triples, num_relations)
    index = FilterIndex(train, num_entities, num_relations)
    examples = index.distinct_queries() if regime_name == "KvsAll" else train
    model = MODELS[model_name](num_entities, num_relations, args.dim, reciprocal=True)
    regime, loss = ALL_ENTITY_REGIMES[regime_name](), SoftmaxCrossEntropy()
    regularizer = NormRegularizer(1e-2, 3, complex_modulus=True)
    optimizer = torch.optim.Adagrad(model.parameters(), lr=0.1)
    generator = torch.Generator().manual_seed(0)
    order = torch.randperm(len(examples), generator=generator)
    times = []
    for step in range(args.warmup + args.steps):
        batch = examples[order[step * args.batch : (step + 1) * args.batch]]
        started = time.perf_counter()
        result = regime.step(model, loss, batch, index, generator)
        total = result.loss + regularizer(model, result.regularized)
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
        times.append(time.perf_counter() - started)
    timed = times[args.warmup :]
    return {
        "steps_per_s": len(timed) / sum(timed),
        "queries": 2 * args.batch if regime_name == "1vsAll" else args.batch,
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--random", type=int, nargs=3, default=YAGO3_10, metavar=("E", "T", "R"))
    parser.add_argument("--models", nargs="+", default=["distmult", "complex", "transe", "rotate"])
    parser.add_argument("--regimes", nargs="+", default=["1vsAll", "KvsAll"])
    parser.add_argument("--dim", type=int, default=500)
    parser.add_argument("--batch", type=int, default=500, help="triples (1vsAll) or queries (KvsAll)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--one", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_once(args, *args.one)))
        return
    shape = "{:,} entities, {:,} triples, {} relations".format(*args.random)
    print(f"{shape}; d = {args.dim}, batch {args.batch}, {torch.get_num_threads()} threads", flush=True)
    forwarded = ["--random", *map(str, args.random), "--dim", str(args.dim), "--batch", str(args.batch)]
    forwarded += ["--warmup", str(args.warmup), "--steps", str(args.steps)]
    for model in args.models:
        for regime in args.regimes:
            command = [sys.executable, __file__, *forwarded, "--one", model, regime]
            output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
            result = json.loads(output.strip().splitlines()[-1])
            print(
                f"{model:9s} {regime:7s} {result['queries']:>6,} queries/step  "
                f"{result['steps_per_s']:8.3f} steps/s  peak RSS {result['peak_rss_gib']:5.1f} GiB",
                flush=True,
            )


if __name__ == "__main__":
    main()
