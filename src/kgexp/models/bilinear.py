"""Bilinear scorers: DistMult and ComplEx."""

from __future__ import annotations

import torch
from torch import Tensor

from kgexp.models.base import BilinearModel
from kgexp.sides import TAIL, Side


class DistMult(BilinearModel):
    """score(h, r, t) = <h, r, t> (Yang et al. 2015)."""

    name = "distmult"

    def query(self, anchor: Tensor, relation: Tensor, side: Side) -> Tensor:
        return anchor * relation


class ComplEx(BilinearModel):
    """score(h, r, t) = Re(<h, r, conj(t)>) (Trouillon et al. 2016); vectors stored as [re | im]."""

    name = "complex"
    entity_factor = 2
    relation_factor = 2

    def query(self, anchor: Tensor, relation: Tensor, side: Side) -> Tensor:
        a_re, a_im = anchor.chunk(2, dim=-1)
        r_re, r_im = relation.chunk(2, dim=-1)
        if side == TAIL:  # q = h * r, score = Re(q . conj(t)) = q_re t_re + q_im t_im
            return torch.cat([a_re * r_re - a_im * r_im, a_re * r_im + a_im * r_re], dim=-1)
        # head: p = r * conj(t), score = Re(h . p) = h_re p_re - h_im p_im
        return torch.cat([r_re * a_re + r_im * a_im, -(r_im * a_re - r_re * a_im)], dim=-1)
