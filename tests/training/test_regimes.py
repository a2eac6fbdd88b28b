"""The all-entity training regimes (1vsAll, KvsAll) against brute force and hand computation: KvsAll's
labels (training answers only), its training examples and draws, the all-entity losses, every regime
training every model from a composed config, and the config combinations refused.

Reference values come from plain Python (sets of triples, ``math``), never from the code under test.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
from conftest import compose_config, quiet_trainer, run_kgexp, write_toy_dataset

from kgexp.config.build import build_datamodule, build_module, build_regime
from kgexp.config.validation import validate
from kgexp.data.datamodule import KGDataModule
from kgexp.data.filter_index import FilterIndex
from kgexp.models import ComplEx, DistMult, KGEModel
from kgexp.sides import HEAD, SIDE_CODES, TAIL
from kgexp.training.losses import BinaryCrossEntropy, Loss, SoftmaxCrossEntropy
from kgexp.training.module import LinkPredictionModule
from kgexp.training.negatives import NegativeSampling, UniformSampler
from kgexp.training.regimes import REGIMES, KvsAll, OneVsAll

# --------------------------------------------------------------------------------------------------
# A hand-made graph whose valid and test triples share queries with the training triples, so that an
# answer leaking from them into KvsAll's labels would show.
# --------------------------------------------------------------------------------------------------
TRAIN = [
    ("e0", "r0", "e1"),
    ("e0", "r0", "e2"),
    ("e3", "r0", "e1"),
    ("e1", "r1", "e4"),
    ("e2", "r1", "e4"),
    ("e5", "r0", "e2"),
    ("e4", "r1", "e0"),
    ("e2", "r0", "e2"),
]
VALID = [("e0", "r0", "e3"), ("e4", "r0", "e1")]  # (e0, r0, ?) and (?, r0, e1) are training queries
TEST = [("e1", "r1", "e5"), ("e3", "r1", "e4")]  # (e1, r1, ?) and (?, r1, e4) are training queries


def write_graph(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for split, triples in (("train", TRAIN), ("valid", VALID), ("test", TEST)):
        (folder / f"{split}.txt").write_text("".join("\t".join(t) + "\n" for t in triples))
    return folder


@pytest.fixture
def hand_graph(tmp_path) -> KGDataModule:
    folder = write_graph(tmp_path / "hand")
    datamodule = KGDataModule(
        "hand", path=str(folder), batch_size=3, cache_dir=str(tmp_path / "cache"), examples="queries"
    )
    datamodule.prepare_data()
    datamodule.setup("fit")
    return datamodule


def ids(datamodule: KGDataModule, triples: list[tuple[str, str, str]]) -> list[tuple[int, int, int]]:
    entity = {label: i for i, label in enumerate(datamodule.graph.entities)}
    relation = {label: i for i, label in enumerate(datamodule.graph.relations)}
    return [(entity[h], relation[r], entity[t]) for h, r, t in triples]


def query_answers(triples) -> dict[tuple[int, int, int], set[int]]:
    """Brute force: ``(anchor, relation, side code) -> answers`` over the given id triples."""
    answers: dict[tuple[int, int, int], set[int]] = {}
    for h, r, t in triples:
        answers.setdefault((h, r, SIDE_CODES[TAIL]), set()).add(t)
        answers.setdefault((t, r, SIDE_CODES[HEAD]), set()).add(h)
    return answers


def label_pairs(answers: dict[tuple[int, int, int], set[int]]) -> set[tuple[tuple[int, int, int], int]]:
    return {(query, answer) for query, known in answers.items() for answer in known}


class SpyLoss(Loss):
    """Records what ``all_entities`` is given; the loss it returns is a stand-in."""

    def __init__(self) -> None:
        self.calls: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def __call__(self, positive, negative, weights=None):
        raise AssertionError("an all-entity regime called the negative-sampling form")

    def all_entities(self, scores, rows, cols):
        self.calls.append((scores.detach().clone(), rows.clone(), cols.clone()))
        return scores.sum() * 0.0


def random_model(num_entities: int, num_relations: int, reciprocal: bool = False, seed: int = 0) -> KGEModel:
    """A float64 ComplEx: its head and tail queries of one (anchor, relation) score differently."""
    torch.manual_seed(seed)
    return ComplEx(num_entities, num_relations, 3, init_range=1.0, reciprocal=reciprocal).double()


def query_scores(model: KGEModel, query: tuple[int, int, int]) -> torch.Tensor:
    """All-entity scores of one query, alone."""
    anchor, relation, code = query
    side = TAIL if code == SIDE_CODES[TAIL] else HEAD
    with torch.no_grad():
        vector = model.embed_query(torch.tensor([anchor]), torch.tensor([relation]), side)
        return model.score_all(vector)[0]


def matched_labels(model, queries: torch.Tensor, scores, rows, cols) -> set:
    """The (query, answer) pairs of all-entity ``scores`` labelled ``(rows, cols)``: each scored row is
    matched to the query whose own scores it holds (no assumption on the order of the rows)."""
    batch = [tuple(q) for q in queries.tolist()]
    expected = torch.stack([query_scores(model, q) for q in batch])
    assert scores.shape == expected.shape
    row_query = []
    for row in scores.detach():
        gaps = (expected - row).abs().amax(1)
        match = int(gaps.argmin())
        assert gaps[match] < 1e-9 and (gaps > 1e-6).sum() == len(batch) - 1
        row_query.append(batch[match])
    assert sorted(row_query) == sorted(batch)  # every query scored once
    pairs = [(row_query[r], c) for r, c in zip(rows.tolist(), cols.tolist(), strict=True)]
    assert len(pairs) == len(set(pairs))  # distinct (query, answer) pairs
    return set(pairs)


def labels_given_to_the_loss(model, queries: torch.Tensor, datamodule) -> set:
    spy = SpyLoss()
    KvsAll().step(model, spy, queries, datamodule.train_index, torch.Generator().manual_seed(0))
    [(scores, rows, cols)] = spy.calls
    return matched_labels(model, queries, scores, rows, cols)


# --------------------------------------------------------------------------------------------------
# KvsAll's examples and labels
# --------------------------------------------------------------------------------------------------
def test_distinct_queries_are_the_brute_force_queries_of_both_sides():
    rows = [(0, 0, 1), (0, 0, 2), (3, 0, 1), (1, 1, 4), (2, 1, 4), (0, 0, 1), (4, 1, 0), (2, 0, 2)]
    queries = FilterIndex(torch.tensor(rows), 5, 2).distinct_queries()
    assert queries.dtype == torch.int64 and queries.shape[1] == 3
    listed = [tuple(q) for q in queries.tolist()]
    expected = {(h, r, 0) for h, r, _ in rows} | {(t, r, 1) for _, r, t in rows}
    assert len(listed) == len(set(listed)) == len(expected) == 10  # 6 tail, 4 head queries
    assert set(listed) == expected
    assert SIDE_CODES == {TAIL: 0, HEAD: 1}


def test_distinct_queries_of_a_random_graph(tmp_path):
    folder = write_toy_dataset(tmp_path / "toy", num_entities=15, num_relations=4, seed=3)
    datamodule = KGDataModule("toy", path=str(folder), cache_dir=str(tmp_path / "cache"))
    datamodule.setup("fit")
    train = datamodule.graph.train.tolist()
    listed = [tuple(q) for q in datamodule.train_index.distinct_queries().tolist()]
    assert len(listed) == len(set(listed))
    assert set(listed) == set(query_answers(train))


def test_the_datamodule_serves_every_distinct_training_query_once_an_epoch(hand_graph):
    expected = set(query_answers(ids(hand_graph, TRAIN)))
    batches = list(hand_graph.train_dataloader())
    assert all(isinstance(b, torch.Tensor) and b.shape[1] == 3 for b in batches)  # no weights
    assert len(batches) == math.ceil(len(expected) / 3)
    served = [tuple(q) for b in batches for q in b.tolist()]
    assert sorted(served) == sorted(expected)
    hand_graph.examples = "triples"  # the other regimes: training triples with their weights
    triples, weights = next(iter(hand_graph.train_dataloader()))
    assert triples.shape == (3, 3) and weights.shape == (3,)


def test_kvsall_labels_are_the_training_answers_and_nothing_else(hand_graph):
    train = query_answers(ids(hand_graph, TRAIN))
    model = random_model(hand_graph.graph.num_entities, hand_graph.graph.num_relations)
    queries = hand_graph.train_index.distinct_queries()
    seen = labels_given_to_the_loss(model, queries, hand_graph)
    assert seen == label_pairs(train)
    # The leak check: answers that only valid or test triples give to training queries.
    held_out = query_answers(ids(hand_graph, VALID + TEST))
    leaks = {(q, a) for q, known in held_out.items() if q in train for a in known - train[q]}
    assert len(leaks) == 4
    assert not seen & leaks


class RecordingLoss(SoftmaxCrossEntropy):
    """Softmax cross-entropy that records the labels of every training step (``batch`` is set by
    :class:`CurrentBatch` before each step)."""

    def __init__(self, model: KGEModel) -> None:
        super().__init__()
        self.model, self.batch, self.labels = model, None, []

    def all_entities(self, scores, rows, cols):
        self.labels.append(matched_labels(self.model, self.batch, scores, rows, cols))
        return super().all_entities(scores, rows, cols)


class CurrentBatch(pl.Callback):
    def __init__(self, loss: RecordingLoss) -> None:
        self.loss = loss

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.loss.batch = batch


def test_a_kvsall_training_epoch_labels_only_training_answers(hand_graph, tmp_path):
    """Through the module and the trainer: the labels of one epoch are the training answers of every
    training query, never a valid or test answer (the module hands KvsAll the training index)."""
    train = query_answers(ids(hand_graph, TRAIN))
    model = random_model(hand_graph.graph.num_entities, hand_graph.graph.num_relations, seed=3)
    loss = RecordingLoss(model)
    module = LinkPredictionModule(model, None, loss, None, {"name": "sgd", "lr": 0.01}, regime=KvsAll())
    epoch = len(hand_graph.train_dataloader())
    trainer = quiet_trainer(epoch, tmp_path, CurrentBatch(loss))
    trainer.fit(module, datamodule=hand_graph)
    assert len(loss.labels) == epoch
    seen = set().union(*loss.labels)
    assert seen == label_pairs(train)
    assert sum(len(step) for step in loss.labels) == len(seen)  # each query once an epoch
    held_out = query_answers(ids(hand_graph, VALID + TEST))
    assert not ({(q, a) for q, known in held_out.items() for a in known} - label_pairs(train)) & seen


def test_kvsall_labels_of_every_served_batch(hand_graph):
    """Batches as the datamodule serves them (some with queries of one side only)."""
    train = query_answers(ids(hand_graph, TRAIN))
    model = random_model(hand_graph.graph.num_entities, hand_graph.graph.num_relations, seed=1)
    batches = list(hand_graph.train_dataloader())
    all_queries = hand_graph.train_index.distinct_queries()
    one_side = [all_queries[all_queries[:, 2] == code] for code in SIDE_CODES.values()]
    for batch in [*batches, *one_side]:
        expected = {(q, a) for q in map(tuple, batch.tolist()) for a in train[q]}
        assert labels_given_to_the_loss(model, batch, hand_graph) == expected


def test_kvsall_draws_one_training_answer_per_query_uniformly_with_the_generator(hand_graph):
    """MI-KGE's positives and the regulariser's rows: one training answer per query, drawn with the run's
    generator; a reciprocal model's head queries regularise row r + R (which tells the side)."""
    train = query_answers(ids(hand_graph, TRAIN))
    num_relations = hand_graph.graph.num_relations
    model = random_model(hand_graph.graph.num_entities, num_relations, reciprocal=True)
    queries = hand_graph.train_index.distinct_queries()
    batch = sorted(map(tuple, queries.tolist()))

    def draws(seed: int, steps: int) -> list[dict[tuple[int, int, int], int]]:
        generator = torch.Generator().manual_seed(seed)
        out = []
        for _ in range(steps):
            step = KvsAll().step(model, SoftmaxCrossEntropy(), queries, hand_graph.train_index, generator)
            positives, regularized = step.positives.tolist(), step.regularized.tolist()
            drawn = {}
            for (h, r, t), (rh, rr, rt) in zip(positives, regularized, strict=True):
                assert (rh, rt) == (h, t) and rr in (r, r + num_relations)
                query, answer = ((t, r, 1), h) if rr == r + num_relations else ((h, r, 0), t)
                assert answer in train[query]  # a training answer of its own query
                drawn[query] = answer
            assert len(positives) == len(batch) and sorted(drawn) == batch  # one per query
            out.append(drawn)
        return out

    first = draws(5, 400)
    torch.manual_seed(123)  # the global RNG plays no part
    assert draws(5, 4) == first[:4]
    assert draws(6, 4) != first[:4]
    for query, known in train.items():
        counts = {answer: sum(step[query] == answer for step in first) for answer in known}
        share = 400 / len(known)  # uniform: within five standard deviations of the binomial
        sd = math.sqrt(400 * (1 / len(known)) * (1 - 1 / len(known)))
        assert all(abs(c - share) <= 5 * sd for c in counts.values()), (query, counts)
    assert max(len(known) for known in train.values()) == 3


# --------------------------------------------------------------------------------------------------
# Losses over all entities
# --------------------------------------------------------------------------------------------------
def softplus(x: float) -> float:
    return math.log1p(math.exp(-abs(x))) + max(x, 0.0)


def log_softmax(row: list[float]) -> list[float]:
    top = max(row)
    z = top + math.log(sum(math.exp(x - top) for x in row))
    return [x - z for x in row]


def dense_softmax_ce(scores: list[list[float]], answers: list[set[int]], eps: float) -> float:
    losses = []
    for row, known in zip(scores, answers, strict=True):
        k, others = len(known), len(row) - len(known)
        target = [(1 - eps) / k if e in known else eps / others for e in range(len(row))]
        losses.append(-sum(y * lp for y, lp in zip(target, log_softmax(row), strict=True)))
    return sum(losses) / len(losses)


def dense_bce(scores: list[list[float]], answers: list[set[int]], eps: float) -> float:
    total, count = 0.0, 0
    for row, known in zip(scores, answers, strict=True):
        for e, s in enumerate(row):
            y = 1 - eps if e in known else eps / (len(row) - 1)
            total += y * softplus(-s) + (1 - y) * softplus(s)
            count += 1
    return total / count


DENSE = {"softmax_ce": (SoftmaxCrossEntropy, dense_softmax_ce), "bce": (BinaryCrossEntropy, dense_bce)}
MULTI_ANSWERS = [{1, 3}, {0}, {2, 4, 5}, {5}]


@pytest.mark.parametrize("eps", [0.0, 0.2])
@pytest.mark.parametrize("name", sorted(DENSE))
def test_all_entity_losses_equal_the_dense_label_formula(name, eps):
    cls, dense = DENSE[name]
    gen = torch.Generator().manual_seed(0)
    scores = (3 * torch.randn(4, 6, generator=gen, dtype=torch.float64)).requires_grad_()
    pairs = [(row, col) for row, known in enumerate(MULTI_ANSWERS) for col in sorted(known)]
    order = torch.randperm(len(pairs), generator=gen)  # the pairs' order does not matter
    rows = torch.tensor([pairs[i][0] for i in order])
    cols = torch.tensor([pairs[i][1] for i in order])
    loss = cls(label_smoothing=eps).all_entities(scores, rows, cols)
    assert loss.item() == pytest.approx(dense(scores.tolist(), MULTI_ANSWERS, eps), rel=1e-12)
    # The gradient too, against autograd through the dense target matrix.
    loss.backward()
    targets = torch.zeros(4, 6, dtype=torch.float64)
    for row, known in enumerate(MULTI_ANSWERS):
        for col in range(6):
            if name == "softmax_ce":
                targets[row, col] = (1 - eps) / len(known) if col in known else eps / (6 - len(known))
            else:
                targets[row, col] = 1 - eps if col in known else eps / 5
    x = scores.detach().clone().requires_grad_()
    if name == "softmax_ce":
        reference = -(targets * torch.log_softmax(x, 1)).sum(1).mean()
    else:
        reference = torch.nn.functional.binary_cross_entropy_with_logits(x, targets)
    reference.backward()
    torch.testing.assert_close(scores.grad, x.grad, rtol=1e-10, atol=1e-12)


def test_softmax_all_entities_with_every_entity_an_answer_is_the_mean_log_probability():
    scores = torch.tensor([[0.5, -1.0, 2.0]], dtype=torch.float64)
    rows, cols = torch.zeros(3, dtype=torch.int64), torch.arange(3)
    expected = -sum(log_softmax([0.5, -1.0, 2.0])) / 3 * (1 - 0.3)  # no other entity shares eps
    got = SoftmaxCrossEntropy(label_smoothing=0.3).all_entities(scores, rows, cols)
    assert got.item() == pytest.approx(expected, rel=1e-12)


POS = [1.0, -0.5]
NEG = [[0.2, -1.0, 0.5], [2.0, 0.0, -0.3]]


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.3])
def test_bce_with_negative_sampling_and_label_smoothing_by_hand(eps):
    pos, neg = torch.tensor(POS, dtype=torch.float64), torch.tensor(NEG, dtype=torch.float64)

    def bce(s, y):
        return y * softplus(-s) + (1 - y) * softplus(s)

    expected = sum(
        bce(p, 1 - eps) + sum(bce(x, eps / 3) for x in n) / 3 for p, n in zip(POS, NEG, strict=True)
    ) / len(POS)
    got = BinaryCrossEntropy(label_smoothing=eps)(pos, neg).item()
    assert got == pytest.approx(expected, rel=1e-12)
    if eps == 0:
        plain = sum(softplus(-p) + sum(softplus(x) for x in n) / 3 for p, n in zip(POS, NEG, strict=True))
        assert got == pytest.approx(plain / 2, rel=1e-12)
    else:
        assert got != pytest.approx(BinaryCrossEntropy()(pos, neg).item(), rel=1e-6)


# --------------------------------------------------------------------------------------------------
# 1vsAll by hand on a ComplEx of three entities (one complex coordinate each)
# --------------------------------------------------------------------------------------------------
ENTITIES = [complex(1.0, 0.5), complex(-0.5, 1.0), complex(0.3, -1.2)]
RELATIONS = [complex(0.8, -0.4), complex(-1.0, 0.6), complex(0.2, 1.5), complex(1.1, 0.1)]  # 2R rows
BATCH = [(0, 0, 1), (0, 0, 2), (2, 1, 0)]  # the first two share the tail query (0, 0, ?)


def hand_complex(reciprocal: bool) -> ComplEx:
    model = ComplEx(3, 2, 1, reciprocal=reciprocal).double()
    relations = RELATIONS if reciprocal else RELATIONS[:2]
    with torch.no_grad():
        model.entity.weight.copy_(torch.tensor([[z.real, z.imag] for z in ENTITIES], dtype=torch.float64))
        model.relation.weight.copy_(torch.tensor([[z.real, z.imag] for z in relations], dtype=torch.float64))
    return model


def one_vs_all_by_hand(reciprocal: bool) -> tuple[list[list[float]], list[int]]:
    """The 2B all-entity score rows of the batch (tail queries, then head queries) and their answers."""
    e, rel = ENTITIES, RELATIONS
    rows, answers = [], []
    for h, r, t in BATCH:
        rows.append([(e[h] * rel[r] * x.conjugate()).real for x in e])
        answers.append(t)
    for h, r, t in BATCH:
        if reciprocal:  # (?, r, t) is the tail query (t, r + R, ?)
            rows.append([(e[t] * rel[r + 2] * x.conjugate()).real for x in e])
        else:
            rows.append([(x * rel[r] * e[t].conjugate()).real for x in e])
        answers.append(h)
    return rows, answers


@pytest.mark.parametrize("reciprocal", [False, True])
@pytest.mark.parametrize(
    ("name", "eps"), [("softmax_ce", 0.0), ("softmax_ce", 0.2), ("bce", 0.0), ("bce", 0.1)]
)
def test_one_vs_all_loss_by_hand(name, eps, reciprocal):
    model = hand_complex(reciprocal)
    scores, answers = one_vs_all_by_hand(reciprocal)
    assert scores[0] != pytest.approx(scores[3])  # the two sides differ
    loss_cls, dense = DENSE[name]
    expected = dense(scores, [{a} for a in answers], eps)
    if name == "softmax_ce" and eps == 0:  # the textbook form: log-sum-exp minus the answer's score
        pairs = zip(scores, answers, strict=True)
        textbook = sum(math.log(sum(math.exp(s) for s in row)) - row[a] for row, a in pairs)
        assert expected == pytest.approx(textbook / 6, rel=1e-12)
    triples = torch.tensor(BATCH)
    step = OneVsAll().step(model, loss_cls(label_smoothing=eps), triples)
    assert step.loss.item() == pytest.approx(expected, rel=1e-12)
    assert torch.equal(step.positives, triples)
    inverse = triples.clone()
    inverse[:, 1] += 2 if reciprocal else 0
    assert sorted(map(tuple, step.regularized.tolist())) == sorted([*BATCH, *map(tuple, inverse.tolist())])


@pytest.mark.parametrize(("name", "eps"), [("softmax_ce", 0.0), ("softmax_ce", 0.25), ("bce", 0.1)])
def test_kvsall_loss_equals_the_dense_loss_of_the_training_answers(hand_graph, name, eps):
    train = query_answers(ids(hand_graph, TRAIN))
    model = random_model(hand_graph.graph.num_entities, hand_graph.graph.num_relations, seed=2)
    loss_cls, dense = DENSE[name]
    for batch in hand_graph.train_dataloader():
        queries = [tuple(q) for q in batch.tolist()]
        scores = [query_scores(model, q).tolist() for q in queries]
        expected = dense(scores, [train[q] for q in queries], eps)
        generator = torch.Generator().manual_seed(0)
        step = KvsAll().step(model, loss_cls(label_smoothing=eps), batch, hand_graph.train_index, generator)
        assert step.loss.item() == pytest.approx(expected, rel=1e-10)


def test_one_vs_all_gradient_reaches_the_anchor_and_every_candidate():
    model = hand_complex(reciprocal=True)
    OneVsAll().step(model, SoftmaxCrossEntropy(), torch.tensor(BATCH)).loss.backward()
    assert (model.entity.weight.grad.abs().sum(1) > 0).all()
    used_rows = {r for _, r, _ in BATCH} | {r + 2 for _, r, _ in BATCH}
    assert {i for i, g in enumerate(model.relation.weight.grad.abs().sum(1).tolist()) if g > 0} == used_rows


# --------------------------------------------------------------------------------------------------
# Every regime trains every model from a composed config
# --------------------------------------------------------------------------------------------------
MODEL_NAMES = ("transe", "distmult", "complex", "rotate")
STEPS = 3


@pytest.fixture(scope="module")
def toy_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_toy_dataset(tmp_path_factory.mktemp("regimes") / "toy")


def regime_config(folder: Path, regime: str, model: str, *overrides: str):
    sampler = ("sampler.num_negatives=8",) if regime == "negative_sampling" else ()
    return compose_config(
        "dataset=custom",
        f"dataset.path={folder}",
        f"regime={regime}",
        f"model={model}",
        "model.dim=8",
        "schedule=none",
        "data.batch_size=16",
        *sampler,
        *overrides,
        output_dir=folder.parent / "run",
    )


class StepLosses(pl.Callback):
    def __init__(self) -> None:
        self.values: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs: Any, *_) -> None:
        self.values.append(float(outputs["loss"]))


def train_steps(cfg, root: Path) -> tuple[LinkPredictionModule, pl.Trainer, list[float], dict]:
    validate(cfg)
    datamodule = build_datamodule(cfg)
    assert datamodule.examples == REGIMES[cfg.regime.name]
    datamodule.prepare_data()
    datamodule.setup("fit")
    torch.manual_seed(cfg.seed)
    module = build_module(cfg, datamodule.graph.num_entities, datamodule.graph.num_relations)
    initial = {k: v.clone() for k, v in module.model.state_dict().items()}
    losses = StepLosses()
    trainer = quiet_trainer(STEPS, root, losses, log_every_n_steps=1)
    trainer.fit(module, datamodule=datamodule)
    assert trainer.global_step == STEPS
    return module, trainer, losses.values, initial


def assert_trained(module, losses, initial) -> None:
    assert len(losses) == STEPS and all(math.isfinite(v) for v in losses)
    for name, before in initial.items():
        after = module.model.state_dict()[name]
        assert torch.isfinite(after).all()
        assert not torch.equal(after, before), f"{name} did not change"


GRID = [
    *[("negative_sampling", loss) for loss in ("softmax_ce", "bce", "self_adversarial", "margin")],
    *[(regime, loss) for regime in ("1vsAll", "KvsAll") for loss in ("softmax_ce", "bce")],
]


@pytest.mark.parametrize("model", MODEL_NAMES)
@pytest.mark.parametrize(("regime", "loss"), GRID)
def test_every_regime_trains_every_model(toy_folder, tmp_path, regime, loss, model):
    module, _, losses, initial = train_steps(
        regime_config(toy_folder, regime, model, f"loss={loss}"), tmp_path
    )
    assert (module.regime is None) == (regime == "negative_sampling")
    assert (module.negatives is None) == (regime != "negative_sampling")
    assert module.model.relation.num_embeddings == 3
    assert_trained(module, losses, initial)


@pytest.mark.parametrize("model", MODEL_NAMES)
@pytest.mark.parametrize("regime", ["negative_sampling", "1vsAll", "KvsAll"])
def test_every_regime_trains_every_reciprocal_model(toy_folder, tmp_path, regime, model):
    cfg = regime_config(toy_folder, regime, model, "model.reciprocal=true", "regularizer=n3")
    module, trainer, losses, initial = train_steps(cfg, tmp_path)
    assert module.model.reciprocal and module.model.relation.num_embeddings == 6
    assert_trained(module, losses, initial)
    # Head queries train the inverse rows r + R (sides alternate under negative sampling).
    before, after = initial["relation.weight"], module.model.relation.weight.detach()
    assert not torch.equal(before[3:], after[3:]) and not torch.equal(before[:3], after[:3])
    assert math.isfinite(float(trainer.callback_metrics["train/regularization"]))


@pytest.mark.parametrize("regime", ["1vsAll", "KvsAll"])
def test_mi_kge_trains_under_the_all_entity_regimes(toy_folder, tmp_path, regime):
    cfg = regime_config(toy_folder, regime, "complex", "model.reciprocal=true", "mi=infonce", "loss=bce")
    module, trainer, losses, initial = train_steps(cfg, tmp_path)
    assert_trained(module, losses, initial)
    logged = trainer.callback_metrics
    assert math.isfinite(float(logged["train/mi"])) and float(logged["train/mi"]) > 0
    # The MI term is part of the loss: the heads train.
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.mi.parameters())


# --------------------------------------------------------------------------------------------------
# Config combinations refused, each naming its key
# --------------------------------------------------------------------------------------------------
REFUSED = [
    (("sampler=emu",), "sampler.name:", ("EMU", "regime={regime}")),
    (("sampler=sans",), "sampler.name:", ("sampler=sans", "regime={regime}")),
    (("sampler=uniform",), "sampler.name:", ("sampler=uniform",)),
    (("loss=margin",), "loss.name:", ("margin", "regime={regime}")),
    (("loss=self_adversarial",), "loss.name:", ("self_adversarial",)),
    (("mi=infonce", "mi.extra_negatives=kge"), "mi.extra_negatives:", ("kge", "regime={regime}")),
]


@pytest.mark.parametrize("regime", ["1vsAll", "KvsAll"])
@pytest.mark.parametrize(("overrides", "key", "words"), REFUSED)
def test_all_entity_regimes_refuse_what_they_cannot_train(tmp_path, regime, overrides, key, words):
    cfg = compose_config(f"regime={regime}", *overrides, output_dir=tmp_path)
    with pytest.raises(ValueError) as error:
        build_module(cfg, 2, 1)
    message = str(error.value)
    assert message.startswith(key)
    for word in words:
        assert word.format(regime=regime) in message


def test_negative_sampling_refuses_sampler_none(tmp_path):
    cfg = compose_config("sampler=none", output_dir=tmp_path)
    assert cfg.regime.name == "negative_sampling"
    with pytest.raises(ValueError, match=r"^sampler\.name: regime=negative_sampling needs a sampler"):
        build_module(cfg, 2, 1)


@pytest.mark.parametrize("regime", ["1vsAll", "KvsAll"])
def test_all_entity_regimes_accept_their_own_combinations(tmp_path, regime):
    cfg = compose_config(f"regime={regime}", "loss=bce", "mi=infonce", output_dir=tmp_path)
    assert cfg.sampler.name == "none"  # the regime's config sets it
    validate(cfg)
    assert isinstance(build_regime(cfg), {"1vsAll": OneVsAll, "KvsAll": KvsAll}[regime])
    assert build_datamodule(cfg).examples == REGIMES[regime]


def test_the_module_takes_negatives_or_a_regime_not_both():
    model, optimizer = DistMult(4, 2, 3), {"name": "adagrad", "lr": 0.1}
    negatives = NegativeSampling(UniformSampler(num_negatives=2))
    for given in ((None, None), (negatives, OneVsAll())):
        with pytest.raises(ValueError, match=r"^regime:"):
            LinkPredictionModule(model, given[0], SoftmaxCrossEntropy(), None, optimizer, regime=given[1])


def test_hand_reference_of_complex_scores():
    """The hand ComplEx of the 1vsAll test scores as its tables say (guards the reference itself)."""
    model = hand_complex(reciprocal=False)
    for h, r, t in BATCH:
        got = model.score_triples(torch.tensor([h]), torch.tensor([r]), torch.tensor([t])).item()
        assert got == pytest.approx((ENTITIES[h] * RELATIONS[r] * ENTITIES[t].conjugate()).real, rel=1e-12)


# --------------------------------------------------------------------------------------------------
# The real command
# --------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_the_command_trains_a_reciprocal_complex_with_1vsall_and_n3(toy_folder, tmp_path):
    run_dir = tmp_path / "run"
    run_kgexp(
        "dataset=custom",
        f"dataset.path={toy_folder}",
        "regime=1vsAll",
        "model=complex",
        "model.dim=8",
        "model.reciprocal=true",
        "regularizer=n3",
        "data.batch_size=32",
        "trainer.max_steps=6",
        "trainer.val_check_interval=6",
        "logger=csv",
        f"hydra.run.dir={run_dir}",
        cwd=tmp_path,
    )
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for key in ("val/mrr", "test/mrr", "test/head/mrr", "test/tail/mrr"):
        assert 0 < metrics[key] <= 1
    state = torch.load(run_dir / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=False)
    assert state["state_dict"]["model.relation.weight"].shape[0] == 2 * 3
    config = state["hyper_parameters"]["config"]
    assert config["regime"]["name"] == "1vsAll" and config["sampler"]["name"] == "none"


@pytest.mark.slow
def test_the_command_refuses_emu_under_1vsall_in_one_line(toy_folder, tmp_path):
    result = run_kgexp(
        "dataset=custom",
        f"dataset.path={toy_folder}",
        "regime=1vsAll",
        "sampler=emu",
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("config error: sampler.name: EMU") and "regime=1vsAll" in last
    assert not (tmp_path / "run" / "metrics.json").exists()
