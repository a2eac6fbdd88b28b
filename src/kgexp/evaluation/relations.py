"""Filtered metrics per relation and per relation category (1-1, 1-N, N-1, N-N), and the per-relation CSV."""

from __future__ import annotations

import csv
from pathlib import Path

import torch
from torch import Tensor
from torchmetrics import Metric

from kgexp.atomic import atomic_path
from kgexp.data.statistics import CATEGORIES
from kgexp.evaluation.metrics import HITS_AT
from kgexp.evaluation.ranking import Ranks
from kgexp.sides import BOTH_SIDES, Side

#: Per (relation, side): sum of 1/rank, sum of rank, hits@k counts, number of queries (realistic ranks).
_STATS = ("mrr", "mr", *(f"hits@{k}" for k in HITS_AT), "queries")


class RelationRankMetrics(Metric):
    """Sums of realistic-rank statistics per relation and side; DDP reduces them by summing."""

    full_state_update = False

    def __init__(self, num_relations: int) -> None:
        super().__init__()
        shape = (num_relations, len(BOTH_SIDES), len(_STATS))
        self.add_state("sums", default=torch.zeros(shape, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, ranks: Ranks, relations: Tensor, side: Side) -> None:  # type: ignore[override]
        rank = ranks.realistic.to(self.sums.device, torch.float64)
        columns = [rank.reciprocal(), rank, *((rank <= k).double() for k in HITS_AT), torch.ones_like(rank)]
        self.sums[:, BOTH_SIDES.index(side)].index_add_(
            0, relations.to(self.sums.device), torch.stack(columns, 1)
        )

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
            for stat_index, stat in enumerate(_STATS[:-1]):
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
            row[f"{side}_hits@10"] = round(float(stats[_STATS.index("hits@10")]) / count, 6) if count else ""
        rows.append(row)
    return rows


def write_relation_csv(path: Path, rows: list[dict[str, object]]) -> None:
    """Write the per-relation table atomically."""
    with atomic_path(path) as tmp, tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]) if rows else ["relation"])
        writer.writeheader()
        writer.writerows(rows)
