"""What a run records beside its results: versions, commit, command line, device, wall time."""

from __future__ import annotations

import logging
import platform
import subprocess
import sys
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

import kgexp

log = logging.getLogger(__name__)


def package_version() -> str:
    try:
        return version("kgexp")
    except PackageNotFoundError:
        return "unknown"


def git_commit() -> str:
    """The commit of the kgexp source tree (with ``-dirty`` for uncommitted changes), or ``unknown``."""
    source = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=source, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=source,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit + ("-dirty" if dirty else "")


def command_line() -> str:
    program = Path(sys.argv[0]).name
    program = "python -m kgexp" if program == "__main__.py" else program
    return " ".join([program, *sys.argv[1:]])


def collect(seed: int, device: str, wall_time_s: float, **extra: Any) -> dict[str, Any]:
    return {
        "package": "kgexp",
        "version": package_version(),
        "git_commit": git_commit(),
        "command": command_line(),
        "seed": seed,
        "device": device,
        "wall_time_s": round(wall_time_s, 3),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "hostname": platform.node(),
        **extra,
    }


_jobs_begun = 0


def job_began() -> float:
    """Where a job's clock starts: the import of kgexp for a process's first job (its start-up includes
    the imports), the call for each later one (the jobs of a sequential multirun share one process)."""
    global _jobs_begun
    _jobs_begun += 1
    return kgexp.IMPORTED_AT if _jobs_begun == 1 else time.perf_counter()


class StageTimes(pl.Callback):
    """Wall time spent training, validating and testing (this process's share of a resumed run).

    ``training`` is the time in ``fit`` less its validations; ``validation`` counts every validation,
    the ones during ``fit`` and the final one of the best checkpoint; ``validations`` is their number.
    """

    def __init__(self, began: float) -> None:
        self.began = began  # :func:`job_began`
        self.seconds = {"training": 0.0, "validation": 0.0, "test": 0.0}
        self.validations = 0
        self.steps = 0
        self._started: dict[str, float] = {}
        self._validation_in_fit = 0.0
        self._first_step = 0
        self.startup_s: float | None = None  # from ``began`` to this job's first step

    def _start(self, stage: str) -> None:
        self._started[stage] = time.perf_counter()

    def _stop(self, stage: str) -> float:
        return time.perf_counter() - self._started.pop(stage)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start("fit")
        self._validation_in_fit = 0.0

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._first_step = trainer.global_step  # after a checkpoint is restored

    def on_train_batch_start(self, trainer: pl.Trainer, *_: Any) -> None:
        if self.startup_s is None:
            self.startup_s = time.perf_counter() - self.began

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.seconds["training"] += self._stop("fit") - self._validation_in_fit
        self.steps += trainer.global_step - self._first_step

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start("validation")

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        seconds = self._stop("validation")
        self.seconds["validation"] += seconds
        self.validations += 1
        if "fit" in self._started:
            self._validation_in_fit += seconds

    def on_test_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start("test")

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.seconds["test"] += self._stop("test")

    def summary(self) -> dict[str, float | int]:
        """Seconds per stage, the number of validations and training steps, and training steps/s."""
        training = self.seconds["training"]
        return {
            **{f"{stage}_s": round(value, 3) for stage, value in self.seconds.items()},
            "validations": self.validations,
            "training_steps": self.steps,
            "steps_per_s": round(self.steps / training, 3) if training > 0 else None,
        }
