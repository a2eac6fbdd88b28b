"""Lightning callbacks that tests add to real runs: record what each rank trained on, fail, or die."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
import torch


class Probe(pl.Callback):
    """Saves ``probe-rank<r>.pt`` in ``out``: per step the epoch and positives, the first step's negatives,
    and the sampler's final state."""

    def __init__(self, out: str):
        self.out, self.steps, self.negatives = Path(out), [], None

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        corrupt = pl_module.negatives.corrupt

        def recording(*args, **kwargs):
            corruptions = corrupt(*args, **kwargs)
            if self.negatives is None:
                self.negatives = torch.cat([c.negatives for c in corruptions]).clone()
            return corruptions

        pl_module.negatives.corrupt = recording

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.steps.append((trainer.current_epoch, batch[0].clone()))

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        state = pl_module.negatives.sampler.state_dict()
        record = {"steps": self.steps, "negatives": self.negatives, "sampler": state}
        torch.save(record, self.out / f"probe-rank{trainer.global_rank}.pt")


class FailOnRank(pl.Callback):
    """Raises in the process of local rank ``rank``, before its trainer starts (a crashing rank)."""

    def __init__(self, rank: int):
        if int(os.environ.get("LOCAL_RANK", "0")) == rank:
            raise RuntimeError(f"rank {rank} fails on purpose")


class KillAt(pl.Callback):
    """Sends ``signal`` to its own process after training step ``step`` (when ``KGEXP_TEST_KILL`` is set)."""

    def __init__(self, step: int, signal: int):
        self.step, self.signal = step, signal

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step and os.environ.get("KGEXP_TEST_KILL"):
            os.kill(os.getpid(), self.signal)


def count_calls_of(
    monkeypatch: pytest.MonkeyPatch, calls: Counter, name: str, owner: object, attribute: str
) -> None:
    """Replace ``owner.attribute`` by a wrapper that counts its calls in ``calls[name]``."""
    function = getattr(owner, attribute)

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls[name] += 1
        return function(*args, **kwargs)

    monkeypatch.setattr(owner, attribute, counted)
