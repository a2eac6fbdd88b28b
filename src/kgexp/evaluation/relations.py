"""Filtered metrics per relation and per relation category (1-1, 1-N, N-1, N-N), and the per-relation CSV."""

from __future__ import annotations

import csv
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch import Tensor
from torchmetrics import Metric

from kgexp.data.statistics import CATEGORIES, categorize, relation_cardinalities
from kgexp.evaluation.metrics import STATS, rank_statistics
from kgexp.evaluation.ranking import Ranks
from kgexp.runtime.atomic import atomic_path
from kgexp.sides import BOTH_SIDES, Side


class RelationRankMetrics(Metric):
    """Sums of realistic-rank statistics (:data:`STATS`) per relation and side; DDP sums them."""

    full_state_update = False

    def __init__(self, num_relations: int) -> None:
        super().__init__()
        shape = (num_relations, len(BOTH_SIDES), len(STATS))
        self.add_state("sums", default=torch.zeros(shape, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, ranks: Ranks, relations: Tensor, side: Side) -> None:  # type: ignore[override]
        statistics = rank_statistics(ranks.realistic).to(self.sums.device)
        self.sums[:, BOTH_SIDES.index(side)].index_add_(0, relations.to(self.sums.device), statistics)

    def compute(self) -> Tensor:
        """The summed statistics ``(relations, sides, stats)``."""
        return self.sums


def category_metrics(sums: Tensor, categories: Tensor) -> dict[str, Tensor]:
    """``{category}/{side}/{stat}`` and ``{category}/{stat}`` (both sides) for the categories present,
    with ``queries`` the number of test queries behind each."""
    results = {}
    for index, name in enumerate(CATEGORIES):
        group = sums[categories.to(sums.device) == index].sum(0)  # (sides, stats)
        if group[:, -1].sum() == 0:
            continue
        for side, row in [*zip(BOTH_SIDES, group, strict=True), (None, group.sum(0))]:
            prefix = f"{name}/{side}" if side else name
            count = row[-1]
            for stat_index, stat in enumerate(STATS[:-1]):
                results[f"{prefix}/{stat}"] = row[stat_index] / count.clamp_min(1)
            results[f"{prefix}/queries"] = count
    return results


def relation_rows(
    sums: Tensor, categories: Tensor, train_counts: Tensor, tph: Tensor, hpt: Tensor, labels: list[str]
) -> list[dict[str, object]]:
    """One row per relation: category, training statistics, test queries, MRR and Hits@10 per side."""
    rows = []
    for relation, label in enumerate(labels):
        row: dict[str, object] = {
            "relation": label,
            "category": CATEGORIES[int(categories[relation])],
            "train_triples": int(train_counts[relation]),
            "tails_per_head": round(float(tph[relation]), 4),
            "heads_per_tail": round(float(hpt[relation]), 4),
        }
        for side_index, side in enumerate(BOTH_SIDES):
            stats = sums[relation, side_index]
            count = float(stats[-1])
            row[f"{side}_queries"] = int(count)
            row[f"{side}_mrr"] = round(float(stats[0]) / count, 6) if count else ""
            row[f"{side}_hits@10"] = round(float(stats[STATS.index("hits@10")]) / count, 6) if count else ""
        rows.append(row)
    return rows


def write_relation_csv(path: Path, rows: list[dict[str, object]]) -> None:
    """Write the per-relation table atomically."""
    with atomic_path(path) as tmp, tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]) if rows else ["relation"])
        writer.writeheader()
        writer.writerows(rows)


class RelationTable(pl.Callback):
    """Test metrics per relation category, logged as ``test/{category}/...``, and the per-relation table
    of the last test, ``rows`` (for ``relations.csv``). Reads the ranks that ``test_step`` returns,
    ``{side: Ranks}``, with the batch's triples."""

    def __init__(self) -> None:
        self.rows: list[dict[str, object]] = []
        self._metric: RelationRankMetrics | None = None
        self._train: Tensor | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        graph = trainer.datamodule.graph
        if self._train is not graph.train:  # setup runs for fit, validate and test: once per graph
            self._train, self._labels = graph.train, graph.relations
            self._statistics = relation_cardinalities(graph.train, graph.num_relations)
            self._categories = categorize(*self._statistics[1:])
            self._metric = RelationRankMetrics(graph.num_relations)

    def on_test_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._metric.to(pl_module.device).reset()

    def on_test_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: dict, batch: Tensor, *_: object
    ) -> None:
        for side, ranks in outputs.items():
            self._metric.update(ranks, batch[:, 1], side)

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        sums = self._metric.compute()  # summed over ranks under DDP
        by_category = category_metrics(sums, self._categories)
        pl_module.log_dict({f"test/{k}": v for k, v in by_category.items()})
        self.rows = relation_rows(sums, self._categories, *self._statistics, self._labels)
