"""MI-KGE: estimators by hand, false-negative masking by brute force, gradients, composition, isolation."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch
from conftest import compose_config

from kgexp.config.build import build_module
from kgexp.data.filter_index import FilterIndex
from kgexp.mi import MutualInformation
from kgexp.mi.estimators import DonskerVaradhan, InfoNCE, JensenShannon
from kgexp.models import MODELS
from kgexp.sides import HEAD, TAIL
from kgexp.training.losses import SoftmaxCrossEntropy
from kgexp.training.module import LinkPredictionModule
from kgexp.training.negatives import NegativeSampling, UniformSampler

SCORES = [[1.0, 0.5, -0.3, 2.0], [0.2, -1.0, 0.7, 0.1], [0.4, 0.9, 1.5, -2.0]]
ALLOWED = [[True, False, True, True], [True, True, True, False], [False, True, True, True]]


def tensors():
    return torch.tensor(SCORES, dtype=torch.float64), torch.tensor(ALLOWED)


def negative_pairs():
    return [(i, j) for i in range(3) for j in range(4) if ALLOWED[i][j] and i != j]


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


# -- estimators by hand -------------------------------------------------------------------------------
def test_infonce_by_hand():
    expected = 0.0
    for i, row in enumerate(SCORES):
        denominator = sum(math.exp(s) for j, s in enumerate(row) if ALLOWED[i][j])
        expected += -(row[i] - math.log(denominator))
    assert InfoNCE()(*tensors()).item() == pytest.approx(expected / 3, rel=1e-12)


def test_jsd_by_hand():
    positive = sum(softplus(-SCORES[i][i]) for i in range(3)) / 3
    pairs = negative_pairs()
    negative = sum(softplus(SCORES[i][j]) for i, j in pairs) / len(pairs)
    assert JensenShannon()(*tensors()).item() == pytest.approx(positive + negative, rel=1e-12)


def test_mine_value_is_the_donsker_varadhan_bound_by_hand():
    pairs = negative_pairs()
    log_mean_exp = math.log(sum(math.exp(SCORES[i][j]) for i, j in pairs) / len(pairs))
    expected = -(sum(SCORES[i][i] for i in range(3)) / 3 - log_mean_exp)
    assert DonskerVaradhan()(*tensors()).item() == pytest.approx(expected, rel=1e-12)


def test_mine_gradient_divides_by_the_moving_average():
    rate = 0.25
    estimator = DonskerVaradhan(ema_rate=rate)
    first, allowed = tensors()
    estimator(first, allowed)  # initialises the average with the first batch's mean
    second = (first * 0.5 + 0.3).requires_grad_()
    estimator(second, allowed).backward()
    pairs = negative_pairs()
    mean_first = sum(math.exp(SCORES[i][j]) for i, j in pairs) / len(pairs)
    mean_second = sum(math.exp(0.5 * SCORES[i][j] + 0.3) for i, j in pairs) / len(pairs)
    average = (1 - rate) * mean_first + rate * mean_second
    for i in range(3):
        for j in range(4):
            expected = -1 / 3 if i == j else 0.0
            if (i, j) in pairs:
                expected += math.exp(0.5 * SCORES[i][j] + 0.3) / (len(pairs) * average)
            assert second.grad[i, j].item() == pytest.approx(expected, rel=1e-6)  # a float32 average


# -- masking against brute force ----------------------------------------------------------------------
TRAIN = [(0, 0, 1), (0, 0, 2), (3, 1, 2), (4, 0, 1), (2, 1, 0)]


def brute_force_allowed(batch, train, side, extra=None):
    known = set(train)
    rows = []
    for i, (h, r, t) in enumerate(batch):
        target = t if side == TAIL else h
        candidates = [b[2] if side == TAIL else b[0] for b in batch] if extra is None else extra[i]
        row = []
        for j, c in enumerate(candidates):
            triple = (h, r, c) if side == TAIL else (c, r, t)
            is_false = c == target or triple in known
            row.append((extra is None and i == j) or not is_false)
        rows.append(row)
    return rows


def regulariser(**options) -> MutualInformation:
    return MutualInformation(6, 6, **options)


def test_masking_drops_exactly_duplicates_and_known_training_triples():
    batch = [(0, 0, 1), (4, 0, 2), (0, 0, 1), (3, 1, 0), (2, 1, 2)]
    triples = torch.tensor(batch)
    index = FilterIndex(torch.tensor(TRAIN), 5, 2)
    mi = regulariser()
    for side in (TAIL, HEAD):
        anchors, targets = (triples[:, 0], triples[:, 2]) if side == TAIL else (triples[:, 2], triples[:, 0])
        query = (anchors, triples[:, 1], targets)
        # The shared in-batch path and the per-row path (each row given the same ids) agree with brute force.
        for candidates in (targets, targets.unsqueeze(0).expand(5, -1)):
            allowed = torch.eye(5, dtype=torch.bool) | ~mi.false_negatives(query, candidates, index, side)
            assert allowed.tolist() == brute_force_allowed(batch, TRAIN, side)


def test_extra_negatives_are_masked_the_same_way():
    batch = [(0, 0, 1), (4, 0, 2)]
    extra = [[2, 1, 3], [1, 0, 4]]
    triples, index = torch.tensor(batch), FilterIndex(torch.tensor(TRAIN), 5, 2)
    false = regulariser().false_negatives(
        (triples[:, 0], triples[:, 1], triples[:, 2]), torch.tensor(extra), index, TAIL
    )
    assert (~false).tolist() == brute_force_allowed(batch, TRAIN, TAIL, extra)


def test_without_masking_every_in_batch_column_is_a_negative():
    batch = torch.tensor([(0, 0, 1), (0, 0, 1)])
    false = regulariser(mask_false_negatives=False).false_negatives(
        (batch[:, 0], batch[:, 1], batch[:, 2]), batch[:, 2], FilterIndex(batch, 5, 2), TAIL
    )
    assert not false.any()


# -- composition, gradients, every model x estimator --------------------------------------------------
def test_model_composition_is_the_scorers_query_checked_with_complex_numbers():
    torch.manual_seed(0)
    model = MODELS["complex"](5, 2, dim=3)
    mi = MutualInformation(6, 6)
    h, r, t = torch.tensor([1]), torch.tensor([0]), torch.tensor([4])

    def as_complex(x):
        re, im = x.chunk(2, dim=-1)
        return torch.complex(re, im)

    hc, rc, tc = as_complex(model.entity(h)), as_complex(model.relation(r)), as_complex(model.entity(t))
    # <q, e> over [re | im] must equal Re(<h, r, conj(t)>) for both directions.
    score = (hc * rc * tc.conj()).sum().real
    hr = mi.compose(model, h, r, TAIL)
    rt = mi.compose(model, t, r, HEAD)
    assert (hr * model.entity(t)).sum().item() == pytest.approx(score.item(), rel=1e-5)
    assert (rt * model.entity(h)).sum().item() == pytest.approx(score.item(), rel=1e-5)


def test_concat_composition_orders_the_pair():
    model = MODELS["transe"](5, 2, dim=3)
    mi = MutualInformation(3, 3, composition="concat")
    h, r = torch.tensor([1]), torch.tensor([0])
    assert torch.equal(mi.compose(model, h, r, TAIL), torch.cat([model.entity(h), model.relation(r)], -1))
    assert torch.equal(mi.compose(model, h, r, HEAD), torch.cat([model.relation(r), model.entity(h)], -1))


@pytest.mark.parametrize("estimator", ["infonce", "jsd", "mine"])
@pytest.mark.parametrize("model_name", sorted(MODELS))
def test_every_model_and_estimator_trains_embeddings_and_heads(model_name, estimator):
    torch.manual_seed(0)
    model = MODELS[model_name](30, 4, dim=8)
    mi = MutualInformation(
        model.entity.embedding_dim, model.relation.embedding_dim, name=estimator, learn_temperature=True
    )
    triples = torch.stack([torch.randint(30, (16,)), torch.randint(4, (16,)), torch.randint(30, (16,))], 1)
    loss = mi(model, triples, FilterIndex(triples[:8], 30, 4))
    assert torch.isfinite(loss)
    loss.backward()
    for name, parameter in [*model.named_parameters(), *mi.named_parameters()]:
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


@pytest.mark.parametrize(
    "options",
    [
        {"query_heads": "shared"},
        {"key_head": "shared"},
        {"key_head": "identity"},
        {"critic": "bilinear"},
        {"directions": ["rt_h"]},
        {"depth": 3, "hidden": 5, "width": 4, "activation": "tanh"},
        {"extra_negatives": "kge"},
    ],
)
def test_head_and_critic_options_give_a_finite_loss(options):
    torch.manual_seed(0)
    model = MODELS["rotate"](30, 4, dim=8)
    mi = MutualInformation(16, 8, **options)
    triples = torch.stack([torch.randint(30, (8,)), torch.randint(4, (8,)), torch.randint(30, (8,))], 1)
    sampled = {TAIL: (torch.arange(0, 8, 2), torch.randint(30, (4, 5)))}
    assert torch.isfinite(mi(model, triples, FilterIndex(triples, 30, 4), sampled))


def test_shared_query_heads_are_one_module_and_separate_ones_two():
    shared = regulariser(query_heads="shared")
    separate = regulariser()
    assert shared.query_heads["hr_t"] is shared.query_heads["rt_h"]
    assert separate.query_heads["hr_t"] is not separate.query_heads["rt_h"]


def test_detached_keys_send_no_gradient_through_the_targets():
    torch.manual_seed(0)
    model = MODELS["distmult"](10, 2, dim=4)
    mi = MutualInformation(4, 4, directions=["hr_t"], detach_keys=True, composition="concat")
    triples = torch.tensor([[0, 0, 5], [1, 1, 6], [2, 0, 7]])
    mi(model, triples, FilterIndex(triples, 10, 2)).backward()
    assert model.entity.weight.grad[[5, 6, 7]].abs().sum() == 0
    assert model.entity.weight.grad[[0, 1, 2]].abs().sum() > 0


# -- the module: weighting, mi=none, evaluation ------------------------------------------------------
def make_module(mi: MutualInformation | None) -> LinkPredictionModule:
    torch.manual_seed(0)
    model = MODELS["distmult"](30, 4, dim=8)
    module = LinkPredictionModule(
        model,
        NegativeSampling(UniformSampler(5)),
        SoftmaxCrossEntropy(),
        None,
        {"name": "adam", "lr": 0.1},
        mi=mi,
    )
    module.generator = torch.Generator().manual_seed(0)
    module.train_index = FilterIndex(torch.tensor([[0, 0, 1]]), 30, 4)
    module.log = lambda *args, **kwargs: None
    return module


def step_loss(module: LinkPredictionModule) -> torch.Tensor:
    triples = torch.stack([torch.arange(12), torch.arange(12) % 4, (torch.arange(12) * 7) % 30], 1)
    return module.training_step((triples, torch.ones(12)), 0)


def test_the_module_adds_weight_times_the_mi_loss_and_nothing_else():
    plain = step_loss(make_module(None))
    torch.manual_seed(1)
    mi = MutualInformation(8, 8, weight=0.7)
    with_mi = make_module(mi)
    triples = torch.stack([torch.arange(12), torch.arange(12) % 4, (torch.arange(12) * 7) % 30], 1)
    expected = plain + 0.7 * mi(with_mi.model, triples, with_mi.train_index, None)
    assert step_loss(with_mi).item() == pytest.approx(expected.item(), rel=1e-6)
    zero = make_module(MutualInformation(8, 8, weight=0.0))
    assert torch.equal(step_loss(zero), plain)  # bit-identical: MI draws nothing from the generator


def test_mi_heads_do_not_change_rankings():
    module = make_module(MutualInformation(8, 8))
    triples = torch.tensor([[0, 0, 1], [2, 1, 3], [4, 2, 5]])
    module.filter_index = FilterIndex(triples, 30, 4)

    def ranks():
        module.val_metrics.reset()
        module._evaluate(triples, module.val_metrics)
        return module.val_metrics.compute()

    before = ranks()
    with torch.no_grad():
        for parameter in module.mi.parameters():
            parameter.add_(torch.randn_like(parameter))
    after = ranks()
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("estimator", ["infonce", "jsd", "mine"])
def test_mi_composes_with_emu(estimator):
    from kgexp.training.emu import EMU

    torch.manual_seed(0)
    model = MODELS["rotate"](30, 4, dim=8)
    mi = MutualInformation(16, 8, name=estimator)
    module = LinkPredictionModule(
        model,
        NegativeSampling(UniformSampler(5)),
        SoftmaxCrossEntropy(),
        None,
        {"name": "adam"},
        emu=EMU(),
        mi=mi,
    )
    module.generator = torch.Generator().manual_seed(0)
    module.train_index = FilterIndex(torch.tensor([[0, 0, 1]]), 30, 4)
    module.log = lambda *args, **kwargs: None
    step_loss(module).backward()
    for name, parameter in [*model.named_parameters(), *mi.named_parameters()]:
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def configured_module(tmp_path: Path, *overrides: str) -> LinkPredictionModule:
    """A DistMult module on 30 entities and 4 relations built from the config, as ``kgexp train`` does."""
    cfg = compose_config(
        "model=distmult", "model.dim=8", "sampler.num_negatives=5", *overrides, output_dir=tmp_path
    )
    torch.manual_seed(0)  # the same embeddings and heads for every weight
    module = build_module(cfg, num_entities=30, num_relations=4)
    module.generator = torch.Generator().manual_seed(0)
    module.train_index = FilterIndex(torch.tensor([[0, 0, 1], [3, 1, 10]]), 30, 4)
    module.log = lambda *args, **kwargs: None
    return module


@pytest.mark.parametrize(
    "options",
    [("mi=infonce",), ("mi=jsd",), ("mi=mine",), ("mi=infonce", "mi.extra_negatives=kge")],
    ids=["infonce", "jsd", "mine", "infonce+kge-negatives"],
)
def test_the_step_loss_grows_by_the_configured_weight_times_the_mi_term(tmp_path, options):
    """loss(mi.weight=w) - loss(mi.weight=0) on one seeded batch is w times the term the MutualInformation
    module computes on its own for that batch (with the step's sampled negatives, for extra_negatives=kge)."""
    weight = 0.7
    triples = torch.stack([torch.arange(12), torch.arange(12) % 4, (torch.arange(12) * 7) % 30], 1)
    weighted = configured_module(tmp_path, *options, f"mi.weight={weight}")
    assert weighted.mi.weight == weight
    mi = copy.deepcopy(weighted.mi)  # before the step: MINE's step updates its moving average
    corruptions = weighted.negatives.corrupt(
        triples, 0, 30, weighted.train_index, torch.Generator().manual_seed(0), weighted.model
    )  # the step's negatives: drawn first from the generator, seeded alike
    sampled = {c.side: (c.rows, c.negatives) for c in corruptions}
    term = mi(weighted.model, triples, weighted.train_index, sampled)
    with_weight = weighted.training_step((triples, torch.ones(12)), 0)
    without = configured_module(tmp_path, *options, "mi.weight=0").training_step((triples, torch.ones(12)), 0)
    assert abs(term.item()) > 0.1  # a term that would show
    assert (with_weight - without).item() == pytest.approx(weight * term.item(), rel=1e-5)
