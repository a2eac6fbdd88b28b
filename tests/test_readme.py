"""The README and the pages of docs/ document every registered component and config option, state the
constructors' defaults, link only to files and headings that exist, and the README opens with the two
commands."""

from __future__ import annotations

import dataclasses
import importlib.util
import re
from pathlib import Path

import pytest
import yaml

from kgexp.cli import config_dir
from kgexp.config.reference import field_default, options_page, value_text
from kgexp.config.schemas import group_schemas
from kgexp.data.registry import DATASETS
from kgexp.models import MODELS
from kgexp.training.losses import LOSSES
from kgexp.training.optim import OPTIMIZERS

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
README = (ROOT / "README.md").read_text()
CONF = Path(config_dir())
#: Every Markdown file that is read on GitHub or built into the site: the README and docs/, sub-folders too.
PAGES = [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]
#: The hand-written reference pages (options.md is generated and tested against the code below).
REFERENCE = [page for page in sorted(DOCS.glob("*.md")) if page.name != "options.md"]


def _hooks():
    spec = importlib.util.spec_from_file_location("kgexp_docs_hooks", DOCS / "hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


#: The anchors MkDocs gives headings (docs/hooks.py), which are GitHub's.
github_slug = _hooks().github_slug


def test_readme_opens_with_train_and_test_commands():
    first_block = README.split("```")[1]
    assert "make train" in first_block and "make test" in first_block


@pytest.mark.parametrize("name", [*DATASETS, *MODELS, *LOSSES, *OPTIMIZERS], ids=lambda n: n)
def test_every_registered_component_is_documented(name):
    text = README + "".join(page.read_text() for page in REFERENCE)
    assert f"`{name}`" in text


@pytest.mark.parametrize("group", sorted(p.name for p in CONF.iterdir() if p.is_dir()))
def test_every_config_option_is_documented(group):
    page = DOCS / "configuration.md"
    row = next((line for line in page.read_text().splitlines() if line.startswith(f"| `{group}` |")), None)
    assert row is not None, f"no row for config group {group!r} in the config-groups table of {page.name}"
    for path in (CONF / group).rglob("*.yaml"):
        option = str(path.relative_to(CONF / group).with_suffix(""))
        assert f"`{option}`" in row, f"{group}={option} is not in {page.name}'s config-groups table"


def documented_defaults(text: str) -> list[tuple[str, str, str]]:
    """(group, option, written default) of each row of a table headed ``| option | default |`` whose
    first cell names one option."""
    rows, in_table = [], False
    for line in text.splitlines():
        if line.startswith("| option | default |"):
            in_table = True
        elif not line.startswith("|"):
            in_table = False
        elif in_table and (match := re.match(r"\| `(\w+)\.(\w+)` \| ([^|]+) \|", line)):
            rows.append((match[1], match[2], match[3].strip().strip("`")))
    return rows


def test_the_defaults_the_docs_state_are_the_constructors():
    schemas = group_schemas()
    rows = [(page.relative_to(ROOT), *row) for page in PAGES for row in documented_defaults(page.read_text())]
    assert len(rows) >= 8
    for page, group, option, written in rows:
        defaults = {
            value_text(field_default(f))
            for schema in schemas[group].values()
            for f in dataclasses.fields(schema)
            if f.name == option
        }
        assert defaults == {written}, f"{page}: {group}.{option} = {written}, the code says {defaults}"


def test_the_options_page_is_generated_from_the_current_code():
    page = DOCS / "options.md"
    assert page.read_text() == options_page(), (
        "regenerate: python -m kgexp.config.reference > docs/options.md"
    )


# --- links


def prose(text: str) -> str:
    """``text`` without its fenced code blocks, whose lines are neither headings nor links."""
    return re.sub(r"^```.*?^```", "", text, flags=re.MULTILINE | re.DOTALL)


def headings(text: str) -> set[str]:
    """The anchors of the headings of a Markdown page, as GitHub writes them (the text as rendered:
    without code marks, emphasis and link targets; a repeated heading gets ``-1``, ``-2``, …)."""
    anchors: set[str] = set()
    for match in re.finditer(r"^#{1,6} +(.+?) *#* *$", prose(text), flags=re.MULTILINE):
        rendered = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", match[1]).replace("`", "").replace("**", "")
        slug, n = github_slug(rendered), 0
        while (slug if n == 0 else f"{slug}-{n}") in anchors:
            n += 1
        anchors.add(slug if n == 0 else f"{slug}-{n}")
    return anchors


def links(text: str) -> list[str]:
    """The targets of the inline links and images of a Markdown page, code apart."""
    text = re.sub(r"`[^`]*`", "", prose(text))  # code spans
    text = re.sub(r"^(?: {4}|\t).*$", "", text, flags=re.MULTILINE)  # indented code blocks
    return re.findall(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)", text)


def test_the_link_helpers_follow_github():
    page = "# A `b=c`: the D / E\n## W&B\n## W&B\n```\n# not a heading [x](nowhere.md)\n```\n[y](z.md#w)"
    assert headings(page) == {"a-bc-the-d--e", "wb", "wb-1"}
    assert links(page) == ["z.md#w"]
    assert github_slug("FB15k-237 at the papers' budget") == "fb15k-237-at-the-papers-budget"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_points_to_an_existing_file_and_heading(page):
    broken = []
    for target in links(page.read_text()):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:, …
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(
                f"{target}: no file {file.relative_to(ROOT) if file.is_relative_to(ROOT) else file}"
            )
        elif page.is_relative_to(DOCS) and not file.is_relative_to(DOCS):
            broken.append(f"{target}: outside docs/, which the built site does not hold")
        elif anchor and file.suffix == ".md" and anchor not in headings(file.read_text()):
            broken.append(f"{target}: no heading #{anchor} in {file.relative_to(ROOT)}")
    assert not broken, f"{page.relative_to(ROOT)}: " + "; ".join(broken)


def test_the_site_lists_every_page():
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())

    def pages(nav) -> list[str]:
        if isinstance(nav, str):
            return [nav]
        items = nav.values() if isinstance(nav, dict) else nav
        return [page for item in items for page in pages(item)]

    listed = pages(config["nav"])
    assert sorted(listed) == sorted(str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md")), (
        "mkdocs.yml's nav must list every page of docs/, once"
    )
