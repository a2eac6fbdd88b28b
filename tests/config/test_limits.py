"""Limits declared once: the ``Annotated`` hints that constructors check and the config schemas read."""

from __future__ import annotations

import dataclasses
import re
from typing import Annotated

import pytest
from omegaconf import DictConfig, OmegaConf
from test_configs import CONF, compose_config, validated

from kgexp.config.reference import field_default, value_text
from kgexp.config.schemas import group_schemas
from kgexp.config.validation import check_node
from kgexp.options import POSITIVE, Count, OneOf, Range, checked, limit_of, limits_of
from kgexp.training.emu import EMU
from kgexp.training.negatives import NSCachingSampler, UniformSampler


@checked("toy")
class Toy:
    def __init__(self, size: Count, rate: Annotated[float, POSITIVE] | None = None, mode: str = "a"):
        self.size, self.rate, self.mode = size, rate, mode


@checked("", keys={"width": "data.width"})
def toy_function(width: Count, kind: Annotated[str, OneOf(("x", "y"))] = "x") -> tuple[int, str]:
    return width, kind


def test_a_checked_constructor_refuses_an_argument_outside_its_limit_naming_the_key():
    assert Toy(3, 0.5).size == 3 and Toy(size=1).rate is None  # None: unset, not checked
    with pytest.raises(ValueError, match=r"^toy\.size: expected a value >= 1, got 0$"):
        Toy(0)
    with pytest.raises(ValueError, match=r"^toy\.rate: expected a value > 0, got -1\.0$"):
        Toy(2, rate=-1.0)
    assert Toy(2, mode="anything").mode == "anything"  # no limit declared, nothing checked


def test_a_checked_function_names_its_parameters_or_the_keys_given():
    assert toy_function(2, "y") == (2, "y")
    with pytest.raises(ValueError, match=r"^data\.width: expected a value >= 1, got 0$"):
        toy_function(0)
    with pytest.raises(ValueError, match=r"^kind: expected one of x, y, got 'z'$"):
        toy_function(1, kind="z")


def test_limits_are_read_through_optional_and_from_the_original_function():
    assert limit_of(Annotated[float, POSITIVE] | None) == POSITIVE
    assert limit_of(float | None) is None
    assert limits_of(Toy.__init__.__wrapped__) == {"size": Range(1), "rate": POSITIVE}


def test_emu_takes_exactly_its_parts_options():
    emu = EMU(keep_prob=0.5, beta=0.2, resample=False)
    assert (emu.mutate.keep_prob, emu.loss.beta, emu.resample) == (0.5, 0.2, False)
    with pytest.raises(TypeError, match="'hops'"):
        EMU(hops=3)
    with pytest.raises(ValueError, match=r"^sampler\.keep_prob: expected a value in \[0, 1\], got 1\.5$"):
        EMU(keep_prob=1.5)


def limited_fields() -> list[tuple[str, str, str, object]]:
    """(group, schema, field, limit) of every schema field that declares a limit."""
    return [
        (group, name, field.name, field.metadata["limit"])
        for group, schemas in group_schemas().items()
        for name, schema in schemas.items()
        for field in dataclasses.fields(schema)
        if field.metadata.get("limit") is not None and field.name != "name"
    ]


def outside(limit: object, example: object) -> object:
    """A value of the same type as ``example`` that ``limit`` refuses."""
    if isinstance(limit, OneOf):
        if isinstance(example, list | tuple):
            return ["not-a-choice"]
        return 99 if isinstance(example, int) else "not-a-choice"
    assert isinstance(limit, Range)
    below = limit.low if limit.low_open else limit.low - 1 if limit.low is not None else None
    value = below if below is not None else limit.high + 1
    return int(value) if isinstance(example, int) and not isinstance(example, bool) else float(value)


def schema_node(schema: type) -> DictConfig:
    """The schema as a config, each required option given a value its limit allows."""
    node = OmegaConf.structured(schema)
    for field in dataclasses.fields(schema):
        if OmegaConf.is_missing(node, field.name):
            limit = field.metadata.get("limit")
            node[field.name] = limit.values[0] if isinstance(limit, OneOf) else 1
    return node


def test_every_declared_limit_is_checked_on_the_config_with_one_message():
    """Each limit a constructor declares is enforced on its schema's config node, as ``key: expected``."""
    fields = limited_fields()
    assert len(fields) > 40  # the constructors' declarations reached the schemas
    schemas = group_schemas()
    for group, name, field, limit in fields:
        node = schema_node(schemas[group][name])
        check_node(node.copy(), f"{group}.")  # valid as it stands
        example = node[field]
        example = OmegaConf.to_container(example) if OmegaConf.is_list(example) else example
        node[field] = outside(limit, example if example is not None else 1)
        with pytest.raises(ValueError, match=rf"^{group}\.{field}: expected {limit.describe()[:6]}"):
            check_node(node, f"{group}.")


def test_the_constructor_and_the_config_refuse_the_same_value_with_the_same_line():
    cfg = compose_config("sampler=nscaching", "sampler.temperature=0")
    with pytest.raises(ValueError) as from_config:
        validated(cfg)
    with pytest.raises(ValueError) as from_constructor:
        NSCachingSampler(num_negatives=4, temperature=0.0)
    assert (
        str(from_config.value)
        == str(from_constructor.value)
        == "sampler.temperature: expected a value > 0, got 0.0"
    )
    with pytest.raises(ValueError, match=r"^sampler\.shared: expected a value >= 0, got -1$"):
        UniformSampler(4, shared=-1)


def test_no_option_file_restates_a_constructor_default():
    """``conf/<group>/<option>.yaml`` carries only what differs from its schema (the constructor defaults)."""
    schemas, restated = group_schemas(), []
    for path in sorted(CONF.glob("*/*.yaml")):
        used = re.search(r"/schema/(\w+)/(\w+)@_here_", path.read_text())
        if used is None:
            continue
        fields = {f.name: f for f in dataclasses.fields(schemas[used[1]][used[2]])}
        written = OmegaConf.to_container(OmegaConf.load(path))
        for key, value in written.items():
            field = fields.get(key)
            if key in ("defaults", "name") or field is None:
                continue
            default = field_default(field)
            if value_text(value) == value_text(default):
                restated.append(f"{path.relative_to(CONF)}: {key}")
    assert restated == []
