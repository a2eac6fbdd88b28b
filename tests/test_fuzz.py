"""Dataset files fuzzed with hypothesis: each loads exactly as written, or fails naming file:line."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kgexp.data.graph import load_graph
from kgexp.data.parsing import TripleFormatError, read_triples

PIECES = st.sampled_from(["a", "b", "é", "Q1", "/m/0x", " ", "\t", "\r", "\ufeff", "\x00", "?"])
FIELD = st.lists(PIECES, max_size=4).map("".join)
LINE = st.one_of(
    st.lists(FIELD, min_size=1, max_size=4).map("\t".join),  # wrong column counts, empty fields
    st.tuples(FIELD, FIELD, FIELD).map("\t".join),
    st.just("e1\tr\te2"),  # valid lines, so that files with valid prefixes and duplicates are common
    st.just("e2\tr\te1"),
    st.just(""),
    st.just("   "),
    st.just("x" * 5000 + "\tr\ty"),  # very long lines
)
TEXT_FILES = st.builds(
    lambda lines, ending, bom, final: (
        ("\ufeff" if bom else "") + ending.join(lines) + (ending if final else "")
    ),
    st.lists(LINE, max_size=8),
    st.sampled_from(["\n", "\r\n"]),
    st.booleans(),
    st.booleans(),
).map(lambda text: text.encode("utf-8"))
FILES = st.one_of(TEXT_FILES, st.binary(max_size=200))  # and random bytes (invalid UTF-8 among them)


def expected_parse(data: bytes) -> list[tuple[str, str, str]] | int | str:
    """An independent reading of the format: the triples, or the number of the first bad line, or
    ``"empty"`` / ``"utf-8"``."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return "utf-8"
    triples = []
    for number, line in enumerate(text.split("\n"), start=1):
        if line.endswith("\r"):
            line = line[:-1]
        if line.strip() == "":
            continue
        fields = line.split("\t")
        if len(fields) != 3 or any(f == "" or f.strip() != f for f in fields):
            return number
        triples.append(tuple(fields))
    return triples or "empty"


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=FILES)
def test_a_file_parses_as_written_or_fails_naming_its_line(data):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "train.txt"
        path.write_bytes(data)
        expected = expected_parse(data)
        if isinstance(expected, list):
            assert read_triples(path) == expected
            return
        with pytest.raises(TripleFormatError) as error:
            read_triples(path)
        message = str(error.value)
        if expected == "empty":
            assert message.startswith(f"{path}: no triples")
        elif expected == "utf-8":
            assert re.match(rf"{re.escape(str(path))}:\d+: not valid UTF-8", message)
        else:
            assert message.startswith(f"{path}:{expected}: ")


@settings(max_examples=60, deadline=None)
@given(train=FILES)
def test_a_dataset_folder_loads_its_triples_or_fails_naming_the_file(train):
    """Through the whole loader (ids, cache): never a traceback from deep inside."""
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        (root / "train.txt").write_bytes(train)
        (root / "valid.txt").write_text("e1\tr\te2\n")
        (root / "test.txt").write_text("e2\tr\te1\n")
        expected = expected_parse(train)
        if not isinstance(expected, list):
            with pytest.raises(TripleFormatError, match=re.escape(str(root / "train.txt"))):
                load_graph("fuzz", root, cache_dir=root / "cache")
            return
        graph = load_graph("fuzz", root, cache_dir=root / "cache")
        labelled = [
            (graph.entities[h], graph.relations[r], graph.entities[t]) for h, r, t in graph.train.tolist()
        ]
        assert labelled == expected  # duplicates kept, order kept
        assert load_graph("fuzz", root, cache_dir=root / "cache").train.tolist() == graph.train.tolist()
