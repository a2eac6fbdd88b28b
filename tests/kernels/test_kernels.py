"""The fused CPU kernels against plain gather-then-score references kept here: scores, gradients, ranks."""

from __future__ import annotations

import pytest
import torch

from kgexp import kernels
from kgexp.data.filter_index import FilterIndex
from kgexp.evaluation.ranking import rank_counts_with_tensor_ops, rank_queries, ranks_from_scores
from kgexp.models import MODELS
from kgexp.sides import BOTH_SIDES, TAIL, split_query
from kgexp.training.emu import EmbeddingMutation

GAMMA = 6.0
KINDS = {"dot": kernels.DOT, "l1": kernels.L1, "l2": kernels.L2, "modulus": kernels.MODULUS}


def reference_scores(kind: str, queries: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """Scores of ``(B, w)`` queries against ``(B, K, w)`` candidates, written out plainly."""
    q = queries.unsqueeze(1)
    if kind == "dot":
        return (q * candidates).sum(-1)
    difference = q - candidates
    if kind == "l1":
        return GAMMA - difference.abs().sum(-1)
    if kind == "l2":
        return GAMMA - difference.pow(2).sum(-1).sqrt()
    re, im = difference.chunk(2, dim=-1)
    return GAMMA - (re.pow(2) + im.pow(2)).sqrt().sum(-1)


def leaves(rows: int, width: int, batch: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    table = torch.randn(rows, width, generator=generator).requires_grad_()
    queries = torch.randn(batch, width, generator=generator).requires_grad_()
    return table, queries


def gradients(scores: torch.Tensor, *inputs: torch.Tensor, seed: int = 1) -> list[torch.Tensor]:
    weights = torch.randn(scores.shape, generator=torch.Generator().manual_seed(seed))
    return list(torch.autograd.grad((scores * weights).sum(), inputs, retain_graph=True))


@pytest.fixture(scope="module", autouse=True)
def built() -> None:
    assert kernels.available(), "the fused kernels did not build (is a C++ compiler installed?)"


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("width", [6, 34])  # below and above one vector register of floats
def test_score_each_matches_the_gathered_reference_in_scores_and_gradients(kind, width):
    table, queries = leaves(rows=23, width=width, batch=9)
    ids = torch.randint(23, (9, 40), generator=torch.Generator().manual_seed(2))
    ids[0, :5] = 4  # repeated candidates in a row, and a row shared by many queries
    ids[3, :] = 4
    fused = kernels.score_each(queries, table, ids, KINDS[kind], GAMMA)
    plain = reference_scores(kind, queries, table[ids])
    torch.testing.assert_close(fused, plain, rtol=1e-5, atol=1e-5)
    for got, expected in zip(gradients(fused, queries, table), gradients(plain, queries, table), strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", ["l1", "l2", "modulus"])
def test_a_candidate_equal_to_its_query_gets_a_zero_subgradient_not_nan(kind):
    table, queries = leaves(rows=5, width=8, batch=2)
    with torch.no_grad():
        queries[0] = table[3]
    scores = kernels.score_each(queries, table, torch.tensor([[3, 1], [2, 3]]), KINDS[kind], GAMMA)
    grad_queries, grad_table = gradients(scores, queries, table)
    assert torch.isfinite(grad_queries).all() and torch.isfinite(grad_table).all()
    assert scores[0, 0].item() == pytest.approx(GAMMA)


def test_score_each_gradients_do_not_depend_on_the_number_of_threads():
    table, queries = leaves(rows=300, width=40, batch=64)
    ids = torch.randint(300, (64, 50), generator=torch.Generator().manual_seed(3))
    before = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            results.append(
                gradients(kernels.score_each(queries, table, ids, kernels.L1, GAMMA), queries, table)
            )
    finally:
        torch.set_num_threads(before)
    for one, two in zip(*results, strict=True):
        assert torch.equal(one, two)


def test_out_of_range_ids_are_an_error_not_a_read_past_the_table():
    table, queries = leaves(rows=5, width=4, batch=2)
    with pytest.raises(RuntimeError, match="out of range"):
        kernels.score_each(queries, table, torch.tensor([[1, 5], [0, 0]]), kernels.DOT, GAMMA)


@pytest.mark.parametrize("kind", ["l1", "l2", "modulus"])
def test_score_all_matches_every_pair_scored_one_by_one(kind):
    table, queries = leaves(rows=517, width=10, batch=37)  # several tiles and query blocks, ragged ends
    with torch.no_grad():
        fused = kernels.score_all(queries, table, KINDS[kind], GAMMA)
        plain = reference_scores(kind, queries, table.unsqueeze(0).expand(37, -1, -1))
    torch.testing.assert_close(fused, plain, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["transe", "transe_l2", "distmult", "complex", "rotate"])
def test_models_rank_and_train_as_with_gathered_candidates(name):
    """The model paths that use the kernels (score_ids, compare_all without gradients) against
    compare_each on gathered embeddings, and filtered ranks against brute force."""
    torch.manual_seed(0)
    options = {"p_norm": 2} if name == "transe_l2" else {}
    model = MODELS[name.split("_")[0]](40, 5, dim=6, **options)
    generator = torch.Generator().manual_seed(1)
    triples = torch.stack(
        [
            torch.randint(40, (30,), generator=generator),
            torch.randint(5, (30,), generator=generator),
            torch.randint(40, (30,), generator=generator),
        ],
        dim=1,
    )
    for side in BOTH_SIDES:
        anchors, relations, targets = split_query(triples, side)
        queries = model.embed_query(anchors, relations, side)
        ids = torch.randint(40, (30, 12), generator=generator)
        fused = model.score_ids(queries, ids)
        plain = model.compare_each(queries, model.entity(ids))
        torch.testing.assert_close(fused, plain, rtol=1e-5, atol=1e-5)
        params = list(model.parameters())
        for got, expected in zip(gradients(fused, *params), gradients(plain, *params), strict=True):
            torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)

    index = FilterIndex(triples, 40, 5)
    with torch.no_grad():
        for side in BOTH_SIDES:
            anchors, relations, targets = split_query(triples, side)
            queries = model.embed_query(anchors, relations, side)
            all_ids = torch.arange(40).expand(30, 40)
            brute = model.compare_each(queries, model.entity(all_ids))  # every entity, gathered
            rows, cols = index[side].answer_pairs(anchors, relations)
            expected = ranks_from_scores(brute, targets, rows, cols)
            got = rank_queries(model, triples, side, index)
            torch.testing.assert_close(got.optimistic, expected.optimistic)
            torch.testing.assert_close(got.pessimistic, expected.pessimistic)


def lowbias32(x: int) -> int:
    """The mask hash in plain Python integers (a second implementation)."""
    x ^= x >> 16
    x = (x * 0x7FEB352D) & 0xFFFFFFFF
    x ^= x >> 15
    x = (x * 0x846CA68B) & 0xFFFFFFFF
    return x ^ (x >> 16)


def test_mutation_keep_bits_are_the_documented_hash():
    seeds, levels = (0xDEADBEEF, 12345), 30000
    keep = kernels.mutation_keep(3, 4, 5, seeds, levels, False)
    for b, k, j in [(0, 1, 0), (1, 2, 3), (2, 3, 4), (2, 1, 2)]:
        key = lowbias32(lowbias32((b * 4 + k) ^ seeds[0]) ^ seeds[1])
        hashed = lowbias32(key ^ j)
        assert keep[b, k, j].item() == ((hashed & 0xFFFF) < levels)
    assert keep[:, 0].all()


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("shared", [False, True])
def test_score_mutated_matches_mutating_the_gathered_candidates(kind, shared):
    table, queries = leaves(rows=31, width=12, batch=8)
    generator = torch.Generator().manual_seed(5)
    ids = torch.randint(31, (8, 1 + 20), generator=generator)
    ids[2, 3] = ids[2, 0]  # a negative equal to the positive
    seeds, levels = (77, 88), round(0.39 * 2**16)
    fused = kernels.score_mutated(queries, table, ids, KINDS[kind], GAMMA, seeds, levels, shared)
    keep = kernels.mutation_keep(8, 21, 12, seeds, levels, shared)
    candidates = table[ids]
    plain = reference_scores(kind, queries, torch.where(keep, candidates, candidates[:, :1]))
    torch.testing.assert_close(fused, plain, rtol=1e-5, atol=1e-5)
    for got, expected in zip(gradients(fused, queries, table), gradients(plain, queries, table), strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["transe", "distmult", "rotate"])
def test_unmutated_emu_candidates_score_as_gathered_rows(name, monkeypatch):
    """mutation=none (the "without mutation" ablation) scores the candidates themselves with the fused
    kernel (no gathered (B, K, width) block), with the gradients of the gathered rows; it draws nothing
    from the generator."""
    torch.manual_seed(0)
    model = MODELS[name](30, 4, dim=8)
    queries = model.embed_query(torch.arange(6), torch.arange(6) % 4, TAIL)
    ids = torch.randint(30, (6, 10), generator=torch.Generator().manual_seed(2))
    generator = torch.Generator().manual_seed(9)
    state = generator.get_state()
    compare_each = model.compare_each
    with monkeypatch.context() as patch:
        patch.setattr(model, "compare_each", lambda *_: pytest.fail("gathered the candidates"))
        scores = EmbeddingMutation(mutation="none").scores(model, queries, ids, generator)
    assert torch.equal(generator.get_state(), state)
    plain = compare_each(queries, model.entity(ids))
    torch.testing.assert_close(scores, plain, rtol=1e-5, atol=1e-5)
    params = list(model.parameters())
    for got, expected in zip(gradients(scores, *params), gradients(plain, *params), strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["transe", "complex", "rotate"])
def test_emu_scores_are_the_same_fused_and_with_tensor_ops(name):
    torch.manual_seed(0)
    model = MODELS[name](30, 4, dim=8)
    mutation = EmbeddingMutation(keep_prob=0.39, share_complex_mask=name == "rotate")
    queries = model.embed_query(torch.arange(6), torch.arange(6) % 4, TAIL)
    ids = torch.randint(30, (6, 10), generator=torch.Generator().manual_seed(2))
    fused = mutation.scores(model, queries, ids, torch.Generator().manual_seed(9))
    candidates = model.entity(ids)
    mutated = mutation(candidates, model.entity_factor == 2, torch.Generator().manual_seed(9))
    plain = model.compare_each(queries, mutated)
    torch.testing.assert_close(fused, plain, rtol=1e-5, atol=1e-5)
    assert not torch.equal(mutated, candidates)  # the mask did mutate
    params = list(model.parameters())
    for got, expected in zip(gradients(fused, *params), gradients(plain, *params), strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_rank_counts_read_a_transposed_block_as_the_row_major_one():
    generator = torch.Generator().manual_seed(4)
    scores = torch.randint(0, 5, (70, 300), generator=generator).float()  # many ties
    scores[3, 10] = float("nan")
    scores[5, 7] = float("nan")
    targets = torch.randint(300, (70,), generator=generator)
    targets[5] = 7  # a NaN target
    rows = torch.randint(70, (400,), generator=generator)
    cols = torch.randint(300, (400,), generator=generator)
    transposed = scores.T.contiguous().T  # (70, 300) view of a row-major (300, 70) matrix
    assert transposed.stride() == (1, 70)
    expected = rank_counts_with_tensor_ops(scores, targets, rows, cols)
    for block in (scores, transposed):
        for got, want in zip(kernels.rank_counts(block, targets, rows, cols), expected, strict=True):
            assert torch.equal(got, want)


@pytest.mark.parametrize("p", [1, 2, 3, 5])
@pytest.mark.parametrize("modulus", [False, True])
def test_power_sum_matches_autograd_of_the_plain_expression_in_float64(p, modulus):
    x = torch.randn(67, 10, generator=torch.Generator().manual_seed(p)) * 0.7  # 67 rows: a ragged block
    x[3, 2] = 0.0  # |x|^p at 0: value 0, slope 0
    reference = x.double().requires_grad_()
    values = reference
    if modulus:
        re, im = reference.chunk(2, dim=-1)
        values = torch.sqrt(re**2 + im**2 + 1e-30)
    expected = values.abs().pow(p).sum()
    (expected_grad,) = torch.autograd.grad(expected * 0.3, reference)
    fused = x.clone().requires_grad_()
    got = kernels.power_sum(fused, p, modulus)
    (got_grad,) = torch.autograd.grad(got * 0.3, fused)
    torch.testing.assert_close(got.double(), expected, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(got_grad.double(), expected_grad, rtol=1e-5, atol=1e-6)


def test_power_sum_does_not_depend_on_the_number_of_threads():
    x = torch.randn(1000, 30, generator=torch.Generator().manual_seed(0))
    before = torch.get_num_threads()
    try:
        sums = []
        for threads in (1, 2):
            torch.set_num_threads(threads)
            sums.append(kernels.power_sum(x, 3, False))
    finally:
        torch.set_num_threads(before)
    assert torch.equal(*sums)


def test_rank_modulus_counts_as_the_full_score_block_with_ties_nan_and_filters():
    """The bound only skips entities that score below the target; every count equals the block's."""
    table, queries = leaves(rows=203, width=12, batch=41)  # a ragged last tile, an odd last query
    with torch.no_grad():
        table[7] = table[3]  # exact ties with the target below
        table[11] = queries[0] + 1e-3  # near the first query, far from the others
        queries[5] = float("nan")  # a NaN query: every score NaN
        table[100, 0] = float("nan")  # a NaN candidate: better than any target
        generator = torch.Generator().manual_seed(6)
        targets = torch.randint(203, (41,), generator=generator)
        targets[1], targets[2] = 3, 7
        rows = torch.randint(41, (300,), generator=generator)
        cols = torch.randint(203, (300,), generator=generator)
        rows[:3], cols[:3] = 1, torch.tensor([7, 3, 11])  # known answers tied with and equal to the target
        block = kernels.score_all(queries, table, kernels.MODULUS, GAMMA)
        expected = rank_counts_with_tensor_ops(block, targets, rows, cols)
        got = kernels.rank_modulus(queries, table, targets, rows, cols, GAMMA)
    for counts, want in zip(got, expected, strict=True):
        assert torch.equal(counts, want)


def test_rank_modulus_prunes_without_changing_ranks_of_a_trained_like_model():
    """Queries next to their targets: the bound rules most entities out, the ranks stay those of the block."""
    generator = torch.Generator().manual_seed(8)
    table = torch.randn(500, 16, generator=generator)
    targets = torch.randint(500, (64,), generator=generator)
    queries = table[targets] + 0.05 * torch.randn(64, 16, generator=generator)
    empty = torch.zeros(0, dtype=torch.int64)
    block = kernels.score_all(queries, table, kernels.MODULUS, GAMMA)
    expected = rank_counts_with_tensor_ops(block, targets, empty, empty)
    got = kernels.rank_modulus(queries, table, targets, empty, empty, GAMMA)
    assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])
    assert (expected[0] == 0).float().mean() > 0.9  # nearly every target ranks first
