"""Fused CPU kernels (``scoring.cpp`` for training, ``ranking.cpp`` for evaluation, ``norms.cpp`` for the
regulariser), compiled on first use and cached.

``torch.utils.cpp_extension.load`` builds the library once per machine and source version into
``$TORCH_EXTENSIONS_DIR`` (default ``~/.cache/torch_extensions``), under a file lock, so parallel jobs
build it once. Where no compiler is found the models fall back to plain tensor ops (with a warning):
the same scores, at the speed of materialised tensors.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import shutil
from pathlib import Path

import torch

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
SOURCES = [HERE / name for name in ("scoring.cpp", "ranking.cpp", "norms.cpp")]
HEADERS = [HERE / "common.h"]
#: Scorer kinds understood by the kernels.
DOT, L1, L2, MODULUS = 0, 1, 2, 3
#: Set to 0 to use plain tensor ops everywhere (for comparisons; the scores are the same).
DISABLE_ENV = "KGEXP_FUSED"


@functools.cache
def available() -> bool:
    """Whether the fused kernels are built and loaded (builds them on the first call)."""
    if os.environ.get(DISABLE_ENV, "1") == "0":
        return False
    try:
        from torch.utils.cpp_extension import load

        _find_ninja()
        # torch rebuilds when a source changes; the headers' digest in the flags covers them too
        digest = hashlib.sha256(b"".join(path.read_bytes() for path in HEADERS)).hexdigest()[:16]
        load(
            name="kgexp_kernels",
            sources=[str(path) for path in SOURCES],
            extra_cflags=[
                "-O3",
                "-march=native",
                "-fopenmp-simd",
                "-fno-math-errno",
                "-fno-trapping-math",
                f"-DKGEXP_HEADERS={digest}",
            ],
            is_python_module=False,
            verbose=False,
        )
    except Exception as error:  # no compiler, no ninja, a failed build: the plain path still works
        log.warning("fused CPU kernels unavailable (%s); using plain tensor ops", error)
        return False
    return True


def _find_ninja() -> None:
    """torch looks for ``ninja`` on PATH; the ``ninja`` package's binary is not there outside an active
    virtual environment, so add its folder."""
    if shutil.which("ninja") is None:
        import ninja

        os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + os.environ.get("PATH", "")


def usable(*tensors: torch.Tensor) -> bool:
    """Whether the fused kernels can take these tensors: float32 on the CPU, kernels built."""
    return all(t.device.type == "cpu" and t.dtype == torch.float32 for t in tensors) and available()


class ScoreEach(torch.autograd.Function):
    """Scores ``(B, K)`` of queries ``(B, w)`` against ``table[ids]`` without gathering ``(B, K, w)``."""

    @staticmethod
    def forward(ctx, queries: torch.Tensor, table: torch.Tensor, ids: torch.Tensor, kind: int, gamma: float):
        scores, order, offsets = torch.ops.kgexp.score_each(queries, table, ids, kind, gamma)
        ctx.save_for_backward(queries, table, order, offsets)
        ctx.kind = kind
        return scores

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad_queries, grad_table = torch.ops.kgexp.score_each_backward(grad, *ctx.saved_tensors, ctx.kind)
        return grad_queries, grad_table, None, None, None


def score_each(queries: torch.Tensor, table: torch.Tensor, ids: torch.Tensor, kind: int, gamma: float):
    return ScoreEach.apply(queries, table, ids, kind, gamma)


def score_all(queries: torch.Tensor, table: torch.Tensor, kind: int, gamma: float) -> torch.Tensor:
    """Scores ``(B, N)`` against every row of ``table`` (no gradient: for evaluation)."""
    return torch.ops.kgexp.score_all(queries, table, kind, gamma)


def score_all_backward(
    grad: torch.Tensor, queries: torch.Tensor, table: torch.Tensor, kind: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients for ``queries`` and ``table`` of ``score_all``'s scores, given their gradient ``grad``."""
    return torch.ops.kgexp.score_all_backward(grad, queries, table, kind)


def rank_modulus(
    queries: torch.Tensor,
    table: torch.Tensor,
    targets: torch.Tensor,
    filter_rows: torch.Tensor,
    filter_cols: torch.Tensor,
    gamma: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`rank_counts` of RotatE's scores against every table row, without the score block."""
    return torch.ops.kgexp.rank_modulus(queries, table, targets, filter_rows, filter_cols, gamma)


def rank_counts(
    scores: torch.Tensor, targets: torch.Tensor, filter_rows: torch.Tensor, filter_cols: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row: candidates better than the target, and better or equal (target included), filtered."""
    return torch.ops.kgexp.rank_counts(scores, targets, filter_rows, filter_cols)


class ScoreMutated(torch.autograd.Function):
    """EMU scores ``(B, 1 + K)`` against candidates ``table[ids]`` mutated towards column 0 (the positive),
    with the mask of :func:`mutation_keep`, without building the candidates or the mask."""

    @staticmethod
    def forward(
        ctx, queries, table, ids, kind: int, gamma: float, seeds: tuple[int, int], levels: int, shared: bool
    ):
        scores, order, offsets = torch.ops.kgexp.score_mutated(
            queries, table, ids, kind, gamma, seeds[0], seeds[1], levels, shared
        )
        ctx.save_for_backward(queries, table, ids, order, offsets)
        ctx.options = (kind, seeds[0], seeds[1], levels, shared)
        return scores

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        queries, table, ids, order, offsets = ctx.saved_tensors
        grad_queries, grad_table = torch.ops.kgexp.score_mutated_backward(
            grad, queries, table, ids, order, offsets, *ctx.options
        )
        return grad_queries, grad_table, None, None, None, None, None, None


def score_mutated(
    queries: torch.Tensor,
    table: torch.Tensor,
    ids: torch.Tensor,
    kind: int,
    gamma: float,
    seeds: tuple[int, int],
    levels: int,
    shared: bool,
) -> torch.Tensor:
    return ScoreMutated.apply(queries, table, ids, kind, gamma, seeds, levels, shared)


def _mix32(x: torch.Tensor) -> torch.Tensor:
    """lowbias32 on int64 tensors holding unsigned 32-bit values (as ``mix32`` in scoring.cpp)."""
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & 0xFFFFFFFF
    x = x ^ (x >> 15)
    x = (x * 0x846CA68B) & 0xFFFFFFFF  # int64 products wrap; their low 32 bits are exact
    return x ^ (x >> 16)


def mutation_keep(
    rows: int, count: int, width: int, seeds: tuple[int, int], levels: int, shared: bool, device=None
) -> torch.Tensor:
    """The EMU keep mask ``(rows, count, width)`` that :func:`score_mutated` uses, with tensor ops.

    Bit ``(b, k, j)`` is True when the low 16 bits of ``mix32(key ^ j)`` fall below ``levels``
    (P = levels / 2^16), where ``key`` hashes the pair index ``b * count + k`` with the step's two seeds.
    With ``shared``, a row has ``width / 2`` bits, repeated for the imaginary half. Column 0 is all True.
    """
    mask_width = width // 2 if shared else width
    pair = torch.arange(rows * count, device=device, dtype=torch.int64)
    key = _mix32(_mix32((pair & 0xFFFFFFFF) ^ seeds[0]) ^ (pair >> 32) ^ seeds[1])
    hashed = _mix32(key.unsqueeze(1) ^ torch.arange(mask_width, device=device, dtype=torch.int64))
    keep = ((hashed & 0xFFFF) < levels).view(rows, count, mask_width)
    keep[:, 0] = True
    return torch.cat([keep, keep], dim=-1) if shared else keep


class PowerSum(torch.autograd.Function):
    """``sum |x|^p`` over a table (with ``modulus``: over the moduli of its complex coordinates) in one pass,
    its gradient in one more, without the temporaries of ``x.abs().pow(p).sum()``."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, p: int, modulus: bool) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.options = (p, modulus)
        return torch.ops.kgexp.power_sum(x, p, modulus)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (x,) = ctx.saved_tensors
        return torch.ops.kgexp.power_sum_backward(grad, x, *ctx.options), None, None


def power_sum(x: torch.Tensor, p: int, modulus: bool) -> torch.Tensor:
    return PowerSum.apply(x, p, modulus)
