"""LightningDataModule: the splits of one knowledge graph, seeded training batches, filtered evaluation."""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
import torch
from torch import Tensor
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler

from kgexp.data.download import resolve_cache_dir
from kgexp.data.filter_index import FilterIndex
from kgexp.data.graph import KnowledgeGraph, load_graph
from kgexp.sides import HEAD, TAIL


class TripleBatches(Dataset):
    """Indexed by a list of row ids: returns those triples (and their weights) as one batch tensor."""

    def __init__(self, triples: Tensor, weights: Tensor | None = None):
        self.triples, self.weights = triples, weights

    def __len__(self) -> int:
        return len(self.triples)

    def __getitem__(self, rows: list[int]) -> Tensor | tuple[Tensor, Tensor]:
        index = torch.as_tensor(rows)
        if self.weights is None:
            return self.triples[index]
        return self.triples[index], self.weights[index]


def subsampling_weights(train: Tensor, known: FilterIndex) -> Tensor:
    """RotatE's 1/sqrt(n(h, r) + n(t, r^-1)) with counts started at 4, per training triple."""
    h, r, t = train.unbind(1)
    counts = known[TAIL].counts(h, r) + known[HEAD].counts(t, r) + 6
    return counts.double().rsqrt().float()


class KGDataModule(pl.LightningDataModule):
    """Loads a dataset once, shuffles training triples with a seeded generator, serves query batches.

    ``filter_index`` holds every known triple (train, valid and test) for filtered ranking;
    ``train_index`` holds the training triples, for filtered negative sampling.
    """

    def __init__(
        self,
        name: str,
        path: str | None = None,
        drop_unseen: bool = False,
        cache_dir: str | None = None,
        batch_size: int = 1024,
        eval_batch_size: int = 256,
        seed: int = 0,
    ):
        super().__init__()
        for key, value in (("data.batch_size", batch_size), ("data.eval_batch_size", eval_batch_size)):
            if value <= 0:
                raise ValueError(f"{key} must be a positive integer, got {value}")
        self.name, self.path, self.drop_unseen, self.cache_dir = name, path, drop_unseen, cache_dir
        self.batch_size, self.eval_batch_size, self.seed = batch_size, eval_batch_size, seed
        self.graph: KnowledgeGraph | None = None

    @property
    def cache_root(self) -> Path:
        """Where datasets and derived structures (neighbourhoods) are cached."""
        return resolve_cache_dir(self.cache_dir)

    def prepare_data(self) -> None:
        if self.graph is None:  # downloads and encodes once, on rank 0
            load_graph(self.name, self.path, self.drop_unseen, self.cache_dir)

    def setup(self, stage: str | None = None) -> None:
        if self.graph is not None:
            return
        self.graph = load_graph(self.name, self.path, self.drop_unseen, self.cache_dir)
        g = self.graph
        self.filter_index = FilterIndex(g.all_triples(), g.num_entities, g.num_relations)
        self.train_index = FilterIndex(g.train, g.num_entities, g.num_relations)
        self.train_weights = subsampling_weights(g.train, self.train_index)

    def train_dataloader(self) -> DataLoader:
        generator = torch.Generator().manual_seed(self.seed)
        batches = BatchSampler(
            RandomSampler(range(len(self.graph.train)), generator=generator), self.batch_size, False
        )
        return DataLoader(
            TripleBatches(self.graph.train, self.train_weights), sampler=batches, batch_size=None
        )

    def _queries(self, triples: Tensor) -> DataLoader:
        batches = BatchSampler(SequentialSampler(range(len(triples))), self.eval_batch_size, False)
        return DataLoader(TripleBatches(triples), sampler=batches, batch_size=None)

    def val_dataloader(self) -> DataLoader:
        return self._queries(self.graph.valid)

    def test_dataloader(self) -> DataLoader:
        return self._queries(self.graph.test)
