"""Validation and test of a LightningModule through a Trainer, and their metrics as one log line."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pytorch_lightning as pl

from kgexp.evaluation.metrics import STATS


def evaluate_splits(
    trainer: pl.Trainer, module: pl.LightningModule, datamodule: pl.LightningDataModule, ckpt_path: str | None
) -> dict[str, float]:
    """Validation and test metrics of ``ckpt_path`` (the module's weights when None), reduced over ranks."""
    metrics: dict[str, float] = {}
    for stage in (trainer.validate, trainer.test):
        for result in stage(module, datamodule=datamodule, ckpt_path=ckpt_path, verbose=False):
            metrics.update({k: float(v) for k, v in result.items()})
    return metrics


def format_metrics(metrics: Mapping[str, float], prefix: str, names: Sequence[str] = STATS[:-1]) -> str:
    """``test/mrr=0.3120  test/mr=…``: the metrics ``names`` under ``prefix`` that ``metrics`` has."""
    return "  ".join(f"{prefix}{k}={float(metrics[prefix + k]):.4f}" for k in names if prefix + k in metrics)
