"""The allowed values of config options: numeric ranges and fixed choices, checked after composition."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Range:
    """``low <= value <= high`` (``<`` where the bound is open); ``None`` bounds nothing."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def allows(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    def describe(self) -> str:
        if self.high is None:
            return f"a value {'>' if self.low_open else '>='} {self.low}"
        if self.low is None:
            return f"a value {'<' if self.high_open else '<='} {self.high}"
        opening, closing = "(" if self.low_open else "[", ")" if self.high_open else "]"
        return f"a value in {opening}{self.low}, {self.high}{closing}"


@dataclass(frozen=True)
class OneOf:
    """One of a fixed set of values (each element of a list option)."""

    values: tuple[Any, ...]

    def allows(self, value: Any) -> bool:
        items = value if isinstance(value, list | tuple) else [value]
        return bool(items) and all(item in self.values for item in items)

    def describe(self) -> str:
        return "one of " + ", ".join(str(v) for v in self.values)


Limit = Range | OneOf

POSITIVE = Range(0, low_open=True)
AT_LEAST_ONE = Range(1)
NON_NEGATIVE = Range(0)
PROBABILITY = Range(0, 1)


def one_of(values: Iterable[Any]) -> OneOf:
    return OneOf(tuple(values))


def check(key: str, limit: Limit | None, value: Any) -> None:
    """A ValueError naming ``key`` when ``value`` (not ``None``) is outside ``limit``."""
    if limit is not None and value is not None and not limit.allows(value):
        raise ValueError(f"{key}: expected {limit.describe()}, got {value!r}")
