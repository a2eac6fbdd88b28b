"""Uniform negatives: every entity equally likely."""

from __future__ import annotations

import torch
from torch import Tensor

from kgexp.data.filter_index import FilterIndex
from kgexp.models.base import KGEModel
from kgexp.sides import Side
from kgexp.training.negatives.base import Sampler, redraw_known


class UniformSampler(Sampler):
    """K entity ids per positive, uniform with replacement; optionally filtered against known answers.

    Filtering redraws the ids that form a known training triple, ``max_redraws`` times at most; a query
    whose answers cover almost every entity may keep a few known ids after that.
    """

    def __init__(self, num_negatives: int, filtered: bool = False, max_redraws: int = 10):
        super().__init__(num_negatives, filtered, max_redraws)

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
        shape = (len(anchors), self.num_negatives)
        ids = torch.randint(num_entities, shape, generator=generator, device=anchors.device)
        if self.filtered and known is not None:
            redraw_known(
                ids,
                anchors,
                relations,
                known[side],
                lambda rows: torch.randint(num_entities, rows.shape, generator=generator, device=ids.device),
                self.max_redraws,
            )
        return ids
