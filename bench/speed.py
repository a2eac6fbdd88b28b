"""kgexp and PyKEEN side by side on the same machine: training throughput and filtered evaluation.

    python bench/speed.py train --dataset wn18rr                 # the four models, uniform, d=200
    python bench/speed.py train --dataset wn18rr --frameworks kgexp --samplers emu sans nscaching
    python bench/speed.py train --dataset wn18rr --frameworks kgexp --mi infonce
    python bench/speed.py eval --dataset wn18rr --models distmult complex
    python bench/speed.py eval --dataset fb15k237 --models rotate --pykeen-queries 400
    python bench/speed.py scaling --out docs/benchmarks     # step time vs d, K, B; eval vs entities
    python bench/speed.py startup --dataset fb15k237         # command to first step, cold and warm

Every measurement runs in a fresh subprocess (so peak RSS is its own); kgexp and PyKEEN runs alternate,
each configuration ``--repeats`` times, and the medians and their ratio are reported.

Training: the same dataset, model, embedding dimension d, batch B, K uniform negatives per positive,
Adam at lr 1e-3 and a softmax cross-entropy over [positive, negatives] on both sides (kgexp:
``loss=softmax_ce``; PyKEEN: ``SLCWATrainingLoop`` with the basic negative sampler and
``CrossEntropyLoss``). kgexp runs its real Lightning training loop; steps/s is timed between the starts
of step ``warmup`` and step ``warmup + steps``. PyKEEN trains on the first (warmup + steps) x B training
triples, one epoch, so that it takes that many steps, timed between its ``pre_step`` callbacks.

Evaluation: filtered ranks of every test triple on both sides (train, valid and test are the filter), a
randomly initialised model of dimension d (the cost does not depend on the weights). kgexp runs
``rank_queries`` as its test loop does; PyKEEN runs ``RankBasedEvaluator(filtered=True)`` with batches
of ``--eval-batch`` queries. Where PyKEEN would take too long, ``--pykeen-queries N`` evaluates the first N
test triples and scales the time to the whole split (marked "extrapolated").

Needs the ``bench`` extra for PyKEEN (``pip install -e ".[bench]"``) and a dataset mirror or cache
(``KGEXP_DATA_DIR``/``KGEXP_CACHE_DIR``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

MODELS = ("transe", "distmult", "complex", "rotate")
PYKEEN_MODELS = {"transe": "TransE", "distmult": "DistMult", "complex": "ComplEx", "rotate": "RotatE"}
CONF = Path(__file__).resolve().parents[1] / "conf"


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def load_graph(dataset: str):
    from kgexp.data.graph import load_graph as load

    return load(dataset, None, False, None)


# -- one measurement (in its own process) --------------------------------------------------------------
def kgexp_train(args: argparse.Namespace) -> dict[str, Any]:
    import pytorch_lightning as pl
    from hydra import compose, initialize_config_dir

    from kgexp.build import build_datamodule, build_module
    from kgexp.config import register_schemas

    overrides = [
        f"dataset={args.dataset}",
        f"model={args.model}",
        f"model.dim={args.dim}",
        f"sampler={args.sampler}",
        f"data.batch_size={args.batch}",
        "loss=softmax_ce",
        "optimizer=adam",
        "optimizer.lr=1e-3",
        "schedule=none",
        f"mi={args.mi}",
        f"seed={args.seed}",
        f"sampler.num_negatives={args.negatives}",
        *([f"sampler.shared={args.shared}"] if args.shared else []),
        "output_dir=.",  # nothing is written: no logger, no checkpoints
    ]
    register_schemas()
    with initialize_config_dir(str(CONF), version_base=None):
        cfg = compose("config", overrides=overrides)
    datamodule = build_datamodule(cfg)
    datamodule.prepare_data()
    datamodule.setup("fit")
    graph = datamodule.graph
    module = build_module(cfg, graph.num_entities, graph.num_relations)
    stamps: list[float] = []

    class Stamp(pl.Callback):
        def on_train_batch_start(self, *_: Any) -> None:
            stamps.append(time.perf_counter())

    total = args.warmup + args.steps
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=total + 1,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=False,
        callbacks=[Stamp()],
    )
    trainer.fit(module, datamodule=datamodule)
    seconds = (stamps[total] - stamps[args.warmup]) / args.steps
    return {"step_s": seconds, "peak_rss_mib": peak_rss_mib()}


def pykeen_factories(dataset: str):
    from pykeen.triples import TriplesFactory

    graph = load_graph(dataset)
    entity_to_id = {label: i for i, label in enumerate(graph.entities)}
    relation_to_id = {label: i for i, label in enumerate(graph.relations)}

    def factory(triples: torch.Tensor) -> TriplesFactory:
        return TriplesFactory(triples.long(), entity_to_id=entity_to_id, relation_to_id=relation_to_id)

    return graph, factory


def pykeen_model(name: str, factory, dim: int, seed: int):
    import pykeen.models

    return getattr(pykeen.models, PYKEEN_MODELS[name])(
        triples_factory=factory, embedding_dim=dim, random_seed=seed, loss="crossentropy"
    )


def pykeen_train(args: argparse.Namespace) -> dict[str, Any]:
    from pykeen.training import SLCWATrainingLoop
    from pykeen.training.callbacks import TrainingCallback

    graph, factory = pykeen_factories(args.dataset)
    total = args.warmup + args.steps
    rows = torch.randperm(len(graph.train), generator=torch.Generator().manual_seed(args.seed))
    training = factory(graph.train[rows[: (total + 1) * args.batch]])
    model = pykeen_model(args.model, training, args.dim, args.seed)
    stamps: list[float] = []

    class Stamp(TrainingCallback):
        def pre_step(self, **kwargs: Any) -> None:
            stamps.append(time.perf_counter())

    loop = SLCWATrainingLoop(
        model=model,
        triples_factory=training,
        optimizer="adam",
        optimizer_kwargs={"lr": 1e-3},
        negative_sampler="basic",
        negative_sampler_kwargs={"num_negs_per_pos": args.negatives},
    )
    loop.train(
        triples_factory=training,
        num_epochs=1,
        batch_size=args.batch,
        use_tqdm=False,
        use_tqdm_batch=False,
        callbacks=Stamp(),
    )
    seconds = (stamps[total] - stamps[args.warmup]) / args.steps
    return {"step_s": seconds, "peak_rss_mib": peak_rss_mib()}


def kgexp_eval(args: argparse.Namespace) -> dict[str, Any]:
    from kgexp.data.filter_index import FilterIndex
    from kgexp.evaluation.ranking import rank_queries
    from kgexp.models import MODELS as KGEXP_MODELS
    from kgexp.sides import BOTH_SIDES

    graph = load_graph(args.dataset)
    torch.manual_seed(args.seed)
    model = KGEXP_MODELS[args.model](graph.num_entities, graph.num_relations, dim=args.dim).eval()
    test = graph.test[: args.queries] if args.queries else graph.test
    start = time.perf_counter()
    index = FilterIndex(
        torch.cat([graph.train, graph.valid, graph.test]), graph.num_entities, graph.num_relations
    )
    for side in BOTH_SIDES:
        for batch in test.split(args.eval_batch):
            rank_queries(model, batch, side, index)
    seconds = time.perf_counter() - start
    return {"eval_s": seconds, "queries": 2 * len(test), "peak_rss_mib": peak_rss_mib()}


def pykeen_eval(args: argparse.Namespace) -> dict[str, Any]:
    from pykeen.evaluation import RankBasedEvaluator

    graph, factory = pykeen_factories(args.dataset)
    model = pykeen_model(args.model, factory(graph.train), args.dim, args.seed)
    test = graph.test[: args.queries] if args.queries else graph.test
    evaluator = RankBasedEvaluator(filtered=True)
    start = time.perf_counter()
    evaluator.evaluate(
        model,
        mapped_triples=test.long(),
        additional_filter_triples=[graph.train.long(), graph.valid.long(), graph.test.long()],
        batch_size=args.eval_batch,
        use_tqdm=False,
    )
    seconds = time.perf_counter() - start
    return {"eval_s": seconds, "queries": 2 * len(test), "peak_rss_mib": peak_rss_mib()}


ONE = {
    ("kgexp", "train"): kgexp_train,
    ("pykeen", "train"): pykeen_train,
    ("kgexp", "eval"): kgexp_eval,
    ("pykeen", "eval"): pykeen_eval,
}


# -- the driver --------------------------------------------------------------------------------------
def measure(framework: str, task: str, options: dict[str, Any]) -> dict[str, Any]:
    """Run one measurement in a fresh interpreter and return its JSON result."""
    command = [sys.executable, __file__, "one", framework, task]
    for key, value in options.items():
        command += [f"--{key.replace('_', '-')}", str(value)]
    out = subprocess.run(command, capture_output=True, text=True, env=os.environ)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def median_of(runs: list[dict[str, Any]], key: str) -> float:
    return statistics.median(run[key] for run in runs)


def compare(task: str, frameworks: list[str], configs: list[dict[str, Any]], repeats: int) -> list[dict]:
    """Measure each configuration under each framework, alternating, and return the medians."""
    rows = []
    for options in configs:
        runs: dict[str, list[dict]] = {framework: [] for framework in frameworks}
        for _ in range(repeats):
            for framework in frameworks:
                if framework == "pykeen" and options.get("sampler", "uniform") != "uniform":
                    continue
                if framework == "pykeen" and (options.get("mi", "none") != "none" or options.get("shared")):
                    continue
                runs[framework].append(measure(framework, task, options))
        row = {**options}
        for framework, results in runs.items():
            if not results:
                continue
            key = "step_s" if task == "train" else "eval_s"
            row[f"{framework}_{key}"] = median_of(results, key)
            row[f"{framework}_peak_rss_mib"] = median_of(results, "peak_rss_mib")
            if task == "eval":
                row[f"{framework}_queries"] = results[0]["queries"]
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def matmul_peak_gflops(size: int = 2048, repeats: int = 5) -> float:
    """Best float32 matmul throughput of this process's threads, in GFLOP/s."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * size**3 / best / 1e9


def _timed(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def train_table(rows: list[dict]) -> str:
    lines = [
        "| model | sampler | MI | shared | kgexp step (s) | kgexp steps/s | kgexp positives/s "
        "| PyKEEN steps/s | speed-up | peak RSS kgexp / PyKEEN (MiB) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        ours = row["kgexp_step_s"]
        theirs = row.get("pykeen_step_s")
        their_rss = f"{row['pykeen_peak_rss_mib']:.0f}" if theirs else "-"
        lines.append(
            f"| {row['model']} | {row['sampler']} | {row['mi']} | {row['shared'] or '-'} | {ours:.3f} | "
            f"{1 / ours:.2f} | "
            f"{row['batch'] / ours:,.0f} | {f'{1 / theirs:.3f}' if theirs else '-'} | "
            f"{f'{theirs / ours:.1f}x' if theirs else '-'} | {row['kgexp_peak_rss_mib']:.0f} / "
            f"{their_rss} |"
        )
    return "\n".join(lines)


def eval_table(rows: list[dict], gflops: float, sizes: dict[str, tuple[int, int]]) -> str:
    lines = [
        "| dataset | model | queries | kgexp (s) | kgexp queries/s | PyKEEN (s) | speed-up "
        "| matmul FLOP time (s) | kgexp / FLOP time |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        entities, queries = sizes[row["dataset"]]
        ours = row["kgexp_eval_s"]
        theirs = row.get("pykeen_eval_s")
        note = ""
        if theirs is not None and row.get("pykeen_queries", queries) < queries:
            theirs *= queries / row["pykeen_queries"]
            note = " (extrapolated)"
        width = row["dim"] * (2 if row["model"] in ("complex", "rotate") else 1)
        flop_time = 2 * queries * entities * width / (gflops * 1e9)
        bilinear = row["model"] in ("distmult", "complex")
        lines.append(
            f"| {row['dataset']} | {row['model']} | {queries} | {ours:.2f} | {queries / ours:,.0f} | "
            f"{f'{theirs:.1f}{note}' if theirs else '-'} | {f'{theirs / ours:.0f}x' if theirs else '-'} | "
            f"{f'{flop_time:.2f}' if bilinear else '-'} | {f'{ours / flop_time:.1f}' if bilinear else '-'} |"
        )
    return "\n".join(lines)


def run_train(args: argparse.Namespace) -> None:
    configs = [
        {
            "dataset": args.dataset,
            "model": model,
            "sampler": sampler,
            "mi": args.mi,
            "shared": args.shared,
            "dim": args.dim,
            "negatives": args.negatives,
            "batch": args.batch,
            "steps": args.steps,
            "warmup": args.warmup,
        }
        for model in args.models
        for sampler in args.samplers
    ]
    print(f"threads={torch.get_num_threads()} repeats={args.repeats}")
    print(train_table(compare("train", args.frameworks, configs, args.repeats)))


def run_eval(args: argparse.Namespace) -> None:
    gflops = matmul_peak_gflops()
    print(f"threads={torch.get_num_threads()} repeats={args.repeats} matmul peak={gflops:.0f} GFLOP/s")
    configs, sizes = [], {}
    graph = load_graph(args.dataset)
    sizes[args.dataset] = (graph.num_entities, 2 * len(graph.test))
    for model in args.models:
        configs.append(
            {"dataset": args.dataset, "model": model, "dim": args.dim, "eval_batch": args.eval_batch}
        )
    rows = []
    for options in configs:  # PyKEEN may evaluate fewer queries; kgexp always the whole split
        ours = (
            [measure("kgexp", "eval", options) for _ in range(args.repeats)]
            if "kgexp" in args.frameworks
            else []
        )
        theirs = []
        if "pykeen" in args.frameworks:
            theirs = [
                measure("pykeen", "eval", {**options, "queries": args.pykeen_queries})
                for _ in range(args.pykeen_repeats)
            ]
        row = {**options, "kgexp_eval_s": median_of(ours, "eval_s")}
        if theirs:
            row.update(pykeen_eval_s=median_of(theirs, "eval_s"), pykeen_queries=theirs[0]["queries"])
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(eval_table(rows, gflops, sizes))


def run_scaling(args: argparse.Namespace) -> None:
    """kgexp step time against d, K and B (one varied at a time) and evaluation time against |E|."""
    if args.replot:
        plot_scaling(json.loads((Path(args.out) / "scaling.json").read_text()), args.dataset, Path(args.out))
        return
    base = {
        "dataset": args.dataset,
        "sampler": "uniform",
        "mi": "none",
        "shared": 0,
        "dim": 200,
        "negatives": 256,
        "batch": 1024,
        "steps": args.steps,
        "warmup": args.warmup,
    }
    grids = {
        "dim": [50, 100, 200, 400, 800],
        "negatives": [64, 128, 256, 512, 1024],
        "batch": [256, 512, 1024, 2048, 4096],
    }
    results: dict[str, Any] = {"train": {}, "eval": {}}
    for model in args.models:
        for key, values in grids.items():
            times = []
            for value in values:
                runs = [
                    measure("kgexp", "train", {**base, "model": model, key: value})
                    for _ in range(args.repeats)
                ]
                times.append(median_of(runs, "step_s"))
            results["train"][f"{model}/{key}"] = dict(zip(values, times, strict=True))
            print(model, key, results["train"][f"{model}/{key}"], flush=True)
        eval_times = {}
        for entities in [5_000, 10_000, 20_000, 40_000, 80_000]:
            runs = [
                measure("kgexp", "synthetic_eval", {"model": model, "entities": entities, "dim": 200})
                for _ in range(args.repeats)
            ]
            eval_times[entities] = median_of(runs, "eval_s")
        results["eval"][model] = eval_times
        print(model, "eval", eval_times, flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "scaling.json").write_text(json.dumps(results, indent=1))
    plot_scaling(results, args.dataset, out)


def plot_scaling(results: dict[str, Any], dataset: str, out: Path) -> None:
    """``scaling.png`` from the measurements (``--replot`` redraws it from ``scaling.json``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    models = list(results["eval"])
    figure, axes = plt.subplots(1, 4, figsize=(16, 3.6))
    labels = {"dim": "embedding dimension d", "negatives": "negatives per positive K", "batch": "batch B"}
    for axis, key in zip(axes[:3], labels, strict=True):
        for model in models:
            series = {int(k): v for k, v in results["train"][f"{model}/{key}"].items()}
            axis.plot(list(series), list(series.values()), marker="o", label=model)
        axis.set(xlabel=labels[key], ylabel="step time (s)", xscale="log", yscale="log", xticks=list(series))
    for model in models:
        series = {int(k): v for k, v in results["eval"][model].items()}
        axes[3].plot(list(series), list(series.values()), marker="o", label=model)
    axes[3].set(
        xlabel="entities",
        ylabel="eval time, 2,000 queries (s)",
        xscale="log",
        yscale="log",
        xticks=list(series),
    )
    for axis in axes:
        for ticks in (axis.xaxis, axis.yaxis):
            ticks.set_major_formatter(ScalarFormatter())
            ticks.set_minor_formatter(NullFormatter())
        axis.grid(True, which="both", alpha=0.3)
    axes[0].legend()
    figure.suptitle(
        f"kgexp on {dataset}'s sizes, this machine ({torch.get_num_threads()} threads); "
        "the others fixed at d=200, K=256, B=1024"
    )
    figure.tight_layout()
    figure.savefig(out / "scaling.png", dpi=110)
    print(f"wrote {out / 'scaling.png'}")


def synthetic_eval(args: argparse.Namespace) -> dict[str, Any]:
    """Ranks of 1,000 random queries per side against ``entities`` entities (random filter of 20/query)."""
    from kgexp.data.filter_index import FilterIndex
    from kgexp.evaluation.ranking import rank_queries
    from kgexp.models import MODELS as KGEXP_MODELS
    from kgexp.sides import BOTH_SIDES

    generator = torch.Generator().manual_seed(0)
    model = KGEXP_MODELS[args.model](args.entities, 100, dim=args.dim).eval()

    def triples(count: int) -> torch.Tensor:
        return torch.stack(
            [
                torch.randint(args.entities, (count,), generator=generator),
                torch.randint(100, (count,), generator=generator),
                torch.randint(args.entities, (count,), generator=generator),
            ],
            dim=1,
        )

    queries = triples(1000)
    index = FilterIndex(torch.cat([queries, triples(20_000)]), args.entities, 100)
    start = time.perf_counter()
    for side in BOTH_SIDES:
        for batch in queries.split(256):
            rank_queries(model, batch, side, index)
    return {"eval_s": time.perf_counter() - start, "peak_rss_mib": peak_rss_mib()}


ONE[("kgexp", "synthetic_eval")] = synthetic_eval


def run_startup(args: argparse.Namespace) -> None:
    """Seconds from the command to the first training step, with a fresh cache and then a warm one."""
    import tempfile

    with tempfile.TemporaryDirectory() as cache, tempfile.TemporaryDirectory() as outputs:
        env = {**os.environ, "KGEXP_CACHE_DIR": cache, "WANDB_MODE": "disabled"}
        for attempt in ("cold cache", "warm cache", "warm cache"):
            start = time.perf_counter()
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "kgexp",
                    f"dataset={args.dataset}",
                    f"model={args.models[0]}",
                    "trainer.max_steps=1",
                    "logger=csv",
                    f"hydra.run.dir={outputs}/{time.time_ns()}",
                ],
                env=env,
                check=True,
                capture_output=True,
            )
            total = time.perf_counter() - start
            info = json.loads(max(Path(outputs).glob("*/run_info.json"), key=os.path.getmtime).read_text())
            print(
                f"{attempt}: first step {info['startup_s']:.2f} s after the import of kgexp; "
                f"whole command (1 step, then the final validation and test) {total:.2f} s"
            )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("task", choices=["train", "eval", "scaling", "startup", "one"])
    parser.add_argument("framework", nargs="?")
    parser.add_argument("one_task", nargs="?")
    parser.add_argument("--dataset", default="wn18rr")
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--model")
    parser.add_argument("--samplers", nargs="+", default=["uniform"])
    parser.add_argument("--sampler", default="uniform")
    parser.add_argument("--mi", default="none")
    parser.add_argument("--shared", type=int, default=0, help="kgexp: chunks of C positives share negatives")
    parser.add_argument("--frameworks", nargs="+", default=["kgexp", "pykeen"])
    parser.add_argument("--dim", type=int, default=200)
    parser.add_argument("--negatives", type=int, default=256)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-batch", type=int, default=256)
    parser.add_argument("--queries", type=int, default=0)
    parser.add_argument("--entities", type=int, default=10_000)
    parser.add_argument(
        "--pykeen-queries", type=int, default=0, help="PyKEEN evaluates this many test triples"
    )
    parser.add_argument("--pykeen-repeats", type=int, default=1)
    parser.add_argument("--out", default="docs/benchmarks")
    parser.add_argument("--replot", action="store_true", help="scaling: redraw the plot from scaling.json")
    args = parser.parse_args()
    if args.task == "one":
        print(json.dumps(ONE[(args.framework, args.one_task)](args)))
    else:
        {"train": run_train, "eval": run_eval, "scaling": run_scaling, "startup": run_startup}[args.task](
            args
        )


if __name__ == "__main__":
    main()
