"""DDP on CPU (gloo, 2 processes): sharding, per-rank randomness, reduced metrics, one output folder."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import compose_config, mirror_dataset, run_kgexp
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from kgexp.commands.evaluate import evaluate
from kgexp.data.datamodule import ShardedBatches
from kgexp.runtime.distributed import SharedOutputDir, processes_per_node, rank_command
from kgexp.runtime.shards import derive_seed

# The tests of two real processes are marked slow one by one (the full tier); the rest run in process.

TESTS = Path(__file__).resolve().parents[1]
SMALL = (
    "dataset=nations",
    "model=distmult",
    "model.dim=16",
    "sampler.num_negatives=16",
    "data.batch_size=128",
    "data.eval_batch_size=64",
    "trainer.val_check_interval=10",
    "logger=csv",  # W&B would add a process per run and nothing to check
)


# -- sharding and seeds (in process) ---------------------------------------------------------------
def shards(num_rows: int, batch_size: int, shuffle: bool, world_size: int, epoch: int = 0) -> list[list[int]]:
    """Every rank's rows of one epoch, in order."""
    out = []
    for rank in range(world_size):
        per_epoch = len(ShardedBatches(num_rows, batch_size, shuffle, 3, rank, world_size))
        steps = epoch * per_epoch  # the global step at the start of ``epoch``
        sampler = ShardedBatches(num_rows, batch_size, shuffle, 3, rank, world_size, lambda s=steps: s)
        batches = list(sampler)
        assert len(batches) == len(sampler)
        assert all(0 < len(b) <= batch_size for b in batches)
        out.append(torch.cat(batches).tolist() if batches else [])
    return out


@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
@pytest.mark.parametrize("num_rows", [1, 5, 201, 1000])
def test_evaluation_shards_hold_every_query_once(num_rows, world_size):
    per_rank = shards(num_rows, 7, False, world_size)
    assert sorted(row for rows in per_rank for row in rows) == list(range(num_rows))
    sizes = [len(rows) for rows in per_rank]
    assert max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_training_shards_are_disjoint_equal_and_reshuffled_per_epoch(world_size):
    num_rows = 1001
    epochs = [shards(num_rows, 64, True, world_size, epoch) for epoch in range(3)]
    for per_rank in epochs:
        assert {len(rows) for rows in per_rank} == {num_rows // world_size}  # same number of steps
        everything = [row for rows in per_rank for row in rows]
        assert len(set(everything)) == len(everything) == num_rows - num_rows % world_size
    assert epochs[0] != epochs[1] != epochs[2]
    assert epochs[1] == shards(num_rows, 64, True, world_size, 1)  # seeded by (seed, epoch): repeatable


def test_derived_seeds_differ_across_streams_items_and_seeds():
    streams = ("data", "training")
    seeds = {derive_seed(s, stream, i) for s in range(3) for stream in streams for i in range(50)}
    assert len(seeds) == 3 * 2 * 50
    assert derive_seed(1, "data", 2) == derive_seed(1, "data", 2)


@pytest.mark.parametrize(
    ("trainer", "expected"),
    [
        ({"strategy": "ddp", "accelerator": "cpu", "devices": 2}, 2),
        ({"strategy": "ddp", "devices": "3"}, 3),
        ({"strategy": "ddp", "devices": [0, 2]}, 2),
        ({"strategy": "auto", "devices": 4}, 1),
        ({"strategy": "ddp_spawn", "devices": 2}, 1),
    ],
)
def test_processes_per_node(trainer, expected):
    assert processes_per_node(OmegaConf.create(trainer)) == expected


def test_ddp_on_cpu_needs_a_number_of_processes():
    with pytest.raises(ValueError, match=r"trainer\.devices"):
        processes_per_node(OmegaConf.create({"strategy": "ddp", "accelerator": "cpu", "devices": "auto"}))


def test_a_rank_runs_the_job_overrides_in_the_job_folder():
    folder = Path("/tmp/odd 'folder'/multirun/0")
    command = rank_command("train", ["model=rotate", "trainer.max_steps=5"], folder, 1)
    assert command[3:6] == ["train", "model=rotate", "trainer.max_steps=5"]
    parsed = {o.key_or_group: o.value() for o in OverridesParser.create().parse_overrides(command[4:])}
    assert parsed["hydra.run.dir"] == str(folder)
    assert parsed["hydra.output_subdir"] is None and parsed["hydra.job.name"] == "train_rank1"


# -- one output folder for every rank (in process: the other rank's folder is given) -----------------
def gathering(monkeypatch: pytest.MonkeyPatch, *other_ranks: str) -> list[str]:
    """``all_gather_object`` of a world where rank 0 is this process and ``other_ranks`` hold those
    folders; returns the list of what this process contributed."""
    contributed: list[str] = []

    def all_gather_object(output: list, obj: str) -> None:
        contributed.append(obj)
        output[:] = [obj, *other_ranks]

    monkeypatch.setattr(torch.distributed, "all_gather_object", all_gather_object)
    return contributed


def test_ranks_with_different_output_folders_fail_before_training_naming_both(tmp_path, monkeypatch):
    mine, theirs = tmp_path / "run", tmp_path / "outputs" / "elsewhere"
    contributed = gathering(monkeypatch, str(theirs))
    with pytest.raises(RuntimeError, match="DDP: the ranks have different output folders") as error:
        SharedOutputDir(mine).setup(SimpleNamespace(world_size=2), None, "fit")
    assert contributed == [str(mine.resolve())]
    message = str(error.value)
    assert f"({theirs}, {mine})" in message  # both folders, sorted
    assert "set hydra.run.dir to one shared folder" in message


def test_ranks_sharing_one_output_folder_pass_however_it_is_spelt(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    contributed = gathering(monkeypatch, str(tmp_path / "run"), str(tmp_path / "run"))
    SharedOutputDir(Path("sub/../run")).setup(SimpleNamespace(world_size=3), None, "fit")  # relative
    assert contributed == [str(tmp_path / "run")]


def test_a_single_process_gathers_no_folders(tmp_path, monkeypatch):
    contributed = gathering(monkeypatch, "/somewhere/else")
    SharedOutputDir(tmp_path).setup(SimpleNamespace(world_size=1), None, "fit")
    assert contributed == []  # no collective without a process group


# -- two processes on gloo, end to end -------------------------------------------------------------
@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory) -> Path:
    """EMU over NSCaching (per-rank masks and negatives, shared caches) trained with ``trainer=ddp_cpu``."""
    mirror_dataset("nations")
    run_dir = tmp_path_factory.mktemp("ddp") / "run"
    run_dir.mkdir()
    run_kgexp(
        *SMALL,
        "trainer=ddp_cpu",
        "trainer.max_steps=20",
        "sampler=emu",
        "sampler.base=nscaching",
        "+callbacks.probe._target_=probes.Probe",
        f"+callbacks.probe.out={run_dir}",
        f"hydra.run.dir={run_dir}",
        cwd=run_dir.parent,
        env={"PYTHONPATH": str(TESTS)},
    )
    return run_dir


@pytest.mark.slow
def test_a_ddp_run_writes_one_folder_of_outputs_from_rank_zero(ddp_run):
    names = {p.name for p in ddp_run.iterdir()}
    assert {"metrics.json", "run_info.json", "config.yaml", "relations.csv", "status.json"} <= names
    assert {"probe-rank0.pt", "probe-rank1.pt", "train_rank1.log", "checkpoints", ".hydra"} <= names
    assert not (ddp_run.parent / "outputs").exists()  # no rank made a run folder of its own
    assert json.loads((ddp_run / "run_info.json").read_text())["world_size"] == 2
    assert json.loads((ddp_run / "status.json").read_text())["status"] == "finished"
    assert len(list(ddp_run.rglob("metrics.json"))) == 1


@pytest.mark.slow
def test_ranks_train_on_disjoint_positives_with_different_negatives(ddp_run):
    probes = [torch.load(ddp_run / f"probe-rank{r}.pt", weights_only=False) for r in (0, 1)]
    assert [len(p["steps"]) for p in probes] == [20, 20]
    train_size = 1592  # nations train.txt
    for epoch in {e for e, _ in probes[0]["steps"]}:
        seen = [torch.cat([b for e, b in p["steps"] if e == epoch]) for p in probes]
        rows = [{tuple(t) for t in s.tolist()} for s in seen]
        assert not rows[0] & rows[1]
        if all(len(s) == train_size // 2 for s in seen):  # a complete epoch
            assert len(rows[0] | rows[1]) == train_size
    first = [p["negatives"] for p in probes]
    assert first[0].shape == first[1].shape and not torch.equal(first[0], first[1])


@pytest.mark.slow
def test_ranks_keep_identical_nscaching_caches(ddp_run):
    states = [torch.load(ddp_run / f"probe-rank{r}.pt", weights_only=False)["sampler"] for r in (0, 1)]
    assert set(states[0]) == {"head_cache", "tail_cache"}
    for key in states[0]:
        assert torch.equal(states[0][key], states[1][key])


@pytest.mark.slow
def test_ddp_evaluation_equals_single_process_evaluation(ddp_run):
    """Nations' 201 test and 199 valid queries: uneven shards, every query once."""
    best, out = ddp_run / "checkpoints" / "best.ckpt", ddp_run.parent / "evaluate-ddp"
    arguments = (f"ckpt={best}", "data.eval_batch_size=16")
    single = evaluate(compose_config(*arguments, config_name="evaluate", output_dir=out.parent / "single"))
    run_kgexp("evaluate", *arguments, "trainer=ddp_cpu", f"hydra.run.dir={out}", cwd=ddp_run.parent)
    ddp = json.loads((out / "metrics.json").read_text())
    assert set(single) == set(ddp) and "test/mrr" in single
    for key in single:
        assert ddp[key] == pytest.approx(single[key], abs=1e-6), key
    queries = {k: v for k, v in single.items() if k.startswith("test/") and k.endswith("/queries")}
    both_sides = [v for k, v in queries.items() if k.count("/") == 2]  # test/<category>/queries
    assert sum(both_sides) == 201 * 2  # every test triple once, as a head and as a tail query


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def ddp_sweep(tmp_path_factory) -> Path:
    """A 2-job multirun (seeds 0 and 1) of ``trainer=ddp_cpu`` jobs."""
    mirror_dataset("nations")
    root = tmp_path_factory.mktemp("ddp-sweep")
    run_kgexp(
        "-m", *SMALL, "trainer=ddp_cpu", "trainer.max_steps=10", "seed=0,1", "hydra.sweep.dir=sweep", cwd=root
    )
    return root


@pytest.mark.slow
def test_a_multirun_of_ddp_jobs(ddp_sweep):
    sweep = ddp_sweep / "sweep"
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir())
    assert jobs == ["0", "1"]
    metrics = [json.loads((sweep / job / "metrics.json").read_text()) for job in jobs]
    assert metrics[0]["test/mrr"] != metrics[1]["test/mrr"]
    for job in jobs:
        assert json.loads((sweep / job / "run_info.json").read_text())["world_size"] == 2
        assert (sweep / job / "train_rank1.log").is_file()
    assert not (ddp_sweep / "outputs").exists()  # no rank made a run folder of its own


@pytest.mark.slow
def test_torchrun_starting_the_ranks_gives_the_same_run(ddp_sweep):
    """torchrun starts both processes (kgexp starts none): the same metrics as kgexp's own launch."""
    run_dir = ddp_sweep / "torchrun"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        str(free_port()),
    ]
    command += ["-m", "kgexp", *SMALL, "trainer=ddp_cpu", "trainer.max_steps=10", f"hydra.run.dir={run_dir}"]
    result = subprocess.run(command, cwd=ddp_sweep, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    assert not (run_dir / "train_rank1.log").exists()
    assert json.loads((run_dir / "metrics.json").read_text()) == json.loads(
        (ddp_sweep / "sweep" / "0" / "metrics.json").read_text()
    )


@pytest.mark.slow
def test_a_failing_rank_stops_the_run_instead_of_leaving_rank_zero_waiting(tmp_path):
    """Rank 1 dies before joining the process group; rank 0 would wait 30 minutes in the rendezvous."""
    mirror_dataset("nations")
    run_dir = tmp_path / "run"
    result = run_kgexp(
        *SMALL,
        "trainer=ddp_cpu",
        "trainer.max_steps=10",
        "+callbacks.fail._target_=probes.FailOnRank",
        "+callbacks.fail.rank=1",
        f"hydra.run.dir={run_dir}",
        cwd=tmp_path,
        check=False,
        env={"PYTHONPATH": str(TESTS)},
    )
    assert result.returncode != 0
    status = json.loads((run_dir / "status.json").read_text())
    assert status["status"] == "failed" and "rank process" in status["error"]
    assert "rank 1 fails on purpose" in (run_dir / "train_rank1.log").read_text() + result.stderr
    assert not (run_dir / "metrics.json").exists()


def test_an_iteration_starts_where_the_global_step_says():
    steps = 0
    sampler = ShardedBatches(100, 8, True, seed=1, steps_done=lambda: steps)  # 13 batches an epoch
    epoch_zero, epoch_one = list(sampler), None
    steps = 13
    epoch_one = list(sampler)
    steps = 13 + 5  # resumed after 5 batches of the second epoch
    assert [b.tolist() for b in sampler] == [b.tolist() for b in epoch_one[5:]]
    assert [b.tolist() for b in epoch_zero] != [b.tolist() for b in epoch_one]
