"""Calling a trained model: scores of triples and top-k answers of queries, by label or by id.

>>> predictor = load_predictor("outputs/.../checkpoints/best.ckpt")   # kgexp.config.loading
>>> predictor.predict("tail", [("Q42", "P31")], k=5)          # (h, r, ?): the 5 best tails
>>> predictor.score([("Q42", "P31", "Q5")])
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from kgexp.data.filter_index import FilterIndex
from kgexp.data.parsing import TripleFormatError, read_numbered_triples
from kgexp.errors import InputError
from kgexp.models import MODELS, KGEModel, RotatE
from kgexp.options import Range, check, one_of
from kgexp.sides import BOTH_SIDES, HEAD, TAIL, Side

#: Which known triples a prediction leaves out: none, the training triples, or every split's.
FILTERS = ("none", "train", "all")
MISSING = "?"


@dataclass
class Prediction:
    """The ``k`` best answers of one query, best first."""

    anchor: str
    relation: str
    side: Side  # the side predicted: ``tail`` for (h, r, ?)
    answers: list[str]
    scores: list[float]


class Predictor:
    """A trained model with its vocabularies; ``known`` triples (ids) are those filters can leave out."""

    def __init__(
        self,
        model: KGEModel,
        entities: list[str],
        relations: list[str],
        known: dict[str, Tensor] | None = None,
    ):
        self.model = model.eval()
        self.entities, self.relations = entities, relations
        self.entity_ids = {label: i for i, label in enumerate(entities)}
        self.relation_ids = {label: i for i, label in enumerate(relations)}
        self.known = known or {}
        self._filters: dict[str, FilterIndex] = {}

    # -- loading --------------------------------------------------------------------------------
    @classmethod
    def from_export(cls, folder: str | Path) -> Predictor:
        """A model rebuilt from a ``kgexp export`` folder (no known triples: filters need a checkpoint)."""
        folder = Path(folder).expanduser()
        description = json.loads((folder / "model.json").read_text())
        options = {k: description[k] for k in ("dim", "gamma", "p_norm", "reciprocal") if k in description}
        model = MODELS[description["model"]](
            description["num_entities"], description["num_relations"], **options
        )
        relations = torch.from_numpy(np.load(folder / "relations.npy"))
        if isinstance(model, RotatE):  # exported as phases in radians
            relations = relations * (model.embedding_range / math.pi)
        with torch.no_grad():
            model.entity.weight.copy_(torch.from_numpy(np.load(folder / "entities.npy")))
            model.relation.weight.copy_(relations)
        return cls(model, _labels(folder / "entities.tsv"), _labels(folder / "relations.tsv"))

    # -- ids ------------------------------------------------------------------------------------
    def ids(self, labels: Sequence[str], kind: str) -> Tensor:
        """Ids of entity (``kind="entity"``) or relation labels; an unknown label is an error naming it."""
        table = self.entity_ids if kind == "entity" else self.relation_ids
        missing = [label for label in labels if label not in table]
        if missing:
            raise InputError(f"unknown {kind} {missing[0]!r} (the model knows {len(table)} {kind} labels)")
        return torch.tensor([table[label] for label in labels], dtype=torch.int64)

    def filter_index(self, filter: str) -> FilterIndex | None:
        check("filter", one_of(FILTERS), filter)
        if filter == "none":
            return None
        if filter not in self.known:
            raise InputError(
                f"filter={filter} needs the dataset's triples: load the predictor from a checkpoint"
            )
        if filter not in self._filters:
            self._filters[filter] = FilterIndex(self.known[filter], len(self.entities), len(self.relations))
        return self._filters[filter]

    # -- scoring --------------------------------------------------------------------------------
    @torch.no_grad()
    def score_ids(self, triples: Tensor, batch_size: int = 4096) -> Tensor:
        """Scores ``(n,)`` of ``(n, 3)`` id triples, in batches."""
        parts = [self.model.score_triples(*chunk.unbind(1)) for chunk in triples.split(batch_size)]
        return torch.cat(parts) if parts else torch.empty(0)

    def score(self, triples: Sequence[tuple[str, str, str]], batch_size: int = 4096) -> list[float]:
        """Scores of label triples (higher is more plausible)."""
        h, r, t = zip(*triples, strict=True) if triples else ((), (), ())
        ids = torch.stack([self.ids(h, "entity"), self.ids(r, "relation"), self.ids(t, "entity")], 1)
        return self.score_ids(ids, batch_size).tolist()

    @torch.no_grad()
    def top_k_ids(
        self,
        anchors: Tensor,
        relations: Tensor,
        side: Side,
        k: int,
        filter: str = "none",
        batch_size: int = 256,
    ) -> tuple[Tensor, Tensor]:
        """The ``k`` best ``side`` entities ``(n, k)`` of each query and their scores, known answers of
        ``filter`` left out (``-inf`` scores where fewer than ``k`` remain)."""
        check("k", Range(1, len(self.entities)), k)
        index = self.filter_index(filter)
        best_ids, best_scores = [], []
        for start in range(0, len(anchors), batch_size):
            a, r = anchors[start : start + batch_size], relations[start : start + batch_size]
            scores = self.model.score_candidates(a, r, side).float()
            if index is not None:
                rows, cols = index[side].answer_pairs(a, r)
                scores[rows, cols] = float("-inf")
            top = scores.topk(k, dim=1)
            best_ids.append(top.indices)
            best_scores.append(top.values)
        if not best_ids:  # no queries
            return torch.empty((0, k), dtype=torch.int64), torch.empty((0, k))
        return torch.cat(best_ids), torch.cat(best_scores)

    def predict(
        self,
        side: Side,
        queries: Sequence[tuple[str, str]],
        k: int = 10,
        filter: str = "none",
        batch_size: int = 256,
    ) -> list[Prediction]:
        """Top-k ``side`` answers of ``(anchor, relation)`` label queries: ``side="tail"`` for (h, r, ?).
        Fewer than ``k`` where the filter leaves fewer."""
        check("side", one_of(BOTH_SIDES), side)
        anchors, relations = zip(*queries, strict=True) if queries else ((), ())
        ids, scores = self.top_k_ids(
            self.ids(anchors, "entity"), self.ids(relations, "relation"), side, k, filter, batch_size
        )
        predictions = []
        for a, r, row, values in zip(anchors, relations, ids.tolist(), scores.tolist(), strict=True):
            kept = [(i, v) for i, v in zip(row, values, strict=True) if v != float("-inf")]  # not filtered
            predictions.append(
                Prediction(a, r, side, [self.entities[i] for i, _ in kept], [v for _, v in kept])
            )
        return predictions


def read_queries(path: Path) -> list[tuple[int, Side, str, str]]:
    """``(line, side, anchor, relation)`` per line of a query file: ``head<TAB>relation<TAB>?`` asks for
    tails, ``?<TAB>relation<TAB>tail`` for heads."""
    queries = []
    for line, (head, relation, tail) in read_numbered_triples(path):
        if (head == MISSING) == (tail == MISSING) or relation == MISSING:
            raise TripleFormatError(
                f"{path}:{line}: a query has '?' as its head or its tail (not both, not the relation): "
                f"{head}\t{relation}\t{tail}"
            )
        queries.append((line, HEAD, tail, relation) if head == MISSING else (line, TAIL, head, relation))
    return queries


def _labels(path: Path) -> list[str]:
    return [line.split("\t", 1)[1] for line in path.read_text(encoding="utf-8").splitlines()]
