"""kgexp and PyKEEN side by side on the same machine: training throughput and filtered evaluation.

    python bench/speed.py train --dataset wn18rr                 # the four models, uniform, d=200
    python bench/speed.py train --dataset wn18rr --frameworks kgexp --samplers emu sans nscaching
    python bench/speed.py train --dataset wn18rr --frameworks kgexp --mi infonce
    python bench/speed.py eval --dataset wn18rr --models distmult complex
    python bench/speed.py eval --dataset fb15k237 --models rotate --pykeen-queries 400
    python bench/speed.py scaling --out docs/benchmarks     # step time vs d, K, B; eval vs entities
    python bench/speed.py startup --dataset fb15k237         # command to first step, cold and warm
    python bench/speed.py recipe                             # the reference recipe through the CLI
    python bench/speed.py recipe --before ../kgexp-old       # ... paired with another source tree
    python bench/speed.py profile --model distmult --setting uniform   # one recipe step, split up

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

Recipe: the EMU reference recipe (FB15k-237, d = 100, B = 1000, K = 256, softmax cross-entropy,
Adagrad then Adam, validation every 500 steps, 100k steps) as a user runs it, ``python -m kgexp
setting=S model=M dataset=fb15k237``, with ``trainer.max_steps`` cut to ``--short`` and ``--long`` steps
(no validation falls in either; the optimiser switch falls half-way in both). steps/s is the difference
of the two runs' steps over the difference of their training times (``time.training_s`` of
``run_info.json``; the wall times for a tree that does not record it), so start-up, the final
validation and the test drop out. The end-to-end figure projects a whole run from it: start-up + 100k
steps + 200 validations + the test, the validation and test times measured in the long run.
``--before DIR`` runs another source tree (its ``src`` on ``PYTHONPATH``) in alternation with this one,
for paired before/after medians.

Profile: one recipe step split into Lightning's loop, sampling, scoring forward and backward, loss,
regulariser, MI, optimiser, logging and host synchronisations (``torch.profiler``; each part's time is
that of its ops, the loop the rest), beside the step's FLOP time at the measured matmul peak.

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

    from kgexp.config import register_schemas
    from kgexp.config.build import build_datamodule, build_module

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


# -- the reference recipe through the CLI ------------------------------------------------------------
#: The recipe's settings as the command line sets them: the plain baseline, EMU, and the baseline + MI.
RECIPE_SETTINGS = {
    "uniform": ["setting=uniform"],
    "emu": ["setting=emu"],
    "emu_no_uls": ["setting=emu_no_uls"],
    "emu_no_mutation": ["setting=emu_no_mutation"],
    "mi": ["setting=uniform", "mi=infonce"],
}
RECIPE_STEPS, RECIPE_VALIDATIONS = 100_000, 200


def tree_env(source: Path) -> dict[str, str]:
    """The environment of a command run from the source tree ``source``. Each tree builds its kernels
    into its own folder, so that trees run in alternation do not rebuild each other's."""
    extensions = Path(os.environ.get("TORCH_EXTENSIONS_DIR", Path.home() / ".cache" / "torch_extensions"))
    return {
        **os.environ,
        "PYTHONPATH": str(source / "src"),
        "WANDB_MODE": "offline",
        "TORCH_EXTENSIONS_DIR": str(extensions / source.name),
    }


def build_kernels(source: Path) -> None:
    """Build the tree's kernels before anything is timed: a first build inside a timed run would be
    counted as training time (the kernels load at the first step)."""
    command = [sys.executable, "-c", "import kgexp.kernels as kernels; kernels.available()"]
    subprocess.run(command, env=tree_env(source), cwd=source, check=True)


def cli_run(source: Path, overrides: list[str], steps: int, out: Path) -> dict[str, Any]:
    """``python -m kgexp`` from the source tree ``source``: its ``run_info.json``."""
    command = [sys.executable, "-m", "kgexp", "dataset=fb15k237", *overrides, f"trainer.max_steps={steps}"]
    command.append(f"hydra.run.dir={out}")
    done = subprocess.run(command, env=tree_env(source), cwd=source, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return json.loads((out / "run_info.json").read_text())


def recipe_measure(source: Path, model: str, setting: str, short: int, long: int) -> dict[str, Any]:
    """steps/s of one configuration from a short and a long run, and the long run's other times."""
    import tempfile

    overrides = [f"model={model}", *RECIPE_SETTINGS[setting]]
    with tempfile.TemporaryDirectory() as folder:
        first = cli_run(source, overrides, short, Path(folder) / "short")
        second = cli_run(source, overrides, long, Path(folder) / "long")
    times = second.get("time")  # run_info's wall-time split (not in older versions)
    if times:  # training time alone: RotatE's pruned validation is faster for a trained model
        seconds = times["training_s"] - first["time"]["training_s"]
    else:
        seconds = second["wall_time_s"] - first["wall_time_s"]
    result = {"steps_per_s": (long - short) / seconds}
    if times:
        result.update(
            startup_s=second["startup_s"],
            validation_s=times["validation_s"] / times["validations"],
            test_s=times["test_s"],
        )
    return result


def projected_minutes(row: dict[str, Any]) -> float:
    """Start-up, 100k steps, 200 validations and the test, in minutes."""
    seconds = row["startup_s"] + RECIPE_STEPS / row["steps_per_s"] + RECIPE_VALIDATIONS * row["validation_s"]
    return (seconds + row["test_s"]) / 60


def run_recipe(args: argparse.Namespace) -> None:
    here = Path(__file__).resolve().parents[1]
    sources = {"after": here, **({"before": Path(args.before).resolve()} if args.before else {})}
    for source in sources.values():
        build_kernels(source)
    rows = []
    for model in args.models:
        for setting in args.settings:
            runs: dict[str, list[dict[str, Any]]] = {name: [] for name in sources}
            for _ in range(args.repeats):
                for name, source in sources.items():  # alternating, so that both see the same machine
                    runs[name].append(recipe_measure(source, model, setting, args.short, args.long))
            row: dict[str, Any] = {"model": model, "setting": setting}
            for name, results in runs.items():
                row[name] = {key: median_of(results, key) for key in results[0]}
            rows.append(row)
            print(json.dumps(row), flush=True)
    print(recipe_table(rows))


def recipe_table(rows: list[dict[str, Any]]) -> str:
    paired = "before" in rows[0]
    plain = {row["model"]: row["after"]["steps_per_s"] for row in rows if row["setting"] == "uniform"}
    header = "| model | setting | steps/s |"
    rule = "|---|---|---|"
    if paired:
        header += " steps/s before | speed-up |"
        rule += "---|---|"
    header += " step / uniform step | validation (s) | test (s) | 100k steps + 200 validations + test (min) |"
    rule += "---|---|---|---|"
    lines = [header, rule]
    for row in rows:
        after = row["after"]
        line = f"| {row['model']} | {row['setting']} | {after['steps_per_s']:.1f} |"
        if paired:
            before = row["before"]["steps_per_s"]
            line += f" {before:.1f} | {after['steps_per_s'] / before:.2f}x |"
        ratio = plain[row["model"]] / after["steps_per_s"] if row["model"] in plain else float("nan")
        line += f" {ratio:.2f} | {after['validation_s']:.1f} | {after['test_s']:.1f} |"
        line += f" {projected_minutes(after):.0f} |"
        lines.append(line)
    return "\n".join(lines)


# -- one recipe step, split up -----------------------------------------------------------------------
#: Profiled parts: a record_function scope around the module's calls, or autograd nodes by name.
PROFILE_SCOPES = ("sampling", "scoring forward", "loss", "regulariser", "MI", "logging")
BACKWARD_PARTS = {
    "ScoreEach": "scoring backward",
    "ScoreMutated": "scoring backward",
    "Embedding": "scoring backward",
    "PowerSum": "regulariser",
}


def profile_step(args: argparse.Namespace) -> dict[str, Any]:
    """Times of the parts of one step, from ``torch.profiler`` over ``--steps`` steps of the real loop."""
    import pytorch_lightning as pl
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf
    from torch.profiler import ProfilerActivity, profile, record_function

    from kgexp.commands.train import instantiate_group
    from kgexp.config import register_schemas
    from kgexp.config.build import build_datamodule, build_module

    overrides = ["dataset=fb15k237", f"model={args.model}", *RECIPE_SETTINGS[args.setting]]
    register_schemas()
    with initialize_config_dir(str(CONF), version_base=None):
        cfg = compose("config", overrides=[*overrides, "logger=csv", f"output_dir={args.out}/profile"])
    datamodule = build_datamodule(cfg)
    datamodule.prepare_data()
    datamodule.setup("fit")
    module = build_module(cfg, datamodule.graph.num_entities, datamodule.graph.num_relations)

    def scoped(name: str, function):
        def call(*a, **k):
            with record_function(f"kgexp/{name}"):
                return function(*a, **k)

        return call

    sampler = module.negatives.sampler
    sampler.sample = scoped("sampling", sampler.sample)
    module.model.score_ids = scoped("scoring forward", module.model.score_ids)
    module.model.embed_query = scoped("scoring forward", module.model.embed_query)
    module.loss = scoped("loss", module.loss)
    if module.emu is not None:
        module.emu.mutate.scores = scoped("scoring forward", module.emu.mutate.scores)
        module.emu.loss = scoped("loss", module.emu.loss)
    if module.regularizer is not None:
        module.regularizer = scoped("regulariser", module.regularizer)
    if module.mi is not None:
        module.mi.forward = scoped("MI", module.mi.forward)
    module.log = scoped("logging", module.log)
    stamps: list[float] = []
    total = args.warmup + args.steps
    state: dict[str, Any] = {}

    rows_with_gradient: list[float] = []

    class Window(pl.Callback):
        def on_train_batch_start(self, trainer: pl.Trainer, *_: Any) -> None:
            stamps.append(time.perf_counter())
            if len(stamps) == args.warmup + 1:
                state["profiler"] = profile(activities=[ProfilerActivity.CPU])
                state["profiler"].__enter__()
            if len(stamps) == total + 1:
                state["profiler"].__exit__(None, None, None)

        def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module, optimizer) -> None:
            if "profiler" not in state:  # the share of entity rows that a row-sparse optimiser could skip
                grad = pl_module.model.entity.weight.grad
                rows_with_gradient.append(float((grad != 0).any(1).float().mean()))

    trainer_options = OmegaConf.to_container(cfg.trainer, resolve=True)
    trainer_options.update(max_steps=total + 1, enable_model_summary=False)
    trainer = pl.Trainer(
        **trainer_options,
        callbacks=[*instantiate_group(cfg.get("callbacks")), Window()],
        logger=instantiate_group(cfg.get("logger")),
        default_root_dir=f"{args.out}/profile",
    )
    trainer.fit(module, datamodule=datamodule)
    step_s = (stamps[total] - stamps[args.warmup]) / args.steps
    parts = {name: 0.0 for name in (*PROFILE_SCOPES, "scoring backward", "optimiser", "host syncs")}
    for event in state["profiler"].key_averages():
        name, seconds = event.key, event.cpu_time_total / 1e6 / args.steps
        if name.startswith("kgexp/"):
            parts[name.removeprefix("kgexp/")] += seconds
        elif name.startswith("autograd::engine::evaluate_function: "):
            node = name.removeprefix("autograd::engine::evaluate_function: ")
            part = next((p for prefix, p in BACKWARD_PARTS.items() if node.startswith(prefix)), None)
            parts[part or backward_part(module, node)] += seconds
        elif name.startswith("Optimizer.zero_grad") or name in (
            "aten::_fused_adam_",
            "aten::_fused_adagrad_",
        ):
            parts["optimiser"] += seconds
        elif name in ("aten::item", "aten::is_nonzero"):
            parts["host syncs"] += seconds
    parts["Lightning loop and the rest"] = step_s - sum(parts.values())
    return {
        "model": args.model,
        "setting": args.setting,
        "step_s": step_s,
        "parts": parts,
        "entity_rows_with_gradient": statistics.fmean(rows_with_gradient),
    }


def backward_part(module, node: str) -> str:
    """Other autograd nodes: MI's when MI is on and the node is one of its layers' ops, else the loss's."""
    if module.mi is not None and node.startswith(("Addmm", "Mm", "Gelu", "Linalg", "Norm", "Div", "Softmax")):
        return "MI"
    return "loss"


def step_flops(model: str, setting: str, dim: int = 100, batch: int = 1000, negatives: int = 256) -> float:
    """Multiply-adds of the scores and both gradients (x 2 FLOP): 6 B (1 + K) w per scoring pass; EMU and
    its ablations score twice."""
    width = dim * (2 if model in ("complex", "rotate") else 1)
    passes = 2 if setting.startswith("emu") else 1
    return passes * 6 * batch * (1 + negatives) * width


def run_profile(args: argparse.Namespace) -> None:
    gflops = matmul_peak_gflops()
    rows = []
    for model in args.models:
        for setting in args.settings:
            options = {"model": model, "setting": setting, "steps": args.steps, "warmup": args.warmup}
            row = measure("kgexp", "profile", {**options, "out": args.out})
            rows.append(row)
            print(json.dumps(row), flush=True)
    names = list(rows[0]["parts"])
    lines = [
        f"| model | setting | step (ms) | FLOP time (ms) | {' | '.join(names)} | entity rows with gradient |",
        "|---|---|---|---|" + "---|" * (len(names) + 1),
    ]
    for row in rows:
        flop_ms = step_flops(row["model"], row["setting"]) / (gflops * 1e9) * 1e3
        parts = " | ".join(f"{row['parts'][name] * 1e3:.1f}" for name in names)
        line = f"| {row['model']} | {row['setting']} | {row['step_s'] * 1e3:.1f} | {flop_ms:.1f} | {parts} |"
        lines.append(f"{line} {row['entity_rows_with_gradient']:.1%} |")
    print(f"matmul peak {gflops:.0f} GFLOP/s (parts in ms per step)")
    print("\n".join(lines))


ONE[("kgexp", "profile")] = profile_step


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("task", choices=["train", "eval", "scaling", "startup", "recipe", "profile", "one"])
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
    parser.add_argument("--settings", nargs="+", default=list(RECIPE_SETTINGS), choices=list(RECIPE_SETTINGS))
    parser.add_argument("--setting", default="uniform", choices=list(RECIPE_SETTINGS))
    parser.add_argument("--short", type=int, default=30, help="recipe: steps of the short run")
    parser.add_argument("--long", type=int, default=330, help="recipe: steps of the long run")
    parser.add_argument("--before", help="recipe: another kgexp source tree, run in alternation")
    args = parser.parse_args()
    if args.task == "one":
        print(json.dumps(ONE[(args.framework, args.one_task)](args)))
    else:
        tasks = {"train": run_train, "eval": run_eval, "scaling": run_scaling, "startup": run_startup}
        tasks.update(recipe=run_recipe, profile=run_profile)
        tasks[args.task](args)


if __name__ == "__main__":
    main()
