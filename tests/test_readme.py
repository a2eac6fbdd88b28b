"""The README documents every registered component and config option, and opens with the two commands."""

from __future__ import annotations

from pathlib import Path

import pytest

from kgexp.cli import config_dir
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
