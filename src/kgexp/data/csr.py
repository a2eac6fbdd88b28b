"""Compressed sparse rows from pairs: the distinct pairs in sorted order, and the offsets of their rows."""

from __future__ import annotations

import torch
from torch import Tensor


def distinct_pairs(rows: Tensor, columns: Tensor, num_columns: int) -> tuple[Tensor, Tensor]:
    """The distinct ``(row, column)`` pairs, sorted by row then column, as two int64 tensors."""
    keys = torch.unique(rows.long() * num_columns + columns.long())  # sorted, deduplicated
    return keys // num_columns, keys % num_columns


def offsets_of(counts: Tensor) -> Tensor:
    """``(len(counts) + 1,)`` int64: row ``i`` holds entries ``offsets[i]:offsets[i + 1]``."""
    offsets = torch.zeros(len(counts) + 1, dtype=torch.int64)
    torch.cumsum(counts, 0, out=offsets[1:])
    return offsets
