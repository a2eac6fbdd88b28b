"""SANS, RW-SANS and NSCaching against brute force: breadth-first search, dense matrix powers, toy scores."""

from __future__ import annotations

import random
from collections import deque

import numpy as np
import pytest
import torch
from conftest import sampler_setup

from kgexp.data import neighbourhoods
from kgexp.data.filter_index import FilterIndex
from kgexp.data.graph import load_graph
from kgexp.data.neighbourhoods import k_hop, random_walks
from kgexp.models import MODELS, DistMult
from kgexp.sides import HEAD, TAIL
from kgexp.training.losses import LOSSES, SoftmaxCrossEntropy
from kgexp.training.module import LinkPredictionModule
from kgexp.training.negatives import (
    Corruption,
    NegativeSampling,
    NSCachingSampler,
    RWSANSSampler,
    SANSSampler,
    UniformSampler,
)
from kgexp.training.negatives.base import uniform_unknown


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def random_train(num_entities: int, num_edges: int, seed: int) -> torch.Tensor:
    """Random triples; entities above ``0.8 * num_entities`` may stay isolated; self-loops and parallel
    edges included."""
    rng = random.Random(seed)
    connected = int(num_entities * 0.8)
    rows = [(rng.randrange(connected), rng.randrange(3), rng.randrange(connected)) for _ in range(num_edges)]
    rows.append((0, 0, 0))  # a self-loop
    return torch.tensor(rows)


def neighbours(train: torch.Tensor) -> dict[int, set[int]]:
    adjacency: dict[int, set[int]] = {}
    for h, _, t in train.tolist():
        adjacency.setdefault(h, set()).add(t)
        adjacency.setdefault(t, set()).add(h)
    return adjacency


def bfs_distances(train: torch.Tensor, source: int) -> dict[int, int]:
    adjacency, distance, queue = neighbours(train), {source: 0}, deque([source])
    while queue:
        node = queue.popleft()
        for other in adjacency.get(node, ()):
            if other not in distance:
                distance[other] = distance[node] + 1
                queue.append(other)
    return distance


def as_sets(neighbourhood, num_entities: int) -> list[set[int]]:
    return [set(neighbourhood.row(e).tolist()) for e in range(num_entities)]


# -- neighbourhoods -------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("hops", [1, 2, 3, 4])
def test_within_k_hops_equals_breadth_first_search(seed, hops, monkeypatch):
    monkeypatch.setattr(neighbourhoods, "_ROW_BLOCK", 7)  # several row blocks
    num_entities = 40
    train = random_train(num_entities, 45, seed)
    found = as_sets(k_hop(train, num_entities, hops, "within"), num_entities)
    for entity in range(num_entities):
        expected = {e for e, d in bfs_distances(train, entity).items() if 1 <= d <= hops}
        assert found[entity] == expected


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("hops", [1, 2, 3])
def test_reference_mode_is_the_pattern_of_a_power_k_plus_a_power_k_minus_1(seed, hops, monkeypatch):
    monkeypatch.setattr(neighbourhoods, "_ROW_BLOCK", 9)
    num_entities = 30
    train = random_train(num_entities, 35, seed)
    a = np.zeros((num_entities, num_entities), dtype=np.int64)
    for h, _, t in train.tolist():
        a[h, t] = a[t, h] = 1
    dense = np.linalg.matrix_power(a, hops) + np.linalg.matrix_power(a, hops - 1)
    found = as_sets(k_hop(train, num_entities, hops, "reference"), num_entities)
    for entity in range(num_entities):
        assert found[entity] == set(np.flatnonzero(dense[entity]).tolist())


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("hops", [1, 2, 3])
def test_restarted_walk_endpoints_lie_within_k_hops(seed, hops):
    num_entities = 50
    train = random_train(num_entities, 60, seed)
    found = as_sets(
        random_walks(train, num_entities, hops, walks=200, mode="restart", seed=seed), num_entities
    )
    for entity in range(num_entities):
        distance = bfs_distances(train, entity)
        adjacent = neighbours(train).get(entity, set())
        if not adjacent:  # no neighbour: random entities, as the reference
            assert 0 < len(found[entity]) <= 200
        elif adjacent == {entity}:  # a self-loop only: every walk ends at the entity, which is dropped
            assert found[entity] == set()
        else:
            assert found[entity] <= {e for e, d in distance.items() if 1 <= d <= hops}
            assert found[entity]


def test_many_restarted_walks_reach_every_endpoint_of_a_small_graph():
    # A star with a tail: 0 - {1, 2, 3}, 3 - 4, 4 - 5. Two-step walks from 0 end at 0 (through 1, 2 or
    # 3; dropped) or at 4 (through 3); enumerated by brute force, and 500 walks find them all.
    train = torch.tensor([(0, 0, 1), (0, 0, 2), (0, 0, 3), (3, 0, 4), (4, 0, 5)])
    adjacent = neighbours(train)
    endpoints = {end for middle in adjacent[0] for end in adjacent[middle]} - {0}
    assert endpoints == {4}
    for seed in range(3):
        found = random_walks(train, 6, hops=2, walks=500, mode="restart", seed=seed).row(0)
        assert set(found.tolist()) == endpoints


def test_chained_walks_continue_from_the_previous_endpoint_on_a_path():
    # Path 0 - 1 - ... - 9. Restarted 3-hop walks from 0 end at odd distance <= 3; the reference's chained
    # walks record the nodes after 3, 6, 9, ... steps of one long walk: both parities, and far beyond 3 hops.
    train = torch.tensor([(i, 0, i + 1) for i in range(9)])
    restarted = set(random_walks(train, 10, hops=3, walks=300, mode="restart", seed=1).row(0).tolist())
    chained = set(random_walks(train, 10, hops=3, walks=300, mode="chained", seed=1).row(0).tolist())
    assert restarted <= {1, 3} and restarted
    assert any(e > 3 for e in chained)
    assert any(e % 2 == 0 for e in chained) and any(e % 2 == 1 for e in chained)
    # One chained walk is one restarted walk (the entity itself kept): endpoint at distance 1 or 3.
    single = random_walks(train, 10, hops=3, walks=1, mode="chained", seed=1).row(0).tolist()
    assert len(single) == 1 and single[0] in {1, 3}


def test_neighbourhood_cache_is_reused_and_invalidated_when_the_dataset_changes(tmp_path, monkeypatch):
    folder = tmp_path / "toy"
    folder.mkdir()
    lines = [f"e{i}\tr0\te{i + 1}" for i in range(12)]
    for split, part in (("train", lines[:10]), ("valid", lines[10:11]), ("test", lines[11:])):
        (folder / f"{split}.txt").write_text("\n".join(part) + "\n")
    cache = tmp_path / "cache"
    builds = []
    real_k_hop = neighbourhoods.k_hop

    def counting_k_hop(*args):
        builds.append(args)
        return real_k_hop(*args)

    monkeypatch.setattr("kgexp.training.negatives.neighbourhood.k_hop", counting_k_hop)

    def fitted_rows():
        from kgexp.training.negatives import SamplerSetup

        graph = load_graph("toy", folder, cache_dir=cache)
        sampler = SANSSampler(4, hops=2)
        sampler.fit(SamplerSetup(graph, cache, seed=0))
        return sampler.neighbourhood

    first = fitted_rows()
    again = fitted_rows()
    assert len(builds) == 1
    assert torch.equal(first.indices, again.indices) and torch.equal(first.indptr, again.indptr)
    assert len(list((cache / "neighbourhoods").glob("*.pt"))) == 1

    (folder / "train.txt").write_text("\n".join([*lines[:10], "e0\tr0\te5"]) + "\n")
    changed = fitted_rows()
    assert len(builds) == 2
    assert len(list((cache / "neighbourhoods").glob("*.pt"))) == 2
    assert not torch.equal(changed.indptr, first.indptr)
    assert not list((cache / "neighbourhoods").glob(".*part"))


def test_a_failed_build_leaves_no_cache_file(tmp_path):
    def broken():
        raise RuntimeError("killed while building")

    with pytest.raises(RuntimeError, match="killed"):
        neighbourhoods.cached_neighbourhood(tmp_path, "abc", "sans-k2-within", broken, "toy")
    assert not (tmp_path / "neighbourhoods").exists() or not any((tmp_path / "neighbourhoods").iterdir())


def test_walk_neighbourhoods_depend_on_the_seed_and_the_cache_key_says_so():
    train = random_train(60, 80, 0)
    a = random_walks(train, 60, 3, 20, "restart", seed=0)
    b = random_walks(train, 60, 3, 20, "restart", seed=1)
    assert not torch.equal(a.indices, b.indices)
    assert RWSANSSampler(4).cache_key(0) != RWSANSSampler(4).cache_key(1)
    assert RWSANSSampler(4, walk_mode="chained").cache_key(0) != RWSANSSampler(4).cache_key(0)
    assert SANSSampler(4, neighbourhood="reference").cache_key(0) != SANSSampler(4).cache_key(0)


# -- neighbourhood sampling -----------------------------------------------------------------------


def fitted_sans(train, num_entities, tmp_path, **options) -> SANSSampler:
    sampler = SANSSampler(**{"num_negatives": 64, **options})
    sampler.fit(sampler_setup(train, num_entities, 3, tmp_path))
    return sampler


def test_sans_negatives_are_uniform_over_the_neighbourhood(tmp_path):
    train = random_train(40, 50, 3)
    sampler = fitted_sans(train, 40, tmp_path, hops=2, filtered=False, num_negatives=4000)
    anchors = torch.tensor([0, 1, 2])
    ids = sampler.sample(anchors, torch.zeros(3, dtype=torch.long), TAIL, 40, None, generator(0))
    for row, anchor in enumerate(anchors.tolist()):
        pool = {e for e, d in bfs_distances(train, anchor).items() if 1 <= d <= 2}
        drawn = ids[row].tolist()
        assert set(drawn) == pool  # 4000 draws over a pool of a few dozen: every member appears
        counts = np.bincount(drawn, minlength=40)[sorted(pool)]
        expected = 4000 / len(pool)
        assert np.all(np.abs(counts - expected) < 6 * np.sqrt(expected))


@pytest.mark.parametrize("max_redraws", [0, 1, 10])
def test_filtering_never_returns_a_known_answer_when_candidates_remain(tmp_path, max_redraws):
    # Entity 0 is linked by relation 0 to 1..12 and by relation 1 to 13; its 1-hop pool is 1..13, twelve
    # of which are known tails of (0, r0): only 13 is a valid negative; (0, r1) may use 1..12.
    train = torch.tensor([(0, 0, t) for t in range(1, 13)] + [(0, 1, 13), (13, 2, 14)])
    sampler = fitted_sans(train, 20, tmp_path, hops=1, max_redraws=max_redraws, num_negatives=200)
    known = FilterIndex(train, 20, 3)
    anchors, relations = torch.tensor([0, 0, 14]), torch.tensor([0, 1, 2])
    ids = sampler.sample(anchors, relations, TAIL, 20, known, generator(1))
    assert set(ids[0].tolist()) == {13}
    assert set(ids[1].tolist()) == set(range(1, 13))
    assert set(ids[2].tolist()) == {13}  # 14's pool is {13}; (14, r2, 13) is not a training triple
    heads = sampler.sample(torch.tensor([13, 14]), torch.tensor([2, 2]), HEAD, 20, known, generator(2))
    assert set(heads[0].tolist()) == {0, 14}  # no known head of (?, r2, 13)
    assert 13 not in heads[1].tolist()  # 14's pool {13} is its known head: uniform fallback


def test_exhausted_neighbourhood_falls_back_to_uniform_unknown_ids(tmp_path):
    # 0's only neighbours are its known tails: the reference falls back to uniform ids.
    train = torch.tensor([(0, 0, 1), (0, 0, 2), (3, 0, 4)])
    sampler = fitted_sans(train, 8, tmp_path, hops=1, num_negatives=300)
    ids = sampler.sample(
        torch.tensor([0]), torch.tensor([0]), TAIL, 8, FilterIndex(train, 8, 1), generator(3)
    )
    assert set(ids[0].tolist()) == {0, 3, 4, 5, 6, 7}


def test_entities_without_neighbours_get_uniform_negatives(tmp_path):
    train = torch.tensor([(0, 0, 1)])
    sampler = fitted_sans(train, 6, tmp_path, hops=2, filtered=False, num_negatives=500)
    ids = sampler.sample(torch.tensor([4]), torch.tensor([0]), TAIL, 6, None, generator(4))
    assert set(ids[0].tolist()) == set(range(6))


# -- NSCaching --------------------------------------------------------------------------------------


def ordered_toy_model(num_entities: int) -> DistMult:
    """DistMult whose score of (h, r0, e) grows with e for every h: caches should fill with high ids."""
    model = DistMult(num_entities, 1, dim=2)
    with torch.no_grad():
        model.entity.weight.copy_(
            torch.stack([torch.linspace(0.1, 3, num_entities), torch.ones(num_entities)], 1)
        )
        model.relation.weight.copy_(torch.tensor([[10.0, 0.0]]))
    return model


def fitted_nscaching(train, num_entities, tmp_path, **options) -> NSCachingSampler:
    sampler = NSCachingSampler(**{"num_negatives": 8, "cache_size": 5, "candidates": 10, **options})
    sampler.fit(sampler_setup(train, num_entities, 1, tmp_path))
    return sampler


def test_nscaching_top_refresh_converges_to_the_highest_scoring_entities(tmp_path):
    num_entities = 100
    train = torch.tensor([(h, 0, (h + 1) % 10) for h in range(10)])
    model = ordered_toy_model(num_entities)
    sampler = fitted_nscaching(train, num_entities, tmp_path, refresh="top")
    anchors, relations = torch.arange(10), torch.zeros(10, dtype=torch.long)
    g = generator(5)
    for _ in range(300):
        sampler.sample(anchors, relations, TAIL, num_entities, None, g, model)
    for row in sampler.caches[TAIL]:
        assert sorted(row.tolist()) == list(range(95, 100))


def test_nscaching_importance_refresh_moves_caches_towards_higher_scores(tmp_path):
    num_entities = 200
    train = torch.tensor([(h, 0, (h + 1) % 20) for h in range(20)])
    model = ordered_toy_model(num_entities)
    sampler = fitted_nscaching(train, num_entities, tmp_path, temperature=0.1)
    before = sampler.caches[TAIL].float().mean().item()
    anchors, relations = torch.arange(20), torch.zeros(20, dtype=torch.long)
    g = generator(6)
    for _ in range(100):
        sampler.sample(anchors, relations, TAIL, num_entities, None, g, model)
    after = sampler.caches[TAIL].float()
    assert before < 130 and after.mean().item() > 180
    assert all(len(set(row.tolist())) == 5 for row in after.long())  # distinct ids in every cache


def test_nscaching_draws_negatives_from_the_cache_before_refreshing_it(tmp_path):
    train = torch.tensor([(0, 0, 1), (2, 0, 1), (2, 0, 3)])
    sampler = fitted_nscaching(train, 50, tmp_path, num_negatives=40)
    model = ordered_toy_model(50)
    anchors, relations = torch.tensor([0, 2, 2, 0]), torch.zeros(4, dtype=torch.long)
    before = {side: cache.clone() for side, cache in sampler.caches.items()}
    ids = sampler.sample(anchors, relations, TAIL, 50, None, generator(7), model)
    keys = sampler.query_keys[TAIL].tolist()
    for row, anchor in enumerate(anchors.tolist()):
        assert set(ids[row].tolist()) <= set(before[TAIL][keys.index(anchor)].tolist())
    assert torch.equal(sampler.caches[HEAD], before[HEAD])  # only the sampled side is refreshed


def test_nscaching_filtering_keeps_known_answers_out_of_the_caches(tmp_path):
    # The known tail 49 of (0, r0) scores highest; filtered caches never hold it.
    train = torch.tensor([(0, 0, 49), (1, 0, 2)])
    model = ordered_toy_model(50)
    for filtered, expect_inside in ((True, False), (False, True)):
        sampler = fitted_nscaching(train, 50, tmp_path, refresh="top", filtered=filtered)
        g = generator(8)
        for _ in range(100):
            sampler.sample(
                torch.tensor([0]), torch.tensor([0]), TAIL, 50, FilterIndex(train, 50, 1), g, model
            )
        assert (49 in sampler.caches[TAIL][0].tolist()) is expect_inside


def test_nscaching_importance_draw_prefers_high_scores_in_the_cache(tmp_path):
    train = torch.tensor([(0, 0, 1)])
    sampler = fitted_nscaching(train, 100, tmp_path, draw="importance", temperature=0.05, num_negatives=2000)
    sampler.caches[TAIL][0] = torch.tensor([10, 20, 30, 40, 99], dtype=sampler.caches[TAIL].dtype)
    ids = sampler.sample(
        torch.tensor([0]), torch.tensor([0]), TAIL, 100, None, generator(9), ordered_toy_model(100)
    )
    counts = np.bincount(ids[0].numpy(), minlength=100)
    assert counts[99] > 0.9 * 2000  # score gap of ~0.9 at tau 0.05: weights e^{-18} for the others


# -- every sampler in a training module ------------------------------------------------------------


SAMPLERS = {
    "sans": lambda: SANSSampler(6, hops=2),
    "rw_sans": lambda: RWSANSSampler(6, hops=2, walks=20),
    "nscaching": lambda: NSCachingSampler(6, cache_size=4, candidates=4),
    "uniform": lambda: UniformSampler(6),
}


def training_module(sampler_name, side_mode, model, loss, train, tmp_path, seed):
    """A module with a fitted sampler of ``SAMPLERS`` and the training index, outside a Trainer."""
    negatives = NegativeSampling(SAMPLERS[sampler_name](), side_mode)
    negatives.fit(sampler_setup(train, 30, 3, tmp_path))
    module = LinkPredictionModule(model, negatives, loss, None, {"name": "adam", "lr": 0.1})
    module.train_index = FilterIndex(train, 30, 3)
    module.generator = generator(seed)
    return module, negatives


@pytest.mark.parametrize("model_name", sorted(MODELS))
@pytest.mark.parametrize("sampler_name", sorted(SAMPLERS))
def test_every_sampler_trains_every_model(model_name, sampler_name, tmp_path):
    train = random_train(30, 60, 1)
    model = MODELS[model_name](30, 3, dim=8)
    module, negatives = training_module(
        sampler_name, "both", model, SoftmaxCrossEntropy(), train, tmp_path, 0
    )
    weight_before = model.entity.weight.detach().clone()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    for step in range(3):
        total = 0.0
        for corruption in negatives.corrupt(train, step, 30, module.train_index, module.generator, model):
            assert corruption.negatives.shape == (len(train), 6)
            loss = module._corruption_loss(train[corruption.rows], torch.ones(len(train)), corruption)
            total = total + loss
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
    assert torch.isfinite(total)
    assert not torch.equal(model.entity.weight, weight_before)


def test_uniform_unknown_is_uniform_over_the_entities_that_are_not_known_answers():
    rng = random.Random(0)
    num_entities = 12
    train = torch.tensor(
        [(a, r, t) for a in range(4) for r in range(2) for t in rng.sample(range(num_entities), 2 + 3 * a)]
        + [(5, 0, t) for t in range(num_entities)]  # every entity is an answer of (5, r0)
    )
    index = FilterIndex(train, num_entities, 2)[TAIL]
    anchors = torch.tensor([a for a in (0, 1, 2, 3, 4, 5) for _ in range(3000)])
    relations = torch.tensor([1] * 3000 * 5 + [0] * 3000)
    ids = uniform_unknown(anchors, relations, index, num_entities, generator(10)).view(6, 3000)
    for row, anchor in enumerate((0, 1, 2, 3, 4, 5)):
        known = {t for a, r, t in train.tolist() if a == anchor and r == (0 if anchor == 5 else 1)}
        allowed = set(range(num_entities)) - known or set(range(num_entities))
        assert set(ids[row].tolist()) == allowed
        counts = np.bincount(ids[row].numpy(), minlength=num_entities)[sorted(allowed)]
        expected = 3000 / len(allowed)
        assert np.all(np.abs(counts - expected) < 6 * np.sqrt(expected))


@pytest.mark.parametrize("loss_name", sorted(LOSSES))
@pytest.mark.parametrize("sampler_name", sorted(SAMPLERS))
def test_every_sampler_trains_with_every_loss(loss_name, sampler_name, tmp_path):
    train = random_train(30, 60, 2)
    model = MODELS["rotate"](30, 3, dim=8)
    module, negatives = training_module(
        sampler_name, "alternate", model, LOSSES[loss_name](), train, tmp_path, 1
    )
    for step in range(2):
        for corruption in negatives.corrupt(train, step, 30, module.train_index, module.generator, model):
            loss = module._corruption_loss(train[corruption.rows], torch.rand(len(train)), corruption)
            loss.backward()
            assert torch.isfinite(loss)
    assert model.entity.weight.grad.abs().sum() > 0


# -- shared negatives ---------------------------------------------------------------------------------
def test_shared_negatives_are_one_uniform_draw_per_chunk_of_consecutive_positives():
    sampler = UniformSampler(num_negatives=6, shared=3)
    anchors = torch.zeros(10, dtype=torch.long)
    ids = sampler.sample(anchors, anchors, TAIL, 50, None, generator(0))
    assert ids.shape == (10, 6)
    for start in (0, 3, 6):  # three full chunks and a ragged one of a single row
        assert (ids[start : start + 3] == ids[start]).all()
    assert not torch.equal(ids[0], ids[3]) and not torch.equal(ids[6], ids[9])
    many = sampler.sample(
        torch.zeros(3 * 20_000, dtype=torch.long), anchors[:1].expand(60_000), TAIL, 50, None, generator(1)
    )[::3]
    counts = torch.bincount(many.flatten(), minlength=50).double()
    expected = many.numel() / 50
    assert ((counts - expected).abs() < 5 * expected**0.5).all()  # each entity equally likely


def test_shared_and_filtered_negatives_are_a_config_error():
    with pytest.raises(ValueError, match=r"sampler\.shared and sampler\.filtered"):
        UniformSampler(num_negatives=4, filtered=True, shared=8)
    with pytest.raises(ValueError, match=r"sampler\.shared"):
        UniformSampler(num_negatives=4, shared=-1)


@pytest.mark.parametrize("name", ["transe", "distmult", "complex", "rotate"])
def test_shared_scores_and_gradients_equal_scoring_each_positive_against_the_chunk_ids(name):
    torch.manual_seed(0)
    model = MODELS[name](40, 3, dim=8)
    queries = model.embed_query(torch.arange(11), torch.arange(11) % 3, TAIL)
    chunk_ids = torch.randint(40, (3, 9), generator=generator(2))  # chunks of 4: 4 + 4 + 3 queries
    shared = model.score_shared(queries, chunk_ids, 4)
    expanded = chunk_ids.repeat_interleave(4, dim=0)[:11]
    plain = model.compare_each(queries, model.entity(expanded))
    torch.testing.assert_close(shared, plain, rtol=1e-5, atol=1e-5)
    weights = torch.randn(shared.shape, generator=generator(3))
    params = list(model.parameters())
    got = torch.autograd.grad((shared * weights).sum(), params, retain_graph=True)
    want = torch.autograd.grad((plain * weights).sum(), params)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_the_training_step_with_shared_negatives_is_the_loss_of_the_expanded_negatives():
    model = DistMult(30, 4, dim=6)
    triples = torch.tensor([[0, 1, 2], [3, 2, 4], [5, 0, 6], [7, 3, 8], [9, 1, 10]])
    losses = []
    for shared in (2, 0):
        sampler = UniformSampler(num_negatives=5, shared=shared)
        module = LinkPredictionModule(
            model, NegativeSampling(sampler), SoftmaxCrossEntropy(), None, {"name": "adam", "lr": 0.1}
        )
        module.train_index = None
        chunk_ids = torch.randint(30, (3, 5), generator=generator(4))
        corruption = Corruption(TAIL, torch.arange(5), chunk_ids.repeat_interleave(2, dim=0)[:5])
        losses.append(module._corruption_loss(triples, torch.ones(5), corruption))
    torch.testing.assert_close(losses[0], losses[1])
