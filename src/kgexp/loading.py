"""Rebuild a trained module, and its run's config, from a checkpoint file."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from kgexp.build import build_module
from kgexp.checkpointing import load_checkpoint
from kgexp.training.module import LinkPredictionModule


def load_module(path: str | Path) -> tuple[LinkPredictionModule, DictConfig]:
    """The module with the checkpoint's weights and vocabulary, and the config it was trained with."""
    checkpoint = load_checkpoint(path)
    hparams = checkpoint["hyper_parameters"]
    cfg = OmegaConf.create(hparams["config"])
    module = build_module(cfg, hparams["num_entities"], hparams["num_relations"])
    module.load_state_dict(checkpoint["state_dict"])
    module.on_load_checkpoint(checkpoint)
    module.eval()
    return module, cfg
