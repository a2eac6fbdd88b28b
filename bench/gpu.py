"""The FB15k-237 paper cells on one GPU, and the GPU path checked against the CPU path (issue 19).

Here, once: the wheels the device machine lacks (Hydra, OmegaConf, ANTLR) and FB15k-237, into the
git-ignored ``.device/``:

    python bench/gpu.py prepare

There, as one call of the device tool (``carry: [".device"]``, ``timeout_s: 480``):

    PYTHONUNBUFFERED=1 python3 bench/gpu.py device --minutes 7

``device`` installs the wheels into ``/tmp/site``, starts the cells and, while they train, checks the
paths; at the deadline it stops the cells still training and packs what they wrote:

1. **cells**: those named by ``--cells`` (``setting-model``; by default uniform DistMult, whose CPU
   result for the same seed is in ``docs/paper-fb15k237/runs/``, then four of the cells longest
   on the CPU, which one working session there cannot finish), one ``python -m kgexp trainer=gpu
   logger=csv`` process each, all at once on the one GPU, seed 0. The GPU draws its negatives and
   masks from a CUDA generator, so a cell agrees with its CPU run as two draws of one distribution do,
   not bit for bit. A cell still training at the deadline is
   stopped by SIGTERM, which saves its ``last.ckpt`` (it does not come back: too large);
2. **agreement**: one random model of each scorer at the recipe's sizes (FB15k-237's 14,541 entities
   and 237 relations, d = 100, 1,000 queries against 257 candidates), the CPU's fused kernels against
   the tensor ops that the GPU runs: scores and gradients of ``score_ids`` and of EMU's mutated
   candidates from the same mask seeds, the keep mask bit for bit, and filtered ranks;
3. **``$OUT``**: ``summary.md`` (the agreement table; each cell's status, steps, steps/s, best
   validation MRR, test MRR and Hits@10, and the CPU's where it has finished) and ``cells.tar.gz``
   (each cell's small outputs as ``docs/paper-fb15k237/runs/`` keeps them, with ``cli.log``, the csv
   metrics and the process's output). GPU utilisation is sampled into the output every 30 s.

``device --accelerator cpu`` runs the same on the CPU (both sides of the agreement on the CPU), to try
the script here: ``--extra trainer.max_steps=20 trainer.val_check_interval=10`` keeps it short.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
STAGE = ROOT / ".device"
WHEELS = ("hydra-core", "omegaconf", "antlr4-python3-runtime")
DATASET = "fb15k237"
CPU_RUNS = ROOT / "docs" / "paper-fb15k237" / "runs"  # the finished CPU cells
DEFAULT_CELLS = [
    "uniform-distmult",
    "emu-rotate",
    "emu_no_uls-complex",
    "emu_no_uls-rotate",
    "emu_no_mutation-rotate",
]
SETTINGS = ("uniform", "emu", "emu_no_uls", "emu_no_mutation")
MODEL_NAMES = ("transe", "distmult", "complex", "rotate")
#: What a cell's run keeps (as docs/paper-fb15k237/runs/ does), plus its log and csv metrics.
KEPT = ("metrics.json", "config.yaml", "run_info.json", "relations.csv", "status.json", "cli.log")
STOP_GRACE_S = 90  # a stopped cell finishes its step and writes last.ckpt
PACK_RESERVE_S = 30


# -- here ---------------------------------------------------------------------------------------
def prepare(data_dir: Path) -> None:
    """Wheels of this environment's versions (pure Python: any Python 3 there takes them) and the dataset."""
    from importlib.metadata import version

    wheels = STAGE / "wheels"
    shutil.rmtree(wheels, ignore_errors=True)
    pinned = [f"{name}=={version(name)}" for name in WHEELS]
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), *pinned], check=True
    )
    source = data_dir / DATASET
    missing = [s for s in ("train", "valid", "test") if not (source / f"{s}.txt").is_file()]
    if missing:
        sys.exit(f"{source}: no {', '.join(f'{s}.txt' for s in missing)} (set KGEXP_DATA_DIR to the mirror)")
    target = STAGE / "datasets" / DATASET
    target.mkdir(parents=True, exist_ok=True)
    for split in ("train", "valid", "test"):
        shutil.copyfile(source / f"{split}.txt", target / f"{split}.txt")
    size = sum(p.stat().st_size for p in STAGE.rglob("*") if p.is_file()) / 2**20
    print(f"{STAGE}: {', '.join(sorted(p.name for p in wheels.iterdir()))} and {DATASET} ({size:.1f} MiB)")


# -- there: 1. agreement --------------------------------------------------------------------------
@contextlib.contextmanager
def tensor_ops():
    """The plain tensor-op path, as on a GPU, also for CPU tensors (the fused kernels declined)."""
    from kgexp import kernels

    usable = kernels.usable
    kernels.usable = lambda *tensors: False
    try:
        yield
    finally:
        kernels.usable = usable


def agreement(
    device: str,
    entities: int = 14541,
    relations: int = 237,
    dim: int = 100,
    queries: int = 1000,
    candidates: int = 257,
    ranked: int = 2000,
) -> list[dict[str, Any]]:
    """Per scorer, the largest differences between the CPU's fused kernels and ``device``'s tensor ops:
    scores and gradients of ``score_ids`` and of EMU's mutated candidates (from the same mask seeds), the
    EMU keep mask, and the filtered ranks of ``ranked`` queries per side."""
    import torch

    from kgexp.data.filter_index import FilterIndex
    from kgexp.evaluation.ranking import rank_queries
    from kgexp.models import MODELS
    from kgexp.sides import BOTH_SIDES, split_query
    from kgexp.training import emu

    generator = torch.Generator().manual_seed(0)
    count = max(ranked, queries)
    triples = torch.stack(
        [
            torch.randint(entities, (count,), generator=generator),
            torch.randint(relations, (count,), generator=generator),
            torch.randint(entities, (count,), generator=generator),
        ],
        dim=1,
    )
    ids = torch.randint(entities, (queries, candidates), generator=generator)
    weights = torch.randn(queries, candidates, generator=generator)  # a random loss: every score counts
    draw_seeds, emu.draw_seeds = emu.draw_seeds, lambda _: (0x9E3779B9, 0x7F4A7C15)  # one mask for both

    def score(label: str, model, query, ids):
        if label == "score_ids":
            return model.score_ids(query, ids)
        return emu.EmbeddingMutation().scores(model, query, ids, torch.Generator(query.device))

    def outputs(model, side: str, context) -> dict[str, tuple[Any, list[Any]]]:
        found = {}
        on = model.entity.weight.device
        anchors, relation, _ = split_query(triples[:queries].to(on), side)
        with context():
            for label in ("score_ids", "EMU scores"):
                scores = score(label, model, model.embed_query(anchors, relation, side), ids.to(on))
                loss = (scores * weights.to(on)).sum()
                grads = torch.autograd.grad(loss, list(model.parameters()))
                found[label] = (scores.detach().cpu(), [g.cpu() for g in grads])
        return found

    rows = []
    try:
        for name, model_class in MODELS.items():
            torch.manual_seed(0)
            fused = model_class(entities, relations, dim=dim)
            plain = copy.deepcopy(fused).to(device)
            row: dict[str, Any] = {"model": name}
            width = fused.entity.weight.shape[1]
            for shared in (False, True) if fused.entity_factor == 2 else (False,):
                mutation = emu.EmbeddingMutation(share_complex_mask=shared)
                shape = torch.Size((queries, candidates, width))
                masks = [mutation.keep_mask(shape, True, torch.Generator(d)).cpu() for d in ("cpu", device)]
                row["mask bits differing" + (" (shared)" if shared else "")] = int(
                    (masks[0] != masks[1]).sum()
                )
            for side in BOTH_SIDES:
                expected = outputs(fused, side, contextlib.nullcontext)
                for label, (scores, grads) in outputs(plain, side, tensor_ops).items():
                    want_scores, want_grads = expected[label]
                    largest = max(
                        float((want - got).abs().max() / want.abs().max())
                        for want, got in zip(want_grads, grads, strict=True)
                    )
                    row[f"{label} max |Δ|"] = max(
                        row.get(f"{label} max |Δ|", 0.0), float((want_scores - scores).abs().max())
                    )
                    row[f"{label} grad max rel |Δ|"] = max(row.get(f"{label} grad max rel |Δ|", 0.0), largest)
            with torch.no_grad():
                differing, mrr_gap = 0, 0.0
                for side in BOTH_SIDES:
                    ranks = []
                    for model, context in ((fused, contextlib.nullcontext), (plain, tensor_ops)):
                        on = model.entity.weight.device
                        with context():
                            index = FilterIndex(triples.to(on), entities, relations).to(on)
                            ranks.append(
                                rank_queries(model, triples[:ranked].to(on), side, index).optimistic.cpu()
                            )
                    differing += int((ranks[0] != ranks[1]).sum())
                    mrr_gap = max(mrr_gap, abs(float((1 / ranks[0]).mean() - (1 / ranks[1]).mean())))
            row[f"ranks differing (of {2 * ranked:,})"], row["MRR |Δ|"] = differing, mrr_gap
            rows.append(row)
    finally:
        emu.draw_seeds = draw_seeds
    return rows


# -- there: 2. cells ------------------------------------------------------------------------------
def parse_cells(names: list[str]) -> list[tuple[str, str]]:
    """``setting-model`` names into pairs, with a one-line error for a name that is neither."""
    cells = []
    for name in names:
        setting, _, model = name.rpartition("-")
        if setting not in SETTINGS or model not in MODEL_NAMES:
            raise SystemExit(
                f"--cells: {name!r} is not SETTING-MODEL with SETTING in {', '.join(SETTINGS)} "
                f"and MODEL in {', '.join(MODEL_NAMES)}"
            )
        cells.append((setting, model))
    return cells


def start_cells(
    cells: list[tuple[str, str]], work: Path, accelerator: str, extra: list[str], env: dict
) -> dict[str, tuple[Path, subprocess.Popen]]:
    """All cells at once, one process each: ``{name: (run folder, process)}``."""
    started = {}
    for setting, model in cells:
        name = f"{setting}-{model}-seed0"
        folder = work / name
        command = [sys.executable, "-m", "kgexp", f"setting={setting}", f"model={model}", "seed=0"]
        command += [f"trainer={accelerator}", "logger=csv", f"hydra.run.dir={folder}", *extra]
        log = (work / f"{name}.out").open("w")
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        started[name] = (folder, process)
        print(f"started {name}: {' '.join(command[1:])}")
    return started


def wait_cells(started: dict[str, tuple[Path, subprocess.Popen]], deadline: float) -> None:
    """Until every cell has ended or ``deadline``; then SIGTERM to those still training."""
    while any(p.poll() is None for _, p in started.values()) and time.time() < deadline:
        time.sleep(min(30.0, max(1.0, deadline - time.time())))
        sample_gpu()
        for name, (folder, _) in started.items():
            print(f"  {name}: {last_progress(folder / 'cli.log')}")
    for name, (_, process) in started.items():
        if process.poll() is None:
            print(f"deadline: stopping {name}")
            process.send_signal(signal.SIGTERM)
    for _, process in started.values():
        try:
            process.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            process.kill()


def sample_gpu() -> None:
    if shutil.which("nvidia-smi"):
        query = "--query-gpu=utilization.gpu,memory.used"
        done = subprocess.run(["nvidia-smi", query, "--format=csv,noheader"], capture_output=True, text=True)
        print(f"GPU utilisation, memory: {done.stdout.strip()}")


def last_progress(log: Path) -> str:
    lines = (
        [line for line in log.read_text(errors="replace").splitlines() if "steps/s" in line]
        if log.is_file()
        else []
    )
    return lines[-1].split(" - ", 1)[-1] if lines else "starting"


def cell_summary(name: str, folder: Path) -> dict[str, Any]:
    """Status, steps, speed, best validation and test metrics of one cell, from its files."""
    row: dict[str, Any] = {
        "cell": name,
        "status": read_json(folder / "status.json").get("status", "not started"),
    }
    info = read_json(folder / "run_info.json")
    log = (folder / "cli.log").read_text(errors="replace") if (folder / "cli.log").is_file() else ""
    progress = re.findall(r"step ([\d,]+)/[\d,]+ · ([\d.]+) steps/s", log)  # Progress.position's lines
    if info:
        row["steps"], row["steps/s"] = info["global_step"], info["time"]["steps_per_s"]
    elif progress:
        row["steps"], row["steps/s"] = int(progress[-1][0].replace(",", "")), float(progress[-1][1])
    metrics_csv = folder / "csv" / "metrics.csv"
    if metrics_csv.is_file():
        with metrics_csv.open() as handle:
            validations = [
                (float(r["val/mrr"]), int(r["step"])) for r in csv.DictReader(handle) if r.get("val/mrr")
            ]
        if validations:
            best, step = max(validations)
            row["best val MRR"], row["at step"] = best, step
    metrics = read_json(folder / "metrics.json")
    if metrics:
        row["test MRR"], row["test Hits@10"] = metrics["test/mrr"], metrics["test/hits@10"]
    return row


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def pack(folders: dict[str, Path], out: Path) -> None:
    with tarfile.open(out / "cells.tar.gz", "w:gz") as archive:
        for name, folder in folders.items():
            for kept in (*KEPT, ".hydra/overrides.yaml", "csv/metrics.csv"):
                if (folder / kept).is_file():
                    archive.add(folder / kept, arcname=f"{name}/{kept}")
            if (folder.parent / f"{name}.out").is_file():
                archive.add(folder.parent / f"{name}.out", arcname=f"{name}/stdout.txt")


def markdown(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "(none)\n"
    keys = list(dict.fromkeys(key for row in rows for key in row))
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for row in rows:
        cells = [row.get(key, "") for key in keys]
        lines.append("| " + " | ".join(f"{c:.3g}" if isinstance(c, float) else str(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def device(args: argparse.Namespace) -> None:
    start = time.time()
    deadline = start + 60 * args.minutes - STOP_GRACE_S - PACK_RESERVE_S
    cells = parse_cells(args.cells)
    out = Path(os.environ.get("OUT", ROOT / "build" / "gpu"))
    out.mkdir(parents=True, exist_ok=True)
    site = Path("/tmp/site")
    wheels = sorted((STAGE / "wheels").glob("*.whl"))
    if not wheels or not (STAGE / "datasets" / DATASET / "train.txt").is_file():
        sys.exit(
            f"{STAGE}: no wheels or no {DATASET}; run `python bench/gpu.py prepare` here and carry .device"
        )
    install = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile"]
    subprocess.run([*install, "--upgrade", "--target", str(site), *map(str, wheels)], check=True)
    sys.path[:0] = [str(ROOT / "src"), str(site)]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(site)]),
        "KGEXP_DATA_DIR": str(STAGE / "datasets"),
        "OMP_NUM_THREADS": "1",
        "WANDB_MODE": "disabled",
        "TORCH_EXTENSIONS_DIR": "/tmp/torch_extensions",
        "PYTHONUNBUFFERED": "1",
    }
    os.environ["TORCH_EXTENSIONS_DIR"] = env["TORCH_EXTENSIONS_DIR"]  # the agreement's CPU kernels
    import torch

    target = "cuda" if args.accelerator == "gpu" else "cpu"
    report = [f"# kgexp on {torch.cuda.get_device_name() if target == 'cuda' else 'the CPU'}\n"]
    report.append(
        f"torch {torch.__version__}, Python {sys.version.split()[0]}, cells {', '.join(args.cells)}\n"
    )
    work = Path("/tmp/cells") if target == "cuda" else out / "cells"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    started = start_cells(cells, work, args.accelerator, args.extra, env)
    try:  # while the cells train: the CPU side builds its kernels on cores the cells leave free
        began = time.time()
        rows = agreement(target)
        report += [
            f"\n## Agreement: {target} against the CPU ({time.time() - began:.0f} s)\n\n",
            markdown(rows),
        ]
    except Exception as error:  # the cells go on: their own errors are reported beside this one
        report.append(f"\n## Agreement failed\n\n    {type(error).__name__}: {error}\n")
    print("".join(report))
    wait_cells(started, deadline)
    folders = {name: folder for name, (folder, _) in started.items()}
    summary = [cell_summary(name, folder) for name, folder in folders.items()]
    for row in summary:  # the same cell and seed on the CPU, where it has finished
        on_cpu = read_json(CPU_RUNS / row["cell"] / "metrics.json")
        if on_cpu:
            row["CPU test MRR"], row["CPU test Hits@10"] = on_cpu["test/mrr"], on_cpu["test/hits@10"]
    report += [f"\n## Cells ({(time.time() - start) / 60:.1f} min in all)\n\n", markdown(summary)]
    (out / "summary.md").write_text("".join(report))
    pack(folders, out)
    print("".join(report[-2:]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    ready = commands.add_parser("prepare", help="wheels and FB15k-237 into .device/ (here)")
    ready.add_argument("--data-dir", type=Path, default=Path(os.environ.get("KGEXP_DATA_DIR", "datasets")))
    there = commands.add_parser("device", help="agreement, then the cells, on the device machine")
    there.add_argument("--minutes", type=float, default=8.0, help="wall time of the whole command")
    there.add_argument("--cells", nargs="+", default=DEFAULT_CELLS, help="SETTING-MODEL names")
    there.add_argument("--accelerator", choices=("gpu", "cpu"), default="gpu")
    there.add_argument("--extra", nargs="*", default=[], help="more overrides for every cell")
    args = parser.parse_args()
    if args.command == "prepare":
        prepare(args.data_dir)
    else:
        device(args)


if __name__ == "__main__":
    main()
