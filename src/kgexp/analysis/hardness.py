"""Negatives of each sampler for a trained model, and how similar they are to the positive (EMU Fig. 4)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from kgexp.data.filter_index import FilterIndex
from kgexp.models.base import KGEModel
from kgexp.options import check, one_of
from kgexp.sides import split_query
from kgexp.training.emu import EmbeddingMutation
from kgexp.training.negatives import BASE_SAMPLERS, NegativeSampling, SamplerSetup

#: Mutating samplers: uniform candidates mutated towards the positive in embedding space.
MUTATIONS = {"emu": "mask", "mixup": "mixup"}
ANALYSIS_SAMPLERS = (*BASE_SAMPLERS, *MUTATIONS)


@dataclass
class SampledNegatives:
    """Embeddings of the positives ``(n, width)`` and of their negatives ``(n, K, width)``; ``rows`` are
    the positions of the positives in the analysed triples (samplers may reorder them by side)."""

    positives: Tensor
    negatives: Tensor
    rows: Tensor


def draw_negatives(
    name: str,
    model: KGEModel,
    triples: Tensor,
    setup: SamplerSetup,
    known: FilterIndex,
    num_negatives: int,
    generator: torch.Generator,
    warmup_rounds: int = 10,
) -> SampledNegatives:
    """Negatives of sampler ``name`` for ``triples``, as entity embeddings beside those of the positives.

    Tails are corrupted (heads too, per positive, for ``bernoulli``). ``emu`` and ``mixup`` mutate
    uniform candidates with the default EMU mask (q = 0.39) or a Beta(2, 1) mixup. NSCaching's caches
    start random: ``warmup_rounds`` refreshes with the trained model fill them before the draw.
    """
    base = "uniform" if name in MUTATIONS else name
    check("samplers", one_of(ANALYSIS_SAMPLERS), name)
    cls, sides = BASE_SAMPLERS[base]
    negatives = NegativeSampling(cls(num_negatives=num_negatives), sides or "alternate")
    negatives.fit(setup)
    num_entities = model.num_entities
    with torch.no_grad():
        for _ in range(warmup_rounds if base == "nscaching" else 0):
            negatives.corrupt(triples, 0, num_entities, known, generator, model)
        positives, drawn, rows = [], [], []
        for corruption in negatives.corrupt(triples, 0, num_entities, known, generator, model):
            _, _, targets = split_query(triples[corruption.rows], corruption.side)
            candidates = model.entity(torch.cat([targets.unsqueeze(1), corruption.negatives], 1))
            if name in MUTATIONS:
                mutation = EmbeddingMutation(mutation=MUTATIONS[name])
                candidates = mutation(candidates, model.entity_factor == 2, generator)
            positives.append(candidates[:, 0])
            drawn.append(candidates[:, 1:])
            rows.append(corruption.rows)
    return SampledNegatives(torch.cat(positives), torch.cat(drawn), torch.cat(rows))


def cosine_to_positive(sampled: SampledNegatives) -> Tensor:
    """``(n, K)`` cosine similarity of each negative to its positive."""
    return torch.nn.functional.cosine_similarity(sampled.negatives, sampled.positives.unsqueeze(1), dim=-1)


def summarize(similarities: Tensor) -> dict[str, float]:
    """Mean, standard deviation and quantiles of a set of cosine similarities."""
    values = similarities.flatten().double()
    quantiles = torch.quantile(values, torch.tensor([0.05, 0.25, 0.5, 0.75, 0.95], dtype=torch.float64))
    names = ("p05", "p25", "median", "p75", "p95")
    return {
        "count": float(values.numel()),
        "mean": float(values.mean()),
        "std": float(values.std()),
        **{name: float(q) for name, q in zip(names, quantiles, strict=True)},
    }
