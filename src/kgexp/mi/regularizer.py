"""The MI-KGE regulariser: mutual information between (h, r) and t, and between (r, t) and h.

A re-implementation from the paper's description (Li et al., ACL 2025, which has no public code) along
the design in METHODS.md §4.2: a parameter-free composition of the query (the vector the scorer compares
with the missing entity, or a concatenation), learnable projection heads, a critic, and an estimator over
in-batch negatives with the false negatives masked.
"""

from __future__ import annotations

from typing import Annotated

import torch
from torch import Tensor, nn

from kgexp.data.filter_index import FilterIndex
from kgexp.mi.estimators import ESTIMATORS, EmaRate
from kgexp.mi.heads import Activation, Critic, CriticKind, projection
from kgexp.models.base import KGEModel
from kgexp.options import Count, NonNegativeFloat, NonNegativeInt, OneOf, PositiveFloat, checked
from kgexp.sides import HEAD, TAIL, Side, split_query

#: Direction name -> the query side whose missing entity is the MI target.
DIRECTIONS: dict[str, Side] = {"hr_t": TAIL, "rt_h": HEAD}
COMPOSITIONS = ("model", "concat")
QUERY_HEADS = ("separate", "shared")
KEY_HEADS = ("separate", "shared", "identity")
EXTRA_NEGATIVES = ("none", "kge")
#: Above this entity width the heads default to 256 units.
WIDE = 512


@checked("mi")
class MutualInformation(nn.Module):
    """``weight * L_MI``, ``L_MI`` the mean over the enabled directions of the estimator's loss.

    ``entity_width`` and ``relation_width`` are the stored widths of the model's embeddings. Heads
    default to ``hidden = width = entity_width`` (256 above 512). Negatives of a positive are the targets
    of the other positives in the batch, minus duplicates of its own target and known training triples
    (``mask_false_negatives``), plus the KGE loss's sampled negatives with ``extra_negatives=kge``.
    """

    def __init__(
        self,
        entity_width: int,
        relation_width: int,
        name: Annotated[str, OneOf(tuple(ESTIMATORS))] = "infonce",
        weight: NonNegativeFloat = 0.1,
        directions: Annotated[tuple[str, ...] | list[str], OneOf(tuple(DIRECTIONS))] = ("hr_t", "rt_h"),
        composition: Annotated[str, OneOf(COMPOSITIONS)] = "model",
        depth: NonNegativeInt = 2,
        hidden: Count | None = None,
        width: Count | None = None,
        activation: Activation = "gelu",
        query_heads: Annotated[str, OneOf(QUERY_HEADS)] = "separate",
        key_head: Annotated[str, OneOf(KEY_HEADS)] = "separate",
        critic: CriticKind = "cosine",
        temperature: PositiveFloat = 0.1,
        learn_temperature: bool = False,
        mask_false_negatives: bool = True,
        extra_negatives: Annotated[str, OneOf(EXTRA_NEGATIVES)] = "none",
        detach_keys: bool = False,
        ema_rate: EmaRate = 0.01,
    ):
        super().__init__()
        directions = list(directions)
        if len(set(directions)) < len(directions):
            raise ValueError(f"mi.directions: expected distinct directions, got {directions}")
        self.weight, self.directions = weight, directions
        self.composition, self.key_head_mode, self.extra_negatives = composition, key_head, extra_negatives
        self.mask_false_negatives, self.detach_keys = mask_false_negatives, detach_keys

        default = entity_width if entity_width <= WIDE else 256
        hidden, width = hidden or default, width or default
        query_width = entity_width + relation_width if self.composition == "concat" else entity_width
        if self.key_head_mode == "shared" and query_width != entity_width:
            raise ValueError("mi.key_head=shared needs mi.composition=model (queries as wide as entities)")
        if self.key_head_mode == "identity" and width != entity_width:
            raise ValueError(f"mi.key_head=identity needs mi.width = {entity_width}, got {width}")

        def head(width_in: int) -> nn.Module:
            return projection(width_in, hidden, width, depth, activation)

        shared_query = head(query_width) if query_heads == "shared" else None
        self.query_heads = nn.ModuleDict(
            {d: head(query_width) if shared_query is None else shared_query for d in directions}
        )
        self.key_head = head(entity_width) if self.key_head_mode == "separate" else None
        self.critic = Critic(critic, width, temperature, learn_temperature)
        self.estimator = construct_estimator(name, ema_rate)

    # -- pieces ---------------------------------------------------------------------------------
    def compose(self, model: KGEModel, anchors: Tensor, relations: Tensor, side: Side) -> Tensor:
        """The unprojected query of each positive: the model's own query vector, or ``[anchor; r]``."""
        if self.composition == "model":
            return model.embed_query(anchors, relations, side)
        anchor, relation = model.entity(anchors), model.relation(model.relation_rows(relations, side))
        return torch.cat([anchor, relation] if model.query_side(side) == TAIL else [relation, anchor], dim=-1)

    def keys(self, direction: str, entities: Tensor) -> Tensor:
        if self.detach_keys:
            entities = entities.detach()
        if self.key_head_mode == "identity":
            return entities
        head = self.query_heads[direction] if self.key_head_mode == "shared" else self.key_head
        return head(entities)

    def false_negatives(
        self, queries: tuple[Tensor, Tensor, Tensor], candidates: Tensor, index: FilterIndex, side: Side
    ) -> Tensor:
        """``(B, K)``: which candidates are answers of their row's query, its own target or a known
        training triple (all False without ``mask_false_negatives``). ``candidates``: ``(K,)`` ids shared
        by every row (the in-batch targets) or ``(B, K)`` ids per row."""
        anchors, relations, targets = queries
        shared = candidates.dim() == 1
        duplicate = (candidates.unsqueeze(0) if shared else candidates) == targets.unsqueeze(1)
        if not self.mask_false_negatives:
            return torch.zeros_like(duplicate)
        lookup = index[side].contains_shared if shared else index[side].contains
        return duplicate | lookup(anchors, relations, candidates)

    # -- the loss -------------------------------------------------------------------------------
    def forward(
        self,
        model: KGEModel,
        triples: Tensor,
        train_index: FilterIndex,
        sampled: dict[Side, tuple[Tensor, Tensor]] | None = None,
    ) -> Tensor:
        """``L_MI`` of a batch of positives (unweighted).

        ``sampled`` maps a side to ``(rows, negatives)``: the KGE loss's negative ids for those rows,
        used as extra per-row negatives with ``extra_negatives=kge``.
        """
        losses = []
        for direction in self.directions:
            side = DIRECTIONS[direction]
            anchors, relations, targets = split_query(triples, side)
            queries = self.query_heads[direction](self.compose(model, anchors, relations, side))
            query = (anchors, relations, targets)
            scores = self.critic.pairwise(queries, self.keys(direction, model.entity(targets)))
            eye = torch.eye(len(targets), dtype=torch.bool, device=targets.device)
            allowed = eye | ~self.false_negatives(query, targets, train_index, side)
            if self.extra_negatives == "kge" and sampled and side in sampled:
                rows, negatives = sampled[side]
                extra = targets.new_zeros(len(targets), negatives.shape[1])
                present = torch.zeros_like(extra, dtype=torch.bool)
                extra[rows], present[rows] = negatives, True
                extra_scores = self.critic.each(queries, self.keys(direction, model.entity(extra)))
                extra_allowed = present & ~self.false_negatives(query, extra, train_index, side)
                scores = torch.cat([scores, extra_scores], dim=1)
                allowed = torch.cat([allowed, extra_allowed], dim=1)
            losses.append(self.estimator(scores, allowed))
        return torch.stack(losses).mean()


def construct_estimator(name: str, ema_rate: float) -> nn.Module:
    return ESTIMATORS[name](ema_rate) if name == "mine" else ESTIMATORS[name]()
