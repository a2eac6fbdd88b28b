"""Checkpoints written under a temporary name and renamed, so a killed write leaves the old file intact."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from pytorch_lightning.plugins.io import TorchCheckpointIO

from kgexp.atomic import atomic_path


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
