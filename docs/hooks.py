"""MkDocs hook (mkdocs.yml: ``hooks``): headings get GitHub's anchors, so that a link such as
``configuration.md#defaults-the-emu--rotate-reference-recipe`` works on GitHub and in the built site
alike. ``tests/test_readme.py`` checks every link of the README and of these pages with the same function.
"""

from __future__ import annotations

import re

_PUNCTUATION = re.compile(r"[^\w\- ]")
_CELL = re.compile(r"<t[dh]>.*?</t[dh]>", re.DOTALL)


def github_slug(text: str, separator: str = "-") -> str:
    """GitHub's anchor of a heading whose rendered text is ``text``: lower case, punctuation removed,
    each space a hyphen (``"Defaults: the EMU / RotatE"`` gives ``defaults-the-emu--rotate``)."""
    return _PUNCTUATION.sub("", text.strip().lower()).replace(" ", separator)


def on_config(config):
    """Python-Markdown's ``toc`` extension, which MkDocs always loads, slugifies with ``github_slug``."""
    config["mdx_configs"].setdefault("toc", {})["slugify"] = github_slug
    return config


def on_page_content(html, **kwargs):
    """A code span in a table cell writes a pipe as ``\\|`` (GitHub's rule); Python-Markdown keeps the
    backslash inside code, so drop it there."""
    return _CELL.sub(lambda cell: cell[0].replace("\\|", "|"), html)
