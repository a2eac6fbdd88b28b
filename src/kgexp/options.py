"""The allowed values of options, declared once in the constructors' signatures.

A parameter annotated ``Annotated[float, POSITIVE]`` or ``Annotated[str, OneOf(("a", "b"))]`` carries its
limit; :func:`checked` makes the constructor check its arguments against them, and the config schemas
read the same annotations to check a composed config before any work starts. Every out-of-range value
gives one message: ``group.option: expected <limit>, got <value>``.
"""

from __future__ import annotations

import functools
import inspect
import math
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from kgexp.errors import InputError


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
BELOW_ONE = Range(0, 1, high_open=True)
OPEN_UNIT = Range(0, 1, low_open=True, high_open=True)

Count = Annotated[int, AT_LEAST_ONE]
NonNegativeInt = Annotated[int, NON_NEGATIVE]
PositiveFloat = Annotated[float, POSITIVE]
NonNegativeFloat = Annotated[float, NON_NEGATIVE]
Probability = Annotated[float, PROBABILITY]
Smoothing = Annotated[float, BELOW_ONE]


def one_of(values: Iterable[Any]) -> OneOf:
    return OneOf(tuple(values))


def check(key: str, limit: Limit | None, value: Any) -> Any:
    """``value``, or an InputError (a ValueError) naming ``key`` if it is outside ``limit`` (None: unset)."""
    if limit is not None and value is not None and not limit.allows(value):
        raise InputError(f"{key}: expected {limit.describe()}, got {value!r}")
    return value


def value_text(value: Any, separator: str = ", ") -> str:
    """An option value as a config or command line writes it: ``null``, ``true``, ``[a, b]``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list | tuple):
        return "[" + separator.join(value_text(v, separator) for v in value) + "]"
    return str(value)


def dotted(node: Any, prefix: str = "") -> dict[str, Any]:
    """``{"model.dim": 100, ...}``: the leaves of nested mappings under their dotted keys."""
    if isinstance(node, dict):
        return {k: v for key, value in node.items() for k, v in dotted(value, f"{prefix}{key}.").items()}
    return {prefix.removesuffix("."): node}


def limit_of(annotation: Any) -> Limit | None:
    """The limit an ``Annotated`` hint carries (inside ``Optional`` too), else ``None``."""
    if typing.get_origin(annotation) is Annotated:
        return next((m for m in annotation.__metadata__ if isinstance(m, Range | OneOf)), None)
    for member in typing.get_args(annotation):
        if (limit := limit_of(member)) is not None:
            return limit
    return None


@functools.cache
def limits_of(function: Callable) -> dict[str, Limit]:
    """``{parameter: limit}`` from ``function``'s ``Annotated`` hints."""
    hints = typing.get_type_hints(function, include_extras=True)
    return {name: limit for name, hint in hints.items() if (limit := limit_of(hint)) is not None}


Target = TypeVar("Target", bound=Callable)


def checked(group: str, keys: Mapping[str, str] | None = None) -> Callable[[Target], Target]:
    """Decorator of a class (its constructor) or a function: each argument given is checked against its
    annotated limit, named in the error by its config key: ``keys[parameter]``, else ``group.parameter``
    (``parameter`` with an empty group)."""
    keys = dict(keys or {})

    def decorate(target: Target) -> Target:
        function = target.__init__ if isinstance(target, type) else target
        signature = inspect.signature(function)

        @functools.wraps(function)
        def checked_call(*args: Any, **kwargs: Any) -> Any:
            limits = limits_of(function)
            for name, value in signature.bind(*args, **kwargs).arguments.items():
                key = keys.get(name) or (f"{group}.{name}" if group else name)
                check(key, limits.get(name), value)
            return function(*args, **kwargs)

        if isinstance(target, type):
            target.__init__ = checked_call
            return target
        return checked_call

    return decorate
