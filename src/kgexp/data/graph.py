"""An id-encoded knowledge graph with its train/valid/test splits, and its on-disk cache."""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from kgexp.data.download import file_checksum, locate_split_files, resolve_cache_dir
from kgexp.data.parsing import read_triples
from kgexp.data.registry import SPLITS, get_spec
from kgexp.errors import MissingFileError
from kgexp.runtime.atomic import atomic_path

log = logging.getLogger(__name__)

_FORMAT_VERSION = 1


@dataclass
class KnowledgeGraph:
    """Triples as ``(n, 3)`` int64 tensors of ``(head, relation, tail)`` ids, with the label vocabularies."""

    name: str
    entities: list[str]
    relations: list[str]
    splits: dict[str, torch.Tensor]
    fingerprint: str
    dropped: dict[str, int] = field(default_factory=dict)

    @property
    def num_entities(self) -> int:
        return len(self.entities)

    @property
    def num_relations(self) -> int:
        return len(self.relations)

    @property
    def train(self) -> torch.Tensor:
        return self.splits["train"]

    @property
    def valid(self) -> torch.Tensor:
        return self.splits["valid"]

    @property
    def test(self) -> torch.Tensor:
        return self.splits["test"]

    def all_triples(self) -> torch.Tensor:
        return torch.cat([self.splits[s] for s in SPLITS])

    def summary(self) -> str:
        sizes = " / ".join(f"{len(self.splits[s]):,}" for s in SPLITS)
        return (
            f"{self.name}: {self.num_entities:,} entities, {self.num_relations:,} relations, {sizes} triples"
        )


def encode(
    name: str, labelled: dict[str, list[tuple[str, str, str]]], drop_unseen: bool, fingerprint: str
) -> KnowledgeGraph:
    """Assign ids (sorted labels) over all splits, or over train alone when ``drop_unseen``."""
    vocab_splits = ("train",) if drop_unseen else SPLITS
    entity_set = {e for s in vocab_splits for h, _, t in labelled[s] for e in (h, t)}
    relation_set = {r for s in vocab_splits for _, r, _ in labelled[s]}
    entities, relations = sorted(entity_set), sorted(relation_set)
    entity_id = {label: i for i, label in enumerate(entities)}
    relation_id = {label: i for i, label in enumerate(relations)}
    splits, dropped = {}, {}
    for split in SPLITS:
        rows = labelled[split]
        if drop_unseen:
            kept = [x for x in rows if x[0] in entity_id and x[2] in entity_id and x[1] in relation_id]
            dropped[split] = len(rows) - len(kept)
            rows = kept
        ids = [(entity_id[h], relation_id[r], entity_id[t]) for h, r, t in rows]
        splits[split] = torch.tensor(ids, dtype=torch.int64).reshape(-1, 3)
    return KnowledgeGraph(name, entities, relations, splits, fingerprint, dropped)


def load_graph(
    name: str,
    path: str | os.PathLike | None = None,
    drop_unseen: bool = False,
    cache_dir: str | os.PathLike | None = None,
) -> KnowledgeGraph:
    """Load a registered dataset (``name``) or a folder of split files (``path``), using the id cache."""
    cache_root = resolve_cache_dir(cache_dir)
    if path is not None:
        folder = Path(path).expanduser()
        files = {s: folder / f"{s}.txt" for s in SPLITS}
        missing = [str(p) for p in files.values() if not p.is_file()]
        if missing:
            raise MissingFileError(
                f"dataset.path: {folder} must hold train.txt, valid.txt and test.txt; missing: "
                + ", ".join(missing)
            )
    else:
        files = locate_split_files(get_spec(name), cache_root)
    digest = hashlib.sha256(f"v{_FORMAT_VERSION} drop_unseen={drop_unseen}".encode())
    for split in SPLITS:
        digest.update(file_checksum(files[split], "sha256").encode())
    fingerprint = digest.hexdigest()[:16]
    cached = cache_root / "encoded" / f"{name}-{fingerprint}.pt"
    if cached.is_file():
        state = torch.load(cached, weights_only=True)
        graph = KnowledgeGraph(**state)
    else:
        labelled = {s: read_triples(files[s]) for s in SPLITS}
        graph = encode(name, labelled, drop_unseen, fingerprint)
        with atomic_path(cached) as tmp:
            torch.save(graph.__dict__, tmp)
    if drop_unseen:
        log.info(
            "drop_unseen: removed %d valid and %d test triples with an entity or relation not in train",
            graph.dropped["valid"],
            graph.dropped["test"],
        )
    log.info(graph.summary())
    return graph
