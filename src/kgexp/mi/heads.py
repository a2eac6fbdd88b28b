"""Learnable projection heads and the critic that scores (query, key) pairs for the MI estimators."""

from __future__ import annotations

import itertools
import math
from typing import Annotated

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kgexp.options import NonNegativeInt, OneOf, PositiveFloat, checked

ACTIVATIONS: dict[str, type[nn.Module]] = {"gelu": nn.GELU, "relu": nn.ReLU, "tanh": nn.Tanh}
CRITICS = ("cosine", "bilinear")
Activation = Annotated[str, OneOf(tuple(ACTIVATIONS))]
CriticKind = Annotated[str, OneOf(CRITICS)]
#: Upper bound on the learnable inverse temperature (as in CLIP), so the critic cannot blow up.
MAX_INVERSE_TEMPERATURE = 100.0


@checked("mi")
def projection(
    width_in: int, hidden: int, width_out: int, depth: NonNegativeInt, activation: Activation
) -> nn.Module:
    """An MLP of ``depth`` linear layers (``depth=0``: identity, which needs ``width_in == width_out``)."""
    if depth == 0:
        if width_in != width_out:
            raise ValueError(f"mi.depth=0 (no projection) needs mi.width = {width_in}, got {width_out}")
        return nn.Identity()
    widths = [width_in, *[hidden] * (depth - 1), width_out]
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(widths)):
        if i:
            layers.append(ACTIVATIONS[activation]())
        layers.append(nn.Linear(a, b))
    return nn.Sequential(*layers)


@checked("mi")
class Critic(nn.Module):
    """``cos(q, k) / tau`` (``tau`` fixed or learnable) or the bilinear ``q^T W k`` (``W`` starts at I)."""

    def __init__(self, critic: CriticKind, width: int, temperature: PositiveFloat, learn_temperature: bool):
        super().__init__()
        self.kind = critic
        if critic == "bilinear":
            self.weight = nn.Parameter(torch.eye(width))
        log_inverse = torch.tensor(math.log(1.0 / temperature))
        if learn_temperature:
            self.log_inverse_temperature = nn.Parameter(log_inverse)
        else:
            self.register_buffer("log_inverse_temperature", log_inverse)

    def _prepare(self, queries: Tensor, keys: Tensor) -> tuple[Tensor, Tensor]:
        if self.kind == "bilinear":
            return queries @ self.weight, keys
        scale = self.log_inverse_temperature.exp().clamp(max=MAX_INVERSE_TEMPERATURE)
        return F.normalize(queries, dim=-1) * scale, F.normalize(keys, dim=-1)

    def pairwise(self, queries: Tensor, keys: Tensor) -> Tensor:
        """``(B, C)`` scores of ``(B, P)`` queries against ``(C, P)`` shared keys."""
        queries, keys = self._prepare(queries, keys)
        return queries @ keys.T

    def each(self, queries: Tensor, keys: Tensor) -> Tensor:
        """``(B, N)`` scores of ``(B, P)`` queries against their own ``(B, N, P)`` keys."""
        queries, keys = self._prepare(queries, keys)
        return torch.bmm(keys, queries.unsqueeze(-1)).squeeze(-1)
