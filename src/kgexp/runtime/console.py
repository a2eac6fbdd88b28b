"""What a run prints: kgexp's own lines and real problems, a progress bar on a terminal (plain lines with
the rate and time left in a log), and one summary at the end. ``verbose=true`` lets the libraries speak.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.trainer.states import TrainerFn
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

log = logging.getLogger("kgexp.progress")

#: Library warnings that say nothing about the user's run (messages as regular expressions).
FOREIGN_WARNINGS = (
    r".*isinstance\(treespec, LeafSpec\)` is deprecated.*",  # Lightning's use of torch's pytree
    r".*is smaller than the logging interval.*",  # kgexp logs by step, not by epoch
    r".*does not have many workers.*",  # batches are slices of in-memory tensors: workers would slow them
)
#: Lightning's warning on a checkpoint folder with files in it: a resumed run's are its own.
RESUMED_FOLDER_WARNING = r"Checkpoint directory .* exists and is not empty"
#: Loggers whose INFO lines (devices found, checkpoints restored, tips) are the library's, not the run's.
LIBRARY_LOGGERS = ("pytorch_lightning", "lightning.pytorch", "lightning.fabric", "lightning_fabric")
#: Seconds between two plain progress lines (a log file, a multirun) when no validation printed one.
PLAIN_INTERVAL_S = 300.0


def quiet_libraries(verbose: bool) -> None:
    """Silence the libraries' informational lines and foreign warnings, unless ``verbose``."""
    if verbose:
        return
    for pattern in FOREIGN_WARNINGS:
        warnings.filterwarnings("ignore", pattern)
    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


@contextlib.contextmanager
def quiet_resume(resuming: bool, verbose: bool) -> Iterator[None]:
    """Silence :data:`RESUMED_FOLDER_WARNING` while a resumed run (``resuming``) fits, unless ``verbose``."""
    with warnings.catch_warnings():
        if resuming and not verbose:
            warnings.filterwarnings("ignore", RESUMED_FOLDER_WARNING)
        yield


class BriefFormatter(logging.Formatter):
    """``[HH:MM:SS] message`` on the console; warnings and errors keep their level."""

    def __init__(self) -> None:
        super().__init__("[%(asctime)s] %(message)s", datefmt="%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        if record.levelno >= logging.WARNING:
            return line.replace("] ", f"] {record.levelname.lower()}: ", 1)
        return line


def duration(seconds: float) -> str:
    """``1:02:03`` (hours), ``2:03`` (minutes) or ``4.5 s``."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class Progress(pl.Callback):
    """Training progress: steps/s, time left and the last validation metric.

    ``interactive`` (a terminal, not a multirun): a tqdm bar, with the log lines printed above it. Otherwise
    plain lines: one per validation with the rate and time left, and one every :data:`PLAIN_INTERVAL_S`
    between validations. ``describe`` formats the validation metrics of a line. Only global rank 0 prints.
    """

    def __init__(
        self, monitor: str, interactive: bool, describe: Callable[[Mapping[str, float]], str]
    ) -> None:
        self.monitor, self.interactive, self.describe = monitor, interactive, describe
        self.bar: tqdm | None = None
        self.redirect = contextlib.ExitStack()
        self.started, self.first_step, self.last_line = 0.0, 0, 0.0
        self.last_value: float | None = None

    def rate(self, trainer: pl.Trainer) -> float:
        elapsed = time.perf_counter() - self.started
        return (trainer.global_step - self.first_step) / elapsed if elapsed > 0 else 0.0

    def position(self, trainer: pl.Trainer) -> str:
        """``step 500/100,000 · 16.2 steps/s · 1:42:00 left``."""
        total, step, rate = trainer.max_steps, trainer.global_step, self.rate(trainer)
        if total is None or total < 0:
            return f"step {step:,} · {rate:.1f} steps/s"
        left = f" · {duration((total - step) / rate)} left" if rate > 0 else ""
        return f"step {step:,}/{total:,} · {rate:.1f} steps/s{left}"

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.started, self.first_step = time.perf_counter(), trainer.global_step
        self.last_line = self.started
        if self.interactive and trainer.is_global_zero:
            self.redirect.enter_context(logging_redirect_tqdm())
            total = trainer.max_steps if trainer.max_steps and trainer.max_steps > 0 else None
            self.bar = tqdm(
                total=total, initial=trainer.global_step, unit="step", dynamic_ncols=True, file=sys.stderr
            )

    def on_train_batch_end(self, trainer: pl.Trainer, *_: Any) -> None:
        if not trainer.is_global_zero:
            return
        if self.bar is not None:
            self.bar.update(trainer.global_step - self.bar.n)
        elif time.perf_counter() - self.last_line >= PLAIN_INTERVAL_S:
            self.last_line = time.perf_counter()
            log.info(self.position(trainer))

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != TrainerFn.FITTING or not trainer.is_global_zero:
            return
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        self.last_value = metrics.get(self.monitor)
        self.last_line = time.perf_counter()
        log.info("%s: %s", self.position(trainer), self.describe(metrics))
        if self.bar is not None and self.last_value is not None:
            self.bar.set_postfix({self.monitor: f"{self.last_value:.4f}"})

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        self.redirect.close()

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        self.on_train_end(trainer, pl_module)


#: The stages of a run's wall time, as :class:`kgexp.runtime.run_info.StageTimes` names them.
STAGES = (
    ("start-up", "startup_s"),
    ("training", "training_s"),
    ("validation", "validation_s"),
    ("test", "test_s"),
)


def summary_lines(
    results: list[str], best: str | None, output_dir: Path, wall_s: float, times: Mapping[str, float | None]
) -> list[str]:
    """The end of a run: its results (formatted lines), the checkpoint they come from, where the outputs
    are, and the wall time since the process started with its split."""
    stages = ", ".join(f"{name} {duration(times[key])}" for name, key in STAGES if times.get(key) is not None)
    return [
        *results,
        f"checkpoint: {best or 'the final weights (no validation checkpoint)'}",
        f"outputs: {output_dir} (metrics.json, config.yaml, run_info.json, relations.csv, checkpoints/)",
        f"time: {duration(wall_s)} ({stages})",
    ]
