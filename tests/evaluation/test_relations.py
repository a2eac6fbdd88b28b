"""Relation categories and per-relation / per-category metrics against hand-made graphs and brute force."""

from __future__ import annotations

import csv

import pytest
import torch

from kgexp.data.statistics import CATEGORIES, categorize, relation_cardinalities
from kgexp.evaluation.metrics import RankMetrics
from kgexp.evaluation.ranking import Ranks
from kgexp.evaluation.relations import (
    RelationRankMetrics,
    category_metrics,
    relation_rows,
    write_relation_csv,
)
from kgexp.sides import BOTH_SIDES

# r0: 1-1 (a bijection); r1: 1-N (one head, three tails each); r2: N-1 (three heads per tail);
# r3: N-N (a complete 2 x 2 bipartite graph); r4: unused in training.
HAND_MADE = (
    [(0, 0, 10), (1, 0, 11), (2, 0, 12)]
    + [(0, 1, t) for t in (20, 21, 22)]
    + [(1, 1, t) for t in (23, 24, 25)]
    + [(h, 2, 30) for h in (3, 4, 5)]
    + [(h, 3, t) for h in (6, 7) for t in (8, 9)]
)


def relation_categories(train, num_relations, threshold=1.5):
    return categorize(*relation_cardinalities(train, num_relations)[1:], threshold)


def test_categories_of_a_hand_made_graph():
    train = torch.tensor(HAND_MADE)
    triples, tph, hpt = relation_cardinalities(train, 5)
    assert triples.tolist() == [3, 6, 3, 4, 0]
    assert tph.tolist() == [1, 3, 1, 2, 0]
    assert hpt.tolist() == [1, 1, 3, 2, 0]
    assert [CATEGORIES[c] for c in relation_categories(train, 5)] == ["1-1", "1-N", "N-1", "N-N", "1-1"]


def test_threshold_is_inclusive_at_one_and_a_half():
    # 3 triples over 2 heads: tph = 1.5 exactly, which Bordes et al. count as "N".
    train = torch.tensor([(0, 0, 1), (0, 0, 2), (3, 0, 4)])
    assert CATEGORIES[int(relation_categories(train, 1)[0])] == "1-N"
    assert CATEGORIES[int(relation_categories(train, 1, threshold=1.6)[0])] == "1-1"


def random_ranks(n: int, seed: int) -> Ranks:
    g = torch.Generator().manual_seed(seed)
    optimistic = torch.randint(1, 30, (n,), generator=g).double()
    return Ranks(optimistic, optimistic + torch.randint(0, 3, (n,), generator=g).double())


def test_category_metrics_weighted_by_queries_sum_back_to_the_overall_metrics():
    num_relations = 5
    categories = relation_categories(torch.tensor(HAND_MADE), num_relations)
    overall, per_relation = RankMetrics(), RelationRankMetrics(num_relations)
    g = torch.Generator().manual_seed(0)
    for batch, side in enumerate(BOTH_SIDES * 3):
        relations = torch.randint(num_relations, (40,), generator=g)
        ranks = random_ranks(40, batch)
        overall.update(ranks, side)
        per_relation.update(ranks, relations, side)
    expected = overall.compute()
    found = category_metrics(per_relation.compute(), categories)
    for stat in ("mrr", "mr", "hits@1", "hits@10"):
        for side in (*BOTH_SIDES, None):
            prefix = f"{side}/" if side else ""
            total = sum(found[f"{c}/{prefix}queries"] for c in CATEGORIES if f"{c}/{prefix}queries" in found)
            weighted = sum(
                found[f"{c}/{prefix}{stat}"] * found[f"{c}/{prefix}queries"]
                for c in CATEGORIES
                if f"{c}/{prefix}queries" in found
            )
            assert float(weighted / total) == pytest.approx(float(expected[f"{prefix}{stat}"]), rel=1e-12)


def test_relation_rows_by_brute_force(tmp_path):
    train = torch.tensor(HAND_MADE)
    metric = RelationRankMetrics(5)
    relations = torch.tensor([0, 0, 1, 3])
    metric.update(Ranks(torch.tensor([1.0, 4, 2, 10]), torch.tensor([1.0, 4, 2, 12])), relations, "tail")
    metric.update(Ranks(torch.tensor([3.0]), torch.tensor([3.0])), torch.tensor([1]), "head")
    triples, tph, hpt = relation_cardinalities(train, 5)
    labels = ["same_as", "parent_of", "born_in", "knows", "unused"]
    rows = relation_rows(metric.compute(), relation_categories(train, 5), triples, tph, hpt, labels)
    assert rows[0]["tail_mrr"] == pytest.approx((1 + 1 / 4) / 2)
    assert rows[0]["tail_hits@10"] == 1.0 and rows[0]["head_queries"] == 0 and rows[0]["head_mrr"] == ""
    assert rows[1]["head_mrr"] == pytest.approx(1 / 3) and rows[1]["tail_mrr"] == pytest.approx(1 / 2)
    assert rows[3]["tail_mrr"] == pytest.approx(1 / 11) and rows[3]["tail_hits@10"] == 0.0
    assert [r["category"] for r in rows] == ["1-1", "1-N", "N-1", "N-N", "1-1"]
    write_relation_csv(tmp_path / "relations.csv", rows)
    with (tmp_path / "relations.csv").open() as handle:
        read = list(csv.DictReader(handle))
    assert [r["relation"] for r in read] == labels
    assert float(read[1]["tails_per_head"]) == 3.0
