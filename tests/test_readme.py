"""The README documents every registered component and config option, and opens with the two commands."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from kgexp.cli import config_dir
from kgexp.config.reference import options_page, value_text
from kgexp.config.schemas import group_schemas
from kgexp.data.registry import DATASETS
from kgexp.models import MODELS
from kgexp.training.losses import LOSSES
from kgexp.training.optim import OPTIMIZERS

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()
CONF = Path(config_dir())


def test_readme_opens_with_train_and_test_commands():
    first_block = README.split("```")[1]
    assert "make train" in first_block and "make test" in first_block


@pytest.mark.parametrize("name", [*DATASETS, *MODELS, *LOSSES, *OPTIMIZERS], ids=lambda n: n)
def test_every_registered_component_is_documented(name):
    assert f"`{name}`" in README


@pytest.mark.parametrize("group", sorted(p.name for p in CONF.iterdir() if p.is_dir()))
def test_every_config_option_is_documented(group):
    row = next((line for line in README.splitlines() if line.startswith(f"| `{group}` |")), None)
    assert row is not None, f"no row for config group {group!r} in the README's config table"
    for path in (CONF / group).rglob("*.yaml"):
        option = str(path.relative_to(CONF / group).with_suffix(""))
        assert f"`{option}`" in row, f"{group}={option} is not in the README"


def documented_defaults(text: str) -> list[tuple[str, str, str]]:
    """(group, option, written default) of each row of a README table headed ``| option | default |``
    whose first cell names one option."""
    rows, in_table = [], False
    for line in text.splitlines():
        if line.startswith("| option | default |"):
            in_table = True
        elif not line.startswith("|"):
            in_table = False
        elif in_table and (match := re.match(r"\| `(\w+)\.(\w+)` \| ([^|]+) \|", line)):
            rows.append((match[1], match[2], match[3].strip().strip("`")))
    return rows


def test_the_defaults_the_readme_states_are_the_constructors():
    schemas = group_schemas()
    rows = documented_defaults(README)
    assert len(rows) >= 8
    for group, option, written in rows:
        defaults = {
            value_text(f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default)
            for schema in schemas[group].values()
            for f in dataclasses.fields(schema)
            if f.name == option
        }
        assert defaults == {written}, f"README: {group}.{option} = {written}, the code says {defaults}"


def test_the_options_page_is_generated_from_the_current_code():
    page = Path(__file__).resolve().parents[1] / "docs" / "options.md"
    assert page.read_text() == options_page(), (
        "regenerate: python -m kgexp.config.reference > docs/options.md"
    )
