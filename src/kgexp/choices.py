"""Validation of a config option that takes one of a fixed set of values."""

from __future__ import annotations

from collections.abc import Iterable


def check_choice(key: str, value: str, valid: Iterable[str]) -> str:
    """``value`` if it is one of ``valid``; otherwise a ValueError naming the config ``key``."""
    valid = tuple(valid)
    if value not in valid:
        raise ValueError(f"{key} must be one of {', '.join(valid)}, got {value!r}")
    return value
