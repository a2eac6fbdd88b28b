"""Embedding geometry: a 2-D PCA of positives and negatives (EMU Fig. 5) and intra-group similarity."""

from __future__ import annotations

import torch
from torch import Tensor


def pca_2d(points: Tensor) -> Tensor:
    """Coordinates ``(n, 2)`` of ``points`` on their first two principal components."""
    centred = points.double() - points.double().mean(0)
    _, _, vh = torch.linalg.svd(centred, full_matrices=False)
    return (centred @ vh[:2].T).float()


def mean_pairwise_cosine(vectors: Tensor, groups: Tensor, num_groups: int) -> Tensor:
    """Per group, the mean cosine similarity over pairs of distinct members (NaN below two members).

    With unit vectors u_i, the sum over ordered pairs i != j of u_i . u_j is ||sum u_i||^2 - n, so no
    pair is ever materialised.
    """
    units = torch.nn.functional.normalize(vectors.double(), dim=1)
    sums = torch.zeros(num_groups, vectors.shape[1], dtype=torch.float64).index_add_(0, groups, units)
    sizes = torch.bincount(groups, minlength=num_groups).double()
    pairs = sizes * (sizes - 1)
    return torch.where(pairs > 0, (sums.pow(2).sum(1) - sizes) / pairs.clamp_min(1), torch.nan)


def intra_group_similarity(entity: Tensor, train: Tensor, num_relations: int) -> dict[str, float]:
    """Mean pairwise cosine among the tails of one (h, r) (``hr_tails``) and among the entities that are
    tails of one relation (``relation_tails``), each averaged over the groups with at least two members."""
    h, r, t = torch.unique(train, dim=0).unbind(1)  # a duplicated triple is not a second member
    pairs, group = torch.unique(h * num_relations + r, return_inverse=True)
    per_query = mean_pairwise_cosine(entity[t], group, len(pairs))
    relation_tails = torch.unique(r * entity.shape[0] + t)
    per_relation = mean_pairwise_cosine(
        entity[relation_tails % entity.shape[0]], relation_tails // entity.shape[0], num_relations
    )
    return {
        "hr_tails": float(per_query.nanmean()) if (~per_query.isnan()).any() else float("nan"),
        "relation_tails": float(per_relation.nanmean()) if (~per_relation.isnan()).any() else float("nan"),
    }
