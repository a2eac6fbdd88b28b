"""The option reference (``docs/options.md``), generated from the schemas: every option of every config
group with its type, default and allowed values, as the constructors declare them.

``python -m kgexp.config.reference > docs/options.md`` rewrites it; a test checks it is current.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any

from omegaconf import MISSING

from kgexp import options
from kgexp.config.schemas import GROUPS, group_schemas
from kgexp.options import OneOf, Range

HEADER = """# Options

Every option of every config group, generated from the constructors' signatures by
`python -m kgexp.config.reference > docs/options.md` (a test checks that this page is current). Set one
with `group.option=value` on the command line, for example `kgexp model=rotate model.dim=500`. A value
outside "allowed" is refused before any work starts, with one line naming the key. "default" is the
constructor's; an option file may set another (`conf/<group>/<option>.yaml`, for example
`regularizer=l3` sets `weight: 1.0e-5`).
"""
#: The trainer takes every argument of Lightning's Trainer; the page lists those kgexp checks.
TRAINER_NOTE = (
    "Every other argument of Lightning's `Trainer` is accepted as `trainer.<argument>` with Lightning's "
    "default; kgexp sets `logger`, `callbacks`, `plugins` and `default_root_dir` itself."
)
#: What each schema of a group with several configures, where its name does not say.
SCHEMA_TITLES = {
    (
        "sampler",
        "emu",
    ): "`sampler=emu`: EMU's options, then every base sampler's (`null`: the base sampler's default)",
    ("regularizer", "norm"): "`regularizer=l2`, `l3`, `n3`",
    ("mi", "estimator"): "every `mi=` option but `none`",
}


def type_name(annotation: Any) -> str:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        members = [type_name(a) for a in args if a is not type(None)]
        return " or ".join(members) + (" or null" if type(None) in args else "")
    if origin is list:
        return f"list of {type_name(args[0])}"
    return getattr(annotation, "__name__", "any") if annotation is not Any else "any"


def value_text(value: Any) -> str:
    """A default as the page writes it; ``required`` where there is none."""
    return "required" if value is MISSING else options.value_text(value)


def field_default(field: dataclasses.Field) -> Any:
    """The default of a schema field (a list default sits in a factory)."""
    return field.default_factory() if field.default_factory is not dataclasses.MISSING else field.default


def allowed_text(limit: Range | OneOf | None) -> str:
    if limit is None:
        return ""
    if isinstance(limit, OneOf):
        return ", ".join(f"`{value_text(v)}`" for v in limit.values)
    return limit.describe().removeprefix("a value ")


def group_section(group: str, schemas: dict[str, type]) -> list[str]:
    lines = [f"## `{group}`", ""]
    for name, schema in schemas.items():
        fields = [f for f in dataclasses.fields(schema) if f.name != "name"]
        if group == "trainer":
            fields = [f for f in fields if f.metadata.get("limit")]
        if len(schemas) > 1:
            lines += [f"### {SCHEMA_TITLES.get((group, name), f'`{group}={name}`')}", ""]
        if not fields:
            lines += ["No options.", ""]
            continue
        lines += ["| option | type | default | allowed |", "|---|---|---|---|"]
        for field in fields:
            lines.append(
                f"| `{group}.{field.name}` | {type_name(field.type)} | `{value_text(field_default(field))}` "
                f"| {allowed_text(field.metadata.get('limit'))} |"
            )
        lines.append("")
    if group == "trainer":
        lines += [TRAINER_NOTE, ""]
    return lines


def options_page() -> str:
    schemas = group_schemas()
    lines = [HEADER]
    for group in GROUPS:
        lines += group_section(group, schemas[group])
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":
    print(options_page(), end="")
