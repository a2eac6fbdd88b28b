"""Entity neighbourhoods of the undirected training graph (SANS and RW-SANS), and their on-disk cache.

A neighbourhood is a CSR pattern: the candidates of entity ``i`` are ``indices[indptr[i]:indptr[i + 1]]``,
sorted and distinct. The graph is relation-agnostic and unweighted: ``A[h, t] = A[t, h] = 1`` for every
training triple (Ahrabian et al. 2020).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor

from kgexp.data.csr import distinct_pairs, offsets_of
from kgexp.options import Count, OneOf, checked
from kgexp.runtime.atomic import atomic_path

log = logging.getLogger(__name__)

HOP_MODES = ("within", "reference")
WALK_MODES = ("restart", "chained")
HopMode = Annotated[str, OneOf(HOP_MODES)]
WalkMode = Annotated[str, OneOf(WALK_MODES)]
_ROW_BLOCK = 2048  # rows of a sparse power computed at once: bounds the memory of the products
_WALKERS_PER_CHUNK = 1 << 23  # random walkers advanced together: 8M walkers, ~200 MB of temporaries
_FORMAT_VERSION = 1


@dataclass
class Neighbourhood:
    """CSR pattern ``(indptr (E + 1,) int64, indices int32)`` of candidate entities per entity."""

    indptr: Tensor
    indices: Tensor

    @property
    def sizes(self) -> Tensor:
        return self.indptr[1:] - self.indptr[:-1]

    def row(self, entity: int) -> Tensor:
        return self.indices[self.indptr[entity] : self.indptr[entity + 1]]

    def to(self, device: torch.device | str) -> Neighbourhood:
        return Neighbourhood(self.indptr.to(device), self.indices.to(device))

    @classmethod
    def from_scipy(cls, matrix: sp.csr_matrix) -> Neighbourhood:
        matrix.sort_indices()
        indptr = torch.from_numpy(matrix.indptr.astype(np.int64))
        return cls(indptr, torch.from_numpy(matrix.indices.astype(np.int32)))

    @classmethod
    def from_pairs(cls, sources: Tensor, targets: Tensor, num_entities: int) -> Neighbourhood:
        """The distinct ``(source, target)`` pairs as a CSR pattern."""
        rows, columns = distinct_pairs(sources, targets, num_entities)
        indptr = offsets_of(torch.bincount(rows, minlength=num_entities))
        return cls(indptr, columns.to(torch.int32))


def adjacency(train: Tensor, num_entities: int) -> sp.csr_matrix:
    """Binary symmetric adjacency of the training triples (relations ignored, duplicates merged)."""
    heads, tails = train[:, 0].numpy(), train[:, 2].numpy()
    rows, cols = np.concatenate([heads, tails]), np.concatenate([tails, heads])
    data = np.ones(len(rows), dtype=np.float32)
    matrix = sp.csr_matrix((data, (rows, cols)), shape=(num_entities, num_entities))
    matrix.data[:] = 1.0  # merge parallel edges
    return matrix


def _binary(matrix: sp.csr_matrix) -> sp.csr_matrix:
    matrix = matrix.tocsr()
    matrix.eliminate_zeros()
    matrix.data[:] = 1.0
    return matrix


@checked("k_hop")
def k_hop(train: Tensor, num_entities: int, hops: Count, mode: HopMode = "within") -> Neighbourhood:
    """Entities near each entity, from sparse matrix products over row blocks.

    ``within``: every entity at shortest-path distance 1..k (the entity itself excluded).
    ``reference``: the non-zero pattern of A^k + A^(k-1), as the SANS code: every entity reachable by a walk
    of exactly k or k - 1 steps, which for even lengths includes the entity itself (A^0 = I for k = 1).
    """
    a = adjacency(train, num_entities)
    blocks = []
    for start in range(0, num_entities, _ROW_BLOCK):
        rows = slice(start, min(start + _ROW_BLOCK, num_entities))
        block = _within_block(a, rows, hops) if mode == "within" else _reference_block(a, rows, hops)
        blocks.append(block)
    return Neighbourhood.from_scipy(sp.vstack(blocks, format="csr") if blocks else sp.csr_matrix(a.shape))


def _identity_rows(rows: slice, width: int) -> sp.csr_matrix:
    """Rows ``rows`` of the identity matrix."""
    count = rows.stop - rows.start
    ones = np.ones(count, dtype=np.float32)
    return sp.csr_matrix((ones, (np.arange(count), np.arange(rows.start, rows.stop))), shape=(count, width))


def _within_block(a: sp.csr_matrix, rows: slice, hops: int) -> sp.csr_matrix:
    """Breadth-first frontiers of a block of rows: reach_{j+1} = reach_j + (frontier_j A minus reach_j)."""
    reach = a[rows].copy()
    frontier = reach
    for _ in range(hops - 1):
        found = _binary(frontier @ a)
        frontier = _binary(found - found.multiply(reach))
        if frontier.nnz == 0:
            break
        reach = _binary(reach + frontier)
    return _binary(reach - reach.multiply(_identity_rows(rows, a.shape[1])))


def _reference_block(a: sp.csr_matrix, rows: slice, hops: int) -> sp.csr_matrix:
    """Pattern of (A^(k-1) + A^(k-1) A)[rows], with binarised intermediate powers (same pattern)."""
    power = _identity_rows(rows, a.shape[1])  # rows of A^0
    for _ in range(hops - 1):
        power = _binary(power @ a)
    return _binary(power + power @ a)


@checked("random_walks")
def random_walks(
    train: Tensor, num_entities: int, hops: Count, walks: Count, mode: WalkMode = "restart", seed: int = 0
) -> Neighbourhood:
    """Endpoints of ``walks`` random walks of ``hops`` steps from every entity, all entities at once.

    ``restart``: each walk starts at the entity, so every endpoint lies within k hops; the entity itself is
    dropped. ``chained`` (the RW-SANS code): the walks are not restarted, so they form one walk of
    ``walks * hops`` steps that records every k-th node, and may wander beyond k hops. An entity without
    neighbours gets ``walks`` uniformly random entities, as in the reference.
    """
    generator = torch.Generator().manual_seed(seed)
    graph = Neighbourhood.from_scipy(adjacency(train, num_entities))
    degree = graph.sizes
    entities = torch.arange(num_entities)
    if mode == "restart":
        sources, targets = _restarted_walks(graph, entities, hops, walks, generator)
        keep = sources != targets
        sources, targets = sources[keep], targets[keep]
    else:
        sources, targets = _chained_walks(graph, entities, hops, walks, generator)
    isolated = entities[degree == 0]
    random_sources = isolated.repeat_interleave(walks)
    random_targets = torch.randint(num_entities, (len(random_sources),), generator=generator)
    sources = torch.cat([sources, random_sources])
    targets = torch.cat([targets, random_targets])
    return Neighbourhood.from_pairs(sources, targets, num_entities)


def uniform_offsets(sizes: Tensor, generator: torch.Generator) -> Tensor:
    """A uniform integer in ``[0, size)`` for every element of ``sizes`` (0 where a size is 0)."""
    draw = torch.rand(sizes.shape, generator=generator, device=sizes.device, dtype=torch.float64)
    return torch.minimum((draw * sizes).long(), sizes - 1).clamp_min(0)


def _step(graph: Neighbourhood, positions: Tensor, generator: torch.Generator) -> Tensor:
    """Move every walker to a uniformly random neighbour (walkers only visit nodes with neighbours)."""
    start = graph.indptr[positions]
    degree = graph.indptr[positions + 1] - start
    return graph.indices[start + uniform_offsets(degree, generator)].long()


def _restarted_walks(
    graph: Neighbourhood, entities: Tensor, hops: int, walks: int, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    movable = entities[graph.sizes > 0]
    per_chunk = max(1, _WALKERS_PER_CHUNK // walks)
    sources, targets = [], []
    for chunk in movable.split(per_chunk):
        start = chunk.repeat_interleave(walks)
        position = start
        for _ in range(hops):
            position = _step(graph, position, generator)
        pairs = torch.unique(start * len(entities) + position)  # deduplicate per chunk to bound memory
        sources.append(pairs // len(entities))
        targets.append(pairs % len(entities))
    empty = torch.empty(0, dtype=torch.int64)
    return torch.cat(sources or [empty]), torch.cat(targets or [empty])


def _chained_walks(
    graph: Neighbourhood, entities: Tensor, hops: int, walks: int, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    movable = entities[graph.sizes > 0]
    endpoints = torch.empty(len(movable), walks, dtype=torch.int64)
    position = movable
    for walk in range(walks):
        for _ in range(hops):
            position = _step(graph, position, generator)
        endpoints[:, walk] = position
    return movable.repeat_interleave(walks), endpoints.flatten()


def cached_neighbourhood(
    cache_dir: Path, fingerprint: str, key: str, build: Callable[[], Neighbourhood], label: str
) -> Neighbourhood:
    """Load ``<cache_dir>/neighbourhoods/<fingerprint>-<key>.pt``, or build it and write it atomically.

    The dataset fingerprint is a checksum of its split files, so a changed dataset never reuses an old
    neighbourhood; concurrent jobs that build the same one each replace the file whole.
    """
    path = Path(cache_dir) / "neighbourhoods" / f"{fingerprint}-{key}-v{_FORMAT_VERSION}.pt"
    if path.is_file():
        state = torch.load(path, weights_only=True)
        log.info("%s: loaded %s (%d pairs)", label, path, len(state["indices"]))
        return Neighbourhood(**state)
    started = time.perf_counter()
    neighbourhood = build()
    log.info(
        "%s: built in %.1f s, %d pairs, cached at %s",
        label,
        time.perf_counter() - started,
        len(neighbourhood.indices),
        path,
    )
    with atomic_path(path) as tmp:
        torch.save({"indptr": neighbourhood.indptr, "indices": neighbourhood.indices}, tmp)
    return neighbourhood
