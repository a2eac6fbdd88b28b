"""Checkpoints: written under a temporary name and renamed (a killed write leaves the old file intact),
loaded safely with clear errors, and saved when a signal stops training.

A checkpoint is data someone may have sent you, so every load (``kgexp evaluate``, ``predict``,
``export``, ``analyze`` and Lightning's resume) uses ``torch.load(weights_only=True)``: tensors,
containers and primitives only, never a pickled callable. kgexp stores nothing else.
"""

from __future__ import annotations

import logging
import os
import pickle
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

from kgexp.errors import MissingFileError, UserError
from kgexp.runtime.atomic import atomic_path

log = logging.getLogger(__name__)

#: The layout of kgexp's part of a checkpoint (``checkpoint["kgexp"]``); checkpoints without one are 1.
FORMAT = 1


class CheckpointError(UserError, ValueError):
    """A file that is not a readable kgexp checkpoint of a format this version reads."""


def read_checkpoint(path: str | Path, key: str = "ckpt", mmap: bool = False) -> dict[str, Any]:
    """``torch.load(path, weights_only=True)`` on the CPU; an unreadable file is a one-line error. With
    ``mmap`` the tensors are mapped, not read: for a look at the config only."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise MissingFileError(f"{key}: no checkpoint file at {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as error:  # weights_only refused a type, or the pickle is malformed
        reason = str(error).strip().splitlines()[0]
        raise CheckpointError(f"{key}: {path} is not a checkpoint kgexp can load safely ({reason})") from None
    except Exception as error:  # truncated, corrupt, or not a torch file at all (any unpickler error)
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(f"{key}: {path} is not a readable checkpoint ({reason})") from None


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's torch checkpoint IO with an atomic rename instead of an in-place write."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None
    ) -> None:
        with atomic_path(path) as tmp:
            torch.save(checkpoint, tmp)

    def load_checkpoint(self, path: str | Path, map_location: Any = None, weights_only: bool | None = None):
        """Lightning's resume: the same safe load and checks as :func:`load_checkpoint`."""
        return load_checkpoint(path, key="ckpt_path")


def load_checkpoint(path: str | Path, key: str = "ckpt", mmap: bool = False) -> dict[str, Any]:
    """A kgexp checkpoint on the CPU, with a clear error for a file that is not one or is too new."""
    checkpoint = read_checkpoint(path, key, mmap)
    if (
        not isinstance(checkpoint, dict)
        or "kgexp" not in checkpoint
        or "config" not in checkpoint.get("hyper_parameters", {})
    ):
        raise CheckpointError(
            f"{key}: {path} is not a kgexp checkpoint (no kgexp config or vocabulary in it)"
        )
    written = checkpoint["kgexp"].get("format", 1)
    if written > FORMAT:
        version = checkpoint["kgexp"].get("version", "a newer version")
        raise CheckpointError(
            f"{key}: {path} was written by kgexp {version} (checkpoint format {written}); "
            f"this kgexp reads format {FORMAT} and older: upgrade kgexp to load it"
        )
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
