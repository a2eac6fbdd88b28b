"""Distance scorers: TransE and RotatE."""

from __future__ import annotations

import math
from typing import Annotated

import torch
from torch import Tensor

from kgexp import kernels
from kgexp.models.base import DistanceModel
from kgexp.options import Count, OneOf, PositiveFloat, checked
from kgexp.sides import TAIL, Side


@checked("model")
class TransE(DistanceModel):
    """score(h, r, t) = gamma - ||h + r - t||_p (Bordes et al. 2013)."""

    name = "transe"

    def __init__(
        self,
        num_entities: int,
        num_relations: int,
        dim: Count,
        gamma: float = 24.0,
        init_range: PositiveFloat | None = None,
        reciprocal: bool = False,
        p_norm: Annotated[int, OneOf((1, 2))] = 1,
    ):
        super().__init__(num_entities, num_relations, dim, gamma, init_range, reciprocal)
        self.p_norm = p_norm
        self.scorer_kind = kernels.L1 if p_norm == 1 else kernels.L2

    def query(self, anchor: Tensor, relation: Tensor, side: Side) -> Tensor:
        return anchor + relation if side == TAIL else anchor - relation

    def distance(self, queries: Tensor, candidates: Tensor) -> Tensor:
        return torch.linalg.vector_norm(queries - candidates, ord=self.p_norm, dim=-1)

    def compare_all(self, queries: Tensor, candidates: Tensor) -> Tensor:
        if self.p_norm == 2:  # ||a - b||^2 = ||a||^2 + ||b||^2 - 2 a.b: cdist computes it with a matmul
            return self.gamma - torch.cdist(queries, candidates, compute_mode="use_mm_for_euclid_dist")
        return super().compare_all(queries, candidates)

    def hyperparameters(self) -> dict[str, float | int | str]:
        return {**super().hyperparameters(), "p_norm": self.p_norm}


class RotatE(DistanceModel):
    """score(h, r, t) = gamma - sum_k |h_k e^{i theta_k} - t_k| (Sun et al. 2019).

    Entities are ``[re | im]``; a relation is stored as ``dim`` raw values, and its phase in radians is
    ``raw * pi / embedding_range`` (the reference code's scaling, which spreads the initial phases over
    ``[-pi, pi]``).
    """

    name = "rotate"
    scorer_kind = kernels.MODULUS
    entity_factor = 2

    def phases(self, relation: Tensor) -> Tensor:
        return relation * (math.pi / self.embedding_range)

    def query(self, anchor: Tensor, relation: Tensor, side: Side) -> Tensor:
        a_re, a_im = anchor.chunk(2, dim=-1)
        theta = self.phases(relation)
        cos, sin = torch.cos(theta), torch.sin(theta)
        if side != TAIL:  # head prediction: rotate t by -theta
            sin = -sin
        return torch.cat([a_re * cos - a_im * sin, a_re * sin + a_im * cos], dim=-1)

    def distance(self, queries: Tensor, candidates: Tensor) -> Tensor:
        d_re, d_im = (queries - candidates).chunk(2, dim=-1)
        return ComplexModulus.apply(d_re, d_im).sum(-1)


class ComplexModulus(torch.autograd.Function):
    """``hypot(re, im)`` with gradient 0 instead of NaN at the origin (a subgradient of the modulus).

    One fused kernel each way: about 3x faster than ``vector_norm(stack([re, im]))`` on CPU.
    """

    @staticmethod
    def forward(ctx, re: Tensor, im: Tensor) -> Tensor:
        modulus = torch.hypot(re, im)
        ctx.save_for_backward(re, im, modulus)
        return modulus

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, Tensor]:
        re, im, modulus = ctx.saved_tensors
        scale = torch.where(modulus > 0, grad / modulus, 0.0)
        return scale * re, scale * im
