"""The outcome of a multirun: the jobs that failed, named at the end, and a non-zero exit for them.

A failed job of a sweep records ``failed`` in its ``status.json`` and the sweep goes on (see
:func:`kgexp.commands.train.run_job`); Hydra would then exit 0. :class:`SweepOutcome`, a Hydra callback,
reads the statuses of this multirun's jobs when it ends, and :func:`failed_jobs` tells the command.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger(__name__)

#: ``{job folder: (status, error)}`` of the last multirun in this process.
_outcome: dict[Path, tuple[str, str]] = {}


def failed_jobs() -> list[tuple[Path, str]]:
    """``(job folder, error)`` of each job of the last multirun in this process that failed."""
    return [(folder, error) for folder, (status, error) in _outcome.items() if status == "failed"]


def jobs_run() -> int:
    return len(_outcome)


def read_outcome(sweep_dir: Path, since: float) -> dict[Path, tuple[str, str]]:
    """``{job folder: (status, error)}`` of the jobs under ``sweep_dir`` whose ``status.json`` was
    written after ``since`` (older ones are an earlier multirun's into the same folder)."""
    outcome = {}
    for status in sorted(sweep_dir.glob("**/status.json"), key=lambda p: (len(p.parts), str(p))):
        if status.stat().st_mtime >= since:
            record = json.loads(status.read_text())
            outcome[status.parent] = (record.get("status", "unknown"), record.get("error", ""))
    return outcome


class SweepOutcome(Callback):
    """Collects the failed jobs of a multirun (``hydra.callbacks`` in ``config.yaml``)."""

    def __init__(self) -> None:
        self.started = time.time()

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.started = time.time() - 1.0  # file times may be coarser than the clock
        _outcome.clear()

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        _outcome.update(read_outcome(Path(config.hydra.sweep.dir), self.started))
        for folder, error in failed_jobs():
            log.error("job failed: %s: %s", folder, error)
