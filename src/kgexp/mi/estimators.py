"""Mutual-information estimators over a critic matrix with the positive pairs on its diagonal.

``scores`` is ``(B, C)`` with ``C >= B``: row i scores query i against the keys of every in-batch target
(column i is its own, the positive) and then any extra per-row keys. ``allowed`` is the boolean ``(B, C)``
mask of the columns that may serve as negatives, plus the diagonal; masked columns are false negatives.
Each estimator returns a loss to minimise (a negative MI lower bound, up to constants).
"""

from __future__ import annotations

import math
from typing import Annotated

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kgexp.options import Range, checked

#: MINE's moving-average rate.
EmaRate = Annotated[float, Range(0, 1, low_open=True)]


def _negatives(allowed: Tensor) -> Tensor:
    """``allowed`` without the diagonal: the negative pairs."""
    eye = torch.eye(allowed.shape[0], allowed.shape[1], dtype=torch.bool, device=allowed.device)
    return allowed & ~eye


class InfoNCE(nn.Module):
    """``mean_i -log softmax_i(scores_i over the allowed columns)`` (van den Oord et al. 2018)."""

    def forward(self, scores: Tensor, allowed: Tensor) -> Tensor:
        logits = scores.masked_fill(~allowed, float("-inf"))
        return F.cross_entropy(logits, torch.arange(len(scores), device=scores.device))


class JensenShannon(nn.Module):
    """Deep-InfoMax JSD bound: ``mean softplus(-s_pos) + mean over negative pairs of softplus(s_neg)``."""

    def forward(self, scores: Tensor, allowed: Tensor) -> Tensor:
        negatives = _negatives(allowed)
        positive = F.softplus(-scores.diagonal()).mean()
        negative = (F.softplus(scores) * negatives).sum() / negatives.sum().clamp_min(1)
        return positive + negative


@checked("mi")
class DonskerVaradhan(nn.Module):
    """MINE (Belghazi et al. 2018): ``-(mean s_pos - log mean_{negative pairs} exp s)``.

    The value is the Donsker-Varadhan bound of the batch; the gradient of its log term divides by an
    exponential moving average of ``mean exp s`` (rate ``ema_rate``) instead of the batch's own mean,
    MINE's bias correction. The average is a buffer, so it is checkpointed with the model.
    """

    def __init__(self, ema_rate: EmaRate = 0.01):
        super().__init__()
        self.ema_rate = ema_rate
        self.register_buffer("log_ema", torch.tensor(float("nan")))

    def forward(self, scores: Tensor, allowed: Tensor) -> Tensor:
        negatives = _negatives(allowed)
        count = negatives.sum().clamp_min(1)
        flat = scores.masked_fill(~negatives, float("-inf")).flatten()
        log_mean_exp = torch.logsumexp(flat, 0) - count.to(scores.dtype).log()
        if self.training:
            self._update(log_mean_exp.detach())
        reference = log_mean_exp.detach() if torch.isnan(self.log_ema) else self.log_ema
        ratio = torch.exp(log_mean_exp - reference)  # 1 in value when the EMA equals the batch mean
        corrected = log_mean_exp.detach() + ratio - ratio.detach()
        return -(scores.diagonal().mean() - corrected)

    @torch.no_grad()
    def _update(self, log_mean_exp: Tensor) -> None:
        current = log_mean_exp.to(self.log_ema.dtype)
        if torch.isnan(self.log_ema) or self.ema_rate == 1.0:
            self.log_ema.copy_(current)
        else:
            kept = self.log_ema + math.log1p(-self.ema_rate)
            self.log_ema.copy_(torch.logaddexp(kept, current + math.log(self.ema_rate)))


ESTIMATORS: dict[str, type[nn.Module]] = {
    "infonce": InfoNCE,
    "jsd": JensenShannon,
    "mine": DonskerVaradhan,
}
