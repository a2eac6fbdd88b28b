"""Training regimes that score every entity for each query (LibKGE's names; PyKEEN's LCWA is KvsAll).

``1vsAll``: each training triple gives the tail query ``(h, r, ?)`` and the head query ``(?, r, t)``,
each trained against all entities with its one answer. ``KvsAll``: each distinct training query
``(h, r, ?)`` or ``(?, r, t)`` is an example, trained against all entities with every training answer
it has as a positive (only training triples: valid and test answers never become labels). Both score
through :meth:`KGEModel.score_all`, the all-entity scores that evaluation ranks, and take the mean of the
loss over queries. ``negative_sampling`` (the default) is the module's sampled-negative path.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from kgexp.data.filter_index import FilterIndex
from kgexp.models.base import KGEModel
from kgexp.sides import BOTH_SIDES, HEAD, SIDE_CODES, TAIL, Side, split_query
from kgexp.training.losses import Loss

NEGATIVE_SAMPLING = "negative_sampling"


@dataclass
class RegimeStep:
    """What a regime hands back: the KGE loss, the positives (``(n, 3)`` triples ``h, r, t``, for
    MI-KGE) and the rows the norm regulariser penalises (``h, relation-table row, t``)."""

    loss: Tensor
    positives: Tensor
    regularized: Tensor


def regularized_rows(model: KGEModel, triples: Tensor, side: Side) -> Tensor:
    """Triples ``h, r, t`` trained as queries of ``side``, with ``r`` replaced by the relation-table row
    those queries read (``r + R`` for head queries of a reciprocal model): what the regulariser takes."""
    h, r, t = triples.unbind(1)
    return torch.stack([h, model.relation_rows(r, side), t], dim=1)


def oriented(anchors: Tensor, relations: Tensor, answers: Tensor, side: Side) -> Tensor:
    """``(n, 3)`` triples ``h, r, t`` of queries of ``side`` and one answer each."""
    return torch.stack([anchors, relations, answers] if side == TAIL else [answers, relations, anchors], 1)


class OneVsAll:
    """1vsAll: both queries of every triple of the batch against all entities."""

    name = "1vsAll"
    examples = "triples"  # what the datamodule batches

    def step(self, model: KGEModel, loss: Loss, triples: Tensor, *_: object) -> RegimeStep:
        """The batch's loss; the training index and generator that KvsAll takes are not needed."""
        queries, targets, regularized = [], [], []
        for side in (TAIL, HEAD):
            anchors, relations, answers = split_query(triples, side)
            queries.append(model.embed_query(anchors, relations, side))
            targets.append(answers)
            regularized.append(regularized_rows(model, triples, side))
        cols = torch.cat(targets)
        scores = model.score_all(torch.cat(queries))
        rows = torch.arange(len(cols), device=cols.device)
        return RegimeStep(loss.all_entities(scores, rows, cols), triples, torch.cat(regularized))


class KvsAll:
    """KvsAll: distinct training queries ``[anchor, relation, side]`` against all entities, every known
    training answer a positive. MI-KGE and the regulariser take one answer per query, drawn uniformly
    with the run's generator."""

    name = "KvsAll"
    examples = "queries"

    def step(
        self,
        model: KGEModel,
        loss: Loss,
        queries: Tensor,
        train_index: FilterIndex,
        generator: torch.Generator,
    ) -> RegimeStep:
        embedded, rows, cols, positives, regularized = [], [], [], [], []
        offset = 0
        for side in BOTH_SIDES:
            anchors, relations = queries[queries[:, 2] == SIDE_CODES[side], :2].unbind(1)
            if len(anchors) == 0:
                continue
            index = train_index[side]
            side_rows, answers = index.answer_pairs(anchors, relations)
            embedded.append(model.embed_query(anchors, relations, side))
            rows.append(side_rows + offset)
            cols.append(answers)
            offset += len(anchors)
            start, end = index.ranges(anchors, relations)
            draw = torch.rand(len(anchors), generator=generator, device=anchors.device)
            one = index.answers[start + (draw * (end - start)).long().clamp_max(end - start - 1)]
            positives.append(oriented(anchors, relations, one, side))
            regularized.append(regularized_rows(model, positives[-1], side))
        scores = model.score_all(torch.cat(embedded))
        value = loss.all_entities(scores, torch.cat(rows), torch.cat(cols))
        return RegimeStep(value, torch.cat(positives), torch.cat(regularized))


#: An all-entity regime: ``step(model, loss, examples, train_index, generator)``.
AllEntityRegime = OneVsAll | KvsAll
ALL_ENTITY_REGIMES: dict[str, type[AllEntityRegime]] = {cls.name: cls for cls in (OneVsAll, KvsAll)}
#: ``regime=<name>`` -> what the datamodule batches: training triples, or distinct training queries.
REGIMES: dict[str, str] = {
    NEGATIVE_SAMPLING: "triples",
    **{name: cls.examples for name, cls in ALL_ENTITY_REGIMES.items()},
}
