"""Losses over the scores of positives ``(n,)`` and their negatives ``(n, K)`` (negative sampling), and,
for those that fit 1vsAll and KvsAll, over all-entity scores ``(Q, E)`` with the answers given sparsely."""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
import torch.nn.functional as F
from torch import Tensor

from kgexp.options import PositiveFloat, Smoothing, checked


def soft_cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean over rows of ``-sum_k targets_k log softmax(logits)_k``; targets need not sum to 1."""
    return -(targets * F.log_softmax(logits, dim=-1)).sum(-1).mean()


def binary_cross_entropy(logits: Tensor, label: float) -> Tensor:
    """``label * softplus(-x) + (1 - label) * softplus(x)``, elementwise (exact at labels 0 and 1)."""
    if label == 0.0:
        return F.softplus(logits)
    if label == 1.0:
        return F.softplus(-logits)
    return label * F.softplus(-logits) + (1.0 - label) * F.softplus(logits)


def weighted_mean(values: Tensor, weights: Tensor | None) -> Tensor:
    return values.mean() if weights is None else (values * weights).sum() / weights.sum()


class Loss(ABC):
    """A training loss; ``weights`` are per-positive subsampling weights, used where the loss says so."""

    @abstractmethod
    def __call__(self, positive: Tensor, negative: Tensor, weights: Tensor | None = None) -> Tensor: ...

    def all_entities(self, scores: Tensor, rows: Tensor, cols: Tensor) -> Tensor:
        """Mean loss over the rows of all-entity scores ``(Q, E)``; ``(rows[i], cols[i])`` are the distinct
        (query, answer) pairs, at least one per row. The dense label matrix is never built."""
        raise NotImplementedError(f"{type(self).__name__} has no all-entity form")

    @classmethod
    def has_all_entity_form(cls) -> bool:
        """Whether the loss defines :meth:`all_entities` (the losses 1vsAll and KvsAll can train with)."""
        return cls.all_entities is not Loss.all_entities


def answers_per_row(scores: Tensor, rows: Tensor, values: Tensor) -> tuple[Tensor, Tensor]:
    """Per row of ``scores``: the sum of ``values`` at its answers, and how many answers it has."""
    total = scores.new_zeros(len(scores)).index_add(0, rows, values)
    return total, torch.bincount(rows, minlength=len(scores)).to(scores.dtype)


@checked("loss")
class SoftmaxCrossEntropy(Loss):
    """Cross-entropy of softmax over ``[positive, negatives]`` against ``[1 - eps, eps/K, ...]``.

    With ``label_smoothing = 0`` this is the EMU paper's vanilla loss (one-hot target on the positive).
    Over all entities (1vsAll, KvsAll; LibKGE's ``kl`` loss) a query's ``k`` answers share ``1 - eps`` and
    the other ``E - k`` entities share ``eps``.
    """

    def __init__(self, label_smoothing: Smoothing = 0.0):
        self.label_smoothing = label_smoothing

    def __call__(self, positive: Tensor, negative: Tensor, weights: Tensor | None = None) -> Tensor:
        logits = torch.cat([positive.unsqueeze(1), negative], dim=1)
        targets = torch.full_like(logits, self.label_smoothing / negative.shape[1])
        targets[:, 0] = 1.0 - self.label_smoothing
        return soft_cross_entropy(logits, targets)

    def all_entities(self, scores: Tensor, rows: Tensor, cols: Tensor) -> Tensor:
        log_p = F.log_softmax(scores, dim=1)
        answer_sum, count = answers_per_row(scores, rows, log_p[rows, cols])
        loss = -(1.0 - self.label_smoothing) * answer_sum / count
        if self.label_smoothing:
            others = (scores.shape[1] - count).clamp_min(1)
            loss = loss - self.label_smoothing * (log_p.sum(1) - answer_sum) / others
        return loss.mean()


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


@checked("loss")
class BinaryCrossEntropy(Loss):
    """Logistic loss ``BCE(s, y) = softplus(s) - y s`` with labels ``1 - eps`` for an answer and
    ``eps / (C - 1)`` for the other ``C - 1`` candidates (PyKEEN's label smoothing).

    Negative sampling: ``BCE(pos) + mean_j BCE(neg_j)``, which is ``softplus(-pos) + mean_j softplus(neg_j)``
    at ``eps = 0``. Over all entities (1vsAll, KvsAll): the mean over all ``Q x E`` scores, as ConvE and
    PyKEEN's LCWA take it.
    """

    def __init__(self, label_smoothing: Smoothing = 0.0):
        self.label_smoothing = label_smoothing

    def __call__(self, positive: Tensor, negative: Tensor, weights: Tensor | None = None) -> Tensor:
        high, low = 1.0 - self.label_smoothing, self.label_smoothing / negative.shape[1]
        return (binary_cross_entropy(positive, high) + binary_cross_entropy(negative, low).mean(1)).mean()

    def all_entities(self, scores: Tensor, rows: Tensor, cols: Tensor) -> Tensor:
        high, low = 1.0 - self.label_smoothing, self.label_smoothing / (scores.shape[1] - 1)
        answer_sum = scores[rows, cols].sum()
        total = F.softplus(scores).sum() - low * (scores.sum() - answer_sum) - high * answer_sum
        return total / scores.numel()


LOSSES: dict[str, type[Loss]] = {
    "softmax_ce": SoftmaxCrossEntropy,
    "self_adversarial": SelfAdversarial,
    "margin": MarginRanking,
    "bce": BinaryCrossEntropy,
}
