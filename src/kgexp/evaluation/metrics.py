"""Link-prediction metrics as a torchmetrics Metric with sum states (correct under DDP reduction)."""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric

from kgexp.evaluation.ranking import Ranks
from kgexp.sides import BOTH_SIDES, Side

RANK_TYPES = ("realistic", "optimistic", "pessimistic")
HITS_AT = (1, 3, 10)
#: The summed statistics of a set of ranks: sum of 1/rank, sum of rank, hits@k counts, number of queries.
STATS = ("mrr", "mr", *(f"hits@{k}" for k in HITS_AT), "queries")
#: The metrics a paper's table reports, and those a log line shows.
REPORTED = ("mrr", *(f"hits@{k}" for k in HITS_AT))


def rank_statistics(rank: Tensor) -> Tensor:
    """``(n, len(STATS))`` float64: each rank's 1/rank, rank, hits@k indicators and 1, to be summed."""
    rank = rank.to(torch.float64)
    hits = [(rank <= k).double() for k in HITS_AT]
    return torch.stack([rank.reciprocal(), rank, *hits, torch.ones_like(rank)], 1)


class RankMetrics(Metric):
    """MRR, MR and Hits@1/3/10 for head, tail and both sides, for each rank type.

    ``compute()`` returns a flat dict named ``[side/][rank type/]metric``, where the side is omitted for
    both sides together and the rank type for realistic ranks: ``mrr``, ``head/mrr``,
    ``optimistic/hits@10``, ``tail/pessimistic/mr``.
    """

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state(
            "sums",
            default=torch.zeros(len(BOTH_SIDES), len(RANK_TYPES), len(STATS), dtype=torch.float64),
            dist_reduce_fx="sum",
        )

    def update(self, ranks: Ranks, side: Side) -> None:  # type: ignore[override]
        side_index = BOTH_SIDES.index(side)
        for type_index, name in enumerate(RANK_TYPES):
            statistics = rank_statistics(getattr(ranks, name)).to(self.sums.device)
            self.sums[side_index, type_index] += statistics.sum(0)

    def compute(self) -> dict[str, Tensor]:
        per_side = {side: self.sums[i] for i, side in enumerate(BOTH_SIDES)}
        per_side[None] = self.sums.sum(0)
        results = {}
        for key, side, type_index, stat_index in _metric_keys():
            sums = per_side[side][type_index]
            results[key] = sums[stat_index] / sums[-1].clamp_min(1)
        return results


def _metric_keys() -> list[tuple[str, Side | None, int, int]]:
    """``(name, side, rank type index, statistic index)`` of every metric :class:`RankMetrics` returns."""
    keys = []
    for side in (*BOTH_SIDES, None):
        for type_index, rank_type in enumerate(RANK_TYPES):
            prefix = "/".join(p for p in (side, None if rank_type == "realistic" else rank_type) if p)
            for stat_index, stat in enumerate(STATS[:-1]):
                keys.append((f"{prefix}/{stat}" if prefix else stat, side, type_index, stat_index))
    return keys


#: Every metric name of :class:`RankMetrics`, e.g. ``mrr``, ``head/mrr``, ``optimistic/hits@10``.
METRIC_NAMES = tuple(key for key, *_ in _metric_keys())
