"""The benchmark harness on a tiny configuration: it runs, and its figures are consistent."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from scripts import BENCH, load_bench_script

pytestmark = pytest.mark.slow  # subprocesses of the real command: the full tier only

HARNESS = BENCH / "speed.py"
TINY = ["--dataset", "nations", "--dim", "8", "--negatives", "4", "--batch", "64", "--repeats", "1"]


def run(*args: str) -> str:
    out = subprocess.run([sys.executable, str(HARNESS), *args], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def table_rows(output: str) -> list[list[str]]:
    lines = [line for line in output.splitlines() if line.startswith("| ") and not line.startswith("| model")]
    lines = [line for line in lines if not line.startswith("| dataset")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]


def test_training_throughput_of_kgexp_with_plain_and_shared_negatives():
    rows = []
    for shared in ("0", "16"):
        output = run(
            "train",
            "--frameworks",
            "kgexp",
            "--models",
            "distmult",
            "rotate",
            "--steps",
            "2",
            "--warmup",
            "1",
            "--shared",
            shared,
            *TINY,
        )
        rows += table_rows(output)
    assert [(row[0], row[3]) for row in rows] == [
        ("distmult", "-"),
        ("rotate", "-"),
        ("distmult", "16"),
        ("rotate", "16"),
    ]
    for row in rows:
        step_s, steps_per_s, positives_per_s = float(row[4]), float(row[5]), float(row[6].replace(",", ""))
        assert step_s > 0
        assert abs(steps_per_s - 1 / step_s) <= 0.0005 / step_s * steps_per_s + 0.01  # step_s has 3 decimals
        assert abs(positives_per_s - 64 * steps_per_s) <= 0.01 * 64 + 1  # B positives per step


def test_filtered_evaluation_time_of_kgexp():
    output = run("eval", "--frameworks", "kgexp", "--models", "distmult", *TINY)
    (row,) = table_rows(output)
    assert row[:3] == ["nations", "distmult", str(2 * 201)]  # Nations: 201 test triples, both sides
    seconds, per_second = float(row[3]), float(row[4].replace(",", ""))
    assert abs(per_second - 402 / seconds) <= 0.005 / seconds * per_second + 1  # seconds has 2 decimals
    assert re.fullmatch(r"[\d.]+", row[7])  # the matmul FLOP time of a bilinear model


def test_recipe_steps_per_second_come_from_training_time_when_recorded(monkeypatch):
    """Two fake runs of 30 and 230 steps: by hand, (230 - 30) / (training 25 s - 5 s) = 10 steps/s,
    whatever their wall times (a pruned validation may be shorter in the long run); a tree that does
    not record the split falls back to the wall times, (230 - 30) / (60 s - 20 s) = 5 steps/s."""
    speed = load_bench_script("speed")
    timed = {
        30: {"wall_time_s": 20.0, "startup_s": 12.0, "time": {"training_s": 5.0}},
        230: {
            "wall_time_s": 60.0,
            "startup_s": 13.0,
            "time": {"training_s": 25.0, "validation_s": 9.0, "validations": 3, "test_s": 4.0},
        },
    }
    monkeypatch.setattr(speed, "cli_run", lambda source, overrides, steps, out: timed[steps])
    result = speed.recipe_measure(Path("."), "distmult", "uniform", 30, 230)
    assert result == {"steps_per_s": 10.0, "startup_s": 13.0, "validation_s": 3.0, "test_s": 4.0}
    untimed = {steps: {"wall_time_s": run["wall_time_s"]} for steps, run in timed.items()}
    monkeypatch.setattr(speed, "cli_run", lambda source, overrides, steps, out: untimed[steps])
    assert speed.recipe_measure(Path("."), "distmult", "uniform", 30, 230) == {"steps_per_s": 5.0}


def test_source_trees_run_in_alternation_build_their_kernels_in_their_own_folders(monkeypatch, tmp_path):
    """The before and after trees get TORCH_EXTENSIONS_DIR/<tree>: neither rebuilds the other's kernels."""
    speed = load_bench_script("speed")
    folders = []

    def fake_run(command, env, cwd, capture_output, text):
        folders.append((Path(cwd).name, env["TORCH_EXTENSIONS_DIR"]))
        out = Path(command[-1].removeprefix("hydra.run.dir="))
        out.mkdir(parents=True)
        (out / "run_info.json").write_text("{}")
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "ext"))
    monkeypatch.setattr(speed.subprocess, "run", fake_run)
    for tree in ("before", "after", "before"):
        speed.cli_run(tmp_path / tree, [], 30, tmp_path / "runs" / str(len(folders)))
    expected = [(tree, str(tmp_path / "ext" / tree)) for tree in ("before", "after", "before")]
    assert folders == expected
