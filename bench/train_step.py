"""Step time and peak memory of training-step variants (EMU, MI-KGE) against the plain uniform-CE step.

    python bench/train_step.py --variants emu emu_reuse       # issue 3: EMU, d = 200, N = 256, B = 1024
    python bench/train_step.py --variants mi_infonce mi_jsd mi_mine
    python bench/train_step.py --dim 100 --repeats 5 --models rotate --variants emu

``emu`` is the reference EMU (the EMU term redraws its uniform negatives: two candidate tensors per
step), ``emu_reuse`` reuses the vanilla negatives (one); ``mi_*`` adds the MI-KGE regulariser with that
estimator and its default heads. Each configuration runs in a fresh subprocess (so peak RSS is its own),
warms up, then times ``--steps`` optimiser steps ``--repeats`` times; the median is reported, and the
variants alternate with the plain step.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import torch

from kgexp.data.filter_index import FilterIndex
from kgexp.mi import MutualInformation
from kgexp.models import MODELS, KGEModel
from kgexp.training.emu import EMU
from kgexp.training.losses import SoftmaxCrossEntropy
from kgexp.training.module import LinkPredictionModule
from kgexp.training.negatives import NegativeSampling, UniformSampler

NUM_ENTITIES, NUM_RELATIONS = 14541, 237  # FB15k-237's sizes


def _mi(name: str) -> Callable[[KGEModel], dict]:
    return lambda model: {
        "mi": MutualInformation(model.entity.embedding_dim, model.relation.embedding_dim, name=name)
    }


VARIANTS: dict[str, Callable[[KGEModel], dict]] = {
    "plain": lambda model: {},
    "emu": lambda model: {"emu": EMU(resample=True)},
    "emu_reuse": lambda model: {"emu": EMU(resample=False)},
    "mi_infonce": _mi("infonce"),
    "mi_jsd": _mi("jsd"),
    "mi_mine": _mi("mine"),
}


class BenchModule(LinkPredictionModule):
    """The real training step, outside a Trainer: the step counter (which picks the side) is ours."""

    step_index = 0

    @property
    def global_step(self) -> int:
        return self.step_index

    def log(self, *args, **kwargs) -> None:
        pass


def one_configuration(
    model_name: str, variant: str, dim: int, negatives: int, batch: int, steps: int
) -> dict:
    torch.manual_seed(0)
    model = MODELS[model_name](NUM_ENTITIES, NUM_RELATIONS, dim=dim)
    sampling = NegativeSampling(UniformSampler(negatives))
    module = BenchModule(
        model, sampling, SoftmaxCrossEntropy(), None, {"name": "adam", "lr": 1e-3}, **VARIANTS[variant](model)
    )
    module.generator = torch.Generator().manual_seed(0)
    triples = torch.stack(
        [
            torch.randint(NUM_ENTITIES, (batch,)),
            torch.randint(NUM_RELATIONS, (batch,)),
            torch.randint(NUM_ENTITIES, (batch,)),
        ],
        dim=1,
    )
    # A training index the size of FB15k-237's (272k triples), for the MI false-negative masks.
    train = torch.stack(
        [
            torch.randint(NUM_ENTITIES, (272_115,)),
            torch.randint(NUM_RELATIONS, (272_115,)),
            torch.randint(NUM_ENTITIES, (272_115,)),
        ],
        dim=1,
    )
    module.train_index = FilterIndex(train, NUM_ENTITIES, NUM_RELATIONS)
    optimizer = torch.optim.Adam(module.parameters(), lr=1e-3)
    weights = torch.ones(batch)

    def step(i: int) -> None:
        optimizer.zero_grad(set_to_none=True)
        module.step_index = i
        module.training_step((triples, weights), i).backward()
        optimizer.step()

    step(0)
    start = time.perf_counter()
    for i in range(steps):
        step(i + 1)
    seconds = (time.perf_counter() - start) / steps
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"step_s": seconds, "peak_rss_mib": peak_mib}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=["transe", "distmult", "complex", "rotate"])
    parser.add_argument("--variants", nargs="+", default=["emu", "emu_reuse"], choices=list(VARIANTS)[1:])
    parser.add_argument("--dim", type=int, default=200)
    parser.add_argument("--negatives", type=int, default=256)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--one", nargs=2, metavar=("MODEL", "VARIANT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        model, variant = args.one
        print(json.dumps(one_configuration(model, variant, args.dim, args.negatives, args.batch, args.steps)))
        return
    variants = ["plain", *args.variants]
    print(
        f"d={args.dim} N={args.negatives} B={args.batch} steps={args.steps} repeats={args.repeats} "
        f"threads={torch.get_num_threads()}"
    )
    print(
        "| model | plain step (s) | "
        + " | ".join(f"{v} step (s) | {v} / plain" for v in args.variants)
        + f" | peak RSS {' / '.join(variants)} (MiB) |"
    )
    print("|---" * (2 + 2 * len(args.variants) + 1) + "|")
    common = [f"--{k}={getattr(args, k)}" for k in ("dim", "negatives", "batch", "steps")]
    for model in args.models:
        runs: dict[str, list[dict]] = {variant: [] for variant in variants}
        for _ in range(args.repeats):
            for variant in variants:  # alternated
                out = subprocess.run(
                    [sys.executable, __file__, *common, "--one", model, variant],
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout
                runs[variant].append(json.loads(out))
        step = {k: statistics.median(r["step_s"] for r in v) for k, v in runs.items()}
        cells = [f"{step['plain']:.3f}"]
        for variant in args.variants:
            cells += [f"{step[variant]:.3f}", f"{step[variant] / step['plain']:.2f}"]
        peak = " / ".join(f"{max(r['peak_rss_mib'] for r in v):.0f}" for v in runs.values())
        print(f"| {model} | {' | '.join(cells)} | {peak} |")


if __name__ == "__main__":
    main()
