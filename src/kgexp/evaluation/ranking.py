"""Filtered ranks of the true entity among all entities, with explicit tie handling."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from kgexp import kernels
from kgexp.data.filter_index import FilterIndex
from kgexp.models.base import KGEModel
from kgexp.sides import Side, split_query

#: Upper bound on the elements of one (queries x entities) score block.
DEFAULT_SCORE_BLOCK = 1 << 24


@dataclass
class Ranks:
    """Optimistic (1 + #strictly better) and pessimistic (#better or equal, the target included) ranks."""

    optimistic: Tensor
    pessimistic: Tensor

    @property
    def realistic(self) -> Tensor:
        return (self.optimistic + self.pessimistic) / 2


def ranks_from_scores(scores: Tensor, targets: Tensor, filter_rows: Tensor, filter_cols: Tensor) -> Ranks:
    """Ranks of ``targets`` in ``scores`` ``(B, E)``, ignoring known answers ``(filter_rows, filter_cols)``.

    The target itself may appear among the known answers; it is never filtered. NaN scores count as
    better than the target, so a broken model cannot look good. On the CPU (float32) one fused pass
    counts both ranks; elsewhere :func:`rank_counts_with_tensor_ops` does.
    """
    if kernels.usable(scores):
        greater, greater_equal = kernels.rank_counts(scores, targets, filter_rows, filter_cols)
    else:
        greater, greater_equal = rank_counts_with_tensor_ops(scores, targets, filter_rows, filter_cols)
    return Ranks(optimistic=(greater + 1).double(), pessimistic=greater_equal.double())


def rank_counts_with_tensor_ops(
    scores: Tensor, targets: Tensor, filter_rows: Tensor, filter_cols: Tensor
) -> tuple[Tensor, Tensor]:
    """Candidates better than the target, and better or equal (the target included), per row."""
    target_scores = scores.gather(1, targets.unsqueeze(1))
    better = scores > target_scores
    tied = scores == target_scores
    if scores.is_floating_point():
        better |= torch.isnan(scores) | torch.isnan(target_scores)
    target_column = targets.unsqueeze(1)
    better.scatter_(1, target_column, False)  # the target is tied with itself, even when its score is NaN
    tied.scatter_(1, target_column, True)
    greater = better.sum(1)
    greater_equal = greater + tied.sum(1)
    if len(filter_rows):
        other = filter_cols != targets[filter_rows]
        rows, cols = filter_rows[other], filter_cols[other]
        greater = greater - torch.zeros_like(greater).index_add_(0, rows, better[rows, cols].long())
        greater_equal = greater_equal - torch.zeros_like(greater).index_add_(
            0, rows, (better[rows, cols] | tied[rows, cols]).long()
        )
    return greater, greater_equal


@torch.no_grad()
def rank_queries(
    model: KGEModel,
    triples: Tensor,
    side: Side,
    filter_index: FilterIndex,
    block_elements: int = DEFAULT_SCORE_BLOCK,
) -> Ranks:
    """Filtered ranks of the ``side`` entity of each triple, scoring all entities in query chunks."""
    anchors, relations, targets = split_query(triples, side)
    chunk = max(1, block_elements // max(1, model.num_entities))
    optimistic, pessimistic = [], []
    for start in range(0, len(triples), chunk):
        stop = start + chunk
        rows, cols = filter_index[side].answer_pairs(anchors[start:stop], relations[start:stop])
        queries = model.embed_query(anchors[start:stop], relations[start:stop], side)
        table = model.entity.weight
        if model.scorer_kind == kernels.MODULUS and kernels.usable(queries, table):
            # RotatE on the CPU: the counts without the score block, most entities ruled out by a bound
            counts = kernels.rank_modulus(queries, table, targets[start:stop], rows, cols, model.gamma)
            ranks = Ranks(optimistic=(counts[0] + 1).double(), pessimistic=counts[1].double())
        else:
            ranks = ranks_from_scores(model.compare_all(queries, table), targets[start:stop], rows, cols)
        optimistic.append(ranks.optimistic)
        pessimistic.append(ranks.pessimistic)
    return Ranks(torch.cat(optimistic), torch.cat(pessimistic))
