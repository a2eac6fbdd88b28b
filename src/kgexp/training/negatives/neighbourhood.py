"""Structure-aware negatives (SANS, Ahrabian et al. 2020): entities near the kept entity of the query."""

from __future__ import annotations

import torch
from torch import Tensor

from kgexp.data.filter_index import SideIndex
from kgexp.data.neighbourhoods import (
    HopMode,
    Neighbourhood,
    WalkMode,
    cached_neighbourhood,
    k_hop,
    random_walks,
    uniform_offsets,
)
from kgexp.options import Count, NonNegativeInt, checked
from kgexp.training.negatives.base import Queries, Sampler, SamplerSetup, redraw_known, uniform_unknown


class NeighbourhoodSampler(Sampler):
    """Negatives for ``(h, r, ?)`` drawn uniformly, with replacement, from the distinct neighbours of ``h``
    (of ``t`` for ``(?, r, t)``); walk counts are not weights, as in the reference.

    Filtering redraws known training answers from the same neighbourhood ``max_redraws`` times, then
    draws each remaining slot exactly from the neighbourhood minus the known answers; where nothing is
    left it falls back, as the reference does, to uniform ids (exactly the unknown ones). An entity
    without a neighbourhood gets uniform ids.
    """

    def __init__(self, num_negatives: int, filtered: bool = True, max_redraws: int = 10):
        super().__init__(num_negatives, filtered, max_redraws)
        self.neighbourhood: Neighbourhood | None = None

    def cache_key(self, seed: int) -> str:
        raise NotImplementedError

    def build(self, setup: SamplerSetup) -> Neighbourhood:
        raise NotImplementedError

    def fit(self, setup: SamplerSetup) -> None:
        key = self.cache_key(setup.seed)
        self.neighbourhood = cached_neighbourhood(
            setup.cache_dir,
            setup.graph.fingerprint,
            key,
            lambda: self.build(setup),
            f"{setup.graph.name} {key}",
        )

    def draw_negatives(self, q: Queries) -> Tensor:
        anchors, relations, side, num_entities = q.anchors, q.relations, q.side, q.num_entities
        known, generator = q.known, q.generator
        if self.neighbourhood is None:
            raise RuntimeError(f"{type(self).__name__}.fit must run before sampling")
        if self.neighbourhood.indptr.device != anchors.device:
            self.neighbourhood = self.neighbourhood.to(anchors.device)
        ids = self._draw(anchors, self.num_negatives, num_entities, generator)
        if self.filtered and known is not None:
            index = known[side]

            def one_each(rows: Tensor) -> Tensor:
                return self._draw(anchors[rows], 1, num_entities, generator).squeeze(1)

            redraw_known(ids, anchors, relations, index, one_each, self.max_redraws)
            bad = index.contains(anchors, relations, ids)
            if bad.any():
                ids[bad] = self._draw_unknown(bad, anchors, relations, index, num_entities, generator)
        return ids

    def _draw(self, anchors: Tensor, count: int, num_entities: int, generator: torch.Generator) -> Tensor:
        """``(len(anchors), count)`` ids uniform over each anchor's neighbourhood (uniform if it has none)."""
        pool = self.neighbourhood
        start = pool.indptr[anchors].unsqueeze(1)
        size = (pool.indptr[anchors + 1] - pool.indptr[anchors]).unsqueeze(1)
        shape = (len(anchors), count)
        uniform = torch.randint(num_entities, shape, generator=generator, device=anchors.device)
        if len(pool.indices) == 0:
            return uniform
        offset = uniform_offsets(size.expand(shape), generator)
        near = pool.indices[(start + offset).clamp_max(len(pool.indices) - 1)].long()
        return torch.where(size > 0, near, uniform)

    def _draw_unknown(
        self,
        bad: Tensor,
        anchors: Tensor,
        relations: Tensor,
        index: SideIndex,
        num_entities: int,
        generator: torch.Generator,
    ) -> Tensor:
        """One id per ``bad`` slot, uniform over its neighbourhood minus the known answers, computed exactly;
        uniform over all entities (filtered by redraws) where that set is empty."""
        pool = self.neighbourhood
        slot_rows = bad.nonzero()[:, 0]
        rows, slot_query = torch.unique(slot_rows, return_inverse=True)
        query_anchors, query_relations = anchors[rows], relations[rows]
        start = pool.indptr[query_anchors]
        size = pool.indptr[query_anchors + 1] - start
        owner = torch.repeat_interleave(torch.arange(len(rows), device=rows.device), size)
        first = torch.cumsum(size, 0) - size
        entity = pool.indices[
            torch.arange(len(owner), device=rows.device) - first[owner] + start[owner]
        ].long()
        answer_rows, answers = index.answer_pairs(query_anchors, query_relations)
        known_keys = answer_rows * num_entities + answers  # sorted
        keys = owner * num_entities + entity  # sorted: owners ascend, neighbourhoods are sorted
        allowed = torch.ones_like(keys, dtype=torch.bool)
        if len(known_keys):
            pos = torch.searchsorted(known_keys, keys).clamp_max(len(known_keys) - 1)
            allowed = known_keys[pos] != keys
        entity, owner = entity[allowed], owner[allowed]
        per_query = torch.bincount(owner, minlength=len(rows))
        count = per_query[slot_query]
        first_allowed = (torch.cumsum(per_query, 0) - per_query)[slot_query]
        pick = uniform_offsets(count, generator)
        chosen = entity[(first_allowed + pick).clamp_max(len(entity) - 1)] if len(entity) else None
        fallback = uniform_unknown(anchors[slot_rows], relations[slot_rows], index, num_entities, generator)
        if chosen is None:
            return fallback
        return torch.where(count > 0, chosen, fallback)


@checked("sampler")
class SANSSampler(NeighbourhoodSampler):
    """SANS: the k-hop neighbourhood of the undirected training graph (see :func:`k_hop` for the modes)."""

    def __init__(
        self,
        num_negatives: Count,
        hops: Count = 3,
        neighbourhood: HopMode = "within",
        filtered: bool = True,
        max_redraws: NonNegativeInt = 10,
    ):
        super().__init__(num_negatives, filtered, max_redraws)
        self.hops, self.mode = hops, neighbourhood

    def cache_key(self, seed: int) -> str:
        return f"sans-k{self.hops}-{self.mode}"

    def build(self, setup: SamplerSetup) -> Neighbourhood:
        return k_hop(setup.graph.train, setup.graph.num_entities, self.hops, self.mode)


@checked("sampler")
class RWSANSSampler(NeighbourhoodSampler):
    """RW-SANS: endpoints of ``walks`` random walks of ``hops`` steps (see :func:`random_walks`)."""

    def __init__(
        self,
        num_negatives: Count,
        hops: Count = 3,
        walks: Count = 1000,
        walk_mode: WalkMode = "restart",
        filtered: bool = True,
        max_redraws: NonNegativeInt = 10,
    ):
        super().__init__(num_negatives, filtered, max_redraws)
        self.hops, self.walks, self.mode = hops, walks, walk_mode

    def cache_key(self, seed: int) -> str:
        return f"rwsans-k{self.hops}-w{self.walks}-{self.mode}-seed{seed}"

    def build(self, setup: SamplerSetup) -> Neighbourhood:
        graph = setup.graph
        return random_walks(graph.train, graph.num_entities, self.hops, self.walks, self.mode, setup.seed)
