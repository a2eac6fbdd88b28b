"""How a run divides its randomness and its rows: a seed per stream and item, a contiguous shard per rank."""

from __future__ import annotations

import zlib

import numpy as np


def derive_seed(seed: int, stream: str, index: int) -> int:
    """A 63-bit seed for item ``index`` (an epoch, a rank) of the random ``stream`` (``"data"``,
    ``"training"``) of a run seeded with ``seed``: independent across streams and items."""
    entropy = [seed, zlib.crc32(stream.encode()), index]
    state = np.random.SeedSequence(entropy).generate_state(2, dtype=np.uint32)
    return int(state[0]) << 31 ^ int(state[1])


def shard_bounds(num_rows: int, rank: int, world_size: int) -> tuple[int, int]:
    """Rows ``[start, stop)`` of ``rank``: contiguous shards whose sizes differ by at most one."""
    return num_rows * rank // world_size, num_rows * (rank + 1) // world_size
