"""Step time and peak memory of an EMU training step against the plain uniform softmax-CE step.

EMU runs twice: with the reference's redrawn negatives for the EMU term (``sampler.resample=true``, two
candidate tensors per step) and with the vanilla negatives reused (``resample=false``, one).

    python bench/emu_step.py                    # d = 200, N = 256, B = 1024, all four models
    python bench/emu_step.py --dim 100 --repeats 5 --models rotate

Each configuration runs in a fresh subprocess (so peak RSS is its own), warms up, then times
``--steps`` optimiser steps ``--repeats`` times; the median is reported, plain and EMU alternated.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch

from kgexp.training.emu import EMU

VARIANTS = {
    "plain": lambda: None,
    "emu": lambda: EMU(resample=True),
    "emu_reuse": lambda: EMU(resample=False),
}


def one_configuration(
    model_name: str, variant: str, dim: int, negatives: int, batch: int, steps: int
) -> dict:
    from kgexp.models import MODELS
    from kgexp.training.losses import SoftmaxCrossEntropy
    from kgexp.training.module import LinkPredictionModule
    from kgexp.training.negatives import NegativeSampling, UniformSampler

    torch.manual_seed(0)
    num_entities, num_relations = 14541, 237  # FB15k-237's sizes
    model = MODELS[model_name](num_entities, num_relations, dim=dim)
    sampling = NegativeSampling(UniformSampler(negatives))
    module = LinkPredictionModule(
        model, sampling, SoftmaxCrossEntropy(), None, {"name": "adam", "lr": 1e-3}, emu=VARIANTS[variant]()
    )
    module.generator = torch.Generator().manual_seed(0)
    module.train_index = None
    optimizer = torch.optim.Adam(module.parameters(), lr=1e-3)
    triples = torch.stack(
        [
            torch.randint(num_entities, (batch,)),
            torch.randint(num_relations, (batch,)),
            torch.randint(num_entities, (batch,)),
        ],
        dim=1,
    )
    weights = torch.ones(batch)

    def step(i: int) -> None:
        optimizer.zero_grad(set_to_none=True)
        loss = torch.zeros(())
        for corruption in sampling.corrupt(triples, i, num_entities, None, module.generator):
            loss = loss + module._corruption_loss(triples[corruption.rows], weights, corruption)
        loss.backward()
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
    print(
        f"d={args.dim} N={args.negatives} B={args.batch} steps={args.steps} repeats={args.repeats} "
        f"threads={torch.get_num_threads()}"
    )
    print(
        "| model | plain step (s) | EMU step (s) | EMU / plain | EMU, reused negatives (s) | reused / plain "
        "| peak RSS plain / EMU / reused (MiB) |"
    )
    print("|---|---|---|---|---|---|---|")
    common = [
        "--dim",
        str(args.dim),
        "--negatives",
        str(args.negatives),
        "--batch",
        str(args.batch),
        "--steps",
        str(args.steps),
    ]
    for model in args.models:
        runs = {variant: [] for variant in VARIANTS}
        for _ in range(args.repeats):
            for variant in VARIANTS:  # alternated
                out = subprocess.run(
                    [sys.executable, __file__, *common, "--one", model, variant],
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout
                runs[variant].append(json.loads(out))
        step = {k: statistics.median(r["step_s"] for r in v) for k, v in runs.items()}
        peak = "/".join(f"{max(r['peak_rss_mib'] for r in v):.0f}" for v in runs.values())
        print(
            f"| {model} | {step['plain']:.3f} | {step['emu']:.3f} | {step['emu'] / step['plain']:.2f} "
            f"| {step['emu_reuse']:.3f} | {step['emu_reuse'] / step['plain']:.2f} | {peak} |"
        )


if __name__ == "__main__":
    main()
