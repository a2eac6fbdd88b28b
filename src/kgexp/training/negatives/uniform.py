"""Uniform negatives: every entity equally likely."""

from __future__ import annotations

import torch
from torch import Tensor

from kgexp.options import Count, NonNegativeInt, checked
from kgexp.training.negatives.base import Queries, Sampler, redraw_known


@checked("sampler")
class UniformSampler(Sampler):
    """K entity ids per positive, uniform with replacement; optionally filtered against known answers.

    Filtering redraws the ids that form a known training triple, ``max_redraws`` times at most; a query
    whose answers cover almost every entity may keep a few known ids after that.

    ``shared = C > 0``: each chunk of C consecutive positives shares one draw of K ids (DGL-KE's chunked
    negatives). Every negative is still uniform, but the negatives of a chunk are the same, not
    independent: a different sampling distribution, which the bilinear models score with one matmul.
    """

    def __init__(
        self,
        num_negatives: Count,
        filtered: bool = False,
        max_redraws: NonNegativeInt = 10,
        shared: NonNegativeInt = 0,
    ):
        super().__init__(num_negatives, filtered, max_redraws)
        if shared and filtered:
            raise ValueError(
                "sampler.shared and sampler.filtered cannot both be set: filtering replaces ids per "
                "positive, so the chunk would no longer share them"
            )
        self.shared = shared

    def draw_negatives(self, q: Queries) -> Tensor:
        anchors, relations, side, num_entities = q.anchors, q.relations, q.side, q.num_entities
        known, generator = q.known, q.generator
        if self.shared:
            chunks = -(-len(anchors) // self.shared)
            draws = torch.randint(
                num_entities, (chunks, self.num_negatives), generator=generator, device=anchors.device
            )
            return draws.repeat_interleave(self.shared, dim=0)[: len(anchors)]
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
