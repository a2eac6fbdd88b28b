"""Reading tab-separated triple files, with errors that name the file and line."""

from __future__ import annotations

import codecs
from pathlib import Path

from kgexp.errors import UserError


class TripleFormatError(UserError, ValueError):
    """A split file does not hold one ``head<TAB>relation<TAB>tail`` triple per line."""


def read_triples(path: Path) -> list[tuple[str, str, str]]:
    """Label triples of a file: UTF-8 (a BOM is allowed), LF or CRLF line endings, blank lines skipped."""
    return [triple for _, triple in read_numbered_triples(path)]


def read_numbered_triples(path: Path) -> list[tuple[int, tuple[str, str, str]]]:
    """:func:`read_triples` with the line number of each triple."""
    data = path.read_bytes().removeprefix(codecs.BOM_UTF8)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise TripleFormatError(f"{path}:{line}: not valid UTF-8 ({error.reason})") from None
    triples = []
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw.removesuffix("\r")
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != 3:
            raise TripleFormatError(
                f"{path}:{number}: expected 3 tab-separated fields (head, relation, tail), "
                f"found {len(fields)}: {_preview(line)}"
            )
        if any(not f.strip() or f != f.strip() for f in fields):
            raise TripleFormatError(
                f"{path}:{number}: empty field or field with surrounding whitespace: {_preview(line)}"
            )
        triples.append((number, (fields[0], fields[1], fields[2])))
    if not triples:
        raise TripleFormatError(f"{path}: no triples (the file is empty)")
    return triples


def _preview(line: str, limit: int = 120) -> str:
    return repr(line if len(line) <= limit else line[:limit] + "…")
