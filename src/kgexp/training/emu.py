"""EMU: negatives mutated in embedding space, trained with Unbounded Label Smoothing.

Built from the description in METHODS.md §1 (the reference code is not used). For each positive, the
candidate embeddings ``C`` (``(n, 1 + N, width)``, the positive's entity in column 0) of the corrupted
slot are mutated: a mask keeps each coordinate of a negative with probability ``keep_prob`` (q) and
otherwise copies the positive's coordinate, so a fraction ``n_P / d = 1 - q`` of the coordinates comes
from the positive. The mutated candidates are scored and trained with soft labels ``[1, beta, ...]``,
plus ``alpha`` times the plain one-hot softmax cross-entropy on unmutated negatives.
"""

from __future__ import annotations

import inspect
from typing import Annotated, Any

import torch
import torch.nn.functional as F
from torch import Tensor

from kgexp import kernels
from kgexp.models.base import KGEModel
from kgexp.options import NonNegativeFloat, OneOf, Probability, Smoothing, checked
from kgexp.training.losses import soft_cross_entropy

MUTATIONS = ("mask", "mixup", "none")
MASK_MODES = ("bernoulli", "fixed_count")
LABELS = ("uls", "ls")
SCALES = ("per_negative", "none")
#: Mask bits compare 16-bit hashes with a threshold, so ``keep_prob`` is rounded to k / 2^16.
MASK_RESOLUTION = 1 << 16


@checked("sampler")
class EmbeddingMutation:
    """Mutates candidate embeddings towards the positive (column 0 is the positive and stays unchanged).

    ``mutation``: ``mask`` (EMU), ``mixup`` (one λ ~ Beta(2, 1) per candidate, shared over coordinates:
    λ·negative + (1 − λ)·positive) or ``none`` (the "without mutation" ablation).
    ``mask``: ``bernoulli`` (the reference: i.i.d. bits per positive, negative and coordinate) or
    ``fixed_count`` (the paper: exactly round((1 − q)·d) coordinates copied from the positive).
    ``share_complex_mask``: for ``[re | im]`` embeddings, one bit per complex coordinate instead of
    independent bits for the real and imaginary parts (the reference's behaviour).
    """

    def __init__(
        self,
        keep_prob: Probability = 0.39,
        mask: Annotated[str, OneOf(MASK_MODES)] = "bernoulli",
        share_complex_mask: bool = False,
        mutation: Annotated[str, OneOf(MUTATIONS)] = "mask",
    ):
        self.keep_prob, self.mask, self.mutation = keep_prob, mask, mutation
        self.share_complex_mask = share_complex_mask

    @property
    def levels(self) -> int:
        """``keep_prob`` in units of 2^-16 (the Bernoulli mask's threshold on 16-bit hashes)."""
        return round(self.keep_prob * MASK_RESOLUTION)

    @property
    def fused(self) -> bool:
        """Whether the fused kernels can score this mutation (the reference's Bernoulli mask)."""
        return self.mutation == "mask" and self.mask == "bernoulli"

    def keep_mask(self, shape: torch.Size, complex_halves: bool, generator: torch.Generator) -> Tensor:
        """Boolean ``shape`` mask, True where a candidate keeps its own coordinate (column 0 all True)."""
        rows, candidates, width = shape
        shared = complex_halves and self.share_complex_mask
        if self.mask == "bernoulli":
            return kernels.mutation_keep(
                rows, candidates, width, draw_seeds(generator), self.levels, shared, generator.device
            )
        size = (rows, candidates, width // 2 if shared else width)
        copied = round((1.0 - self.keep_prob) * size[-1])
        noise = torch.rand(size, generator=generator, device=generator.device)
        keep = torch.ones(size, dtype=torch.bool, device=generator.device)
        keep.scatter_(-1, noise.topk(copied, dim=-1).indices, False)
        keep[:, 0] = True
        return torch.cat([keep, keep], dim=-1) if shared else keep

    def __call__(self, candidates: Tensor, complex_halves: bool, generator: torch.Generator) -> Tensor:
        if self.mutation == "none":
            return candidates
        if self.mutation == "mixup":
            # Beta(2, 1) has CDF x^2, so sqrt(U) is an exact draw from the seeded generator.
            shape = (candidates.shape[0], candidates.shape[1], 1)
            weight = torch.rand(
                shape, generator=generator, device=candidates.device, dtype=candidates.dtype
            ).sqrt()
            weight[:, 0] = 1.0
            return weight * candidates + (1.0 - weight) * candidates[:, :1]
        keep = self.keep_mask(candidates.shape, complex_halves, generator)
        return MixTowardsPositive.apply(candidates, keep)

    def scores(
        self, model: KGEModel, queries: Tensor, candidate_ids: Tensor, generator: torch.Generator
    ) -> Tensor:
        """Scores ``(n, 1 + N)`` of the queries against their mutated candidates (positive in column 0).

        The Bernoulli mask on the CPU runs in a fused kernel that builds neither the candidates nor the
        mask; it draws the same seeds, so it scores the same mask as the tensor-op path. Unmutated
        candidates (``mutation=none``) are scored as the plain step scores its negatives.
        """
        if self.mutation == "none":
            return model.score_ids(queries, candidate_ids)
        complex_halves = model.entity_factor == 2
        table = model.entity.weight
        if self.fused and kernels.usable(queries, table):
            shared = complex_halves and self.share_complex_mask
            seeds = draw_seeds(generator)
            return kernels.score_mutated(
                queries, table, candidate_ids, model.scorer_kind, model.gamma, seeds, self.levels, shared
            )
        return model.compare_each(queries, self(model.entity(candidate_ids), complex_halves, generator))


def draw_seeds(generator: torch.Generator) -> tuple[int, int]:
    """Two 32-bit seeds for one step's mask hash, from the run's seeded generator."""
    seeds = torch.randint(0, 1 << 32, (2,), generator=generator, device=generator.device).tolist()
    return seeds[0], seeds[1]


class MixTowardsPositive(torch.autograd.Function):
    """``where(keep, candidates, candidates[:, :1])`` with a backward that skips the broadcast bookkeeping.

    The gradient of a kept coordinate goes to its candidate; that of a copied coordinate goes to the
    positive (column 0, whose mask is all True).
    """

    @staticmethod
    def forward(ctx, candidates: Tensor, keep: Tensor) -> Tensor:
        ctx.save_for_backward(keep)
        return torch.where(keep, candidates, candidates[:, :1])

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        (keep,) = ctx.saved_tensors
        to_candidates = torch.where(keep, grad, 0.0)
        to_candidates[:, 0] += grad.sum(1) - to_candidates.sum(1)
        return to_candidates, None


@checked("sampler")
class EMULoss:
    """``CE_soft(s_mut, [1, beta, ..., beta]) * c + alpha * CE(s, one-hot)``.

    ``scale``: ``per_negative`` (c = 1/N, the reference code) or ``none`` (c = 1, the paper's Eq. 5).
    ``labels``: ``uls`` (Unbounded Label Smoothing, unnormalised) or ``ls`` (plain label smoothing:
    ``[1 - eps, eps/N, ...]`` with ``eps = label_smoothing``). ``beta = 0`` is the "without ULS" ablation.
    """

    def __init__(
        self,
        beta: NonNegativeFloat = 0.53,
        alpha: NonNegativeFloat = 0.11,
        scale: Annotated[str, OneOf(SCALES)] = "per_negative",
        labels: Annotated[str, OneOf(LABELS)] = "uls",
        label_smoothing: Smoothing = 0.1,
    ):
        self.beta, self.alpha, self.label_smoothing = beta, alpha, label_smoothing
        self.scale, self.labels = scale, labels

    def targets(self, mutated: Tensor) -> Tensor:
        num_negatives = mutated.shape[1] - 1
        if self.labels == "uls":
            targets = torch.full_like(mutated, self.beta)
            targets[:, 0] = 1.0
        else:
            targets = torch.full_like(mutated, self.label_smoothing / num_negatives)
            targets[:, 0] = 1.0 - self.label_smoothing
        return targets

    def __call__(self, vanilla: Tensor, mutated: Tensor) -> Tensor:
        """``vanilla`` and ``mutated``: scores ``(n, 1 + N)`` with the positive in column 0."""
        scale = 1.0 / (mutated.shape[1] - 1) if self.scale == "per_negative" else 1.0
        plain = F.cross_entropy(vanilla, torch.zeros(len(vanilla), dtype=torch.long, device=vanilla.device))
        return soft_cross_entropy(mutated, self.targets(mutated)) * scale + self.alpha * plain


class EMU:
    """The EMU training objective: a mutation, its loss, and where the EMU term's negatives come from.

    ``resample``: the EMU term draws its own negatives from the base sampler (the reference code, where
    uniform negatives are drawn afresh for the second pass) instead of reusing the vanilla term's. The
    other options are those of :class:`EmbeddingMutation` and :class:`EMULoss`, declared there.
    """

    PARTS = (EmbeddingMutation, EMULoss)

    def __init__(self, resample: bool = True, **options: Any):
        unknown = sorted(set(options) - set(self.option_names()))
        if unknown:
            raise TypeError(f"EMU got an unexpected keyword argument {unknown[0]!r}")
        self.mutate, self.loss = (
            part(**{k: v for k, v in options.items() if k in inspect.signature(part).parameters})
            for part in self.PARTS
        )
        self.resample = resample

    @classmethod
    def option_names(cls) -> list[str]:
        """Every option EMU takes: its own and its parts'."""
        return ["resample", *(name for part in cls.PARTS for name in inspect.signature(part).parameters)]
