"""Reciprocal relations and the differentiable all-entity scores of the models.

A reciprocal model answers the head query ``(?, r, t)`` as the tail query ``(t, r + R, ?)``: its scores
are checked against the textbook tail formulas evaluated in plain Python on the ``r + R`` row, its ranks
against a brute-force ranking of those explicit inverse scores, and an export keeps it. The chunked
all-entity scores of the distance models (:class:`ChunkedScores`) are checked against plain autograd.
"""

from __future__ import annotations

import cmath
import json
import math

import numpy as np
import pytest
import torch
from conftest import compose_config, quiet_trainer, write_toy_dataset

from kgexp import kernels
from kgexp.commands.export import export
from kgexp.config.build import build_datamodule, build_module
from kgexp.config.loading import load_predictor
from kgexp.data.filter_index import FilterIndex
from kgexp.evaluation.prediction import Predictor
from kgexp.evaluation.ranking import rank_queries
from kgexp.models import ComplEx, DistMult, KGEModel, RotatE, TransE
from kgexp.models.base import ChunkedScores, DistanceModel
from kgexp.sides import HEAD, TAIL

E, R, DIM = 7, 3, 3
GAMMA = 4.0


def build(name: str, reciprocal: bool, seed: int = 0, dtype=torch.float64, p_norm: int = 1) -> KGEModel:
    torch.manual_seed(seed)
    if name == "transe":
        model = TransE(E, R, DIM, gamma=GAMMA, init_range=1.0, reciprocal=reciprocal, p_norm=p_norm)
    else:
        cls = {"distmult": DistMult, "complex": ComplEx, "rotate": RotatE}[name]
        model = cls(E, R, DIM, gamma=GAMMA, init_range=1.0, reciprocal=reciprocal)
    return model.to(dtype)


NAMES = ("transe", "distmult", "complex", "rotate")


def as_complex(row: list[float]) -> list[complex]:
    half = len(row) // 2
    return [complex(row[k], row[half + k]) for k in range(half)]


def textbook(model: KGEModel, h: int, row: int, t: int) -> float:
    """score(h, r, t) of the model's formula, in plain Python, with relation-table row ``row``."""
    ent, rel = model.entity.weight.tolist(), model.relation.weight.tolist()
    if isinstance(model, TransE):
        diff = [a + b - c for a, b, c in zip(ent[h], rel[row], ent[t], strict=True)]
        return GAMMA - sum(abs(d) ** model.p_norm for d in diff) ** (1 / model.p_norm)
    if isinstance(model, ComplEx):
        hc, rc, tc = as_complex(ent[h]), as_complex(rel[row]), as_complex(ent[t])
        return sum(a * b * c.conjugate() for a, b, c in zip(hc, rc, tc, strict=True)).real
    if isinstance(model, DistMult):
        return sum(a * b * c for a, b, c in zip(ent[h], rel[row], ent[t], strict=True))
    hc, tc = as_complex(ent[h]), as_complex(ent[t])
    phases = [x * math.pi / model.embedding_range for x in rel[row]]
    return GAMMA - sum(abs(a * cmath.exp(1j * p) - c) for a, p, c in zip(hc, phases, tc, strict=True))


QUERIES = [(0, 0), (3, 1), (6, 2), (2, 0), (5, 2)]  # (anchor, relation)


def query_tensors() -> tuple[torch.Tensor, torch.Tensor]:
    anchors, relations = zip(*QUERIES, strict=True)
    return torch.tensor(anchors), torch.tensor(relations)


# --------------------------------------------------------------------------------------------------
# Scores of head queries
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_a_reciprocal_head_query_is_the_tail_query_of_the_inverse_row(name):
    model = build(name, reciprocal=True)
    assert model.relation.num_embeddings == 2 * R and model.num_relations == R
    anchors, relations = query_tensors()
    ids = torch.tensor([[1, 4, 6], [0, 0, 2], [5, 3, 1], [6, 2, 4], [2, 1, 0]])
    with torch.no_grad():
        every = model.score_candidates(anchors, relations, HEAD)
        shared = model.score_candidates(anchors, relations, HEAD, torch.tensor([4, 0, 5]))
        each = model.score_candidates(anchors, relations, HEAD, ids)
        embedded = model.score_embeddings(anchors, relations, HEAD, model.entity(ids))
        tails = model.score_candidates(anchors, relations, TAIL)
    for i, (t, r) in enumerate(QUERIES):
        inverse = [textbook(model, t, r + R, e) for e in range(E)]  # (t, r + R, e)
        assert every[i].tolist() == pytest.approx(inverse, rel=1e-10, abs=1e-10)
        assert shared[i].tolist() == pytest.approx([inverse[e] for e in (4, 0, 5)], rel=1e-10, abs=1e-10)
        assert each[i].tolist() == pytest.approx([inverse[e] for e in ids[i]], rel=1e-10, abs=1e-10)
        assert embedded[i].tolist() == pytest.approx([inverse[e] for e in ids[i]], rel=1e-10, abs=1e-10)
        # Tail queries read the forward row r.
        assert tails[i].tolist() == pytest.approx(
            [textbook(model, t, r, e) for e in range(E)], rel=1e-10, abs=1e-10
        )
        # The head query is not the non-reciprocal head formula on row r.
        assert every[i].tolist() != pytest.approx([textbook(model, e, r, t) for e in range(E)], abs=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_a_non_reciprocal_model_keeps_r_rows_and_the_head_formula(name):
    model = build(name, reciprocal=False)
    assert model.relation.num_embeddings == R and not model.reciprocal
    assert model.hyperparameters()["reciprocal"] is False
    anchors, relations = query_tensors()
    with torch.no_grad():
        heads = model.score_candidates(anchors, relations, HEAD)
    for i, (t, r) in enumerate(QUERIES):
        expected = [textbook(model, e, r, t) for e in range(E)]  # (e, r, t)
        assert heads[i].tolist() == pytest.approx(expected, rel=1e-10, abs=1e-10)


@pytest.mark.parametrize("name", NAMES)
def test_float32_reciprocal_head_scores_through_the_fused_kernels(name):
    model = build(name, reciprocal=True, dtype=torch.float32)
    anchors, relations = query_tensors()
    ids = torch.arange(E).repeat(len(QUERIES), 1)
    with torch.no_grad():
        every = model.score_candidates(anchors, relations, HEAD)
        each = model.score_candidates(anchors, relations, HEAD, ids)
    for i, (t, r) in enumerate(QUERIES):
        inverse = [textbook(model, t, r + R, e) for e in range(E)]
        assert every[i].tolist() == pytest.approx(inverse, rel=1e-5, abs=1e-5)
        assert each[i].tolist() == pytest.approx(inverse, rel=1e-5, abs=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_head_queries_train_only_the_inverse_rows_and_tail_queries_only_the_forward_rows(name):
    anchors, relations = query_tensors()
    for side, trained in ((HEAD, range(R, 2 * R)), (TAIL, range(R))):
        model = build(name, reciprocal=True)
        model.score_all(model.embed_query(anchors, relations, side)).square().sum().backward()
        touched = {i for i, g in enumerate(model.relation.weight.grad.abs().sum(1).tolist()) if g > 0}
        assert touched == set(trained)


# --------------------------------------------------------------------------------------------------
# Ranking of head queries
# --------------------------------------------------------------------------------------------------
KNOWN = [(0, 0, 1), (2, 0, 1), (4, 0, 1), (3, 1, 6), (5, 1, 6), (1, 2, 2), (6, 2, 2), (0, 2, 2), (3, 0, 5)]
EVALUATED = [(0, 0, 1), (3, 1, 6), (6, 2, 2), (3, 0, 5)]


def brute_force_ranks(scores: list[float], target: int, filtered: set[int]) -> tuple[float, float]:
    """Optimistic and pessimistic rank of ``target`` among the entities not in ``filtered``."""
    kept = [e for e in range(len(scores)) if e == target or e not in filtered]
    better = sum(1 for e in kept if e != target and scores[e] > scores[target])
    tied = sum(1 for e in kept if scores[e] == scores[target])  # the target included
    return 1.0 + better, float(better + tied)


@pytest.mark.parametrize("name", NAMES)
def test_head_ranks_of_a_reciprocal_model_are_those_of_its_explicit_inverse_scores(name):
    model = build(name, reciprocal=True, seed=3)
    with torch.no_grad():  # entity 5 duplicates entity 3: a tie with the head 3 of (3, 0, 5), and a
        model.entity.weight[5] = model.entity.weight[3]  # filtered-out one for (3, 1, 6)
    index = FilterIndex(torch.tensor(KNOWN), E, R)
    ranks = rank_queries(model, torch.tensor(EVALUATED), HEAD, index)
    tied_somewhere = False
    for i, (h, r, t) in enumerate(EVALUATED):
        explicit = model.score_triples(
            torch.full((E,), t), torch.full((E,), r + R), torch.arange(E)
        ).tolist()  # (t, r + R, e): an explicit tail query of the inverse row
        assert explicit == pytest.approx([textbook(model, t, r + R, e) for e in range(E)], abs=1e-10)
        filtered = {a for a, b, c in KNOWN if (b, c) == (r, t)}
        expected = brute_force_ranks(explicit, h, filtered)
        assert (ranks.optimistic[i].item(), ranks.pessimistic[i].item()) == expected
        if h == 3:  # the duplicate 5 ties with the target; filtered out for (?, 1, 6), counted for (?, 0, 5)
            assert explicit[5] == explicit[3]
            assert (expected[0] == expected[1]) == (5 in filtered)
            tied_somewhere |= expected[0] != expected[1]
    assert tied_somewhere


@pytest.mark.parametrize("name", NAMES)
def test_float32_head_ranks_of_a_reciprocal_model(name):
    """The CPU's fused rank paths (RotatE's bound-pruned ranking among them) on the inverse rows."""
    model = build(name, reciprocal=True, seed=4, dtype=torch.float32)
    index = FilterIndex(torch.tensor(KNOWN), E, R)
    ranks = rank_queries(model, torch.tensor(EVALUATED), HEAD, index)
    for i, (h, r, t) in enumerate(EVALUATED):
        explicit = [textbook(model, t, r + R, e) for e in range(E)]
        gaps = [abs(a - b) for a in explicit for b in explicit if a != b]
        assert min(gaps) > 1e-4  # no near-ties that float32 rounding could flip
        filtered = {a for a, b, c in KNOWN if (b, c) == (r, t)}
        expected = brute_force_ranks(explicit, h, filtered)
        assert (ranks.optimistic[i].item(), ranks.pessimistic[i].item()) == expected


# --------------------------------------------------------------------------------------------------
# An export keeps a reciprocal model
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["complex", "rotate"])
def test_an_export_of_a_reciprocal_model_predicts_as_its_checkpoint(name, tmp_path):
    folder = write_toy_dataset(tmp_path / "toy")
    cfg = compose_config(
        "dataset=custom",
        f"dataset.path={folder}",
        "regime=1vsAll",
        f"model={name}",
        "model.dim=4",
        "model.reciprocal=true",
        "data.batch_size=32",
        "schedule=none",
        output_dir=tmp_path / "run",
    )
    datamodule = build_datamodule(cfg)
    datamodule.prepare_data()
    datamodule.setup("fit")
    graph = datamodule.graph
    module = build_module(cfg, graph.num_entities, graph.num_relations)
    trainer = quiet_trainer(2, tmp_path / "run")
    trainer.fit(module, datamodule=datamodule)
    checkpoint = tmp_path / "model.ckpt"
    trainer.save_checkpoint(checkpoint)

    out = export(checkpoint, tmp_path / "export")
    description = json.loads((out / "model.json").read_text())
    assert description["reciprocal"] is True and description["num_relations"] == graph.num_relations
    assert np.load(out / "relations.npy").shape[0] == 2 * graph.num_relations
    assert len((out / "relations.tsv").read_text().splitlines()) == graph.num_relations

    exported, restored = Predictor.from_export(out), load_predictor(checkpoint, with_known=False)
    anchors = torch.arange(graph.num_entities).repeat_interleave(graph.num_relations)
    relations = torch.arange(graph.num_relations).repeat(graph.num_entities)
    trained = module.model.eval()
    for predictor in (exported, restored):
        assert predictor.model.reciprocal and predictor.model.relation.num_embeddings == 2 * R
        for side in (HEAD, TAIL):
            with torch.no_grad():
                expected = trained.score_candidates(anchors, relations, side)
                got = predictor.model.score_candidates(anchors, relations, side)
            torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    best = exported.top_k_ids(anchors[:4], relations[:4], HEAD, k=3)[0]
    with torch.no_grad():
        assert torch.equal(best, trained.score_candidates(anchors[:4], relations[:4], HEAD).topk(3).indices)


# --------------------------------------------------------------------------------------------------
# ChunkedScores: all-entity scores with gradients, a chunk of candidates at a time
# --------------------------------------------------------------------------------------------------
def plain_distance(model: DistanceModel, queries: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """``(B, N)`` distances by broadcasting, written out here (not the model's ``distance``)."""
    diff = queries[:, None, :] - candidates[None, :, :]
    if isinstance(model, RotatE):
        re, im = diff.chunk(2, dim=-1)
        return (re.square() + im.square()).sqrt().sum(-1)
    if model.p_norm == 1:
        return diff.abs().sum(-1)
    return diff.square().sum(-1).sqrt()


DISTANCE_CASES = [("transe", 1), ("transe", 2), ("rotate", 1)]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("chunk_elements", [1, 20])
@pytest.mark.parametrize(("name", "p_norm"), DISTANCE_CASES)
def test_chunked_scores_and_gradients_equal_plain_autograd(name, p_norm, chunk_elements, dtype, monkeypatch):
    model = build(name, reciprocal=False, p_norm=p_norm, dtype=dtype)
    model.chunk_elements = chunk_elements
    width = model.entity.embedding_dim
    gen = torch.Generator().manual_seed(1)
    queries = torch.randn(4, width, generator=gen, dtype=dtype)
    candidates = torch.randn(E, width, generator=gen, dtype=dtype)
    upstream = torch.randn(4, E, generator=gen, dtype=dtype)
    chunk = model.candidate_chunk(queries)
    assert 1 <= chunk < E  # several chunks, the last one shorter where E % chunk != 0
    tolerance = {"rtol": 1e-10, "atol": 1e-10} if dtype == torch.float64 else {"rtol": 1e-4, "atol": 1e-4}

    q_ref, c_ref = queries.clone().requires_grad_(), candidates.clone().requires_grad_()
    reference = GAMMA - plain_distance(model, q_ref, c_ref)
    (reference * upstream).sum().backward()

    calls = []
    distance = model.distance
    monkeypatch.setattr(model, "distance", lambda q, c: calls.append(c.shape[-2]) or distance(q, c))
    routes = {
        "ChunkedScores": lambda q, c: ChunkedScores.apply(model, q, c),
        "compare_all": model.compare_all,  # TransE p=2 takes cdist here
    }
    sizes = [chunk] * (E // chunk) + ([E % chunk] if E % chunk else [])
    for route, score in routes.items():
        q, c = queries.clone().requires_grad_(), candidates.clone().requires_grad_()
        scores = score(q, c)
        torch.testing.assert_close(scores, reference.detach(), **tolerance)
        calls.clear()
        (scores * upstream).sum().backward()
        torch.testing.assert_close(q.grad, q_ref.grad, **tolerance, msg=f"{route}: queries")
        torch.testing.assert_close(c.grad, c_ref.grad, **tolerance, msg=f"{route}: candidates")
        cdist = route == "compare_all" and p_norm == 2
        fused = dtype == torch.float32 and kernels.available()  # one kernel computes both gradients
        # otherwise the backward pass recomputes one chunk at a time
        assert calls == ([] if cdist or fused else sizes)


@pytest.mark.parametrize(("name", "p_norm"), DISTANCE_CASES)
def test_chunked_scores_pass_gradcheck(name, p_norm):
    model = build(name, reciprocal=False, p_norm=p_norm)
    model.chunk_elements = 7
    width = model.entity.embedding_dim
    gen = torch.Generator().manual_seed(2)
    queries = torch.randn(3, width, generator=gen, dtype=torch.float64, requires_grad=True)
    candidates = torch.randn(5, width, generator=gen, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda q, c: ChunkedScores.apply(model, q, c), (queries, candidates))


@pytest.mark.parametrize(("name", "p_norm"), DISTANCE_CASES)
def test_all_entity_training_gradients_of_a_distance_model_equal_plain_autograd(name, p_norm):
    """What 1vsAll differentiates: scores of embedded queries against the whole entity table (the table
    is both the anchors' and the candidates' source), through the chunks."""
    from kgexp.training.losses import SoftmaxCrossEntropy
    from kgexp.training.regimes import OneVsAll

    triples = torch.tensor([(0, 0, 1), (3, 1, 6), (6, 2, 2), (2, 0, 5)])
    chunked = build(name, reciprocal=True, p_norm=p_norm)
    chunked.chunk_elements = 5
    OneVsAll().step(chunked, SoftmaxCrossEntropy(label_smoothing=0.1), triples).loss.backward()

    plain = build(name, reciprocal=True, p_norm=p_norm, seed=1)
    plain.load_state_dict(chunked.state_dict())
    queries, answers = [], []
    for side in (TAIL, HEAD):
        anchors, targets = (triples[:, 0], triples[:, 2]) if side == TAIL else (triples[:, 2], triples[:, 0])
        queries.append(plain.embed_query(anchors, triples[:, 1], side))
        answers.append(targets)
    scores = GAMMA - plain_distance(plain, torch.cat(queries), plain.entity.weight)
    log_p = torch.log_softmax(scores, 1)
    target = torch.full_like(scores, 0.1 / (E - 1))
    target[torch.arange(len(scores)), torch.cat(answers)] = 0.9
    (-(target * log_p).sum(1).mean()).backward()
    for table in ("entity", "relation"):
        torch.testing.assert_close(
            getattr(chunked, table).weight.grad, getattr(plain, table).weight.grad, rtol=1e-10, atol=1e-10
        )
