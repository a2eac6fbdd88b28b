"""Negative sampling: which side of each positive is corrupted, and the sampler that replaces it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import torch
from torch import Tensor

from kgexp.data.filter_index import FilterIndex
from kgexp.data.statistics import relation_cardinalities
from kgexp.models.base import KGEModel
from kgexp.options import OneOf, checked
from kgexp.sides import HEAD, TAIL, Side, split_query
from kgexp.training.negatives.base import Sampler, SamplerSetup

SIDE_MODES = ("alternate", "both", "bernoulli")
SideMode = Annotated[str, OneOf(SIDE_MODES)]


@dataclass
class Corruption:
    """The positives ``triples[rows]`` corrupted on ``side`` by ``negatives`` ``(len(rows), K)``."""

    side: Side
    rows: Tensor
    negatives: Tensor


def bernoulli_head_probability(train: Tensor, num_relations: int) -> Tensor:
    """P(corrupt the head) per relation = tph / (tph + hpt) (Wang et al. 2014), from training triples."""
    _, tph, hpt = relation_cardinalities(train, num_relations)
    return (tph / (tph + hpt).clamp_min(1e-12)).float()


@checked("sampler")
class NegativeSampling:
    """Plans the corrupted sides of a batch and draws the negatives for each side.

    ``side_mode``: ``alternate`` (tail, head, tail, ... per batch, as the RotatE and EMU code),
    ``both`` (every positive corrupted on both sides), or ``bernoulli`` (one side per positive, drawn
    with the per-relation probability of :func:`bernoulli_head_probability`).
    """

    def __init__(self, sampler: Sampler, sides: SideMode = "alternate"):
        self.sampler, self.side_mode = sampler, sides
        self.head_probability: Tensor | None = None

    def fit(self, setup: SamplerSetup) -> None:
        """Prepare the sampler and the Bernoulli side probabilities from the training graph."""
        self.sampler.fit(setup)
        if self.side_mode == "bernoulli":
            self.head_probability = bernoulli_head_probability(setup.graph.train, setup.graph.num_relations)

    def plan(self, triples: Tensor, step: int, generator: torch.Generator) -> list[tuple[Side, Tensor]]:
        rows = torch.arange(len(triples), device=triples.device)
        if self.side_mode == "alternate":
            return [(TAIL if step % 2 == 0 else HEAD, rows)]
        if self.side_mode == "both":
            return [(TAIL, rows), (HEAD, rows)]
        probability = self.head_probability.to(triples.device)[triples[:, 1]]
        heads = torch.rand(len(triples), generator=generator, device=triples.device) < probability
        return [(side, rows[mask]) for side, mask in ((TAIL, ~heads), (HEAD, heads)) if mask.any()]

    def corrupt(
        self,
        triples: Tensor,
        step: int,
        num_entities: int,
        known: FilterIndex | None,
        generator: torch.Generator,
        model: KGEModel | None = None,
    ) -> list[Corruption]:
        corruptions = []
        for side, rows in self.plan(triples, step, generator):
            anchors, relations, _ = split_query(triples[rows], side)
            negatives = self.sampler.sample(anchors, relations, side, num_entities, known, generator, model)
            corruptions.append(Corruption(side, rows, negatives))
        return corruptions
