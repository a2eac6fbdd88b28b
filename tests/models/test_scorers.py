"""Scoring functions of TransE, DistMult, ComplEx and RotatE against hand-computed values.

Reference scores are computed with plain Python floats / complex numbers straight from the textbook
formulas, never with the model code.
"""

from __future__ import annotations

import cmath
import math

import pytest
import torch

from kgexp.models import ComplEx, DistMult, KGEModel, RotatE, TransE
from kgexp.models.base import DistanceModel

HEAD, TAIL = "head", "tail"

# --------------------------------------------------------------------------------------------------
# Hand-chosen tables (4 entities, 2 relations) and the triples scored in every hand test.
# --------------------------------------------------------------------------------------------------
TRIPLES = [(0, 0, 1), (1, 1, 2), (2, 0, 3), (3, 1, 0), (2, 1, 2), (0, 1, 3)]

# Real models, dim 3.
REAL_ENTITIES = [[1.0, 0.0, 2.0], [0.0, 1.0, -1.0], [2.0, 2.0, 0.0], [-1.0, 0.5, 1.0]]
REAL_RELATIONS = [[1.0, -1.0, 0.0], [0.5, 0.0, 2.0]]

# Complex models, dim 2: entities stored as [re_0, re_1 | im_0, im_1].
COMPLEX_ENTITIES = [[1.0, 0.0, 0.0, 1.0], [0.0, 1.0, 1.0, 1.0], [2.0, -1.0, 0.5, 0.0], [-1.0, 1.0, 1.0, -2.0]]
# ComplEx relations stored as [re_0, re_1 | im_0, im_1].
COMPLEX_RELATIONS = [[1.0, 0.0, 1.0, -1.0], [0.0, 2.0, -1.0, 0.5]]
# RotatE relations: dim raw values; with gamma = 6 and dim = 2, embedding_range = (6 + 2) / 2 = 4,
# so a raw value x means the phase x * pi / 4 (2 -> pi/2, 1 -> pi/4, -4 -> -pi, 3 -> 3pi/4).
ROTATE_RELATIONS = [[2.0, 0.0], [1.0, -4.0]]


def _set_tables(model: KGEModel, entities: list[list[float]], relations: list[list[float]]) -> KGEModel:
    model.double()
    with torch.no_grad():
        model.entity.weight.copy_(torch.tensor(entities, dtype=torch.float64))
        model.relation.weight.copy_(torch.tensor(relations, dtype=torch.float64))
    return model


def _score(model: KGEModel, triples: list[tuple[int, int, int]]) -> torch.Tensor:
    h, r, t = torch.tensor(triples, dtype=torch.int64).unbind(1)
    with torch.no_grad():
        return model.score_triples(h, r, t)


def _as_complex(row: list[float]) -> list[complex]:
    half = len(row) // 2
    return [complex(row[k], row[half + k]) for k in range(half)]


# -- textbook reference formulas in plain Python ----------------------------------------------------
def ref_transe(h: list[float], r: list[float], t: list[float], gamma: float, p: int) -> float:
    diff = [hk + rk - tk for hk, rk, tk in zip(h, r, t, strict=True)]
    return gamma - sum(abs(d) ** p for d in diff) ** (1.0 / p)


def ref_distmult(h: list[float], r: list[float], t: list[float]) -> float:
    return sum(hk * rk * tk for hk, rk, tk in zip(h, r, t, strict=True))


def ref_complex(h: list[float], r: list[float], t: list[float]) -> float:
    hc, rc, tc = _as_complex(h), _as_complex(r), _as_complex(t)
    return sum(hk * rk * tk.conjugate() for hk, rk, tk in zip(hc, rc, tc, strict=True)).real


def ref_rotate(
    h: list[float], raw: list[float], t: list[float], gamma: float, embedding_range: float
) -> float:
    hc, tc = _as_complex(h), _as_complex(t)
    thetas = [x * math.pi / embedding_range for x in raw]
    return gamma - sum(abs(hk * cmath.exp(1j * th) - tk) for hk, th, tk in zip(hc, thetas, tc, strict=True))


# --------------------------------------------------------------------------------------------------
# Hand-computed scores
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("p_norm", [1, 2])
def test_transe_scores_by_hand(p_norm):
    model = _set_tables(TransE(4, 2, 3, gamma=5.0, p_norm=p_norm), REAL_ENTITIES, REAL_RELATIONS)
    got = _score(model, TRIPLES)
    expected = [
        ref_transe(REAL_ENTITIES[h], REAL_RELATIONS[r], REAL_ENTITIES[t], 5.0, p_norm) for h, r, t in TRIPLES
    ]
    torch.testing.assert_close(got, torch.tensor(expected, dtype=torch.float64), rtol=0, atol=1e-12)
    # First triple written out: h + r - t = [1+1-0, 0-1-1, 2+0+1] = [2, -2, 3].
    first = 5.0 - (2 + 2 + 3) if p_norm == 1 else 5.0 - math.sqrt(4 + 4 + 9)
    assert got[0].item() == pytest.approx(first, abs=1e-12)


def test_distmult_scores_by_hand():
    model = _set_tables(DistMult(4, 2, 3), REAL_ENTITIES, REAL_RELATIONS)
    got = _score(model, TRIPLES)
    expected = [ref_distmult(REAL_ENTITIES[h], REAL_RELATIONS[r], REAL_ENTITIES[t]) for h, r, t in TRIPLES]
    torch.testing.assert_close(got, torch.tensor(expected, dtype=torch.float64), rtol=0, atol=1e-12)
    # (0, 0, 1): 1*1*0 + 0*(-1)*1 + 2*0*(-1) = 0;  (1, 1, 2): 0*0.5*2 + 1*0*2 + (-1)*2*0 = 0;
    # (2, 0, 3): 2*1*(-1) + 2*(-1)*0.5 + 0 = -3;   (0, 1, 3): 1*0.5*(-1) + 0 + 2*2*1 = 3.5.
    assert got[0].item() == 0.0
    assert got[1].item() == 0.0
    assert got[2].item() == pytest.approx(-3.0)
    assert got[5].item() == pytest.approx(3.5)


def test_complex_scores_by_hand():
    model = _set_tables(ComplEx(4, 2, 2), COMPLEX_ENTITIES, COMPLEX_RELATIONS)
    got = _score(model, TRIPLES)
    expected = [
        ref_complex(COMPLEX_ENTITIES[h], COMPLEX_RELATIONS[r], COMPLEX_ENTITIES[t]) for h, r, t in TRIPLES
    ]
    torch.testing.assert_close(got, torch.tensor(expected, dtype=torch.float64), rtol=0, atol=1e-12)
    # (0, 0, 1): h = (1, i), r = (1+i, -i), conj(t) = (-i, 1-i)
    #   k=0: 1 * (1+i) * (-i) = 1 - i;   k=1: i * (-i) * (1-i) = 1 - i;   Re(sum) = 2.
    assert got[0].item() == pytest.approx(2.0, abs=1e-12)


def test_complex_is_not_symmetric():
    model = _set_tables(ComplEx(4, 2, 2), COMPLEX_ENTITIES, COMPLEX_RELATIONS)
    forward, backward = _score(model, [(0, 0, 1), (1, 0, 0)])
    # (1, 0, 0): h = (i, 1+i), r = (1+i, -i), conj(t) = (1, -i)
    #   k=0: i * (1+i) * 1 = -1 + i;   k=1: (1+i) * (-i) * (-i) = -1 - i;   Re(sum) = -2.
    assert forward.item() == pytest.approx(2.0, abs=1e-12)
    assert backward.item() == pytest.approx(-2.0, abs=1e-12)


def test_rotate_scores_by_hand():
    model = _set_tables(RotatE(4, 2, 2, gamma=6.0), COMPLEX_ENTITIES, ROTATE_RELATIONS)
    assert model.embedding_range == pytest.approx(4.0)
    got = _score(model, TRIPLES)
    expected = [
        ref_rotate(COMPLEX_ENTITIES[h], ROTATE_RELATIONS[r], COMPLEX_ENTITIES[t], 6.0, 4.0)
        for h, r, t in TRIPLES
    ]
    torch.testing.assert_close(got, torch.tensor(expected, dtype=torch.float64), rtol=0, atol=1e-12)
    # (0, 0, 1): h = (1, i), rotations (e^{i pi/2}, e^0) = (i, 1), so h*r = (i, i); t = (i, 1+i):
    #   |i - i| + |i - (1+i)| = 0 + 1, score = 6 - 1 = 5.
    assert got[0].item() == pytest.approx(5.0, abs=1e-12)
    # (3, 1, 0): h = (-1+i, 1-2i), rotations (e^{i pi/4}, e^{-i pi}) ; t = (1, i)
    h0 = complex(-1, 1) * cmath.exp(1j * math.pi / 4)  # = -sqrt(2)
    h1 = complex(1, -2) * -1  # rotation by -pi: -1 + 2i
    assert got[3].item() == pytest.approx(6.0 - abs(h0 - 1) - abs(h1 - 1j), abs=1e-12)
    # |-sqrt(2) - 1| + |(-1 + 2i) - i| = (sqrt(2) + 1) + sqrt(2), score = 5 - 2 sqrt(2).
    assert got[3].item() == pytest.approx(5.0 - 2.0 * math.sqrt(2), abs=1e-12)


def test_rotate_phase_follows_init_range():
    # With init_range = 2 a raw value of 1 is a rotation by pi/2 regardless of gamma and dim.
    model = _set_tables(RotatE(2, 1, 1, gamma=10.0, init_range=2.0), [[1.0, 0.0], [0.0, 1.0]], [[1.0]])
    assert model.embedding_range == 2.0
    # h = 1 rotated by pi/2 is i = t exactly: distance 0.
    assert _score(model, [(0, 0, 1)]).item() == pytest.approx(10.0, abs=1e-12)
    # t = i rotated by pi/2 is -1; distance to h = 1 is 2.
    assert _score(model, [(1, 0, 0)]).item() == pytest.approx(8.0, abs=1e-12)


# --------------------------------------------------------------------------------------------------
# score_candidates agrees with score_triples
# --------------------------------------------------------------------------------------------------
NUM_ENTITIES, NUM_RELATIONS, DIM = 7, 3, 4

MODEL_FACTORIES = {
    "transe-l1": lambda: TransE(NUM_ENTITIES, NUM_RELATIONS, DIM, gamma=3.0, p_norm=1),
    "transe-l2": lambda: TransE(NUM_ENTITIES, NUM_RELATIONS, DIM, gamma=3.0, p_norm=2),
    "distmult": lambda: DistMult(NUM_ENTITIES, NUM_RELATIONS, DIM, gamma=3.0),
    "complex": lambda: ComplEx(NUM_ENTITIES, NUM_RELATIONS, DIM, gamma=3.0),
    "rotate": lambda: RotatE(NUM_ENTITIES, NUM_RELATIONS, DIM, gamma=3.0),
}
DISTANCE_FACTORIES = {k: v for k, v in MODEL_FACTORIES.items() if k.startswith(("transe", "rotate"))}


def _random_model(name: str, seed: int = 0) -> KGEModel:
    torch.manual_seed(seed)
    return MODEL_FACTORIES[name]().double()


def _all_queries() -> tuple[torch.Tensor, torch.Tensor]:
    anchors = torch.arange(NUM_ENTITIES).repeat_interleave(NUM_RELATIONS)
    relations = torch.arange(NUM_RELATIONS).repeat(NUM_ENTITIES)
    return anchors, relations


def _triple_scores(model: KGEModel, anchors, relations, candidates: torch.Tensor, side: str) -> torch.Tensor:
    """Per-triple scores of (B, K) candidate ids, one score_triples call per column."""
    columns = []
    for k in range(candidates.shape[1]):
        cand = candidates[:, k]
        if side == TAIL:
            columns.append(model.score_triples(anchors, relations, cand))
        else:
            columns.append(model.score_triples(cand, relations, anchors))
    return torch.stack(columns, dim=1)


@pytest.mark.parametrize("side", [HEAD, TAIL])
@pytest.mark.parametrize("name", sorted(MODEL_FACTORIES))
def test_score_candidates_all_entities_matches_triples(name, side):
    model = _random_model(name)
    anchors, relations = _all_queries()
    with torch.no_grad():
        got = model.score_candidates(anchors, relations, side, None)
        every = torch.arange(NUM_ENTITIES).expand(len(anchors), -1)
        expected = _triple_scores(model, anchors, relations, every, side)
    assert got.shape == (NUM_ENTITIES * NUM_RELATIONS, NUM_ENTITIES)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("side", [HEAD, TAIL])
@pytest.mark.parametrize("name", sorted(MODEL_FACTORIES))
def test_score_candidates_shared_chunk_matches_triples(name, side):
    model = _random_model(name, seed=1)
    anchors, relations = _all_queries()
    chunk = torch.tensor([5, 0, 3, 3, 6])  # includes a duplicate id
    with torch.no_grad():
        got = model.score_candidates(anchors, relations, side, chunk)
        expected = _triple_scores(model, anchors, relations, chunk.expand(len(anchors), -1), side)
    assert got.shape == (len(anchors), len(chunk))
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("side", [HEAD, TAIL])
@pytest.mark.parametrize("name", sorted(MODEL_FACTORIES))
def test_score_candidates_per_query_matches_triples(name, side):
    model = _random_model(name, seed=2)
    anchors, relations = _all_queries()
    generator = torch.Generator().manual_seed(3)
    per_query = torch.randint(0, NUM_ENTITIES, (len(anchors), 6), generator=generator)
    with torch.no_grad():
        got = model.score_candidates(anchors, relations, side, per_query)
        expected = _triple_scores(model, anchors, relations, per_query, side)
        # score_embeddings with the candidates' own embeddings is the same thing.
        via_embeddings = model.score_embeddings(anchors, relations, side, model.entity(per_query))
    assert got.shape == per_query.shape
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(via_embeddings, expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", sorted(MODEL_FACTORIES))
def test_random_scores_match_reference_formula(name):
    """The whole (query x entity) score matrix of random float64 weights against the Python formulas."""
    model = _random_model(name, seed=4)
    ent = model.entity.weight.detach().tolist()
    rel = model.relation.weight.detach().tolist()
    if name.startswith("transe"):
        p = model.p_norm

        def ref(h, r, t):
            return ref_transe(ent[h], rel[r], ent[t], model.gamma, p)
    elif name == "distmult":

        def ref(h, r, t):
            return ref_distmult(ent[h], rel[r], ent[t])
    elif name == "complex":

        def ref(h, r, t):
            return ref_complex(ent[h], rel[r], ent[t])
    else:

        def ref(h, r, t):
            return ref_rotate(ent[h], rel[r], ent[t], model.gamma, model.embedding_range)

    anchors, relations = _all_queries()
    with torch.no_grad():
        tails = model.score_candidates(anchors, relations, TAIL).tolist()
        heads = model.score_candidates(anchors, relations, HEAD).tolist()
    for row, (a, r) in enumerate(zip(anchors.tolist(), relations.tolist(), strict=True)):
        for e in range(NUM_ENTITIES):
            assert tails[row][e] == pytest.approx(ref(a, r, e), rel=1e-10, abs=1e-10)
            assert heads[row][e] == pytest.approx(ref(e, r, a), rel=1e-10, abs=1e-10)


# --------------------------------------------------------------------------------------------------
# Chunking of the distance models
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("chunk_elements", [1, 7, 50])
@pytest.mark.parametrize("side", [HEAD, TAIL])
@pytest.mark.parametrize("name", sorted(DISTANCE_FACTORIES))
def test_distance_chunking_matches_unchunked(name, side, chunk_elements):
    model = _random_model(name, seed=5)
    anchors, relations = _all_queries()
    with torch.no_grad():
        queries = model.embed_query(anchors, relations, side)
        unchunked = model.compare_all(queries, model.entity.weight)
        # The generic chunked path of DistanceModel (TransE overrides compare_all with cdist).
        generic_unchunked = DistanceModel.compare_all(model, queries, model.entity.weight)
        model.chunk_elements = chunk_elements
        chunked = model.compare_all(queries, model.entity.weight)
        generic_chunked = DistanceModel.compare_all(model, queries, model.entity.weight)
        via_candidates = model.score_candidates(anchors, relations, side)
    assert type(model).chunk_elements != chunk_elements  # the class default is untouched
    for other in (chunked, generic_unchunked, generic_chunked, via_candidates):
        torch.testing.assert_close(other, unchunked, rtol=1e-10, atol=1e-10)


def test_chunk_smaller_than_query_block_with_uneven_tail():
    # 3 queries of width 8 (RotatE dim 4): chunk_elements 48 -> 2 candidates per chunk, 7 = 2+2+2+1.
    model = _random_model("rotate", seed=6)
    anchors, relations = torch.tensor([0, 3, 6]), torch.tensor([2, 0, 1])
    with torch.no_grad():
        full = model.score_candidates(anchors, relations, TAIL)
        model.chunk_elements = 48
        chunked = model.score_candidates(anchors, relations, TAIL)
        expected = _triple_scores(model, anchors, relations, torch.arange(7).expand(3, -1), TAIL)
    torch.testing.assert_close(chunked, full, rtol=0, atol=1e-12)
    torch.testing.assert_close(chunked, expected, rtol=1e-10, atol=1e-10)


# --------------------------------------------------------------------------------------------------
# Initialisation and validation
# --------------------------------------------------------------------------------------------------
INIT_CLASSES = [TransE, DistMult, ComplEx, RotatE]


@pytest.mark.parametrize("cls", INIT_CLASSES)
def test_default_init_range(cls):
    torch.manual_seed(0)
    gamma, dim = 24.0, 8
    model = cls(50, 20, dim, gamma=gamma)
    bound = (gamma + 2.0) / dim  # 3.25
    assert model.embedding_range == pytest.approx(bound)
    assert model.entity.weight.shape == (50, model.entity_factor * dim)
    assert model.relation.weight.shape == (20, model.relation_factor * dim)
    for table in (model.entity.weight, model.relation.weight):
        values = table.detach()
        assert values.abs().max().item() <= bound
        # Uniform over the whole range, not a narrow init: some values are close to the bounds.
        assert values.max().item() > 0.8 * bound
        assert values.min().item() < -0.8 * bound


@pytest.mark.parametrize("cls", INIT_CLASSES)
def test_init_range_overrides(cls):
    torch.manual_seed(0)
    model = cls(50, 20, 8, gamma=24.0, init_range=0.1)
    assert model.embedding_range == pytest.approx(0.1)
    for table in (model.entity.weight, model.relation.weight):
        values = table.detach()
        assert values.abs().max().item() <= 0.1
        assert values.abs().max().item() > 0.05


@pytest.mark.parametrize("dim", [0, -3])
@pytest.mark.parametrize("cls", INIT_CLASSES)
def test_non_positive_dim_raises(cls, dim):
    with pytest.raises(ValueError, match=r"model\.dim"):
        cls(4, 2, dim)


@pytest.mark.parametrize("cls", INIT_CLASSES)
def test_non_positive_init_range_raises(cls):
    with pytest.raises(ValueError, match=r"model\.init_range"):
        cls(4, 2, 3, init_range=0.0)


@pytest.mark.parametrize("p_norm", [0, 3])
def test_transe_bad_p_norm_raises(p_norm):
    with pytest.raises(ValueError, match=r"model\.p_norm"):
        TransE(4, 2, 3, p_norm=p_norm)


def test_hyperparameters():
    assert TransE(4, 2, 3, gamma=5.0, p_norm=2).hyperparameters() == {
        "model": "transe",
        "dim": 3,
        "gamma": 5.0,
        "reciprocal": False,
        "p_norm": 2,
    }
    assert RotatE(4, 2, 3, gamma=6.0, reciprocal=True).hyperparameters() == {
        "model": "rotate",
        "dim": 3,
        "gamma": 6.0,
        "reciprocal": True,
    }


# --------------------------------------------------------------------------------------------------
# Gradients
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(MODEL_FACTORIES))
def test_gradients_reach_both_tables(name):
    torch.manual_seed(7)
    model = MODEL_FACTORIES[name]()
    h = torch.tensor([0, 1, 2, 3, 4, 5])
    r = torch.tensor([0, 1, 2, 0, 1, 2])
    t = torch.tensor([5, 5, 4, 0, 2, 3])  # entity 6 appears in no triple; no triple has h == t
    scores = model.score_triples(h, r, t)
    loss = -torch.nn.functional.logsigmoid(scores).mean() + scores.square().mean()
    loss.backward()
    for table in (model.entity.weight, model.relation.weight):
        assert table.grad is not None
        assert torch.isfinite(table.grad).all()
        assert table.grad.abs().sum().item() > 0
    # Every relation row is used and gets a gradient; only entity rows that appear in a triple do.
    assert (model.relation.weight.grad.abs().sum(1) > 0).all()
    used = set(h.tolist()) | set(t.tolist())
    for e in range(NUM_ENTITIES):
        row_grad = model.entity.weight.grad[e].abs().sum().item()
        assert (row_grad > 0) == (e in used)


def test_complex_modulus_gradient_matches_finite_differences_and_is_zero_at_the_origin():
    from kgexp.models.translational import ComplexModulus

    gen = torch.Generator().manual_seed(0)
    re = torch.randn(4, 5, dtype=torch.float64, generator=gen, requires_grad=True)
    im = torch.randn(4, 5, dtype=torch.float64, generator=gen, requires_grad=True)
    assert torch.autograd.gradcheck(ComplexModulus.apply, (re, im))
    assert torch.allclose(ComplexModulus.apply(re, im), (re**2 + im**2).sqrt())
    zero_re, zero_im = torch.zeros(3, requires_grad=True), torch.zeros(3, requires_grad=True)
    ComplexModulus.apply(zero_re, zero_im).sum().backward()
    assert zero_re.grad.tolist() == [0.0, 0.0, 0.0] and zero_im.grad.tolist() == [0.0, 0.0, 0.0]
