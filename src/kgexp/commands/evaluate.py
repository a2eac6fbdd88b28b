"""``kgexp evaluate``: the filtered evaluation (valid and test) of a saved checkpoint."""

from __future__ import annotations

import logging
from pathlib import Path

import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf

from kgexp.config.build import build_datamodule
from kgexp.config.loading import load_module
from kgexp.evaluation.relations import RelationTable, write_relation_csv
from kgexp.evaluation.stages import evaluate_splits, format_metrics
from kgexp.runtime.atomic import write_json
from kgexp.runtime.distributed import local_ranks

log = logging.getLogger(__name__)


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Evaluate ``cfg.ckpt`` on its dataset and write ``metrics.json`` into ``cfg.output_dir``."""
    module, run_cfg = load_module(cfg.ckpt)
    if cfg.get("data"):
        run_cfg.data = OmegaConf.merge(run_cfg.data, cfg.data)
    datamodule = build_datamodule(run_cfg)
    output_dir = Path(cfg.output_dir)
    with local_ranks(cfg.trainer, "evaluate", output_dir):
        relations = RelationTable()
        trainer = pl.Trainer(
            **OmegaConf.to_container(cfg.trainer, resolve=True), logger=False, callbacks=[relations]
        )
        metrics = evaluate_splits(trainer, module, datamodule, None)
    if trainer.is_global_zero:
        write_json(output_dir / "metrics.json", metrics)
        write_relation_csv(output_dir / "relations.csv", relations.rows)
        log.info("test metrics: %s", format_metrics(metrics, "test/"))
    return metrics
