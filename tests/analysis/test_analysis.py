"""Analysis parts against direct computation: cosine statistics, intra-group similarity, PCA, plots."""

from __future__ import annotations

import itertools
import random

import numpy as np
import pytest
import torch
from conftest import sampler_setup

from kgexp.analysis.hardness import ANALYSIS_SAMPLERS, cosine_to_positive, draw_negatives, summarize
from kgexp.analysis.plots import pca_panels, similarity_histogram
from kgexp.data.filter_index import FilterIndex
from kgexp.evaluation.geometry import intra_group_similarity, mean_pairwise_cosine, pca_2d
from kgexp.models import MODELS


def brute_mean_pairwise_cosine(vectors: np.ndarray) -> float:
    units = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    pairs = list(itertools.permutations(range(len(units)), 2))
    return float(np.mean([units[i] @ units[j] for i, j in pairs]))


def test_mean_pairwise_cosine_by_brute_force():
    g = torch.Generator().manual_seed(0)
    vectors = torch.randn(20, 5, generator=g)
    groups = torch.tensor([0] * 7 + [1] * 2 + [2] * 1 + [3] * 10)
    found = mean_pairwise_cosine(vectors, groups, 5)
    for group in (0, 1, 3):
        expected = brute_mean_pairwise_cosine(vectors[groups == group].numpy().astype(np.float64))
        assert float(found[group]) == pytest.approx(expected, rel=1e-9)
    assert found[2].isnan() and found[4].isnan()  # one member, no member


def test_intra_group_similarity_by_brute_force():
    g = torch.Generator().manual_seed(1)
    entity = torch.randn(12, 4, generator=g)
    train = torch.tensor(
        [(0, 0, 1), (0, 0, 2), (0, 0, 3), (0, 0, 3), (4, 0, 5), (4, 0, 1), (6, 1, 7), (8, 1, 9)]
    )
    found = intra_group_similarity(entity, train, 2)
    e = entity.numpy().astype(np.float64)
    hr = np.mean([brute_mean_pairwise_cosine(e[[1, 2, 3]]), brute_mean_pairwise_cosine(e[[5, 1]])])
    relation = np.mean([brute_mean_pairwise_cosine(e[[1, 2, 3, 5]]), brute_mean_pairwise_cosine(e[[7, 9]])])
    assert found["hr_tails"] == pytest.approx(hr, rel=1e-9)
    assert found["relation_tails"] == pytest.approx(relation, rel=1e-9)


def test_pca_variances_are_the_top_eigenvalues_of_the_covariance():
    g = torch.Generator().manual_seed(2)
    points = torch.randn(200, 6, generator=g) * torch.tensor([5.0, 3.0, 1.0, 0.5, 0.2, 0.1])
    coordinates = pca_2d(points).double().numpy()
    eigenvalues = np.linalg.eigvalsh(np.cov(points.double().numpy(), rowvar=False))[::-1]
    assert np.var(coordinates, axis=0, ddof=1) == pytest.approx(eigenvalues[:2], rel=1e-5)
    assert abs(np.corrcoef(coordinates.T)[0, 1]) < 1e-5


@pytest.mark.parametrize("model_name", sorted(MODELS))
@pytest.mark.parametrize("sampler", ANALYSIS_SAMPLERS)
def test_cosine_statistics_against_a_direct_computation(model_name, sampler, tmp_path):
    rng = random.Random(0)
    train = torch.tensor([(rng.randrange(25), rng.randrange(2), rng.randrange(25)) for _ in range(80)])
    model = MODELS[model_name](25, 2, dim=6)
    g = torch.Generator().manual_seed(3)
    known = FilterIndex(train, 25, 2)
    sampled = draw_negatives(
        sampler, model, train[:30], sampler_setup(train, 25, 2, tmp_path), known, 16, g, 2
    )
    assert sampled.negatives.shape == (30, 16, model.entity.embedding_dim)
    assert sorted(sampled.rows.tolist()) == list(range(30))
    similarities = cosine_to_positive(sampled)
    p, n = sampled.positives.double().numpy(), sampled.negatives.double().numpy()
    direct = np.array(
        [
            [n[i, k] @ p[i] / np.linalg.norm(n[i, k]) / np.linalg.norm(p[i]) for k in range(16)]
            for i in range(30)
        ]
    )
    assert similarities.double().numpy() == pytest.approx(direct, abs=1e-5)
    stats = summarize(similarities)
    assert stats["count"] == 30 * 16
    assert stats["mean"] == pytest.approx(direct.mean(), abs=1e-5)
    assert stats["std"] == pytest.approx(direct.std(ddof=1), abs=1e-5)
    assert stats["median"] == pytest.approx(np.quantile(direct, 0.5), abs=1e-5)
    assert stats["p95"] == pytest.approx(np.quantile(direct, 0.95), abs=1e-5)


def test_emu_negatives_are_closer_to_the_positive_than_uniform_ones(tmp_path):
    train = torch.tensor([(i, 0, (i * 7) % 40) for i in range(40)])
    model = MODELS["distmult"](40, 1, dim=16)
    setup, known = sampler_setup(train, 40, 1, tmp_path), FilterIndex(train, 40, 1)
    means = {}
    for sampler in ("uniform", "emu"):
        sampled = draw_negatives(sampler, model, train, setup, known, 32, torch.Generator().manual_seed(4))
        means[sampler] = float(cosine_to_positive(sampled).mean())
    assert means["emu"] > means["uniform"] + 0.3  # 61% of coordinates copied from the positive


def test_plots_are_written_and_non_empty(tmp_path):
    g = torch.Generator().manual_seed(5)
    similarity_histogram(
        {"a": torch.rand(100, generator=g), "b": torch.rand(100, generator=g)}, tmp_path / "h.png", "t"
    )
    panels = {name: (torch.randn(1, 2, generator=g), torch.randn(30, 2, generator=g)) for name in "abcdef"}
    pca_panels(panels, tmp_path / "p.png", "t")
    for name in ("h.png", "p.png"):
        data = (tmp_path / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
