"""The scoring contract shared by training and evaluation.

A model turns the kept entity and the relation of a query into a *query vector* (``query``) and scores
candidate entities against it (``compare_all`` for a shared candidate set, ``compare_each`` for per-query
candidate sets). Everything else (triples, all-entity ranking, negatives, mutated negatives) is built on
those three methods, so every use of a model scores the same way.

With ``reciprocal`` relations (Lacroix et al. 2018) the relation table has ``2R`` rows and a head query
``(?, r, t)`` is the tail query ``(t, r + R, ?)``: :meth:`KGEModel.embed_query` is the one place that
maps it, so training, evaluation, MI-KGE and prediction all answer head queries that way.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import Tensor, nn

from kgexp import kernels
from kgexp.options import POSITIVE, Count, PositiveFloat, check, checked
from kgexp.sides import TAIL, Side

#: Upper bound on elements of an intermediate (queries x candidates x width) tensor in ``compare_all``.
DEFAULT_CHUNK_ELEMENTS = 1 << 24


@checked("model")
class KGEModel(nn.Module, ABC):
    """Entity and relation embedding tables plus a scoring function.

    ``dim`` is the model's embedding dimension: real coordinates for TransE and DistMult, complex
    coordinates for ComplEx and RotatE, whose entities are stored as ``[real | imaginary]`` halves of
    width ``2 * dim``. Parameters are initialised ``U(-a, a)`` with ``a = init_range`` or, by default, the
    reference recipe's ``(gamma + 2) / dim``. ``reciprocal`` adds an inverse row per relation (see the
    module docstring); ``num_relations`` stays the number of the graph's relations.
    """

    name: str
    #: The fused kernels' name for ``compare_each`` (``kernels.DOT``, ``L1``, ``L2`` or ``MODULUS``).
    scorer_kind: int
    entity_factor = 1  # stored entity width = entity_factor * dim
    relation_factor = 1

    def __init__(
        self,
        num_entities: int,
        num_relations: int,
        dim: Count,
        gamma: float = 24.0,
        init_range: PositiveFloat | None = None,
        reciprocal: bool = False,
    ):
        super().__init__()
        self.num_entities, self.num_relations, self.dim = num_entities, num_relations, dim
        self.reciprocal = reciprocal
        self.gamma = float(gamma)
        self.embedding_range = float(init_range) if init_range is not None else (self.gamma + 2.0) / dim
        check("model.init_range (the default (gamma + 2) / dim)", POSITIVE, self.embedding_range)
        self.entity = nn.Embedding(num_entities, self.entity_factor * dim)
        rows = 2 * num_relations if reciprocal else num_relations
        self.relation = nn.Embedding(rows, self.relation_factor * dim)
        for table in (self.entity, self.relation):
            nn.init.uniform_(table.weight, -self.embedding_range, self.embedding_range)

    # -- the contract ---------------------------------------------------------------------------
    @abstractmethod
    def query(self, anchor: Tensor, relation: Tensor, side: Side) -> Tensor:
        """Query vectors ``(..., width)`` from anchor-entity and relation embeddings."""

    @abstractmethod
    def compare_all(self, queries: Tensor, candidates: Tensor) -> Tensor:
        """Scores ``(B, N)`` of ``(B, width)`` queries against one shared ``(N, width)`` candidate set."""

    @abstractmethod
    def compare_each(self, queries: Tensor, candidates: Tensor) -> Tensor:
        """Scores ``(B, K)`` of ``(B, width)`` queries against per-query ``(B, K, width)`` candidates."""

    # -- built on the contract ------------------------------------------------------------------
    def relation_rows(self, relation_ids: Tensor, side: Side) -> Tensor:
        """The relation-table rows a query of ``side`` reads: ``r + R`` for head queries when reciprocal."""
        return relation_ids + self.num_relations if self.reciprocal and side != TAIL else relation_ids

    def query_side(self, side: Side) -> Side:
        """The side the scorer computes: a reciprocal model answers every query as a tail query."""
        return TAIL if self.reciprocal else side

    def embed_query(self, anchor_ids: Tensor, relation_ids: Tensor, side: Side) -> Tensor:
        relation = self.relation(self.relation_rows(relation_ids, side))
        return self.query(self.entity(anchor_ids), relation, self.query_side(side))

    def score_all(self, queries: Tensor) -> Tensor:
        """Scores ``(B, E)`` of queries against every entity (differentiable: 1vsAll and KvsAll use it)."""
        return self.compare_all(queries, self.entity.weight)

    def score_ids(self, queries: Tensor, candidate_ids: Tensor) -> Tensor:
        """Scores ``(B, K)`` of queries against per-query candidates given by id ``(B, K)``.

        On the CPU (float32) a fused kernel reads the candidate rows from the table and never builds the
        ``(B, K, width)`` tensor; elsewhere this is ``compare_each(queries, entity(candidate_ids))``.
        """
        table = self.entity.weight
        if kernels.usable(queries, table):
            return kernels.score_each(queries, table, candidate_ids, self.scorer_kind, self.gamma)
        return self.compare_each(queries, self.entity(candidate_ids))

    def score_shared(self, queries: Tensor, chunk_ids: Tensor, chunk: int) -> Tensor:
        """Scores ``(B, K)`` when each chunk of ``chunk`` consecutive queries shares the candidate ids of
        one row of ``chunk_ids`` ``(ceil(B / chunk), K)``."""
        return self.score_ids(queries, chunk_ids.repeat_interleave(chunk, dim=0)[: len(queries)])

    def score_triples(self, heads: Tensor, relations: Tensor, tails: Tensor) -> Tensor:
        """Scores ``(B,)`` of the triples ``(heads[i], relations[i], tails[i])``."""
        queries = self.embed_query(heads, relations, TAIL)
        return self.score_ids(queries, tails.unsqueeze(1)).squeeze(1)

    def score_candidates(
        self, anchor_ids: Tensor, relation_ids: Tensor, side: Side, candidate_ids: Tensor | None = None
    ) -> Tensor:
        """Scores of queries against candidates given by id.

        ``candidate_ids`` is ``None`` (all entities: ``(B, E)``), a 1-D tensor shared by every query
        (an entity chunk: ``(B, N)``), or a ``(B, K)`` tensor of per-query candidates (``(B, K)``).
        """
        queries = self.embed_query(anchor_ids, relation_ids, side)
        if candidate_ids is None:
            return self.compare_all(queries, self.entity.weight)
        if candidate_ids.dim() == 1:
            return self.compare_all(queries, self.entity(candidate_ids))
        return self.score_ids(queries, candidate_ids)

    def score_embeddings(
        self, anchor_ids: Tensor, relation_ids: Tensor, side: Side, candidates: Tensor
    ) -> Tensor:
        """Scores ``(B, K)`` against per-query candidate *embeddings* ``(B, K, width)`` (e.g. mutated)."""
        return self.compare_each(self.embed_query(anchor_ids, relation_ids, side), candidates)

    def hyperparameters(self) -> dict[str, float | int | str]:
        """What an export needs to rebuild the scoring function."""
        return {"model": self.name, "dim": self.dim, "gamma": self.gamma, "reciprocal": self.reciprocal}


class BilinearModel(KGEModel):
    """Score = <query, candidate>: all candidates with one matmul."""

    scorer_kind = kernels.DOT

    def compare_all(self, queries: Tensor, candidates: Tensor) -> Tensor:
        # The transpose of candidates @ queries.T: the same (B, N) scores, but a matmul of that shape
        # runs about twice as fast on a CPU when N >> B (and the rank kernel reads either layout).
        return (candidates @ queries.T).T

    def compare_each(self, queries: Tensor, candidates: Tensor) -> Tensor:
        return torch.bmm(candidates, queries.unsqueeze(-1)).squeeze(-1)

    def score_shared(self, queries: Tensor, chunk_ids: Tensor, chunk: int) -> Tensor:
        """One matmul per chunk: ``(chunk, width) @ (width, K)``."""
        chunks, padding = len(chunk_ids), len(chunk_ids) * chunk - len(queries)
        blocks = torch.nn.functional.pad(queries, (0, 0, 0, padding)).view(chunks, chunk, -1)
        scores = torch.bmm(blocks, self.entity(chunk_ids).transpose(1, 2))
        return scores.reshape(chunks * chunk, -1)[: len(queries)]


class DistanceModel(KGEModel):
    """Score = gamma - distance(query, candidate), computed in chunks of candidates."""

    chunk_elements = DEFAULT_CHUNK_ELEMENTS

    @abstractmethod
    def distance(self, queries: Tensor, candidates: Tensor) -> Tensor:
        """Distances over the last dim of broadcastable ``queries`` and ``candidates``."""

    def compare_each(self, queries: Tensor, candidates: Tensor) -> Tensor:
        return self.gamma - self.distance(queries.unsqueeze(1), candidates)

    def compare_all(self, queries: Tensor, candidates: Tensor) -> Tensor:
        """Without gradients on the CPU, a fused kernel scores cache-sized tiles of queries x candidates;
        otherwise chunks of candidates bound the ``(queries, chunk, width)`` intermediate. With gradients
        the chunks are recomputed in the backward pass (:class:`ChunkedScores`), so memory stays at the
        ``(B, N)`` scores however many candidates there are."""
        needs_grad = torch.is_grad_enabled() and (queries.requires_grad or candidates.requires_grad)
        if needs_grad:
            return ChunkedScores.apply(self, queries, candidates)
        if kernels.usable(queries, candidates):
            return kernels.score_all(queries, candidates, self.scorer_kind, self.gamma)
        return self.gamma - self.chunked_distances(queries, candidates)

    def candidate_chunk(self, queries: Tensor) -> int:
        """Candidates per chunk: ``chunk_elements`` bounds the ``(queries, chunk, width)`` intermediate."""
        return max(1, self.chunk_elements // max(1, len(queries) * queries.shape[-1]))

    def chunked_distances(self, queries: Tensor, candidates: Tensor) -> Tensor:
        """Distances ``(B, N)``, a chunk of candidates at a time."""
        chunk = self.candidate_chunk(queries)
        out = queries.new_empty(len(queries), len(candidates))
        for start in range(0, len(candidates), chunk):
            block = candidates[start : start + chunk]
            out[:, start : start + len(block)] = self.distance(queries.unsqueeze(1), block.unsqueeze(0))
        return out


class ChunkedScores(torch.autograd.Function):
    """All-candidate scores of a distance model whose backward pass never holds the ``(B, N, width)``
    differences: on the CPU (float32) one fused kernel computes both gradients; elsewhere the distances
    are recomputed one chunk of candidates at a time (a checkpoint per chunk)."""

    @staticmethod
    def forward(ctx, model: DistanceModel, queries: Tensor, candidates: Tensor) -> Tensor:
        ctx.model = model
        ctx.save_for_backward(queries, candidates)
        with torch.no_grad():
            return model.compare_all(queries.detach(), candidates.detach())

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[None, Tensor, Tensor]:
        queries, candidates = ctx.saved_tensors
        model = ctx.model
        if kernels.usable(queries, candidates, grad):
            return None, *kernels.score_all_backward(grad, queries, candidates, model.scorer_kind)
        grad_queries, grad_candidates = torch.zeros_like(queries), torch.zeros_like(candidates)
        chunk = model.candidate_chunk(queries)
        with torch.enable_grad():
            q = queries.detach().requires_grad_()
            for start in range(0, len(candidates), chunk):
                block = candidates[start : start + chunk].detach().requires_grad_()
                distances = model.distance(q.unsqueeze(1), block.unsqueeze(0))
                # scores = gamma - distances: the gradient of the distances is -grad
                dq, dc = torch.autograd.grad(distances, (q, block), -grad[:, start : start + len(block)])
                grad_queries += dq
                grad_candidates[start : start + len(block)] = dc
        return None, grad_queries, grad_candidates
