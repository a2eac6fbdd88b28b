"""NSCaching (Zhang et al., ICDE 2019): negatives from per-query caches of high-scoring entities."""

from __future__ import annotations

from typing import Annotated, Any

import torch
from torch import Tensor

from kgexp.options import Count, OneOf, PositiveFloat, checked
from kgexp.sides import BOTH_SIDES, HEAD, TAIL, Side
from kgexp.training.negatives.base import Queries, Sampler, SamplerSetup

DRAWS = ("uniform", "importance")
REFRESHES = ("importance", "top")


@checked("sampler")
class NSCachingSampler(Sampler):
    """A tail cache per training (h, r) and a head cache per training (r, t), of ``cache_size`` ids each.

    For a batch of queries: the negatives are drawn from the query's cache (``draw=uniform``, with
    replacement, or ``importance``: proportional to softmax(score / temperature)); then the cache is
    refreshed from the union of its ids and ``candidates`` uniform ids by keeping ``cache_size`` distinct
    ones, sampled without replacement proportionally to softmax(score / temperature) (``refresh=importance``,
    Gumbel top-k) or the top-scoring ones (``refresh=top``). Scores come from the current model without
    gradient. ``filtered=true`` keeps known training answers out of the caches while enough candidates
    remain (the reference's ``--remove``, applied at every refresh). A query seen nowhere in training
    (none in a training batch) gets uniform ids.

    Under DDP every rank refreshes the caches of its own positives; :meth:`synchronize` then applies
    every rank's refreshes on every rank, in rank order, so that all ranks keep identical caches.
    """

    def __init__(
        self,
        num_negatives: Count,
        cache_size: Count = 30,
        candidates: Count = 30,
        temperature: PositiveFloat = 2.0,
        draw: Annotated[str, OneOf(DRAWS)] = "uniform",
        refresh: Annotated[str, OneOf(REFRESHES)] = "importance",
        filtered: bool = False,
    ):
        super().__init__(num_negatives, filtered, max_redraws=0)
        self.cache_size, self.candidates, self.temperature = cache_size, candidates, temperature
        self.draw, self.refresh = draw, refresh
        self.query_keys: dict[Side, Tensor] = {}
        self.caches: dict[Side, Tensor] = {}
        self.num_relations = 0
        self.refreshed: list[tuple[Side, Tensor, Tensor]] = []  # this step's (side, cache rows, new ids)

    def fit(self, setup: SamplerSetup) -> None:
        graph = setup.graph
        self.num_relations = graph.num_relations
        generator = torch.Generator().manual_seed(setup.seed)
        h, r, t = graph.train.unbind(1)
        id_type = torch.int32 if graph.num_entities < 2**31 else torch.int64
        for side, anchors in ((HEAD, t), (TAIL, h)):
            self.query_keys[side] = torch.unique(anchors * graph.num_relations + r)
            shape = (len(self.query_keys[side]), self.cache_size)
            self.caches[side] = torch.randint(graph.num_entities, shape, generator=generator).to(id_type)

    def draw_negatives(self, q: Queries) -> Tensor:
        anchors, relations, side, num_entities = q.anchors, q.relations, q.side, q.num_entities
        known, generator = q.known, q.generator
        model = q.model
        if model is None or not self.caches:
            raise RuntimeError("NSCaching needs fit() and the model being trained to sample")
        device = anchors.device
        keys, cache = self.query_keys[side].to(device), self.caches[side].to(device)
        self.query_keys[side], self.caches[side] = keys, cache
        query = anchors * self.num_relations + relations
        pos = torch.searchsorted(keys, query).clamp_max(len(keys) - 1)
        cached_query = keys[pos] == query
        rows, first = _first_occurrences(pos[cached_query])
        cached_anchors, cached_relations = anchors[cached_query][first], relations[cached_query][first]
        fresh = torch.randint(num_entities, (len(rows), self.candidates), generator=generator, device=device)
        pool = torch.cat([cache[rows].long(), fresh], dim=1)
        with torch.no_grad():
            queries = model.embed_query(cached_anchors, cached_relations, side)
            scores = model.score_ids(queries, pool).float() / self.temperature
        scores = scores.masked_fill(_repeated(pool), float("-inf"))
        if self.filtered and known is not None:
            scores = scores.masked_fill(known[side].contains(cached_anchors, cached_relations, pool), -1e30)

        ids = torch.randint(
            num_entities, (len(anchors), self.num_negatives), generator=generator, device=device
        )
        inverse = torch.searchsorted(rows, pos[cached_query])
        ids[cached_query] = self._draw_from_cache(pool[:, : self.cache_size], scores, inverse, generator)
        cache[rows] = pool.gather(1, self._keep(scores, generator)).to(cache.dtype)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            self.refreshed.append((side, rows.cpu(), cache[rows].cpu()))
        return ids

    def synchronize(self) -> None:
        if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            return
        gathered: list[list[tuple[Side, Tensor, Tensor]] | None] = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(gathered, self.refreshed)
        self.refreshed = []
        for updates in gathered:
            for side, rows, ids in updates:
                cache = self.caches[side]
                cache[rows.to(cache.device)] = ids.to(cache.device)

    def _draw_from_cache(
        self, cached: Tensor, scores: Tensor, inverse: Tensor, generator: torch.Generator
    ) -> Tensor:
        """``num_negatives`` ids per query from its (pre-refresh) cache."""
        shape = (len(inverse), self.num_negatives)
        if self.draw == "uniform":
            slots = torch.randint(self.cache_size, shape, generator=generator, device=cached.device)
        else:
            weights = torch.softmax(scores[:, : self.cache_size], dim=1)
            slots = torch.multinomial(
                weights[inverse], self.num_negatives, replacement=True, generator=generator
            )
        return cached[inverse].gather(1, slots)

    def _keep(self, scores: Tensor, generator: torch.Generator) -> Tensor:
        """Columns of the ``cache_size`` candidates kept: top-k of the (Gumbel-perturbed) scores."""
        if self.refresh == "importance":
            uniform = torch.rand(scores.shape, generator=generator, device=scores.device).clamp_(1e-20, 1.0)
            scores = scores - torch.log(-torch.log(uniform))  # Gumbel top-k: sampling without replacement
        return scores.topk(self.cache_size, dim=1).indices

    def state_dict(self) -> dict[str, Any]:
        return {f"{side}_cache": self.caches[side].cpu() for side in self.caches}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for side in BOTH_SIDES:
            if f"{side}_cache" in state:
                device = self.caches[side].device if side in self.caches else "cpu"
                self.caches[side] = state[f"{side}_cache"].to(device)


def _first_occurrences(values: Tensor) -> tuple[Tensor, Tensor]:
    """The sorted distinct ``values`` and, for each, the position of one of its occurrences."""
    distinct, inverse = torch.unique(values, return_inverse=True)
    first = torch.empty(len(distinct), dtype=torch.int64, device=values.device)
    first.scatter_(0, inverse, torch.arange(len(values), device=values.device))
    return distinct, first


def _repeated(pool: Tensor) -> Tensor:
    """Whether each id already occurs earlier in its row (so that a refreshed cache holds distinct ids)."""
    order = pool.argsort(dim=1, stable=True)
    ordered = pool.gather(1, order)
    repeated = torch.zeros_like(pool, dtype=torch.bool)
    repeated.scatter_(1, order[:, 1:], ordered[:, 1:] == ordered[:, :-1])
    return repeated
