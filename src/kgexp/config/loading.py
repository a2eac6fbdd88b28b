"""Rebuild a trained module, and its run's config, from a checkpoint file; or a predictor."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from kgexp.config.build import build_datamodule, build_module
from kgexp.evaluation.prediction import Predictor
from kgexp.runtime.checkpointing import load_checkpoint
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


def load_predictor(path: str | Path, with_known: bool = True) -> Predictor:
    """The checkpoint's model and vocabularies; with ``with_known`` its dataset's triples too, so that
    predictions can leave known triples out."""
    module, cfg = load_module(path)
    known = None
    if with_known:
        datamodule = build_datamodule(cfg)
        datamodule.setup("predict")
        graph = datamodule.graph
        known = {"train": graph.train, "all": graph.all_triples()}
    vocabulary = module.vocabulary
    return Predictor(module.model, vocabulary["entities"], vocabulary["relations"], known)
