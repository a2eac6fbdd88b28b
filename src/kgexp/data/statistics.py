"""Per-relation statistics of the training triples: tails per head, heads per tail, categories."""

from __future__ import annotations

import torch
from torch import Tensor

#: Bordes et al. (2013): 1-1, 1-N (many tails per head), N-1 (many heads per tail), N-N.
CATEGORIES = ("1-1", "1-N", "N-1", "N-N")


def relation_cardinalities(train: Tensor, num_relations: int) -> tuple[Tensor, Tensor, Tensor]:
    """Per relation: training triples, tails per head (tph) and heads per tail (hpt), as float64.

    tph = triples / distinct heads, hpt = triples / distinct tails; both are 0 for an unused relation.
    """
    h, r, t = train.long().unbind(1)
    triples = torch.bincount(r, minlength=num_relations).double()
    base = int(torch.maximum(h.max(), t.max())) + 1 if len(train) else 1
    # Distinct (relation, entity) pairs as one integer key each: a 1-D unique, far faster than dim=0.
    heads = torch.bincount(torch.unique(r * base + h) // base, minlength=num_relations)
    tails = torch.bincount(torch.unique(r * base + t) // base, minlength=num_relations)
    return triples, triples / heads.clamp_min(1), triples / tails.clamp_min(1)


def categorize(tph: Tensor, hpt: Tensor, threshold: float = 1.5) -> Tensor:
    """Index into :data:`CATEGORIES` per relation: 1-N when tph >= threshold > hpt, and so on."""
    return (tph >= threshold).long() + 2 * (hpt >= threshold).long()
