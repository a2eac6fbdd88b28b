"""Checkpoints: written under a temporary name and renamed (a killed write leaves the old file intact),
loaded with clear errors, and saved when a signal stops training."""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from pytorch_lightning import Callback, LightningModule, Trainer
from pytorch_lightning.plugins.io import TorchCheckpointIO
from pytorch_lightning.utilities.exceptions import SIGTERMException

from kgexp.runtime.atomic import atomic_path

log = logging.getLogger(__name__)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's torch checkpoint IO with an atomic rename instead of an in-place write."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None
    ) -> None:
        with atomic_path(path) as tmp:
            torch.save(checkpoint, tmp)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A kgexp checkpoint on the CPU, with a clear error for a file that is not one."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"ckpt: no checkpoint file at {path}")
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    if "kgexp" not in checkpoint or "config" not in checkpoint.get("hyper_parameters", {}):
        raise ValueError(f"ckpt: {path} is not a kgexp checkpoint (no kgexp config or vocabulary in it)")
    return checkpoint


class CheckpointOnSignal(Callback):
    """On SIGTERM (SLURM pre-emption, a time limit) or SIGINT (Ctrl-C), Lightning stops at the end of the
    current step; this writes ``last.ckpt`` there, so that ``ckpt_path=last`` continues exactly."""

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        if isinstance(exception, SIGTERMException) and trainer.checkpoint_callback is not None:
            path = Path(trainer.checkpoint_callback.dirpath) / "last.ckpt"
            trainer.save_checkpoint(path)
            log.warning("stopped by a signal at step %d; saved %s", trainer.global_step, path)


@contextmanager
def sigint_as_sigterm() -> Iterator[None]:
    """Ctrl-C takes the SIGTERM path (a checkpoint at the end of the step) instead of interrupting a step."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, lambda *_: os.kill(os.getpid(), signal.SIGTERM))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
