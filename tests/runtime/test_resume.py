"""Exact resume: a run killed (SIGKILL) or stopped (SIGTERM, SIGINT) and resumed ends as if uninterrupted."""

from __future__ import annotations

import csv
import json
import shutil
import signal
from pathlib import Path

import pytest
import torch
from conftest import mirror_dataset, run_kgexp

pytestmark = pytest.mark.slow  # subprocesses of the real command: the full tier only

TESTS = Path(__file__).resolve().parents[1]
RUN = (
    "dataset=nations",
    "model=distmult",
    "model.dim=16",
    "sampler=emu",  # random masks as well as random negatives
    "sampler.num_negatives=16",
    "data.batch_size=128",
    "trainer.max_steps=40",
    "trainer.val_check_interval=10",
    "trainer.log_every_n_steps=3",  # training rows in metrics.csv before and after the checkpoint
    "callbacks.periodic_checkpoint.every_n_train_steps=5",
    "logger=csv",  # W&B would add a process per run and nothing to check
    "+callbacks.kill._target_=probes.KillAt",
    "+callbacks.kill.step=23",
)


def run(run_dir: Path, *extra: str, kill: bool = False, check: bool = True):
    env = {"PYTHONPATH": str(TESTS), **({"KGEXP_TEST_KILL": "1"} if kill else {})}
    return run_kgexp(*RUN, *extra, f"hydra.run.dir={run_dir}", cwd=run_dir.parent, env=env, check=check)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    mirror_dataset("nations")
    run_dir = tmp_path_factory.mktemp("resume") / "straight"
    run(run_dir, "+callbacks.kill.signal=9")
    return run_dir


def csv_rows(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "csv" / "metrics.csv").open(newline="") as file:
        return list(csv.DictReader(file))


@pytest.mark.parametrize(
    ("signum", "saved_step"),
    [(signal.SIGKILL, 20), (signal.SIGTERM, 23), (signal.SIGINT, 23)],  # SIGKILL: the step-20 checkpoint
)
def test_a_stopped_run_resumed_with_ckpt_path_last_ends_as_the_uninterrupted_run(
    uninterrupted, tmp_path, signum, saved_step
):
    run_dir = tmp_path / "run"
    stopped = run(run_dir, f"+callbacks.kill.signal={int(signum)}", kill=True, check=False)
    assert stopped.returncode != 0
    assert not (run_dir / "metrics.json").exists()
    status = json.loads((run_dir / "status.json").read_text())["status"]
    assert status == ("running" if signum == signal.SIGKILL else "interrupted")
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    assert last["global_step"] == saved_step
    assert not list((run_dir / "checkpoints").glob(".*.part"))  # no half-written checkpoint left

    console = run(run_dir, f"+callbacks.kill.signal={int(signum)}", "ckpt_path=last")
    assert "is not empty" not in console.stdout + console.stderr  # the checkpoints there are its own
    resumed = json.loads((run_dir / "metrics.json").read_text())
    assert resumed == json.loads((uninterrupted / "metrics.json").read_text())  # bit-identical on CPU
    # the logged history too: the stopped run's rows before its checkpoint, then the resumed run's
    assert csv_rows(run_dir) == csv_rows(uninterrupted)
    assert json.loads((run_dir / "status.json").read_text())["status"] == "finished"
    resumed_from = Path(json.loads((run_dir / "run_info.json").read_text())["resumed_from"])
    assert resumed_from.resolve() == (run_dir / "checkpoints" / "last.ckpt").resolve()


def test_a_stopped_run_moved_with_only_its_checkpoints_and_csv_ends_as_the_uninterrupted_run(
    uninterrupted, tmp_path
):
    """A run copied to another machine as its checkpoints and metrics.csv alone continues exactly."""
    run_dir = tmp_path / "run"
    run(run_dir, f"+callbacks.kill.signal={int(signal.SIGTERM)}", kill=True, check=False)
    kept = tmp_path / "kept"
    shutil.copytree(run_dir / "checkpoints", kept / "checkpoints")
    (kept / "csv").mkdir()
    shutil.copy(run_dir / "csv" / "metrics.csv", kept / "csv")
    shutil.rmtree(run_dir)  # the new machine: nothing else of the old job folder
    shutil.copytree(kept, run_dir)

    run(run_dir, f"+callbacks.kill.signal={int(signal.SIGTERM)}", "ckpt_path=last")
    assert json.loads((run_dir / "metrics.json").read_text()) == json.loads(
        (uninterrupted / "metrics.json").read_text()
    )
    assert csv_rows(run_dir) == csv_rows(uninterrupted)


def test_a_finished_run_started_again_with_ckpt_path_last_keeps_its_results(uninterrupted, tmp_path):
    """The same command continues a sweep: its finished jobs stand, unless given more steps."""
    outputs = ("metrics.json", "run_info.json", "relations.csv", "csv/metrics.csv")
    before = {name: (uninterrupted / name).read_bytes() for name in outputs}
    longer = tmp_path / "longer"
    shutil.copytree(uninterrupted, longer)
    run(uninterrupted, "+callbacks.kill.signal=9", "ckpt_path=last")
    assert {name: (uninterrupted / name).read_bytes() for name in outputs} == before
    assert "finished at step 40; its metrics stand" in (uninterrupted / "cli.log").read_text()
    assert json.loads((uninterrupted / "status.json").read_text())["status"] == "finished"

    run(longer, "+callbacks.kill.signal=9", "ckpt_path=last", "trainer.max_steps=50")
    assert json.loads((longer / "run_info.json").read_text())["global_step"] == 50
    assert max(int(row["step"]) for row in csv_rows(longer)) >= 49  # and it logged them


def test_a_ddp_run_stopped_by_sigterm_resumes_exactly(tmp_path):
    """Two processes: both ranks' generators come back from the checkpoint."""
    mirror_dataset("nations")
    straight, stopped = tmp_path / "straight", tmp_path / "run"
    ddp = ("trainer=ddp_cpu", f"+callbacks.kill.signal={int(signal.SIGTERM)}")
    run(straight, *ddp)
    assert run(stopped, *ddp, kill=True, check=False).returncode == 128 + signal.SIGTERM
    assert torch.load(stopped / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 23
    assert (
        len(torch.load(stopped / "checkpoints" / "last.ckpt", weights_only=False)["kgexp"]["generators"]) == 2
    )
    run(stopped, *ddp, "ckpt_path=last")
    assert json.loads((stopped / "metrics.json").read_text()) == json.loads(
        (straight / "metrics.json").read_text()
    )
