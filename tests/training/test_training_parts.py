"""Training parts against hand computation: losses, negative sampling, regularisers."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import sampler_setup

from kgexp.data.filter_index import FilterIndex
from kgexp.models import ComplEx, DistMult
from kgexp.sides import HEAD, TAIL
from kgexp.training.losses import (
    BinaryCrossEntropy,
    MarginRanking,
    SelfAdversarial,
    SoftmaxCrossEntropy,
    soft_cross_entropy,
)
from kgexp.training.negatives import NegativeSampling, UniformSampler, bernoulli_head_probability
from kgexp.training.regularizers import NormRegularizer

# --------------------------------------------------------------------------------------------------
# losses
# --------------------------------------------------------------------------------------------------

POS = [1.0, -0.5]
NEG = [[0.2, -1.0, 0.5], [2.0, 0.0, -0.3]]
WEIGHTS = [0.25, 1.5]


def tensors():
    return torch.tensor(POS, dtype=torch.float64), torch.tensor(NEG, dtype=torch.float64)


def log_sum_exp(xs):
    return math.log(sum(math.exp(x) for x in xs))


def log_sigmoid(x):
    return -math.log(1.0 + math.exp(-x))


def softplus(x):
    return math.log(1.0 + math.exp(x))


def mean(xs):
    return sum(xs) / len(xs)


def weighted(xs, ws):
    return sum(x * w for x, w in zip(xs, ws, strict=True)) / sum(ws)


def test_softmax_cross_entropy_one_hot():
    pos, neg = tensors()
    expected = mean([log_sum_exp([p, *n]) - p for p, n in zip(POS, NEG, strict=True)])
    assert SoftmaxCrossEntropy()(pos, neg).item() == pytest.approx(expected, abs=1e-12)


def test_softmax_cross_entropy_label_smoothing():
    pos, neg = tensors()
    eps, k = 0.3, 3
    rows = []
    for p, n in zip(POS, NEG, strict=True):
        z = log_sum_exp([p, *n])
        rows.append(-((1 - eps) * (p - z) + sum(eps / k * (x - z) for x in n)))
    got = SoftmaxCrossEntropy(label_smoothing=eps)(pos, neg).item()
    assert got == pytest.approx(mean(rows), abs=1e-12)
    assert got != pytest.approx(SoftmaxCrossEntropy()(pos, neg).item(), abs=1e-6)


def test_soft_cross_entropy_unnormalised_targets():
    b = 0.25
    logits = [[0.5, -1.0, 2.0], [0.0, 0.3, -0.7]]
    rows = []
    for l0, l1, l2 in logits:
        z = log_sum_exp([l0, l1, l2])
        rows.append(-(1 * (l0 - z) + b * (l1 - z) + b * (l2 - z)))
    expected = mean(rows)
    got = soft_cross_entropy(
        torch.tensor(logits, dtype=torch.float64), torch.tensor([[1.0, b, b]] * 2, dtype=torch.float64)
    )
    assert got.item() == pytest.approx(expected, abs=1e-12)


def self_adversarial_reference(temperature, adversarial, weights):
    positive = [log_sigmoid(p) for p in POS]
    negative = []
    for n in NEG:
        if adversarial:
            z = sum(math.exp(temperature * x) for x in n)
            negative.append(sum(math.exp(temperature * x) / z * log_sigmoid(-x) for x in n))
        else:
            negative.append(mean([log_sigmoid(-x) for x in n]))
    if weights is None:
        return -(mean(positive) + mean(negative)) / 2
    return -(weighted(positive, weights) + weighted(negative, weights)) / 2


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0])
@pytest.mark.parametrize("adversarial", [True, False])
def test_self_adversarial(temperature, adversarial):
    pos, neg = tensors()
    w = torch.tensor(WEIGHTS, dtype=torch.float64)
    unweighted = SelfAdversarial(temperature, adversarial, subsampling=False)
    expected = self_adversarial_reference(temperature, adversarial, None)
    assert unweighted(pos, neg).item() == pytest.approx(expected, abs=1e-12)
    # weights are ignored unless subsampling is on
    assert unweighted(pos, neg, w).item() == pytest.approx(expected, abs=1e-12)
    with_weights = SelfAdversarial(temperature, adversarial, subsampling=True)
    expected_weighted = self_adversarial_reference(temperature, adversarial, WEIGHTS)
    assert with_weights(pos, neg, w).item() == pytest.approx(expected_weighted, abs=1e-12)
    assert expected_weighted != pytest.approx(expected, abs=1e-6)
    # subsampling without weights is the plain mean
    assert with_weights(pos, neg).item() == pytest.approx(expected, abs=1e-12)


def test_self_adversarial_temperature_matters():
    pos, neg = tensors()
    values = [SelfAdversarial(a, True, False)(pos, neg).item() for a in (0.5, 2.0)]
    assert values[0] != pytest.approx(values[1], abs=1e-6)


def test_self_adversarial_weights_are_not_differentiated():
    """The adversarial weights p are constants: d loss / d neg_j = p_j sigmoid(neg_j) / 2 (one row)."""
    a = 1.5
    n = NEG[0]
    neg = torch.tensor([n], dtype=torch.float64, requires_grad=True)
    pos = torch.tensor([POS[0]], dtype=torch.float64)
    SelfAdversarial(a, True, False)(pos, neg).backward()
    z = sum(math.exp(a * x) for x in n)
    expected = [math.exp(a * x) / z / (1 + math.exp(-x)) / 2 for x in n]
    assert neg.grad[0].tolist() == pytest.approx(expected, abs=1e-12)


def test_margin_ranking():
    pos, neg = tensors()
    margin = 1.5
    expected = mean([max(0.0, margin - p + x) for p, n in zip(POS, NEG, strict=True) for x in n])
    assert MarginRanking(margin)(pos, neg).item() == pytest.approx(expected, abs=1e-12)
    # some terms are clipped at zero, some are not
    terms = [margin - p + x for p, n in zip(POS, NEG, strict=True) for x in n]
    assert min(terms) < 0 < max(terms)


def test_binary_cross_entropy():
    pos, neg = tensors()
    expected = mean([softplus(-p) + mean([softplus(x) for x in n]) for p, n in zip(POS, NEG, strict=True)])
    assert BinaryCrossEntropy()(pos, neg).item() == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize(
    ("factory", "key"),
    [
        (lambda: SoftmaxCrossEntropy(label_smoothing=-0.1), "loss.label_smoothing"),
        (lambda: SoftmaxCrossEntropy(label_smoothing=1.0), "loss.label_smoothing"),
        (lambda: SelfAdversarial(adversarial_temperature=0.0), "loss.adversarial_temperature"),
        (lambda: SelfAdversarial(adversarial_temperature=-1.0), "loss.adversarial_temperature"),
        (lambda: MarginRanking(margin=0.0), "loss.margin"),
        (lambda: MarginRanking(margin=-2.0), "loss.margin"),
    ],
)
def test_invalid_loss_parameters(factory, key):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        factory()


# --------------------------------------------------------------------------------------------------
# UniformSampler
# --------------------------------------------------------------------------------------------------

NUM_ENTITIES, NUM_RELATIONS = 30, 3


def known_triples() -> list[tuple[int, int, int]]:
    """A few answers per query: (h, r, (h + r + k) % E) for k in 0..2 and h < 20."""
    return [
        (h, r, (h * 7 + r + k) % NUM_ENTITIES)
        for h in range(20)
        for r in range(NUM_RELATIONS)
        for k in range(3)
    ]


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_uniform_sampler_shapes_and_range():
    sampler = UniformSampler(num_negatives=11)
    anchors, relations = torch.tensor([0, 1, 2, 3, 4]), torch.tensor([0, 1, 0, 1, 2])
    ids = sampler.sample(anchors, relations, TAIL, 7, None, generator(0))
    assert ids.shape == (5, 11)
    assert ids.dtype == torch.int64
    assert int(ids.min()) >= 0 and int(ids.max()) < 7
    # over many draws every id in range occurs
    many = UniformSampler(50).sample(
        torch.zeros(40, dtype=torch.long), torch.zeros(40, dtype=torch.long), HEAD, 7, None, generator(1)
    )
    assert set(many.flatten().tolist()) == set(range(7))


@pytest.mark.parametrize("side", [TAIL, HEAD])
def test_uniform_sampler_filtered_avoids_known_triples(side):
    triples = known_triples()
    known_set = set(triples)
    index = FilterIndex(torch.tensor(triples), NUM_ENTITIES, NUM_RELATIONS)
    anchors = torch.arange(20).repeat_interleave(NUM_RELATIONS).repeat(4)
    relations = torch.arange(NUM_RELATIONS).repeat(20).repeat(4)

    def hits(ids):
        found = 0
        for a, r, row in zip(anchors.tolist(), relations.tolist(), ids.tolist(), strict=True):
            for x in row:
                triple = (a, r, x) if side == TAIL else (x, r, a)
                found += triple in known_set
        return found

    unfiltered = UniformSampler(40).sample(anchors, relations, side, NUM_ENTITIES, index, generator(3))
    # (for HEAD, the anchors are tails: some (x, r, anchor) are known too)
    assert hits(unfiltered) > 0
    filtered = UniformSampler(40, filtered=True).sample(
        anchors, relations, side, NUM_ENTITIES, index, generator(3)
    )
    assert filtered.shape == (len(anchors), 40)
    assert hits(filtered) == 0
    assert int(filtered.min()) >= 0 and int(filtered.max()) < NUM_ENTITIES


def test_uniform_sampler_filtered_without_index_is_plain():
    anchors, relations = torch.arange(10), torch.zeros(10, dtype=torch.long)
    a = UniformSampler(8, filtered=True).sample(anchors, relations, TAIL, 30, None, generator(5))
    b = UniformSampler(8, filtered=False).sample(anchors, relations, TAIL, 30, None, generator(5))
    assert torch.equal(a, b)


def test_uniform_sampler_is_seeded():
    index = FilterIndex(torch.tensor(known_triples()), NUM_ENTITIES, NUM_RELATIONS)
    anchors, relations = torch.arange(20), torch.arange(20) % NUM_RELATIONS
    for filtered in (False, True):
        sampler = UniformSampler(16, filtered=filtered)
        runs = [
            sampler.sample(anchors, relations, TAIL, NUM_ENTITIES, index, generator(s)) for s in (9, 9, 10)
        ]
        assert torch.equal(runs[0], runs[1])
        assert not torch.equal(runs[0], runs[2])


@pytest.mark.parametrize("k", [0, -3])
def test_uniform_sampler_rejects_non_positive_count(k):
    with pytest.raises(ValueError, match=r"sampler\.num_negatives"):
        UniformSampler(k)


# --------------------------------------------------------------------------------------------------
# Bernoulli side probabilities
# --------------------------------------------------------------------------------------------------

# relation 0: 4 triples, heads {0, 1}, tails {1, 2, 3}: tph = 4/2 = 2, hpt = 4/3, P(head) = 2/(2 + 4/3) = 0.6
# relation 1: 3 triples, heads {2, 3, 4}, tails {0}:    tph = 3/3 = 1, hpt = 3/1 = 3, P(head) = 1 / 4 = 0.25
# relation 2: no triples
TINY = [(0, 0, 1), (0, 0, 2), (0, 0, 3), (1, 0, 3), (2, 1, 0), (3, 1, 0), (4, 1, 0)]


def test_bernoulli_head_probability_by_hand():
    p = bernoulli_head_probability(torch.tensor(TINY), 3)
    assert p.shape == (3,)
    assert p[0].item() == pytest.approx(0.6, abs=1e-6)
    assert p[1].item() == pytest.approx(0.25, abs=1e-6)
    assert math.isfinite(p[2].item())


def test_bernoulli_one_to_many_relation_corrupts_heads_mostly():
    # one head, 9 tails: tph = 9, hpt = 1, P(head) = 0.9
    train = torch.tensor([(0, 0, t) for t in range(1, 10)])
    assert bernoulli_head_probability(train, 1)[0].item() == pytest.approx(0.9, abs=1e-6)


# --------------------------------------------------------------------------------------------------
# NegativeSampling
# --------------------------------------------------------------------------------------------------


def batch(n: int, relations: list[int]) -> torch.Tensor:
    r = torch.tensor(relations).repeat(n // len(relations) + 1)[:n]
    return torch.stack([torch.arange(n) % 5, r, (torch.arange(n) + 1) % 5], 1)


def test_alternate_sides():
    ns = NegativeSampling(UniformSampler(4), "alternate")
    triples = batch(6, [0, 1])
    for step in range(6):
        corruptions = ns.corrupt(triples, step, 5, None, generator(step))
        assert len(corruptions) == 1
        (c,) = corruptions
        assert c.side == (TAIL if step % 2 == 0 else HEAD)
        assert c.rows.tolist() == list(range(6))
        assert c.negatives.shape == (6, 4)


def test_both_sides():
    ns = NegativeSampling(UniformSampler(3), "both")
    triples = batch(7, [0, 1])
    for step in (0, 1):
        corruptions = ns.corrupt(triples, step, 5, None, generator(0))
        assert [c.side for c in corruptions] == [TAIL, HEAD]
        for c in corruptions:
            assert c.rows.tolist() == list(range(7))
            assert c.negatives.shape == (7, 3)


def test_bernoulli_partitions_rows_with_fitted_probabilities(tmp_path):
    ns = NegativeSampling(UniformSampler(2), "bernoulli")
    ns.fit(sampler_setup(torch.tensor(TINY), 5, 3, tmp_path))
    assert ns.head_probability[:2].tolist() == pytest.approx([0.6, 0.25], abs=1e-6)
    n = 8000
    triples = batch(n, [0, 1])
    corruptions = ns.corrupt(triples, 0, 5, None, generator(11))
    sides = {c.side: c for c in corruptions}
    assert set(sides) == {TAIL, HEAD}
    head_rows, tail_rows = set(sides[HEAD].rows.tolist()), set(sides[TAIL].rows.tolist())
    assert not head_rows & tail_rows
    assert head_rows | tail_rows == set(range(n))
    for c in corruptions:
        assert c.negatives.shape == (len(c.rows), 2)
    relation = triples[:, 1].tolist()
    for r, p in ((0, 0.6), (1, 0.25)):
        rows = [i for i in range(n) if relation[i] == r]
        share = sum(i in head_rows for i in rows) / len(rows)
        # 4000 rows: the standard deviation of the share is below 0.008
        assert share == pytest.approx(p, abs=0.04)


def test_bernoulli_extreme_probabilities():
    ns = NegativeSampling(UniformSampler(2), "bernoulli")
    ns.head_probability = torch.tensor([1.0, 0.0, 0.5])
    n = 3000
    triples = batch(n, [0, 1, 2])
    relation = triples[:, 1].tolist()
    heads = set()
    for c in ns.corrupt(triples, 0, 5, None, generator(4)):
        if c.side == HEAD:
            heads = set(c.rows.tolist())
    assert all(i in heads for i in range(n) if relation[i] == 0)
    assert not any(i in heads for i in range(n) if relation[i] == 1)
    third = [i in heads for i in range(n) if relation[i] == 2]
    assert 0.4 < sum(third) / len(third) < 0.6
    # a batch of relation 0 only: a single head-side corruption, no empty tail side
    only = ns.corrupt(batch(50, [0]), 0, 5, None, generator(4))
    assert [c.side for c in only] == [HEAD]
    assert only[0].rows.tolist() == list(range(50))


def test_bernoulli_near_one_relation_is_head_corrupted(tmp_path):
    # relation 0: head 0 with N tails, P = N / (N + 1); relation 1: N heads and one tail, P = 1 / (N + 1)
    n = 20000
    train = [(0, 0, t) for t in range(1, n + 1)] + [(h, 1, 0) for h in range(1, n + 1)]
    ns = NegativeSampling(UniformSampler(1), "bernoulli")
    ns.fit(sampler_setup(torch.tensor(train), n + 1, 2, tmp_path))
    assert ns.head_probability[0].item() == pytest.approx(n / (n + 1), abs=1e-7)
    assert ns.head_probability[1].item() == pytest.approx(1 / (n + 1), abs=1e-7)
    triples = torch.tensor([(0, 0, 1)] * 200 + [(1, 1, 0)] * 200)
    sides = {c.side: set(c.rows.tolist()) for c in ns.corrupt(triples, 0, n + 1, None, generator(2))}
    assert sides[HEAD] == set(range(200))
    assert sides[TAIL] == set(range(200, 400))


def test_corrupt_uses_the_right_anchor_per_side():
    triples_list = known_triples()
    known = FilterIndex(torch.tensor(triples_list), NUM_ENTITIES, NUM_RELATIONS)
    known_set = set(triples_list)
    ns = NegativeSampling(UniformSampler(30, filtered=True), "both")
    positives = torch.tensor(triples_list[::2])
    for c in ns.corrupt(positives, 0, NUM_ENTITIES, known, generator(8)):
        for row, negatives in zip(c.rows.tolist(), c.negatives.tolist(), strict=True):
            h, r, t = positives[row].tolist()
            for x in negatives:
                assert ((h, r, x) if c.side == TAIL else (x, r, t)) not in known_set


def test_unknown_side_mode():
    with pytest.raises(ValueError, match=r"sampler\.sides"):
        NegativeSampling(UniformSampler(1), "random")


# --------------------------------------------------------------------------------------------------
# NormRegularizer
# --------------------------------------------------------------------------------------------------

# ComplEx with dim 2: rows are [re_0, re_1, im_0, im_1]
ENTITIES = [[3.0, 0.0, 4.0, 1.0], [1.0, 2.0, 0.0, 2.0], [0.0, -1.0, 0.0, 0.0]]
RELATIONS = [[0.6, 0.0, 0.8, 2.0], [1.0, -1.0, 1.0, 1.0]]


def complex_model() -> ComplEx:
    model = ComplEx(3, 2, dim=2)
    with torch.no_grad():
        model.entity.weight.copy_(torch.tensor(ENTITIES))
        model.relation.weight.copy_(torch.tensor(RELATIONS))
    return model


def abs_power_sum(row, p):
    return sum(abs(x) ** p for x in row)


def modulus_power_sum(row, p):
    half = len(row) // 2
    return sum(math.hypot(row[k], row[half + k]) ** p for k in range(half))


@pytest.mark.parametrize("p", [2, 3])
def test_table_scope(p):
    weight = 0.05
    expected = weight * (
        sum(abs_power_sum(e, p) for e in ENTITIES) + sum(abs_power_sum(r, p) for r in RELATIONS)
    )
    got = NormRegularizer(weight, p, "table")(complex_model(), torch.tensor([[0, 0, 1]]))
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_table_scope_complex_modulus_n3():
    # moduli: entities [5, 1], [1, sqrt 8], [0, 1]; relations [1, 2], [sqrt 2, sqrt 2]
    expected_by_hand = 0.1 * ((125 + 1) + (1 + 8**1.5) + (0 + 1) + (1 + 8) + 2 * 2**1.5)
    direct = 0.1 * (
        sum(modulus_power_sum(e, 3) for e in ENTITIES) + sum(modulus_power_sum(r, 3) for r in RELATIONS)
    )
    assert direct == pytest.approx(expected_by_hand, rel=1e-12)
    got = NormRegularizer(0.1, 3, "table", complex_modulus=True)(complex_model(), torch.tensor([[0, 0, 1]]))
    assert got.item() == pytest.approx(expected_by_hand, rel=1e-6)
    plain = NormRegularizer(0.1, 3, "table")(complex_model(), torch.tensor([[0, 0, 1]]))
    assert plain.item() != pytest.approx(expected_by_hand, rel=1e-3)


@pytest.mark.parametrize("complex_modulus", [False, True])
def test_batch_scope_averages_over_positives(complex_modulus):
    triples = [(0, 0, 1), (2, 1, 0), (1, 1, 1)]
    weight, p = 0.3, 3
    norm = modulus_power_sum if complex_modulus else abs_power_sum
    total = sum(norm(ENTITIES[h], p) + norm(RELATIONS[r], p) + norm(ENTITIES[t], p) for h, r, t in triples)
    expected = weight * total / len(triples)
    got = NormRegularizer(weight, p, "batch", complex_modulus)(complex_model(), torch.tensor(triples))
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_complex_modulus_ignored_for_real_embeddings():
    model = DistMult(2, 1, dim=3)
    entities, relations = [[1.0, -2.0, 0.5], [0.0, 3.0, -1.0]], [[2.0, 0.5, -0.5]]
    with torch.no_grad():
        model.entity.weight.copy_(torch.tensor(entities))
        model.relation.weight.copy_(torch.tensor(relations))
    expected = 2.0 * (sum(abs_power_sum(e, 3) for e in entities) + abs_power_sum(relations[0], 3))
    got = NormRegularizer(2.0, 3, "table", complex_modulus=True)(model, torch.tensor([[0, 0, 1]]))
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_regularizer_gradient_reaches_batch_rows_only():
    model = complex_model()
    NormRegularizer(1.0, 2, "batch")(model, torch.tensor([[0, 0, 0]])).backward()
    # d/dx of x^2 summed over (h, t) = (0, 0), i.e. counted twice: 4x
    assert model.entity.weight.grad[0].tolist() == pytest.approx([4 * x for x in ENTITIES[0]])
    assert model.entity.weight.grad[1:].abs().sum().item() == 0.0
    assert model.relation.weight.grad[0].tolist() == pytest.approx([2 * x for x in RELATIONS[0]])
    assert model.relation.weight.grad[1].abs().sum().item() == 0.0


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"weight": -1.0, "p": 2}, "regularizer.weight"),
        ({"weight": 1.0, "p": 2, "scope": "all"}, "regularizer.scope"),
    ],
)
def test_invalid_regularizer_parameters(kwargs, key):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        NormRegularizer(**kwargs)
