"""What every negative sampler provides, and the filtering redraw they share."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from kgexp.data.filter_index import FilterIndex, SideIndex
from kgexp.data.graph import KnowledgeGraph
from kgexp.models.base import KGEModel
from kgexp.options import Count, NonNegativeInt, checked
from kgexp.sides import Side


@dataclass(frozen=True)
class Queries:
    """The queries a sampler draws negatives for, and what it may draw them with."""

    anchors: Tensor
    relations: Tensor
    side: Side
    num_entities: int
    known: FilterIndex | None
    generator: torch.Generator
    model: KGEModel | None = None


@dataclass
class SamplerSetup:
    """What a sampler may prepare from before training: the graph, a cache folder, the run's seed."""

    graph: KnowledgeGraph
    cache_dir: Path
    seed: int


@checked("sampler")
class Sampler:
    """Draws ``num_negatives`` entity ids per query ``(anchor, relation, side)``."""

    #: C > 0: chunks of C consecutive queries get the same ids (see :class:`UniformSampler`).
    shared = 0

    def __init__(self, num_negatives: Count, filtered: bool, max_redraws: NonNegativeInt):
        self.num_negatives, self.filtered, self.max_redraws = num_negatives, filtered, max_redraws

    def fit(self, setup: SamplerSetup) -> None:
        """Prepare from the training graph (neighbourhoods, caches); nothing by default."""

    def sample(
        self,
        anchors: Tensor,
        relations: Tensor,
        side: Side,
        num_entities: int,
        known: FilterIndex | None,
        generator: torch.Generator,
        model: KGEModel | None = None,
    ) -> Tensor:
        """``(len(anchors), num_negatives)`` int64 entity ids for the queries ``(anchor, relation, side)``;
        ``known``: the training answers (filtering), ``model``: the model being trained (NSCaching)."""
        return self.draw_negatives(Queries(anchors, relations, side, num_entities, known, generator, model))

    def draw_negatives(self, queries: Queries) -> Tensor:
        """:meth:`sample` for each sampler: ``(len(queries.anchors), num_negatives)`` ids."""
        raise NotImplementedError

    def synchronize(self) -> None:
        """Called on every rank once per training step: share state that the step changed (NSCaching's
        refreshed caches) so that all ranks hold the same; nothing by default."""

    def state_dict(self) -> dict[str, Any]:
        """State that a checkpoint must carry to resume sampling (NSCaching's caches)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""


def redraw_known(
    ids: Tensor,
    anchors: Tensor,
    relations: Tensor,
    index: SideIndex,
    draw: Callable[[Tensor], Tensor],
    max_redraws: int,
) -> None:
    """Replace, in place and at most ``max_redraws`` times, the ids that form a known triple.

    ``draw(rows)`` returns one new id for each bad slot, given the query row of each.
    """
    for _ in range(max_redraws):
        bad = index.contains(anchors, relations, ids)
        if not bad.any():
            return
        ids[bad] = draw(bad.nonzero()[:, 0])


def uniform_unknown(
    anchors: Tensor, relations: Tensor, index: SideIndex, num_entities: int, generator: torch.Generator
) -> Tensor:
    """One id per query, uniform over the entities that are not a known answer of it (exactly, without
    redraws); uniform over all entities for a query whose answers are every entity.

    The u-th unknown id is ``u + j``, with j the number of sorted answers ``a_i`` such that ``a_i - i <= u``.
    """
    rows, answers = index.answer_pairs(anchors, relations)
    counts = torch.bincount(rows, minlength=len(anchors))
    first = torch.cumsum(counts, 0) - counts
    free = num_entities - counts
    draw = torch.rand(len(anchors), generator=generator, device=anchors.device, dtype=torch.float64)
    exhausted = free <= 0
    span = torch.where(exhausted, num_entities, free)
    u = torch.minimum((draw * span).long(), span - 1)
    if len(rows) == 0:
        return u
    shifted = answers - (torch.arange(len(rows), device=rows.device) - first[rows])  # a_i - i per row
    keys = rows * num_entities + shifted  # sorted: rows ascend, a_i - i is non-decreasing in a row
    queries = torch.arange(len(anchors), device=anchors.device) * num_entities + u
    below = torch.searchsorted(keys, queries, right=True) - first
    return torch.where(exhausted, u, u + below)
