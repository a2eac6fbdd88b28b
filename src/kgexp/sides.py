"""The two query sides: tail prediction (h, r, ?) and head prediction (?, r, t)."""

from __future__ import annotations

from typing import Literal

from torch import Tensor

Side = Literal["head", "tail"]
HEAD: Side = "head"
TAIL: Side = "tail"
BOTH_SIDES: tuple[Side, Side] = (HEAD, TAIL)
#: The side column of a query example ``[anchor, relation, side code]`` (KvsAll's training examples).
SIDE_CODES: dict[Side, int] = {TAIL: 0, HEAD: 1}


def split_query(triples: Tensor, side: Side) -> tuple[Tensor, Tensor, Tensor]:
    """``(anchor, relation, target)`` ids of ``(n, 3)`` triples: the kept entity, the relation, the answer."""
    h, r, t = triples.unbind(-1)
    return (h, r, t) if side == TAIL else (t, r, h)
