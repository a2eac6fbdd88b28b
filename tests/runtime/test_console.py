"""What a run prints: kgexp's own lines once, a progress bar on a terminal, one-line errors."""

from __future__ import annotations

import fcntl
import logging
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import mirror_dataset, run_kgexp

from kgexp.runtime.console import BriefFormatter, Progress, duration, summary_lines

#: Lines other libraries printed on every run before the console was quieted.
FOREIGN = (
    "Tip:",
    "litlogger",
    "anonymous setting",
    "LeafSpec",
    "logging interval",
    "GPU available",
    "TPU available",
    "no last checkpoint available",
)
TINY = (
    "dataset=nations",
    "model.dim=8",
    "trainer.max_steps=40",
    "trainer.val_check_interval=20",
    "data.batch_size=256",
)


@pytest.mark.parametrize(
    ("seconds", "text"), [(4.46, "4.5 s"), (59.9, "59.9 s"), (60, "1:00"), (123.4, "2:03"), (3723, "1:02:03")]
)
def test_durations_read_as_a_clock(seconds, text):
    assert duration(seconds) == text


def test_the_console_format_keeps_the_level_of_warnings_only():
    formatter = BriefFormatter()
    info = logging.LogRecord("kgexp", logging.INFO, __file__, 1, "step 5", None, None)
    warning = logging.LogRecord("kgexp", logging.WARNING, __file__, 1, "no checkpoint", None, None)
    assert re.fullmatch(r"\[\d\d:\d\d:\d\d\] step 5", formatter.format(info))
    assert re.fullmatch(r"\[\d\d:\d\d:\d\d\] warning: no checkpoint", formatter.format(warning))


def test_progress_gives_the_rate_and_the_time_left(monkeypatch):
    progress = Progress("val/mrr", interactive=False, describe=str)
    progress.started, progress.first_step = 100.0, 1000
    monkeypatch.setattr("time.perf_counter", lambda: 150.0)  # 50 s for 500 steps: 10 steps/s
    trainer = SimpleNamespace(global_step=1500, max_steps=4000)
    assert progress.position(trainer) == "step 1,500/4,000 · 10.0 steps/s · 4:10 left"
    assert progress.position(SimpleNamespace(global_step=1500, max_steps=-1)) == "step 1,500 · 10.0 steps/s"


def test_the_summary_names_the_results_checkpoint_outputs_and_time_split():
    times = {"startup_s": 12.0, "training_s": 3600.0, "validation_s": 90.5, "test_s": None}
    lines = summary_lines(["test/mrr=0.3000"], None, Path("out"), 3703.0, times)
    assert lines[0] == "test/mrr=0.3000"
    assert lines[1] == "checkpoint: the final weights (no validation checkpoint)"
    assert lines[2].startswith("outputs: out (metrics.json")
    assert lines[3] == "time: 1:01:43 (start-up 12.0 s, training 1:00:00, validation 1:30)"


def timeless(text: str) -> list[str]:
    return [re.sub(r"^\[\d\d:\d\d:\d\d\] ", "", line) for line in text.splitlines() if line.strip()]


@pytest.mark.slow
def test_a_short_run_prints_only_its_own_lines_each_once(tmp_path):
    # ckpt_path=last on a fresh run (how long runs are started) is a fresh start, without a warning
    result = run_kgexp(
        *TINY,
        f"hydra.run.dir={tmp_path / 'run'}",
        "ckpt_path=last",
        cwd=tmp_path,
        env={"WANDB_MODE": "offline"},
    )
    lines = timeless(result.stdout + result.stderr)
    assert not [line for line in lines if any(noise in line for noise in FOREIGN)], lines
    assert len(lines) == len(set(lines)), lines  # the dataset, the last validation: once each
    assert sum("nations: 14 entities" in line for line in lines) == 1
    steps = [line.split(" · ")[0] for line in lines if re.match(r"step \d", line)]
    assert steps == ["step 20/40", "step 20: switched to a fresh adam at lr=0.005", "step 40/40"]
    assert lines[-5].startswith("test/mrr=") and lines[-4].startswith("val/mrr=")
    assert lines[-3] == f"checkpoint: {tmp_path / 'run' / 'checkpoints' / 'best.ckpt'}"
    assert lines[-2].startswith(f"outputs: {tmp_path / 'run'} (metrics.json, config.yaml")
    assert lines[-1].startswith("time: ")


@pytest.mark.slow
def test_a_terminal_gets_a_progress_bar(tmp_path):
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))  # 40 rows, 120 columns
    process = subprocess.Popen(
        [sys.executable, "-m", "kgexp", *TINY, "logger=csv", f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=tmp_path,
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        env=os.environ,
    )
    os.close(terminal)
    chunks = []
    while True:
        try:
            chunk = os.read(controller, 4096)
        except OSError:  # the terminal closed with the process
            break
        if not chunk:
            break
        chunks.append(chunk)
    assert process.wait(timeout=600) == 0
    screen = b"".join(chunks).decode(errors="replace")
    assert re.search(r"\d+%\|.*\| 40/40 \[.*step/s", screen), screen[-2000:]
    assert "val/mrr=0." in screen


@pytest.fixture
def broken_dataset(tmp_path):
    """A copy of Nations whose train.txt has a two-field line 3, and one without test.txt."""
    source = mirror_dataset("nations")
    bad = tmp_path / "bad"
    bad.mkdir()
    lines = (source / "train.txt").read_text().splitlines()
    lines[2] = "only\ttwo"
    (bad / "train.txt").write_text("\n".join(lines) + "\n")
    for split in ("valid", "test"):
        (bad / f"{split}.txt").write_text((source / f"{split}.txt").read_text())
    missing = tmp_path / "missing"
    missing.mkdir()
    for split in ("train", "valid"):
        (missing / f"{split}.txt").write_text((source / f"{split}.txt").read_text())
    return bad, missing


@pytest.mark.slow
def test_each_bad_input_is_one_line_without_a_traceback(tmp_path, broken_dataset):
    bad, missing = broken_dataset
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"this is not a checkpoint\n")
    crafted = tmp_path / "crafted.ckpt"
    torch.save({"kgexp": {}, "hyper_parameters": {"config": {}}, "call": print}, crafted)
    cases = [
        (["dataset=custom", f"dataset.path={bad}"], rf"^error: {bad / 'train.txt'}:3: expected"),
        (["dataset=custom", f"dataset.path={missing}"], rf"^error: dataset.path: {missing} must hold"),
        (["evaluate", f"ckpt={tmp_path / 'none.ckpt'}"], rf"^error: ckpt: no checkpoint file at {tmp_path}"),
        (["evaluate", f"ckpt={garbage}"], rf"^error: ckpt: {garbage} is not a readable checkpoint"),
        (
            ["evaluate", f"ckpt={crafted}"],
            rf"^error: ckpt: {crafted} is not a checkpoint kgexp can load safely",
        ),
        (["model.dim=0"], r"^config error: model\.dim: expected a value >= 1, got 0$"),
    ]
    for args, expected in cases:
        result = run_kgexp(
            *args,
            *([] if args[0] == "evaluate" else ["logger=csv"]),
            f"hydra.run.dir={tmp_path / 'out'}",
            cwd=tmp_path,
            check=False,
        )
        assert result.returncode == 1, (args, result.stderr[-3000:])
        assert "Traceback" not in result.stderr and "HYDRA_FULL_ERROR" not in result.stderr, result.stderr
        assert re.search(expected, result.stderr.strip().splitlines()[-1]), (args, result.stderr[-1000:])
