"""Known answers of (h, r, ?) and (?, r, t) queries, stored CSR-style in flat tensors."""

from __future__ import annotations

import torch
from torch import Tensor

from kgexp.data.csr import distinct_pairs, offsets_of
from kgexp.sides import BOTH_SIDES, HEAD, SIDE_CODES, TAIL, Side


class SideIndex:
    """Answers of one query side: sorted query keys, offsets into a flat answer array.

    A query key is ``anchor * num_relations + relation``; ``answers[offsets[i]:offsets[i + 1]]`` are the
    sorted answer ids of the i-th key.
    """

    def __init__(
        self, anchors: Tensor, relations: Tensor, answers: Tensor, num_entities: int, num_relations: int
    ):
        self.num_entities, self.num_relations = num_entities, num_relations
        query_keys, self.answers = distinct_pairs(anchors * num_relations + relations, answers, num_entities)
        self.query_keys, counts = torch.unique_consecutive(query_keys, return_counts=True)
        self.offsets = offsets_of(counts)

    def to(self, device: torch.device | str) -> SideIndex:
        for name in ("answers", "query_keys", "offsets"):
            setattr(self, name, getattr(self, name).to(device))
        return self

    def ranges(self, anchors: Tensor, relations: Tensor) -> tuple[Tensor, Tensor]:
        """Start and end offsets of each query's answers (empty range for an unknown query)."""
        keys = anchors * self.num_relations + relations
        if len(self.query_keys) == 0:
            return torch.zeros_like(keys), torch.zeros_like(keys)
        pos = torch.searchsorted(self.query_keys, keys).clamp_max(len(self.query_keys) - 1)
        found = self.query_keys[pos] == keys
        start = torch.where(found, self.offsets[pos], 0)
        end = torch.where(found, self.offsets[pos + 1], 0)
        return start, end

    def answer_pairs(self, anchors: Tensor, relations: Tensor) -> tuple[Tensor, Tensor]:
        """All (query row, answer id) pairs of a batch of queries, as two flat tensors."""
        start, end = self.ranges(anchors, relations)
        lengths = end - start
        rows = torch.repeat_interleave(torch.arange(len(anchors), device=anchors.device), lengths)
        first = torch.cumsum(lengths, 0) - lengths
        flat = torch.arange(len(rows), device=anchors.device) - first[rows] + start[rows]
        return rows, self.answers[flat]

    def counts(self, anchors: Tensor, relations: Tensor) -> Tensor:
        start, end = self.ranges(anchors, relations)
        return end - start

    def contains(self, anchors: Tensor, relations: Tensor, candidates: Tensor) -> Tensor:
        """Whether ``(anchor, relation, candidate)`` is known; ``candidates`` may have extra trailing dims.

        Searches only the batch's own answers (``row * num_entities + answer``, sorted), a far smaller
        array than all known triples, so the lookups stay in cache.
        """
        rows, answers = self.answer_pairs(anchors, relations)
        if len(rows) == 0:
            return torch.zeros_like(candidates, dtype=torch.bool)
        known = rows * self.num_entities + answers  # sorted: rows ascend, answers ascend within a row
        row_ids = torch.arange(len(anchors), device=anchors.device)
        keys = row_ids.view(-1, *([1] * (candidates.dim() - 1))) * self.num_entities + candidates
        pos = torch.searchsorted(known, keys).clamp_max(len(known) - 1)
        return known[pos] == keys

    def contains_shared(self, anchors: Tensor, relations: Tensor, entities: Tensor) -> Tensor:
        """``(B, K)``: whether ``(anchor_i, relation_i, entities[k])`` is known, for one shared 1-D
        candidate set (e.g. the batch's own targets), through a dense table over its distinct ids."""
        rows, answers = self.answer_pairs(anchors, relations)
        distinct, column = torch.unique(entities, return_inverse=True)
        known = torch.zeros(len(anchors), len(distinct), dtype=torch.bool, device=entities.device)
        if len(rows):
            pos = torch.searchsorted(distinct, answers).clamp_max(len(distinct) - 1)
            hit = distinct[pos] == answers
            known[rows[hit], pos[hit]] = True
        return known[:, column]


class FilterIndex:
    """Known answers for tail queries (h, r, ?) and head queries (?, r, t) of a set of triples."""

    def __init__(self, triples: Tensor, num_entities: int, num_relations: int):
        h, r, t = triples.long().unbind(1)
        self.sides = {
            TAIL: SideIndex(h, r, t, num_entities, num_relations),
            HEAD: SideIndex(t, r, h, num_entities, num_relations),
        }

    def __getitem__(self, side: Side) -> SideIndex:
        return self.sides[side]

    def to(self, device: torch.device | str) -> FilterIndex:
        for index in self.sides.values():
            index.to(device)
        return self

    def distinct_queries(self) -> Tensor:
        """``(n, 3)`` int64 rows ``[anchor, relation, side code]``: every distinct query of both sides."""
        parts = []
        for side in BOTH_SIDES:
            index = self.sides[side]
            keys = index.query_keys
            codes = torch.full_like(keys, SIDE_CODES[side])
            parts.append(torch.stack([keys // index.num_relations, keys % index.num_relations, codes], 1))
        return torch.cat(parts)
