"""Losses over the scores of positives ``(n,)`` and their negatives ``(n, K)``."""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
import torch.nn.functional as F
from torch import Tensor

from kgexp.options import PositiveFloat, Smoothing, checked


def soft_cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean over rows of ``-sum_k targets_k log softmax(logits)_k``; targets need not sum to 1."""
    return -(targets * F.log_softmax(logits, dim=-1)).sum(-1).mean()


def weighted_mean(values: Tensor, weights: Tensor | None) -> Tensor:
    return values.mean() if weights is None else (values * weights).sum() / weights.sum()


class Loss(ABC):
    """A training loss; ``weights`` are per-positive subsampling weights, used where the loss says so."""

    @abstractmethod
    def __call__(self, positive: Tensor, negative: Tensor, weights: Tensor | None = None) -> Tensor: ...


@checked("loss")
class SoftmaxCrossEntropy(Loss):
    """Cross-entropy of softmax over ``[positive, negatives]`` against ``[1 - eps, eps/K, ...]``.

    With ``label_smoothing = 0`` this is the EMU paper's vanilla loss (one-hot target on the positive).
    """

    def __init__(self, label_smoothing: Smoothing = 0.0):
        self.label_smoothing = label_smoothing

    def __call__(self, positive: Tensor, negative: Tensor, weights: Tensor | None = None) -> Tensor:
        logits = torch.cat([positive.unsqueeze(1), negative], dim=1)
        targets = torch.full_like(logits, self.label_smoothing / negative.shape[1])
        targets[:, 0] = 1.0 - self.label_smoothing
        return soft_cross_entropy(logits, targets)


@checked("loss")
class SelfAdversarial(Loss):
    """RotatE's loss: -1/2 [log s(pos) + sum_j p_j log s(-neg_j)], p = softmax(a * neg) detached.

    ``adversarial=False`` replaces p by the uniform mean over negatives; ``subsampling`` weights the
    positives by 1/sqrt(frequency) as the reference code does.
    """

    def __init__(
        self, adversarial_temperature: PositiveFloat = 1.0, adversarial: bool = True, subsampling: bool = True
    ):
        self.temperature, self.adversarial, self.subsampling = (
            adversarial_temperature,
            adversarial,
            subsampling,
        )

    def __call__(self, positive: Tensor, negative: Tensor, weights: Tensor | None = None) -> Tensor:
        if self.adversarial:
            p = F.softmax(negative * self.temperature, dim=1).detach()
            negative_term = (p * F.logsigmoid(-negative)).sum(1)
        else:
            negative_term = F.logsigmoid(-negative).mean(1)
        weights = weights if self.subsampling else None
        return -(weighted_mean(F.logsigmoid(positive), weights) + weighted_mean(negative_term, weights)) / 2


@checked("loss")
class MarginRanking(Loss):
    """mean_j max(0, margin - pos + neg_j)."""

    def __init__(self, margin: PositiveFloat = 1.0):
        self.margin = margin

    def __call__(self, positive: Tensor, negative: Tensor, weights: Tensor | None = None) -> Tensor:
        return F.relu(self.margin - positive.unsqueeze(1) + negative).mean()


class BinaryCrossEntropy(Loss):
    """Logistic (softplus) loss: softplus(-pos) + mean_j softplus(neg_j)."""

    def __call__(self, positive: Tensor, negative: Tensor, weights: Tensor | None = None) -> Tensor:
        return (F.softplus(-positive) + F.softplus(negative).mean(1)).mean()


LOSSES: dict[str, type[Loss]] = {
    "softmax_ce": SoftmaxCrossEntropy,
    "self_adversarial": SelfAdversarial,
    "margin": MarginRanking,
    "bce": BinaryCrossEntropy,
}
