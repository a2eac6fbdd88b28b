"""Filtered ranking, the filter index and the rank metrics against brute-force Python references."""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Iterator

import pytest
import torch
from probes import count_calls_of

from kgexp import kernels
from kgexp.data.filter_index import FilterIndex, SideIndex
from kgexp.evaluation import ranking
from kgexp.evaluation.metrics import RankMetrics
from kgexp.evaluation.ranking import Ranks, rank_queries, ranks_from_scores
from kgexp.models import DistMult

HEAD, TAIL = "head", "tail"
NAN = float("nan")


def count_rank_calls(monkeypatch: pytest.MonkeyPatch) -> Counter:
    """Counts calls of the fused rank kernels (``fused``) and of the tensor-op counting (``tensor_ops``)."""
    calls: Counter = Counter()
    count_calls_of(monkeypatch, calls, "fused", kernels, "rank_counts")
    count_calls_of(monkeypatch, calls, "fused", kernels, "rank_modulus")
    count_calls_of(monkeypatch, calls, "tensor_ops", ranking, "rank_counts_with_tensor_ops")
    return calls


@pytest.fixture(params=["fused", "tensor_ops"])
def rank_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The test runs with the fused rank kernel (float32 CPU scores) and with the tensor ops (the path off
    the CPU); afterwards that path, and only that one, must have counted the ranks."""
    if request.param == "tensor_ops":
        monkeypatch.setattr(kernels, "usable", lambda *tensors: False)
    else:
        assert kernels.available(), "the fused kernels did not build (is a C++ compiler installed?)"
    calls = count_rank_calls(monkeypatch)
    yield request.param
    other = "tensor_ops" if request.param == "fused" else "fused"
    assert calls[request.param] > 0 and calls[other] == 0, f"{request.param} path expected, got {dict(calls)}"


# --------------------------------------------------------------------------------------------------
# A toy graph: 6 entities, 2 relations, several answers per query, and a DistMult with integer weights
# (so that scores are integers and tie a lot; float32 holds them exactly, and float32 is what the fused
# rank kernel takes).
# --------------------------------------------------------------------------------------------------
NUM_ENTITIES, NUM_RELATIONS = 6, 2
TOY_TRIPLES = [
    (0, 0, 1),
    (0, 0, 2),
    (0, 0, 3),
    (1, 0, 2),
    (2, 0, 2),
    (3, 0, 1),
    (4, 0, 1),
    (5, 0, 0),
    (0, 1, 4),
    (1, 1, 4),
    (2, 1, 4),
    (2, 1, 5),
    (3, 1, 3),
    (4, 1, 0),
    (5, 1, 5),
    (0, 0, 1),  # a duplicate
]
ENTITY_WEIGHTS = [[1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [1.0, 1.0], [2.0, -1.0], [-1.0, 0.0]]
RELATION_WEIGHTS = [[1.0, 1.0], [1.0, -1.0]]


def toy_model() -> DistMult:
    model = DistMult(NUM_ENTITIES, NUM_RELATIONS, 2)
    with torch.no_grad():
        model.entity.weight.copy_(torch.tensor(ENTITY_WEIGHTS))
        model.relation.weight.copy_(torch.tensor(RELATION_WEIGHTS))
    assert model.entity.weight.dtype == torch.float32
    return model


def distmult_score(h: int, r: int, t: int) -> float:
    return sum(
        a * b * c for a, b, c in zip(ENTITY_WEIGHTS[h], RELATION_WEIGHTS[r], ENTITY_WEIGHTS[t], strict=True)
    )


def known_answers(triples, side: str) -> dict[tuple[int, int], set[int]]:
    """(anchor, relation) -> set of answers, by brute force."""
    answers: dict[tuple[int, int], set[int]] = {}
    for h, r, t in triples:
        anchor, answer = (h, t) if side == TAIL else (t, h)
        answers.setdefault((anchor, r), set()).add(answer)
    return answers


def brute_rank(scores: list[float], target: int, filtered: set[int]) -> tuple[float, float]:
    """(optimistic, pessimistic): 1 + #{strictly better}, 1 + #{better or equal}; NaN counts as better."""
    s_t = scores[target]
    better = better_equal = 0
    for e, s_e in enumerate(scores):
        if e == target or e in filtered:
            continue
        if math.isnan(s_e) or math.isnan(s_t) or s_e > s_t:
            better += 1
            better_equal += 1
        elif s_e == s_t:
            better_equal += 1
    return 1.0 + better, 1.0 + better_equal


def _pairs(pairs: list[tuple[int, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    if not pairs:
        return torch.empty(0, dtype=torch.int64), torch.empty(0, dtype=torch.int64)
    rows, cols = zip(*pairs, strict=True)
    return torch.tensor(rows), torch.tensor(cols)


# --------------------------------------------------------------------------------------------------
# ranks_from_scores
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(5))
def test_ranks_from_scores_matches_brute_force(rank_path, seed):
    rng = random.Random(seed)
    batch, num_entities = 9, 8
    scores = [[float(rng.randint(0, 3)) for _ in range(num_entities)] for _ in range(batch)]
    targets = [rng.randrange(num_entities) for _ in range(batch)]
    pairs, filtered = [], []
    for row in range(batch):
        known = set(rng.sample(range(num_entities), rng.randint(0, 4)))
        if row % 3 == 0:
            known.add(targets[row])  # the target listed among its own known answers
        pairs += [(row, e) for e in known]
        filtered.append(known - {targets[row]})
    rng.shuffle(pairs)
    ranks = ranks_from_scores(torch.tensor(scores), torch.tensor(targets), *_pairs(pairs))
    expected = [brute_rank(scores[i], targets[i], filtered[i]) for i in range(batch)]
    assert ranks.optimistic.tolist() == [o for o, _ in expected]
    assert ranks.pessimistic.tolist() == [p for _, p in expected]
    assert ranks.realistic.tolist() == [(o + p) / 2 for o, p in expected]
    assert ranks.optimistic.dtype == ranks.pessimistic.dtype == torch.float64


def test_ranks_from_integer_scores(monkeypatch):
    """Only the tensor ops take integer scores, even where the fused kernels are built."""
    calls = count_rank_calls(monkeypatch)
    scores = [[3, 1, 3, 0, 2], [0, 0, 0, 0, 0]]
    ranks = ranks_from_scores(torch.tensor(scores), torch.tensor([2, 4]), *_pairs([(0, 0)]))
    assert kernels.available() and calls == {"tensor_ops": 1}
    # Row 0: target score 3; entity 0 (score 3) is filtered, nothing else is >= 3 -> (1, 1).
    # Row 1: all tied, nothing filtered -> (1, 5).
    assert ranks.optimistic.tolist() == [1.0, 1.0]
    assert ranks.pessimistic.tolist() == [1.0, 5.0]


def test_constant_scores_get_the_middle_rank(rank_path):
    num_entities = 7
    scores = torch.full((3, num_entities), 0.25)
    ranks = ranks_from_scores(scores, torch.tensor([0, 3, 6]), *_pairs([(0, 0), (1, 3), (2, 6)]))
    assert ranks.optimistic.tolist() == [1.0] * 3
    assert ranks.pessimistic.tolist() == [float(num_entities)] * 3
    assert ranks.realistic.tolist() == [(1 + num_entities) / 2] * 3


def test_filtering_known_answers_but_never_the_target(rank_path):
    scores = torch.tensor([[5.0, 4.0, 3.0, 2.0, 3.0]])
    target = torch.tensor([2])
    # Unfiltered: 0 and 1 are better, 4 ties -> (3, 4).
    raw = ranks_from_scores(scores, target, *_pairs([]))
    assert (raw.optimistic.item(), raw.pessimistic.item()) == (3.0, 4.0)
    # Filtering 0 and 4 leaves only 1 better and no tie -> (2, 2).
    ranks = ranks_from_scores(scores, target, *_pairs([(0, 0), (0, 4)]))
    assert (ranks.optimistic.item(), ranks.pessimistic.item()) == (2.0, 2.0)
    # Listing the target itself among the known answers changes nothing (it is never filtered out, so the
    # pessimistic rank still counts it once).
    with_target = ranks_from_scores(scores, target, *_pairs([(0, 4), (0, 2), (0, 0)]))
    assert (with_target.optimistic.item(), with_target.pessimistic.item()) == (2.0, 2.0)
    # Filtering worse entities changes nothing either.
    worse = ranks_from_scores(scores, target, *_pairs([(0, 3)]))
    assert (worse.optimistic.item(), worse.pessimistic.item()) == (3.0, 4.0)


def test_filter_pairs_apply_only_to_their_row(rank_path):
    scores = torch.tensor([[9.0, 1.0, 0.0], [9.0, 1.0, 0.0]])
    ranks = ranks_from_scores(scores, torch.tensor([1, 1]), *_pairs([(0, 0)]))
    assert ranks.optimistic.tolist() == [1.0, 2.0]
    assert ranks.pessimistic.tolist() == [1.0, 2.0]


def test_nan_scores_count_as_better(rank_path):
    scores = torch.tensor(
        [
            [NAN, 1.0, 2.0, 0.5],  # target 1: NaN and 2.0 are better -> (3, 3)
            [NAN, 1.0, 2.0, 0.5],  # same, NaN filtered -> (2, 2)
            [NAN, NAN, NAN, NAN],  # all NaN, target 2 -> nothing may beat the worst rank
            [1.0, NAN, 0.0, 0.0],  # NaN target: worst rank
        ]
    )
    targets = torch.tensor([1, 1, 2, 1])
    ranks = ranks_from_scores(scores, targets, *_pairs([(1, 0)]))
    assert ranks.optimistic[:2].tolist() == [3.0, 2.0]
    assert ranks.pessimistic[:2].tolist() == [3.0, 2.0]
    # A NaN target is never rewarded: the pessimistic rank is the worst possible (4 entities) and the
    # optimistic rank is no better than that.
    assert ranks.pessimistic[2:].tolist() == [4.0, 4.0]
    assert (ranks.optimistic[2:] >= 4.0).all()


def test_nan_target_with_filtering_is_worst_unfiltered_rank(rank_path):
    scores = torch.tensor([[NAN, 7.0, 1.0, 2.0]])
    ranks = ranks_from_scores(scores, torch.tensor([0]), *_pairs([(0, 1)]))
    # Entity 1 filtered: 2 candidates remain, so the worst rank is 3.
    assert ranks.pessimistic.item() == 3.0
    assert ranks.optimistic.item() >= 3.0


def test_ranks_realistic_property():
    ranks = Ranks(optimistic=torch.tensor([1.0, 2.0]), pessimistic=torch.tensor([4.0, 2.0]))
    assert ranks.realistic.tolist() == [2.5, 2.0]


# --------------------------------------------------------------------------------------------------
# rank_queries on the toy graph
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("block_elements", [1, 13, 1 << 24])
@pytest.mark.parametrize("side", [HEAD, TAIL])
def test_rank_queries_matches_brute_force(rank_path, side, block_elements):
    model = toy_model()
    triples = torch.tensor(TOY_TRIPLES)
    index = FilterIndex(triples, NUM_ENTITIES, NUM_RELATIONS)
    answers = known_answers(TOY_TRIPLES, side)
    ranks = rank_queries(model, triples, side, index, block_elements=block_elements)

    expected_opt, expected_pes = [], []
    for h, r, t in TOY_TRIPLES:
        anchor, target = (h, t) if side == TAIL else (t, h)
        if side == TAIL:
            scores = [distmult_score(h, r, e) for e in range(NUM_ENTITIES)]
        else:
            scores = [distmult_score(e, r, t) for e in range(NUM_ENTITIES)]
        opt, pes = brute_rank(scores, target, answers[(anchor, r)] - {target})
        expected_opt.append(opt)
        expected_pes.append(pes)
    assert ranks.optimistic.tolist() == expected_opt
    assert ranks.pessimistic.tolist() == expected_pes
    # The toy graph does exercise ties and filtering.
    assert any(o != p for o, p in zip(expected_opt, expected_pes, strict=True))
    assert any(o > 1 for o in expected_opt)


def test_rank_queries_by_hand(rank_path):
    model = toy_model()
    triples = torch.tensor(TOY_TRIPLES)
    index = FilterIndex(triples, NUM_ENTITIES, NUM_RELATIONS)
    # Tail query (0, 0, ?) with target 1: h * r = (1, 0) * (1, 1) = (1, 0), so scores are the entities'
    # first coordinates: [1, 1, 0, 1, 2, -1]. Known answers 1, 2, 3; 2 and 3 are filtered.
    # Better than 1: entity 4 (2). Tied: entity 0. -> optimistic 2, pessimistic 3.
    ranks = rank_queries(model, triples[:1], TAIL, index)
    assert ranks.optimistic.tolist() == [2.0]
    assert ranks.pessimistic.tolist() == [3.0]
    assert ranks.realistic.tolist() == [2.5]


def test_constant_model_gets_middle_rank(rank_path):
    model = DistMult(NUM_ENTITIES, NUM_RELATIONS, 3)
    with torch.no_grad():
        model.entity.weight.zero_()
        model.relation.weight.zero_()
    triples = torch.tensor([(0, 0, 1), (2, 1, 3), (4, 0, 5)])  # every query has one answer
    index = FilterIndex(triples, NUM_ENTITIES, NUM_RELATIONS)
    for side in (HEAD, TAIL):
        ranks = rank_queries(model, triples, side, index)
        assert ranks.optimistic.tolist() == [1.0] * 3
        assert ranks.pessimistic.tolist() == [float(NUM_ENTITIES)] * 3
        assert ranks.realistic.tolist() == [(1 + NUM_ENTITIES) / 2] * 3


# --------------------------------------------------------------------------------------------------
# FilterIndex / SideIndex
# --------------------------------------------------------------------------------------------------
IDX_ENTITIES, IDX_RELATIONS = 9, 3


def random_triples(seed: int, n: int = 40) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    triples = torch.stack(
        [
            torch.randint(0, IDX_ENTITIES, (n,), generator=generator),
            torch.randint(0, IDX_RELATIONS, (n,), generator=generator),
            torch.randint(0, IDX_ENTITIES, (n,), generator=generator),
        ],
        dim=1,
    )
    return torch.cat([triples, triples[:10]])  # with duplicates


def all_queries() -> tuple[torch.Tensor, torch.Tensor]:
    """Every (anchor, relation) pair, twice, in shuffled order: many have no answers."""
    anchors = torch.arange(IDX_ENTITIES).repeat_interleave(IDX_RELATIONS)
    relations = torch.arange(IDX_RELATIONS).repeat(IDX_ENTITIES)
    order = torch.randperm(len(anchors), generator=torch.Generator().manual_seed(0))
    return torch.cat([anchors[order], anchors]), torch.cat([relations[order], relations])


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("side", [HEAD, TAIL])
def test_side_index_matches_brute_force(seed, side):
    triples = random_triples(seed)
    index = FilterIndex(triples, IDX_ENTITIES, IDX_RELATIONS)[side]
    assert isinstance(index, SideIndex)
    answers = known_answers(triples.tolist(), side)
    anchors, relations = all_queries()
    queries = list(zip(anchors.tolist(), relations.tolist(), strict=True))
    assert any((a, r) not in answers for a, r in queries)  # some queries have no answers

    # counts
    assert index.counts(anchors, relations).tolist() == [len(answers.get(q, ())) for q in queries]

    # ranges: answers[start:end] are the sorted, distinct answers
    start, end = index.ranges(anchors, relations)
    for i, q in enumerate(queries):
        assert index.answers[start[i] : end[i]].tolist() == sorted(answers.get(q, ()))

    # answer_pairs: exactly the distinct (row, answer) pairs, row-major with sorted answers
    rows, cols = index.answer_pairs(anchors, relations)
    expected = [(i, e) for i, q in enumerate(queries) for e in sorted(answers.get(q, ()))]
    assert list(zip(rows.tolist(), cols.tolist(), strict=True)) == expected

    # contains, for one candidate per query and for (B, K) candidates
    grid = torch.arange(IDX_ENTITIES).expand(len(queries), -1)
    got = index.contains(anchors, relations, grid)
    assert got.shape == grid.shape
    assert got.tolist() == [[e in answers.get(q, ()) for e in range(IDX_ENTITIES)] for q in queries]
    for e in range(IDX_ENTITIES):
        single = index.contains(anchors, relations, torch.full((len(queries),), e))
        assert single.tolist() == [e in answers.get(q, ()) for q in queries]

    # contains_shared: one 1-D candidate set for every query, with repeats and in any order
    shared = torch.tensor([5, 0, 5, 8, 3, 3, 1])
    got = index.contains_shared(anchors, relations, shared)
    assert got.tolist() == [[e in answers.get(q, ()) for e in shared.tolist()] for q in queries]


def test_side_index_contains_extra_trailing_dims():
    triples = random_triples(11)
    index = FilterIndex(triples, IDX_ENTITIES, IDX_RELATIONS)[TAIL]
    answers = known_answers(triples.tolist(), TAIL)
    anchors, relations = torch.tensor([0, 4, 8]), torch.tensor([2, 0, 1])
    candidates = torch.arange(IDX_ENTITIES * 2).remainder(IDX_ENTITIES).view(1, 3, 6).expand(3, -1, -1)
    got = index.contains(anchors, relations, candidates)
    assert got.shape == (3, 3, 6)
    for b, q in enumerate(zip(anchors.tolist(), relations.tolist(), strict=True)):
        for i in range(3):
            for j in range(6):
                assert got[b, i, j].item() == (candidates[b, i, j].item() in answers.get(q, ()))


def test_filter_index_sides_are_mirrored():
    index = FilterIndex(torch.tensor([[0, 1, 2], [0, 1, 3], [4, 1, 2]]), 5, 2)
    rows, cols = index[TAIL].answer_pairs(torch.tensor([4, 0]), torch.tensor([1, 1]))
    assert rows.tolist() == [0, 1, 1]
    assert cols.tolist() == [2, 2, 3]
    rows, cols = index[HEAD].answer_pairs(torch.tensor([2]), torch.tensor([1]))
    assert rows.tolist() == [0, 0]
    assert cols.tolist() == [0, 4]
    assert index[HEAD].counts(torch.tensor([3, 2, 2]), torch.tensor([1, 1, 0])).tolist() == [1, 2, 0]


def test_filter_index_to_cpu():
    triples = random_triples(5)
    index = FilterIndex(triples, IDX_ENTITIES, IDX_RELATIONS)
    assert index.to("cpu") is index
    assert index[TAIL].to(torch.device("cpu")) is index[TAIL]
    answers = known_answers(triples.tolist(), TAIL)
    anchors, relations = all_queries()
    queries = list(zip(anchors.tolist(), relations.tolist(), strict=True))
    assert index[TAIL].counts(anchors, relations).tolist() == [len(answers.get(q, ())) for q in queries]
    for name in ("answers", "query_keys", "offsets"):
        assert getattr(index[HEAD], name).device.type == "cpu"


def test_empty_filter_index_contains_nothing():
    index = FilterIndex(torch.empty(0, 3, dtype=torch.int64), 5, 2)
    got = index[TAIL].contains(torch.tensor([0, 1]), torch.tensor([0, 1]), torch.tensor([[0, 1], [2, 3]]))
    assert got.tolist() == [[False, False], [False, False]]


# --------------------------------------------------------------------------------------------------
# RankMetrics
# --------------------------------------------------------------------------------------------------
HEAD_OPT, HEAD_PES = [1.0, 2.0, 5.0], [1.0, 4.0, 12.0]  # realistic 1, 3, 8.5
TAIL_OPT, TAIL_PES = [1.0, 10.0], [3.0, 11.0]  # realistic 2, 10.5


def _ranks(opt: list[float], pes: list[float]) -> Ranks:
    return Ranks(torch.tensor(opt, dtype=torch.float64), torch.tensor(pes, dtype=torch.float64))


def brute_metrics(per_side: dict[str, tuple[list[float], list[float]]]) -> dict[str, float]:
    """Every metric key by brute force over lists of (optimistic, pessimistic) ranks per side."""
    out = {}
    for side_prefix, sides in ((None, (HEAD, TAIL)), (HEAD, (HEAD,)), (TAIL, (TAIL,))):
        for rank_type in ("realistic", "optimistic", "pessimistic"):
            ranks = []
            for side in sides:
                opt, pes = per_side[side]
                for o, p in zip(opt, pes, strict=True):
                    ranks.append({"realistic": (o + p) / 2, "optimistic": o, "pessimistic": p}[rank_type])
            parts = [side_prefix, None if rank_type == "realistic" else rank_type]
            prefix = "/".join(x for x in parts if x)
            values = {
                "mrr": sum(1 / x for x in ranks) / len(ranks),
                "mr": sum(ranks) / len(ranks),
                **{f"hits@{k}": sum(x <= k for x in ranks) / len(ranks) for k in (1, 3, 10)},
            }
            for stat, value in values.items():
                out[f"{prefix}/{stat}" if prefix else stat] = value
    return out


def _as_floats(result: dict[str, torch.Tensor]) -> dict[str, float]:
    return {k: float(v) for k, v in result.items()}


def test_rank_metrics_by_hand():
    metric = RankMetrics()
    metric.update(_ranks(HEAD_OPT[:2], HEAD_PES[:2]), HEAD)
    metric.update(_ranks(TAIL_OPT, TAIL_PES), TAIL)
    metric.update(_ranks(HEAD_OPT[2:], HEAD_PES[2:]), HEAD)
    got = _as_floats(metric.compute())

    # Realistic ranks: head 1, 3, 8.5; tail 2, 10.5.
    assert got["mrr"] == pytest.approx((1 + 1 / 3 + 1 / 8.5 + 1 / 2 + 1 / 10.5) / 5)
    assert got["mr"] == pytest.approx((1 + 3 + 8.5 + 2 + 10.5) / 5)
    assert got["hits@1"] == pytest.approx(1 / 5)
    assert got["hits@3"] == pytest.approx(3 / 5)
    assert got["hits@10"] == pytest.approx(4 / 5)
    assert got["head/mrr"] == pytest.approx((1 + 1 / 3 + 1 / 8.5) / 3)
    assert got["head/mr"] == pytest.approx(12.5 / 3)
    assert got["head/hits@10"] == pytest.approx(1.0)
    assert got["tail/mrr"] == pytest.approx((1 / 2 + 1 / 10.5) / 2)
    assert got["tail/hits@1"] == 0.0
    assert got["tail/hits@3"] == pytest.approx(0.5)
    assert got["tail/hits@10"] == pytest.approx(0.5)
    # Optimistic ranks 1, 2, 5 | 1, 10; pessimistic 1, 4, 12 | 3, 11.
    assert got["optimistic/mrr"] == pytest.approx((1 + 0.5 + 0.2 + 1 + 0.1) / 5)
    assert got["optimistic/hits@1"] == pytest.approx(2 / 5)
    assert got["optimistic/hits@10"] == pytest.approx(1.0)
    assert got["pessimistic/mr"] == pytest.approx((1 + 4 + 12 + 3 + 11) / 5)
    assert got["pessimistic/hits@3"] == pytest.approx(2 / 5)
    assert got["head/optimistic/mrr"] == pytest.approx((1 + 0.5 + 0.2) / 3)
    assert got["tail/pessimistic/mr"] == pytest.approx(7.0)

    expected = brute_metrics({HEAD: (HEAD_OPT, HEAD_PES), TAIL: (TAIL_OPT, TAIL_PES)})
    assert len(expected) == 45
    assert set(got) == set(expected)
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, rel=1e-12), key


def test_rank_metrics_reset():
    metric = RankMetrics()
    metric.update(_ranks(HEAD_OPT, HEAD_PES), HEAD)
    metric.update(_ranks(TAIL_OPT, TAIL_PES), TAIL)
    metric.compute()
    metric.reset()
    assert metric.sums.abs().sum().item() == 0.0
    # After a reset only the new ranks count.
    metric.update(_ranks([4.0], [4.0]), TAIL)
    got = _as_floats(metric.compute())
    assert got["mrr"] == pytest.approx(0.25)
    assert got["tail/mr"] == pytest.approx(4.0)
    assert got["hits@3"] == 0.0
    assert got["hits@10"] == 1.0
    assert got["head/mrr"] == 0.0  # no head queries: zero, not NaN


@pytest.mark.parametrize("merge", ["add_sums", "merge_state"])
def test_rank_metrics_sum_states_combine_like_ddp(merge):
    rng = random.Random(0)
    data = {}
    for side in (HEAD, TAIL):
        opt = [float(rng.randint(1, 15)) for _ in range(20)]
        pes = [o + rng.randint(0, 4) for o in opt]
        data[side] = (opt, pes)

    whole = RankMetrics()
    first, second = RankMetrics(), RankMetrics()
    for side, (opt, pes) in data.items():
        whole.update(_ranks(opt, pes), side)
        first.update(_ranks(opt[:7], pes[:7]), side)
        second.update(_ranks(opt[7:], pes[7:]), side)
    if merge == "add_sums":
        first.sums = first.sums + second.sums  # what the "sum" dist_reduce_fx does across processes
    else:
        first.merge_state(second)

    merged, reference = _as_floats(first.compute()), _as_floats(whole.compute())
    expected = brute_metrics(data)
    assert set(merged) == set(reference) == set(expected)
    for key, value in expected.items():
        assert merged[key] == pytest.approx(value, rel=1e-12), key
        assert reference[key] == pytest.approx(value, rel=1e-12), key


def test_rank_metrics_from_rank_queries(rank_path):
    """End to end: ranks of the toy graph fed to the metric give the brute-force MRR."""
    model = toy_model()
    triples = torch.tensor(TOY_TRIPLES)
    index = FilterIndex(triples, NUM_ENTITIES, NUM_RELATIONS)
    metric = RankMetrics()
    realistic = []
    for side in (HEAD, TAIL):
        answers = known_answers(TOY_TRIPLES, side)
        metric.update(rank_queries(model, triples, side, index), side)
        for h, r, t in TOY_TRIPLES:
            anchor, target = (h, t) if side == TAIL else (t, h)
            scores = [
                distmult_score(h, r, e) if side == TAIL else distmult_score(e, r, t)
                for e in range(NUM_ENTITIES)
            ]
            opt, pes = brute_rank(scores, target, answers[(anchor, r)] - {target})
            realistic.append((opt + pes) / 2)
    got = _as_floats(metric.compute())
    assert got["mrr"] == pytest.approx(sum(1 / x for x in realistic) / len(realistic), rel=1e-12)
    assert got["hits@1"] == pytest.approx(sum(x <= 1 for x in realistic) / len(realistic), rel=1e-12)


def test_nan_target_gets_the_worst_rank_on_both_bounds(rank_path):
    empty = torch.empty(0, dtype=torch.long)
    ranks = ranks_from_scores(torch.tensor([[1.0, float("nan"), 0.5, 2.0]]), torch.tensor([1]), empty, empty)
    assert ranks.optimistic.item() == 4.0
    assert ranks.pessimistic.item() == 4.0


def test_empty_filter_index_has_no_answers():
    index = FilterIndex(torch.empty(0, 3, dtype=torch.long), 5, 2)
    anchors, relations = torch.tensor([0, 1]), torch.tensor([0, 1])
    assert index["tail"].counts(anchors, relations).tolist() == [0, 0]
    rows, cols = index["head"].answer_pairs(anchors, relations)
    assert rows.numel() == 0 and cols.numel() == 0
