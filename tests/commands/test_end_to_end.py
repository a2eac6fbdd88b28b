"""End to end on a small real dataset (UMLS): train, test, export, re-rank independently, evaluate.

Each ``kgexp`` subprocess here checks what only the command shows (its files, its exit status, its
launchers); what the commands compute is checked in process on those runs' checkpoints. W&B is off
(conftest) except in the one sweep whose W&B records are read.
"""

from __future__ import annotations

import csv
import json
import statistics
import struct
from pathlib import Path

import numpy as np
import pytest
from conftest import compose_config, mirror_dataset, run_kgexp

from kgexp.commands.analyze import analyze
from kgexp.commands.evaluate import evaluate
from kgexp.commands.export import export
from kgexp.commands.report import main as report

pytestmark = pytest.mark.slow  # subprocesses of the real command: the full tier only

MODELS = ("transe", "distmult", "complex", "rotate")
NUM_UMLS_ENTITIES = 135
FAST = (
    "dataset=umls",
    "optimizer=adam",
    "optimizer.lr=0.02",
    "schedule=none",
    "model.dim=32",
    "sampler.num_negatives=64",
    "data.batch_size=512",
    "trainer.max_steps=120",
    "trainer.val_check_interval=40",
)
REQUIRED_KEYS = {
    "val/mrr",
    "test/mrr",
    "test/mr",
    "test/hits@1",
    "test/hits@3",
    "test/hits@10",
    "test/head/mrr",
    "test/tail/mrr",
    "test/optimistic/mrr",
    "test/pessimistic/mrr",
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """One short training run per model, each in its own output folder."""
    mirror_dataset("umls")
    root = tmp_path_factory.mktemp("runs")
    out = {}
    for model in MODELS:
        run_dir = root / model
        run_kgexp(*FAST, f"model={model}", f"hydra.run.dir={run_dir}", cwd=root)
        out[model] = run_dir
    return out


def metrics_of(run_dir: Path) -> dict[str, float]:
    return json.loads((run_dir / "metrics.json").read_text())


@pytest.mark.parametrize("model", MODELS)
def test_run_writes_its_outputs(runs, model):
    run_dir = runs[model]
    metrics = metrics_of(run_dir)
    assert set(metrics) >= REQUIRED_KEYS
    # Realistic lies between optimistic and pessimistic; both sides average to the overall MRR.
    assert metrics["test/optimistic/mrr"] >= metrics["test/mrr"] >= metrics["test/pessimistic/mrr"]
    assert metrics["test/mrr"] == pytest.approx((metrics["test/head/mrr"] + metrics["test/tail/mrr"]) / 2)
    info = json.loads((run_dir / "run_info.json").read_text())
    assert {"version", "git_commit", "command", "seed", "device", "wall_time_s"} <= set(info)
    assert f"model={model}" in info["command"]
    times = info["time"]  # 120 steps, validated at 40, 80, 120 and once more on the best checkpoint
    assert times["training_steps"] == 120 and times["validations"] == 4
    assert times["training_s"] + times["validation_s"] + times["test_s"] < info["wall_time_s"]
    assert times["steps_per_s"] == pytest.approx(120 / times["training_s"], rel=1e-2)
    config = (run_dir / "config.yaml").read_text()
    assert f"name: {model}" in config and "${" not in config  # resolved
    assert (run_dir / "checkpoints" / "best.ckpt").is_file()
    assert (run_dir / "csv" / "metrics.csv").read_text().count("train/loss") == 1


#: Test MRR of the FAST runs, measured once (seed 0, CPU); a floor at 75% of it fails a model that learns
#: markedly worse, where 5x random (0.20) let any model that learns at all pass.
MEASURED_TEST_MRR = {"transe": 0.683, "distmult": 0.668, "complex": 0.777, "rotate": 0.568}


@pytest.mark.parametrize("model", MODELS)
def test_trained_model_reaches_most_of_its_measured_mrr(runs, model):
    random_mrr = sum(1 / k for k in range(1, NUM_UMLS_ENTITIES + 1)) / NUM_UMLS_ENTITIES
    floor = 0.75 * MEASURED_TEST_MRR[model]
    assert floor > 10 * random_mrr
    assert metrics_of(runs[model])["test/mrr"] > floor


# -- independent re-ranking of exported embeddings ---------------------------------------------------
def read_labels(path: Path) -> dict[str, int]:
    rows = [line.split("\t") for line in path.read_text(encoding="utf-8").splitlines()]
    return {label: int(i) for i, label in rows}


def read_ids(path: Path, entities: dict[str, int], relations: dict[str, int]) -> list[tuple[int, int, int]]:
    triples = []
    for line in path.read_text().splitlines():
        h, r, t = line.strip("\r").split("\t")
        triples.append((entities[h], relations[r], entities[t]))
    return triples


def textbook_scores(model: dict, h: np.ndarray, r: np.ndarray, t: np.ndarray) -> np.ndarray:
    """score(h, r, t) row by row (broadcasting), from the models' textbook definitions."""
    name, gamma, d = model["model"], model["gamma"], model["dim"]
    if name == "transe":
        return gamma - np.linalg.norm(h + r - t, ord=model["p_norm"], axis=-1)
    if name == "distmult":
        return (h * r * t).sum(-1)
    hc, tc = h[..., :d] + 1j * h[..., d:], t[..., :d] + 1j * t[..., d:]
    if name == "complex":
        return np.real((hc * (r[..., :d] + 1j * r[..., d:]) * np.conj(tc)).sum(-1))
    return gamma - np.abs(hc * np.exp(1j * r) - tc).sum(-1)  # rotate: relations exported as phases


def independent_test_mrr(export_dir: Path, data_dir: Path) -> float:
    model = json.loads((export_dir / "model.json").read_text())
    ent = np.load(export_dir / "entities.npy").astype(np.float64)
    rel = np.load(export_dir / "relations.npy").astype(np.float64)
    entities, relations = read_labels(export_dir / "entities.tsv"), read_labels(export_dir / "relations.tsv")
    splits = {s: read_ids(data_dir / f"{s}.txt", entities, relations) for s in ("train", "valid", "test")}
    known = {t for triples in splits.values() for t in triples}
    reciprocal = []
    for h, r, t in splits["test"]:
        # Tail prediction, then head prediction by scoring (e, r, t) for every e.
        tail_scores = textbook_scores(model, ent[h][None], rel[r][None], ent)
        head_scores = textbook_scores(model, ent, rel[r][None], ent[t][None])
        for scores, target, is_known in (
            (tail_scores, t, lambda e, h=h, r=r: (h, r, e) in known),
            (head_scores, h, lambda e, r=r, t=t: (e, r, t) in known),
        ):
            others = [e for e in range(len(ent)) if e != target and not is_known(e)]
            better = sum(scores[e] > scores[target] for e in others)
            tied = sum(scores[e] == scores[target] for e in others)
            reciprocal.append(1 / (1 + better + tied / 2))
    return float(np.mean(reciprocal))


@pytest.mark.parametrize("model", MODELS)
def test_export_round_trip_reproduces_test_mrr(runs, model, tmp_path):
    run_dir = runs[model]
    export_dir = export(run_dir / "checkpoints" / "best.ckpt", tmp_path / "export")  # in process
    description = json.loads((export_dir / "model.json").read_text())
    assert description["model"] == model
    entities = np.load(export_dir / "entities.npy")
    assert entities.dtype == np.float32
    assert entities.shape == (NUM_UMLS_ENTITIES, 2 * 32 if model in ("complex", "rotate") else 32)
    if model == "rotate":
        assert np.abs(np.load(export_dir / "relations.npy")).max() <= 4 * np.pi
    mrr = independent_test_mrr(export_dir, mirror_dataset("umls"))
    assert mrr == pytest.approx(metrics_of(run_dir)["test/mrr"], abs=1e-6)


def test_the_export_command_writes_what_export_writes(runs, tmp_path):
    best = runs["rotate"] / "checkpoints" / "best.ckpt"
    run_kgexp("export", f"ckpt={best}", f"out={tmp_path / 'command'}", cwd=tmp_path)
    export(best, tmp_path / "api")
    names = sorted(p.name for p in (tmp_path / "api").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "command").iterdir()) and len(names) == 5
    for name in names:
        assert (tmp_path / "command" / name).read_bytes() == (tmp_path / "api" / name).read_bytes(), name


def test_evaluate_reproduces_the_run_metrics(runs, tmp_path):
    run_dir = runs["complex"]
    out = tmp_path / "evaluation"
    run_kgexp(
        "evaluate", f"ckpt={run_dir / 'checkpoints' / 'best.ckpt'}", f"hydra.run.dir={out}", cwd=tmp_path
    )
    evaluated, trained = metrics_of(out), metrics_of(run_dir)
    assert set(evaluated) == set(trained)
    for key, value in trained.items():
        assert evaluated[key] == pytest.approx(value, abs=1e-9), key


# -- W&B offline run ----------------------------------------------------------------------------------
def wandb_records(path: Path) -> list[bytes]:
    """Records of a W&B transaction log (LevelDB log format: 32 KiB blocks of framed chunks)."""
    raw, block, records, pending, pos = path.read_bytes(), 32768, [], b"", 7  # 7-byte file header
    while pos + 7 <= len(raw):
        left = block - pos % block
        if left < 7:
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", raw[pos : pos + 7])
        pos += 7
        if kind == 0 and length == 0:
            pos += left - 7
            continue
        pending += raw[pos : pos + length]
        pos += length
        if kind in (1, 4):  # FULL or LAST chunk
            records.append(pending)
            pending = b""
    return records


def wandb_log(job: Path) -> list:
    """The records of a job's offline W&B run, parsed."""
    from wandb.proto import wandb_internal_pb2

    (log_file,) = job.glob("wandb/offline-run-*/run-*.wandb")
    parsed = []
    for data in wandb_records(log_file):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(data)
        parsed.append(record)
    return parsed


# -- bad input at the command line (unknown options: tests/config/test_configs.py, in process) ----------
def test_nonsense_dim_fails_before_training_naming_the_key(tmp_path):
    mirror_dataset("umls")
    result = run_kgexp("dataset=umls", "model.dim=0", f"hydra.run.dir={tmp_path}", cwd=tmp_path, check=False)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == "config error: model.dim: expected a value >= 1, got 0"
    assert "Traceback" not in result.stderr  # one line that names the key, not a stack
    assert not (tmp_path / "checkpoints").exists()


@pytest.mark.parametrize("model", ["distmult"])
def test_category_and_relation_metrics_add_up_to_the_overall_ones(runs, model):
    metrics = metrics_of(runs[model])
    categories = [c for c in ("1-1", "1-N", "N-1", "N-N") if f"test/{c}/queries" in metrics]
    assert categories
    for side in ("head/", "tail/", ""):
        total = sum(metrics[f"test/{c}/{side}queries"] for c in categories)
        weighted = sum(
            metrics[f"test/{c}/{side}mrr"] * metrics[f"test/{c}/{side}queries"] for c in categories
        )
        assert weighted / total == pytest.approx(metrics[f"test/{side}mrr"], rel=1e-9)
    with (runs[model] / "relations.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 46  # UMLS relations
    for side in ("head", "tail"):
        queries = sum(int(r[f"{side}_queries"]) for r in rows)
        weighted = sum(float(r[f"{side}_mrr"]) * int(r[f"{side}_queries"]) for r in rows if r[f"{side}_mrr"])
        assert weighted / queries == pytest.approx(metrics[f"test/{side}/mrr"], rel=1e-5)


def test_a_run_stopped_early_tests_the_best_weights_not_the_last(tmp_path):
    # Selecting the *lowest* validation MRR makes the first check the best one; early stopping with
    # patience 1 then stops the run at the second check, so "best" and "last" differ.
    run_dir = tmp_path / "early"
    overrides = [o for o in FAST if not o.startswith(("trainer.max_steps", "trainer.val_check_interval"))]
    run_kgexp(
        *overrides,
        "model=distmult",
        "callbacks=early_stopping",
        "callbacks.early_stopping.patience=1",
        "selection.mode=min",
        "trainer.max_steps=400",
        "trainer.val_check_interval=20",
        f"hydra.run.dir={run_dir}",
        cwd=tmp_path,
    )
    info = json.loads((run_dir / "run_info.json").read_text())
    assert info["global_step"] == 40  # stopped at the second check, long before max_steps
    assert info["best_checkpoint"].endswith("best.ckpt")
    with (run_dir / "csv" / "metrics.csv").open() as handle:
        checks = [float(row["val/mrr"]) for row in csv.DictReader(handle) if row.get("val/mrr")]
    first, second = checks[:2]  # the two checks during training; then the validation of the best weights
    assert second > first + 0.01
    trained = metrics_of(run_dir)
    assert trained["val/mrr"] == pytest.approx(first, abs=1e-6)
    best = run_dir / "checkpoints" / "best.ckpt"  # evaluated in process: the command is checked above
    evaluated = evaluate(compose_config(f"ckpt={best}", config_name="evaluate", output_dir=tmp_path / "eval"))
    assert trained["test/mrr"] == pytest.approx(evaluated["test/mrr"], abs=1e-9)


def analyze_in_process(ckpt: Path, out: Path) -> None:
    analyze(compose_config(f"ckpt={ckpt}", "num_queries=100", config_name="analyze", output_dir=out))


@pytest.mark.parametrize("model", MODELS)
def test_analyze_writes_its_pictures_and_tables(runs, model, tmp_path):
    out = tmp_path / "analysis"
    analyze_in_process(runs[model] / "checkpoints" / "best.ckpt", out)
    with (out / "hardness.csv").open() as handle:
        rows = {row["sampler"]: row for row in csv.DictReader(handle)}
    assert list(rows) == ["uniform", "bernoulli", "sans", "rw_sans", "nscaching", "emu", "mixup"]
    assert all(float(row["count"]) == 100 * 64 for row in rows.values())
    assert float(rows["emu"]["mean"]) > float(rows["uniform"]["mean"])  # EMU Fig. 4
    for picture in ("negative_similarity.png", "negatives_pca.png"):
        assert (out / picture).read_bytes()[:4] == b"\x89PNG"
    geometry = json.loads((out / "geometry.json").read_text())
    assert -1 <= geometry["intra_group_cosine"]["hr_tails"] <= 1


def test_the_analyze_command_writes_into_the_run_what_analyze_writes(runs, tmp_path):
    run_dir = runs["distmult"]
    run_kgexp("analyze", f"ckpt={run_dir / 'checkpoints' / 'best.ckpt'}", "num_queries=100", cwd=run_dir)
    out = run_dir / "analysis"  # the default: beside the run's checkpoints
    analyze_in_process(run_dir / "checkpoints" / "best.ckpt", tmp_path)
    tables = []
    for folder in (out, tmp_path):
        with (folder / "hardness.csv").open() as handle:
            tables.append({row.pop("sampler"): row for row in csv.DictReader(handle)})
    command, api = tables
    assert list(command) == list(api) and len(command) == 7
    for sampler, row in command.items():
        assert {k: float(v) for k, v in row.items()} == pytest.approx(
            {k: float(v) for k, v in api[sampler].items()}, rel=1e-6, abs=1e-9
        ), sampler
    geometry = [
        json.loads((folder / "geometry.json").read_text())["intra_group_cosine"] for folder in (out, tmp_path)
    ]
    assert geometry[0] == pytest.approx(geometry[1], rel=1e-6)
    assert (out / "negatives_pca.png").read_bytes()[:4] == b"\x89PNG"
    assert "intra-group cosine" in (out / "cli.log").read_text()


@pytest.fixture(scope="module")
def failing_sweep(tmp_path_factory) -> tuple[Path, str]:
    """A 4-job Nations multirun whose first two jobs fail validation, with W&B on (offline), and the
    stderr of ``kgexp report`` on it."""
    mirror_dataset("nations")
    root = tmp_path_factory.mktemp("failing")
    sweep = root / "sweep"
    result = run_kgexp(
        "-m",
        "dataset=nations",
        "model=distmult",
        "model.dim=-3,8",  # the first job fails validation
        "seed=0,1",
        "trainer.max_steps=10",
        "trainer.val_check_interval=5",
        "data.batch_size=256",
        f"hydra.sweep.dir={sweep}",
        cwd=root,
        env={"WANDB_MODE": "offline"},  # the sweep whose W&B records are checked
        check=False,
    )
    assert result.returncode == 1  # the sweep ran every job, and says that two failed
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("2 of 4 jobs failed: ") and f"{sweep / '0'}: ConfigError: model.dim" in last
    assert f"{sweep / '1'}: ConfigError" in last and f"{sweep / '2'}:" not in last
    return sweep, run_kgexp("report", str(sweep), cwd=root).stderr


def test_a_failing_job_neither_stops_nor_corrupts_the_multirun_and_the_report_lists_it(failing_sweep):
    sweep, report_log = failing_sweep
    statuses = [json.loads((sweep / str(job) / "status.json").read_text())["status"] for job in range(4)]
    assert statuses == ["failed", "failed", "finished", "finished"]
    assert "model.dim: expected a value >= 1, got -3" in (sweep / "0" / "error.txt").read_text()
    assert not (sweep / "0" / "metrics.json").exists()
    assert report_log.count("failed job not averaged in") == 2
    with (sweep / "results.csv").open() as handle:
        (row,) = list(csv.DictReader(handle))  # one group: the two finished seeds of model.dim=8
    assert (row["model.dim"], row["seeds"], row["jobs"]) == ("8", "0 1", "2")
    expected = statistics.mean(metrics_of(sweep / str(job))["test/mrr"] for job in (2, 3))
    assert float(row["test/mrr mean"]) == pytest.approx(expected, abs=1e-12)
    assert (sweep / "results.md").read_text().count("- failed: `") == 2


def test_offline_wandb_runs_of_a_sweep_share_a_group_carry_its_axes_and_hold_the_test_mrr(failing_sweep):
    sweep, _ = failing_sweep
    for job, seed in ((2, 0), (3, 1)):
        records = wandb_log(sweep / str(job))
        run = next(r.run for r in records if r.WhichOneof("record_type") == "run")
        assert run.run_group == sweep.as_posix()
        assert {"dataset=nations", "model=distmult", "sampler=uniform", f"seed={seed}"} <= set(run.tags)
        summary = {}
        for record in records:
            if record.WhichOneof("record_type") == "summary":
                updates = record.summary.update
                summary.update({u.key or "/".join(u.nested_key): json.loads(u.value_json) for u in updates})
        assert summary["test/mrr"] == pytest.approx(metrics_of(sweep / str(job))["test/mrr"], abs=1e-12)
    assert not list((sweep / "0").glob("wandb"))  # a job failing validation starts no W&B run


def test_smoke_grid_and_its_report(tmp_path):
    mirror_dataset("nations")
    sweep = tmp_path / "grid"
    run_kgexp("-m", "experiment=grid/smoke", "logger=csv", f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert len(jobs) == 8
    by_group: dict[tuple[str, str], list[float]] = {}
    for job in jobs:
        overrides = dict(
            line[2:].split("=", 1) for line in (job / ".hydra" / "overrides.yaml").read_text().splitlines()
        )
        by_group.setdefault((overrides["model"], overrides["setting"]), []).append(
            metrics_of(job)["test/mrr"]
        )
    report([str(sweep)])  # in process (the command: test_a_failing_job_...)
    with (sweep / "results.csv").open() as handle:
        rows = {(r["model"], r["setting"]): r for r in csv.DictReader(handle)}
    assert set(rows) == set(by_group) and len(rows) == 4
    for key, values in by_group.items():
        assert float(rows[key]["test/mrr mean"]) == pytest.approx(statistics.mean(values), abs=1e-12)
        assert float(rows[key]["test/mrr std"]) == pytest.approx(statistics.stdev(values), abs=1e-12)
    assert (sweep / "results.png").read_bytes()[:4] == b"\x89PNG"


TINY_SWEEP = (
    "dataset=nations",
    "logger=csv",
    "model.dim=8",
    "trainer.max_steps=10",
    "trainer.val_check_interval=5",
    "data.batch_size=256",
)


TWO_JOBS = ("model=distmult,complex",)


@pytest.fixture(scope="module")
def basic_sweep(tmp_path_factory) -> Path:
    """A two-job multirun with Hydra's basic launcher (one process, the jobs in turn)."""
    mirror_dataset("nations")
    sweep = tmp_path_factory.mktemp("basic") / "sweep"
    run_kgexp("-m", *TINY_SWEEP, *TWO_JOBS, f"hydra.sweep.dir={sweep}", cwd=sweep.parent)
    return sweep


def test_multirun_writes_one_folder_per_job(basic_sweep):
    assert (basic_sweep / "multirun.yaml").is_file()
    for job, model in enumerate(("distmult", "complex")):
        assert "test/mrr" in metrics_of(basic_sweep / str(job))
        assert f"name: {model}" in (basic_sweep / str(job) / "config.yaml").read_text()


def test_each_job_of_a_sequential_multirun_times_its_own_start_up(basic_sweep):
    first, second = (json.loads((basic_sweep / str(job) / "run_info.json").read_text()) for job in (0, 1))
    # the second job's clock starts with it, not with the process, which ran the first job before it
    assert 0 < second["startup_s"] < second["wall_time_s"]
    assert second["startup_s"] < first["wall_time_s"]


@pytest.mark.parametrize(
    "launcher", [("hydra/launcher=joblib", "hydra.launcher.n_jobs=2"), ("hydra/launcher=submitit_local",)]
)
def test_parallel_launchers_run_a_two_job_sweep_like_the_basic_launcher(launcher, basic_sweep, tmp_path):
    sweep = tmp_path / "parallel"
    run_kgexp("-m", *TINY_SWEEP, *TWO_JOBS, *launcher, f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    basic = [metrics_of(basic_sweep / str(job))["test/mrr"] for job in (0, 1)]
    parallel = [metrics_of(sweep / str(job))["test/mrr"] for job in (0, 1)]
    assert basic[0] != basic[1]  # two different jobs
    assert parallel == pytest.approx(basic, abs=1e-9)  # the same jobs, the same numbers


def test_optuna_search_runs_its_trials_and_reports_the_best_validation_mrr(tmp_path):
    import yaml

    mirror_dataset("nations")
    sweep = tmp_path / "search"
    run_kgexp(
        "-m",
        *TINY_SWEEP,
        "hparams_search=optuna",
        "hydra.sweeper.n_trials=3",
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
    )
    trials = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert len(trials) == 3
    values = [metrics_of(t)["val/mrr"] for t in trials]
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert best["best_value"] == pytest.approx(max(values), abs=1e-9)
    chosen = yaml.safe_load((trials[values.index(max(values))] / "config.yaml").read_text())
    assert chosen["optimizer"]["lr"] == pytest.approx(best["best_params"]["optimizer.lr"])
