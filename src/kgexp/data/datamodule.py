"""LightningDataModule: the splits of one knowledge graph, seeded training batches, filtered evaluation."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated

import pytorch_lightning as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from kgexp.data.download import resolve_cache_dir
from kgexp.data.filter_index import FilterIndex
from kgexp.data.graph import KnowledgeGraph, load_graph
from kgexp.data.registry import get_spec
from kgexp.options import Count, OneOf, checked
from kgexp.runtime.shards import derive_seed, shard_bounds
from kgexp.sides import HEAD, TAIL

#: What training batches hold: training triples (with their subsampling weights), or the distinct
#: training queries ``[anchor, relation, side code]`` (KvsAll).
EXAMPLES = ("triples", "queries")

# ShardedBatches position themselves by the restored global step: resuming mid-epoch is exact, though
# Lightning cannot tell (the loader has no state_dict of its own).
warnings.filterwarnings("ignore", ".*ended before the epoch ended and your dataloader is not resumable.*")


class TripleBatches(Dataset):
    """Indexed by a list of row ids: returns those triples (and their weights) as one batch tensor."""

    def __init__(self, triples: Tensor, weights: Tensor | None = None):
        self.triples, self.weights = triples, weights

    def __len__(self) -> int:
        return len(self.triples)

    def __getitem__(self, rows: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        if self.weights is None:
            return self.triples[rows]
        return self.triples[rows], self.weights[rows]


class ShardedBatches(Sampler[Tensor]):
    """Batches of row ids for one rank of ``world_size``.

    Shuffled (training): the permutation of epoch ``e`` is seeded by ``(seed, e)`` and cut into
    ``world_size`` disjoint shards of ``num_rows // world_size`` rows, so that every rank takes the same
    number of steps; the ``num_rows % world_size`` rows left over sit out that epoch (other rows each
    epoch). Each iteration starts where ``steps_done()`` (the trainer's global step) says training is:
    epoch ``steps // batches per epoch``, that many batches in; so a run resumed from any checkpoint goes
    on with the batch an uninterrupted run would take. In order (evaluation): contiguous shards of every
    row, sizes differing by at most one, none repeated.
    """

    def __init__(
        self,
        num_rows: int,
        batch_size: int,
        shuffle: bool,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        steps_done: Callable[[], int] = lambda: 0,
    ):
        self.num_rows, self.batch_size, self.shuffle, self.seed = num_rows, batch_size, shuffle, seed
        self.rank, self.world_size, self.steps_done = rank, world_size, steps_done

    def _rows(self, epoch: int) -> Tensor:
        if not self.shuffle:
            return torch.arange(*shard_bounds(self.num_rows, self.rank, self.world_size))
        generator = torch.Generator().manual_seed(derive_seed(self.seed, "data", epoch))
        order = torch.randperm(self.num_rows, generator=generator)
        share = self.num_rows // self.world_size
        return order[self.rank * share : (self.rank + 1) * share]

    def __len__(self) -> int:
        if self.shuffle:
            rows = self.num_rows // self.world_size
        else:
            start, stop = shard_bounds(self.num_rows, self.rank, self.world_size)
            rows = stop - start
        return -(-rows // self.batch_size)

    def __iter__(self) -> Iterator[Tensor]:
        epoch, done = divmod(self.steps_done(), len(self)) if self.shuffle and len(self) else (0, 0)
        rows = self._rows(epoch)
        if len(rows):  # a rank with no queries (fewer queries than ranks) gets no batch, not an empty one
            yield from rows.split(self.batch_size)[done:]


def subsampling_weights(train: Tensor, known: FilterIndex) -> Tensor:
    """RotatE's 1/sqrt(n(h, r) + n(t, r^-1)) with counts started at 4, per training triple."""
    h, r, t = train.unbind(1)
    counts = known[TAIL].counts(h, r) + known[HEAD].counts(t, r) + 6
    return counts.double().rsqrt().float()


@checked(
    "dataset",
    keys={"batch_size": "data.batch_size", "eval_batch_size": "data.eval_batch_size", "examples": "regime"},
)
class KGDataModule(pl.LightningDataModule):
    """Loads a dataset once, serves seeded, reshuffled training batches and query batches, each rank of a
    DDP run its own shard (:class:`ShardedBatches`; ``trainer.use_distributed_sampler`` stays off).
    Training batches follow the trainer's global step, so they resume exactly mid-epoch.

    ``filter_index`` holds every known triple (train, valid and test) for filtered ranking;
    ``train_index`` holds the training triples, for filtered negative sampling and KvsAll's labels.
    ``examples`` is what a training batch holds (:data:`EXAMPLES`; the regime decides it).
    """

    def __init__(
        self,
        name: str,
        path: str | None = None,
        drop_unseen: bool = False,
        cache_dir: str | None = None,
        batch_size: Count = 1024,
        eval_batch_size: Count = 256,
        seed: int = 0,
        examples: Annotated[str, OneOf(EXAMPLES)] = "triples",
    ):
        super().__init__()
        if path is None and name == "custom":
            raise ValueError(
                "dataset.path: dataset=custom reads your own files: set dataset.path=DIR, "
                "a folder with train.txt, valid.txt and test.txt"
            )
        if path is None:  # an unknown name fails now, not at the download
            get_spec(name)
        self.name, self.path, self.drop_unseen, self.cache_dir = name, path, drop_unseen, cache_dir
        self.batch_size, self.eval_batch_size, self.seed = batch_size, eval_batch_size, seed
        self.examples = examples
        self.graph: KnowledgeGraph | None = None
        self.filter_index: FilterIndex | None = None

    @property
    def cache_root(self) -> Path:
        """Where datasets and derived structures (neighbourhoods) are cached."""
        return resolve_cache_dir(self.cache_dir)

    def prepare_data(self) -> None:
        if self.graph is None:  # downloads and encodes once, on rank 0
            self.graph = load_graph(self.name, self.path, self.drop_unseen, self.cache_dir)

    def setup(self, stage: str | None = None) -> None:
        if self.filter_index is not None:
            return
        if self.graph is None:  # the other ranks read what rank 0 prepared
            self.graph = load_graph(self.name, self.path, self.drop_unseen, self.cache_dir)
        g = self.graph
        self.filter_index = FilterIndex(g.all_triples(), g.num_entities, g.num_relations)
        self.train_index = FilterIndex(g.train, g.num_entities, g.num_relations)
        self.train_weights = subsampling_weights(g.train, self.train_index)

    def _rank(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def train_dataloader(self) -> DataLoader:
        steps_done = (lambda: self.trainer.global_step) if self.trainer is not None else (lambda: 0)
        if self.examples == "queries":
            dataset = TripleBatches(self.train_index.distinct_queries())
        else:
            dataset = TripleBatches(self.graph.train, self.train_weights)
        batches = ShardedBatches(
            len(dataset), self.batch_size, True, self.seed, *self._rank(), steps_done=steps_done
        )
        return DataLoader(dataset, sampler=batches, batch_size=None)

    def _queries(self, triples: Tensor) -> DataLoader:
        rank, world_size = self._rank()
        batches = ShardedBatches(len(triples), self.eval_batch_size, False, rank=rank, world_size=world_size)
        return DataLoader(TripleBatches(triples), sampler=batches, batch_size=None)

    def val_dataloader(self) -> DataLoader:
        return self._queries(self.graph.valid)

    def test_dataloader(self) -> DataLoader:
        return self._queries(self.graph.test)
