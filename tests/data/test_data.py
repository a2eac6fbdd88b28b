"""Data layer: parsing, downloads, dataset lookup, registry, id encoding and its cache, the data module."""

from __future__ import annotations

import functools
import hashlib
import math
import os
import random
import re
import socket
import threading
from collections import Counter
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

import kgexp.data.graph as graph_module
from kgexp.data.datamodule import KGDataModule
from kgexp.data.download import (
    ChecksumError,
    DatasetNotFoundError,
    default_cache_dir,
    download,
    file_checksum,
    locate_split_files,
    verify,
)
from kgexp.data.graph import load_graph
from kgexp.data.parsing import TripleFormatError, read_triples
from kgexp.data.registry import DATASETS, SPLITS, DatasetSpec, RemoteFile, get_spec
from kgexp.runtime.atomic import atomic_path

# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


def to_bytes(triples: list[tuple[str, str, str]], newline: str = "\n") -> bytes:
    return "".join("\t".join(t) + newline for t in triples).encode()


def write_dataset(folder: Path, splits: dict[str, list[tuple[str, str, str]]]) -> dict[str, bytes]:
    folder.mkdir(parents=True, exist_ok=True)
    contents = {}
    for split, triples in splits.items():
        contents[split] = to_bytes(triples)
        (folder / f"{split}.txt").write_bytes(contents[split])
    return contents


# Labels chosen so that their sorted order differs from the order they first appear in.
SMALL = {
    "train": [
        ("zeta", "likes", "alpha"),
        ("Mike", "knows", "zeta"),
        ("émile", "likes", "Mike"),
        ("alpha", "hates", "beta"),
        ("beta", "knows", "émile"),
    ],
    "valid": [
        ("alpha", "likes", "zeta"),
        ("gamma", "knows", "alpha"),  # gamma: only in valid
    ],
    "test": [
        ("beta", "admires", "Mike"),  # admires: only in test
        ("zeta", "hates", "émile"),
        ("delta", "likes", "omega"),  # delta, omega: only in test
    ],
}


def random_splits(seed: int, entities: int, relations: int, sizes: dict[str, int]):
    """Distinct random label triples; every valid/test entity and relation also occurs in train."""
    rng = random.Random(seed)
    seen: set[tuple[str, str, str]] = set()
    out = {}
    for split in SPLITS:
        rows = []
        while len(rows) < sizes[split]:
            triple = (
                f"e{rng.randrange(entities)}",
                f"r{rng.randrange(relations)}",
                f"e{rng.randrange(entities)}",
            )
            if triple not in seen:
                seen.add(triple)
                rows.append(triple)
        out[split] = rows
    # make sure train covers every label used anywhere
    extra = [(f"e{e}", "r0", f"e{(e + 1) % entities}") for e in range(entities)]
    extra += [("e0", f"r{r}", "e0") for r in range(relations)]
    for triple in extra:
        if triple not in seen:
            seen.add(triple)
            out["train"].append(triple)
    return out


# --------------------------------------------------------------------------------------------------
# read_triples
# --------------------------------------------------------------------------------------------------


def test_read_triples_lf_and_crlf_are_identical(tmp_path):
    triples = SMALL["train"]
    lf, crlf = tmp_path / "lf.txt", tmp_path / "crlf.txt"
    lf.write_bytes(to_bytes(triples, "\n"))
    crlf.write_bytes(to_bytes(triples, "\r\n"))
    assert b"\r\n" in crlf.read_bytes()
    from_lf, from_crlf = read_triples(lf), read_triples(crlf)
    assert from_lf == triples
    assert from_crlf == triples
    assert all("\r" not in label for t in from_crlf for label in t)


def test_read_triples_crlf_without_final_newline(tmp_path):
    path = tmp_path / "x.txt"
    path.write_bytes(b"a\tb\tc\r\nd\te\tf")
    assert read_triples(path) == [("a", "b", "c"), ("d", "e", "f")]


def test_read_triples_accepts_bom_and_skips_blank_lines(tmp_path):
    path = tmp_path / "bom.txt"
    path.write_bytes(b"\xef\xbb\xbf" + b"a\tr\tb\n\n   \n\r\nc\tr\td\n\n")
    assert read_triples(path) == [("a", "r", "b"), ("c", "r", "d")]


def test_read_triples_keeps_non_ascii_and_inner_spaces(tmp_path):
    path = tmp_path / "x.txt"
    path.write_bytes("Émile Zola\twrote\tGerminal (novel)\n".encode())
    assert read_triples(path) == [("Émile Zola", "wrote", "Germinal (novel)")]


@pytest.mark.parametrize(
    ("content", "bad_line"),
    [
        (b"a\tr\tb\nc\tr\n", 2),  # 2 fields
        (b"a\tr\tb\n\nc\tr\td\te\n", 3),  # 4 fields, after a blank line
        (b"a\tr\tb\r\nc\tr\td\r\n\r\nx\t\ty\r\n", 4),  # empty field, CRLF
        (b"a\tr\t b\n", 1),  # surrounding whitespace in a field
        (b"a\tr\tb\nc\tr\td\ne\tr\t\xff\xfe\n", 3),  # invalid UTF-8
        (b"a\tr\tb\n\xc3(\tr\tb\n", 2),  # invalid UTF-8 continuation byte
        (b"single-field\n", 1),
    ],
)
def test_read_triples_malformed_line_names_file_and_line(tmp_path, content, bad_line):
    path = tmp_path / "bad.txt"
    path.write_bytes(content)
    with pytest.raises(TripleFormatError) as info:
        read_triples(path)
    message = str(info.value)
    assert f"{path}:{bad_line}" in message
    # the reported line is the first bad one: no earlier line number is named
    for earlier in range(1, bad_line):
        assert f"{path}:{earlier}:" not in message
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("content", [b"", b"\n\n  \n", b"\xef\xbb\xbf", b"\r\n\r\n"])
def test_read_triples_empty_file_is_an_error(tmp_path, content):
    path = tmp_path / "empty.txt"
    path.write_bytes(content)
    with pytest.raises(TripleFormatError) as info:
        read_triples(path)
    assert str(path) in str(info.value)
    assert "empty" in str(info.value)


# --------------------------------------------------------------------------------------------------
# a local HTTP server
# --------------------------------------------------------------------------------------------------


class _QuietHandler(SimpleHTTPRequestHandler):
    def do_GET(self):
        self.server.requested.append(self.path)
        super().do_GET()

    def log_message(self, format, *args):
        pass


class LocalServer:
    def __init__(self, root: Path, server: ThreadingHTTPServer):
        self.root, self.server = root, server
        self.url = f"http://127.0.0.1:{server.server_address[1]}"

    @property
    def requested(self) -> list[str]:
        return self.server.requested

    def put(self, relative: str, data: bytes) -> str:
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return f"{self.url}/{relative}"


@pytest.fixture
def server(tmp_path, monkeypatch):
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "*")
    monkeypatch.setenv("NO_PROXY", "*")
    root = tmp_path / "served"
    root.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(root))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.requested = []
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield LocalServer(root, httpd)
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def closed_port_url(path: str = "x.txt") -> str:
    """A URL on 127.0.0.1 where nothing listens."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/{path}"


# --------------------------------------------------------------------------------------------------
# checksums and download
# --------------------------------------------------------------------------------------------------


def test_file_checksum_sha256_and_git_blob_id(tmp_path):
    data = to_bytes(SMALL["train"]) * 3
    path = tmp_path / "f.txt"
    path.write_bytes(data)
    assert file_checksum(path, "sha256") == sha256_hex(data)
    assert file_checksum(path, "gitsha1") == git_blob_id(data)
    # blob ids as printed by `git hash-object`
    for content, blob_id in (
        (b"", "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"),
        (b"hello\n", "ce013625030ba8dba906f756967f9e9ca394464a"),
    ):
        known = tmp_path / "known"
        known.write_bytes(content)
        assert file_checksum(known, "gitsha1") == blob_id
    verify(path, f"sha256:{sha256_hex(data)}")
    verify(path, f"gitsha1:{git_blob_id(data)}")
    with pytest.raises(ChecksumError):
        verify(path, f"sha256:{sha256_hex(data + b'x')}")
    with pytest.raises(ValueError, match="md5"):
        file_checksum(path, "md5")


def test_download_with_right_sha256(server, tmp_path):
    data = to_bytes(SMALL["train"])
    url = server.put("ds/train.txt", data)
    destination = tmp_path / "dest" / "sub" / "train.txt"
    result = download(RemoteFile(f"sha256:{sha256_hex(data)}", (url,)), destination)
    assert Path(result) == destination
    assert destination.read_bytes() == data
    assert sorted(p.name for p in destination.parent.iterdir()) == ["train.txt"]


def test_download_with_wrong_checksum_leaves_nothing(server, tmp_path):
    data = to_bytes(SMALL["train"])
    url = server.put("ds/train.txt", data)
    destination_dir = tmp_path / "dest"
    destination = destination_dir / "train.txt"
    wrong = sha256_hex(data + b"tampered")
    with pytest.raises(ChecksumError):
        download(RemoteFile(f"sha256:{wrong}", (url,)), destination)
    assert list(destination_dir.iterdir()) == []


def test_download_with_wrong_checksum_keeps_existing_file(server, tmp_path):
    data = to_bytes(SMALL["train"])
    url = server.put("ds/train.txt", data)
    destination = tmp_path / "dest" / "train.txt"
    destination.parent.mkdir()
    destination.write_bytes(b"old content\n")
    with pytest.raises(ChecksumError):
        download(RemoteFile(f"sha256:{sha256_hex(b'other')}", (url,)), destination)
    assert destination.read_bytes() == b"old content\n"
    assert [p.name for p in destination.parent.iterdir()] == ["train.txt"]


def test_download_checksum_mismatch_does_not_fall_through_to_next_url(server, tmp_path):
    good = to_bytes(SMALL["train"])
    bad_url = server.put("a/train.txt", b"different bytes\n")
    good_url = server.put("b/train.txt", good)
    destination = tmp_path / "dest" / "train.txt"
    with pytest.raises(ChecksumError):
        download(RemoteFile(f"sha256:{sha256_hex(good)}", (bad_url, good_url)), destination)
    assert server.requested == ["/a/train.txt"]
    assert list(destination.parent.iterdir()) == []


def test_download_verifies_gitsha1(server, tmp_path):
    data = to_bytes(SMALL["valid"])
    url = server.put("ds/valid.txt", data)
    destination = tmp_path / "dest" / "valid.txt"
    download(RemoteFile(f"gitsha1:{git_blob_id(data)}", (url,)), destination)
    assert destination.read_bytes() == data
    # a wrong blob id (here: the sha1 of the bare content, not of the blob) is rejected
    other = tmp_path / "dest2" / "valid.txt"
    plain_sha1 = hashlib.sha1(data, usedforsecurity=False).hexdigest()
    with pytest.raises(ChecksumError):
        download(RemoteFile(f"gitsha1:{plain_sha1}", (url,)), other)
    assert list(other.parent.iterdir()) == []


def test_download_falls_back_to_second_url_after_404(server, tmp_path):
    data = to_bytes(SMALL["test"])
    url = server.put("mirror2/test.txt", data)
    missing = f"{server.url}/mirror1/test.txt"
    destination = tmp_path / "dest" / "test.txt"
    download(RemoteFile(f"sha256:{sha256_hex(data)}", (missing, url)), destination)
    assert destination.read_bytes() == data
    assert server.requested == ["/mirror1/test.txt", "/mirror2/test.txt"]
    assert [p.name for p in destination.parent.iterdir()] == ["test.txt"]


def test_download_falls_back_after_unreachable_host(server, tmp_path):
    data = to_bytes(SMALL["test"])
    url = server.put("m/test.txt", data)
    destination = tmp_path / "dest" / "test.txt"
    download(RemoteFile(f"sha256:{sha256_hex(data)}", (closed_port_url(), url)), destination)
    assert destination.read_bytes() == data


def test_download_unreachable_urls_raise_dataset_not_found(server, tmp_path):
    first, second = closed_port_url("a.txt"), f"{server.url}/nothing/here.txt"
    destination = tmp_path / "dest" / "train.txt"
    with pytest.raises(DatasetNotFoundError) as info:
        download(RemoteFile(f"sha256:{'0' * 64}", (first, second)), destination)
    assert first in str(info.value)
    assert second in str(info.value)
    assert not destination.exists()
    assert list(destination.parent.iterdir()) == []


# --------------------------------------------------------------------------------------------------
# locate_split_files
# --------------------------------------------------------------------------------------------------


@pytest.fixture
def served_toy(server):
    """A dataset 'toy' served at <server>/toy/<split>.txt, with its spec and contents."""
    contents = {s: to_bytes(SMALL[s]) for s in SPLITS}
    files = {
        s: RemoteFile(f"sha256:{sha256_hex(contents[s])}", (server.put(f"toy/{s}.txt", contents[s]),))
        for s in SPLITS
    }
    return DatasetSpec("toy", "Toy", files), contents


def test_locate_prefers_complete_mirror(served_toy, server, tmp_path, monkeypatch):
    spec, _ = served_toy
    mirror = tmp_path / "mirror"
    write_dataset(mirror / "toy", SMALL)
    monkeypatch.setenv("KGEXP_DATA_DIR", str(mirror))
    cache = tmp_path / "cache"
    paths = locate_split_files(spec, cache)
    assert paths == {s: mirror / "toy" / f"{s}.txt" for s in SPLITS}
    assert server.requested == []
    assert not (cache / "toy").exists()


def test_locate_uses_cache_when_mirror_absent_or_incomplete(served_toy, server, tmp_path, monkeypatch):
    spec, contents = served_toy
    cache = tmp_path / "cache"
    write_dataset(cache / "toy", SMALL)
    monkeypatch.delenv("KGEXP_DATA_DIR", raising=False)
    expected = {s: cache / "toy" / f"{s}.txt" for s in SPLITS}
    assert locate_split_files(spec, cache) == expected

    mirror = tmp_path / "mirror"
    (mirror / "toy").mkdir(parents=True)
    (mirror / "toy" / "train.txt").write_bytes(contents["train"])  # valid/test missing
    monkeypatch.setenv("KGEXP_DATA_DIR", str(mirror))
    assert locate_split_files(spec, cache) == expected
    assert server.requested == []


def test_locate_uses_cache_dir_from_environment(served_toy, server, tmp_path, monkeypatch):
    spec, _ = served_toy
    cache = tmp_path / "envcache"
    write_dataset(cache / "toy", SMALL)
    monkeypatch.delenv("KGEXP_DATA_DIR", raising=False)
    monkeypatch.setenv("KGEXP_CACHE_DIR", str(cache))
    assert locate_split_files(spec) == {s: cache / "toy" / f"{s}.txt" for s in SPLITS}
    assert server.requested == []


def test_default_cache_dir_precedence(tmp_path, monkeypatch):
    monkeypatch.setenv("KGEXP_CACHE_DIR", str(tmp_path / "a"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "a"
    monkeypatch.delenv("KGEXP_CACHE_DIR")
    assert default_cache_dir() == tmp_path / "xdg" / "kgexp"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "kgexp"


def test_locate_downloads_into_cache(served_toy, server, tmp_path, monkeypatch):
    spec, contents = served_toy
    empty_mirror = tmp_path / "mirror"
    empty_mirror.mkdir()
    monkeypatch.setenv("KGEXP_DATA_DIR", str(empty_mirror))
    cache = tmp_path / "cache"
    paths = locate_split_files(spec, cache)
    assert paths == {s: cache / "toy" / f"{s}.txt" for s in SPLITS}
    for split in SPLITS:
        assert paths[split].read_bytes() == contents[split]
    assert sorted(server.requested) == sorted(f"/toy/{s}.txt" for s in SPLITS)
    assert sorted(p.name for p in (cache / "toy").iterdir()) == sorted(f"{s}.txt" for s in SPLITS)
    # a second lookup finds them in the cache and downloads nothing more
    assert locate_split_files(spec, cache) == paths
    assert len(server.requested) == 3


def test_locate_downloads_only_missing_cache_files(served_toy, server, tmp_path, monkeypatch):
    spec, contents = served_toy
    monkeypatch.delenv("KGEXP_DATA_DIR", raising=False)
    cache = tmp_path / "cache"
    (cache / "toy").mkdir(parents=True)
    (cache / "toy" / "train.txt").write_bytes(contents["train"])
    paths = locate_split_files(spec, cache)
    assert sorted(server.requested) == ["/toy/test.txt", "/toy/valid.txt"]
    assert all(paths[s].read_bytes() == contents[s] for s in SPLITS)


def _unreachable_spec() -> DatasetSpec:
    return DatasetSpec(
        "toy",
        "Toy",
        {s: RemoteFile(f"sha256:{'0' * 64}", (closed_port_url(f"toy/{s}.txt"),)) for s in SPLITS},
    )


def test_locate_without_mirror_or_server_explains_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.delenv("KGEXP_DATA_DIR", raising=False)
    cache = tmp_path / "cache"
    with pytest.raises(DatasetNotFoundError) as info:
        locate_split_files(_unreachable_spec(), cache)
    message = str(info.value)
    assert str(cache / "toy") in message
    assert "KGEXP_DATA_DIR" in message
    assert "toy" in message


def test_locate_with_empty_mirror_names_mirror_and_cache(tmp_path, monkeypatch):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    monkeypatch.setenv("KGEXP_DATA_DIR", str(mirror))
    cache = tmp_path / "cache"
    with pytest.raises(DatasetNotFoundError) as info:
        locate_split_files(_unreachable_spec(), cache)
    message = str(info.value)
    assert str(mirror / "toy") in message
    assert str(cache / "toy") in message
    assert "KGEXP_DATA_DIR" in message


# --------------------------------------------------------------------------------------------------
# registry
# --------------------------------------------------------------------------------------------------

EXPECTED_DATASETS = {"fb15k237", "wn18rr", "yago3-10", "nations", "umls", "kinships", "codex-s", "codex-m"}


def test_get_spec_unknown_name_lists_valid_names():
    with pytest.raises(ValueError) as info:
        get_spec("nope")
    message = str(info.value)
    assert "nope" in message
    for name in EXPECTED_DATASETS:
        assert name in message


def test_registry_contents():
    assert set(DATASETS) == EXPECTED_DATASETS
    pattern = re.compile(r"^(sha256:[0-9a-f]{64}|gitsha1:[0-9a-f]{40})$")
    for name in EXPECTED_DATASETS:
        spec = get_spec(name)
        assert spec.name == name
        assert set(spec.files) == {"train", "valid", "test"}
        for split, remote in spec.files.items():
            assert pattern.match(remote.checksum), (name, split, remote.checksum)
            assert remote.urls
            assert all(u.startswith("https://") and u.endswith(f"/{split}.txt") for u in remote.urls)
        checksums = [spec.files[s].checksum for s in SPLITS]
        assert len(set(checksums)) == 3, name


def test_nations_checksums(tmp_path, monkeypatch):
    """With a real dataset mirror in $KGEXP_DATA_DIR, its nations files match the registry; otherwise
    the same checks run on a generated dataset whose checksums are computed here."""
    root = os.environ.get("KGEXP_DATA_DIR")
    if root:
        folder = Path(root).expanduser() / "nations"
        spec = get_spec("nations")
        expected = {s: spec.files[s].checksum for s in SPLITS}
        # the lookup finds the mirror and downloads nothing
        cache = tmp_path / "cache"
        assert locate_split_files(spec, cache) == {s: folder / f"{s}.txt" for s in SPLITS}
        assert not cache.exists()
        graph = load_graph("nations", cache_dir=tmp_path / "cache2")
        # sizes published with the ConvE split of Nations
        assert (graph.num_entities, graph.num_relations) == (14, 55)
        assert [len(graph.splits[s]) for s in SPLITS] == [1592, 199, 201]
    else:
        folder = tmp_path / "nations"
        contents = write_dataset(folder, random_splits(3, 14, 5, {"train": 60, "valid": 8, "test": 8}))
        expected = {s: f"sha256:{sha256_hex(contents[s])}" for s in SPLITS}
    for split in SPLITS:
        algorithm, _, hex_digest = expected[split].partition(":")
        assert algorithm == "sha256"
        path = folder / f"{split}.txt"
        assert file_checksum(path, "sha256") == hex_digest
        verify(path, expected[split])


def test_file_checksums_match_published_digests(tmp_path):
    """FIPS 180-2's SHA-256 of "abc", and git's blob id of "hello world\n" (`git hash-object`)."""
    abc, hello = tmp_path / "abc.txt", tmp_path / "hello.txt"
    abc.write_bytes(b"abc")
    hello.write_bytes(b"hello world\n")
    assert file_checksum(abc, "sha256") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert file_checksum(hello, "gitsha1") == "3b18e512dba79e4c8300dd08aeb37f8e728b8dad"


# --------------------------------------------------------------------------------------------------
# load_graph
# --------------------------------------------------------------------------------------------------


def decode(graph, split: str) -> list[tuple[str, str, str]]:
    return [
        (graph.entities[h], graph.relations[r], graph.entities[t]) for h, r, t in graph.splits[split].tolist()
    ]


def test_load_graph_assigns_sorted_ids_over_all_splits(tmp_path):
    write_dataset(tmp_path / "ds", SMALL)
    graph = load_graph("small", path=tmp_path / "ds", cache_dir=tmp_path / "cache")
    all_triples = [t for s in SPLITS for t in SMALL[s]]
    assert graph.entities == sorted({e for h, _, t in all_triples for e in (h, t)})
    assert graph.relations == sorted({r for _, r, _ in all_triples})
    assert graph.num_entities == 8
    assert graph.num_relations == 4
    for split in SPLITS:
        assert graph.splits[split].dtype == torch.int64
        assert graph.splits[split].shape == (len(SMALL[split]), 3)
        assert decode(graph, split) == SMALL[split]
    assert graph.all_triples().shape == (10, 3)
    assert graph.dropped == {}


def test_load_graph_drop_unseen_uses_train_vocabulary(tmp_path):
    write_dataset(tmp_path / "ds", SMALL)
    graph = load_graph("small", path=tmp_path / "ds", drop_unseen=True, cache_dir=tmp_path / "cache")
    train_entities = {e for h, _, t in SMALL["train"] for e in (h, t)}
    train_relations = {r for _, r, _ in SMALL["train"]}
    assert graph.entities == sorted(train_entities)
    assert graph.relations == sorted(train_relations)
    for split in SPLITS:
        kept = [
            (h, r, t)
            for h, r, t in SMALL[split]
            if h in train_entities and t in train_entities and r in train_relations
        ]
        assert decode(graph, split) == kept
        assert graph.dropped[split] == len(SMALL[split]) - len(kept)
    assert graph.dropped == {"train": 0, "valid": 1, "test": 2}


def test_load_graph_drop_unseen_can_empty_a_split(tmp_path):
    splits = {
        "train": [("a", "r", "b")],
        "valid": [("a", "r", "c")],
        "test": [("a", "s", "b"), ("a", "r", "b")],
    }
    write_dataset(tmp_path / "ds", splits)
    graph = load_graph("tiny", path=tmp_path / "ds", drop_unseen=True, cache_dir=tmp_path / "cache")
    assert graph.valid.shape == (0, 3)
    assert decode(graph, "test") == [("a", "r", "b")]
    assert graph.dropped == {"train": 0, "valid": 1, "test": 1}


def test_load_graph_uses_encoded_cache(tmp_path, monkeypatch):
    folder, cache = tmp_path / "ds", tmp_path / "cache"
    write_dataset(folder, SMALL)
    first = load_graph("small", path=folder, cache_dir=cache)
    cached = list((cache / "encoded").iterdir())
    assert len(cached) == 1
    assert cached[0].name.startswith("small-") and cached[0].suffix == ".pt"

    def fail(path):
        raise AssertionError(f"read_triples called for {path}")

    monkeypatch.setattr(graph_module, "read_triples", fail)
    second = load_graph("small", path=folder, cache_dir=cache)
    assert second.entities == first.entities
    assert second.relations == first.relations
    assert second.fingerprint == first.fingerprint
    for split in SPLITS:
        assert torch.equal(second.splits[split], first.splits[split])
        assert decode(second, split) == SMALL[split]

    # drop_unseen is part of the cache key: a new entry, so the files are read again
    with pytest.raises(AssertionError, match="read_triples called"):
        load_graph("small", path=folder, drop_unseen=True, cache_dir=cache)
    # and so is the content of the split files
    (folder / "test.txt").write_bytes(to_bytes(SMALL["test"][:1]))
    with pytest.raises(AssertionError, match="read_triples called"):
        load_graph("small", path=folder, cache_dir=cache)
    monkeypatch.undo()
    third = load_graph("small", path=folder, cache_dir=cache)
    assert decode(third, "test") == SMALL["test"][:1]
    assert third.fingerprint != first.fingerprint
    assert len(list((cache / "encoded").glob("small-*.pt"))) == 2
    assert not [p for p in (cache / "encoded").iterdir() if p.suffix != ".pt"]


def test_load_graph_missing_split_file(tmp_path):
    folder = tmp_path / "ds"
    write_dataset(folder, {"train": SMALL["train"], "test": SMALL["test"]})
    with pytest.raises(FileNotFoundError) as info:
        load_graph("small", path=folder, cache_dir=tmp_path / "cache")
    assert "dataset.path" in str(info.value)
    assert str(folder / "valid.txt") in str(info.value)


def test_load_graph_reports_malformed_split(tmp_path):
    folder = tmp_path / "ds"
    write_dataset(folder, SMALL)
    (folder / "valid.txt").write_bytes(b"a\tb\tc\nbroken line\n")
    with pytest.raises(TripleFormatError, match=re.escape(f"{folder / 'valid.txt'}:2")):
        load_graph("small", path=folder, cache_dir=tmp_path / "cache")


# --------------------------------------------------------------------------------------------------
# KGDataModule
# --------------------------------------------------------------------------------------------------


@pytest.fixture
def module_dataset(tmp_path):
    splits = random_splits(0, 40, 4, {"train": 150, "valid": 23, "test": 19})
    write_dataset(tmp_path / "ds", splits)
    return tmp_path / "ds", tmp_path / "cache", splits


def make_module(dataset, seed=0, batch_size=16, eval_batch_size=7) -> KGDataModule:
    folder, cache, _ = dataset
    module = KGDataModule(
        "rand",
        path=str(folder),
        cache_dir=str(cache),
        batch_size=batch_size,
        eval_batch_size=eval_batch_size,
        seed=seed,
    )
    module.prepare_data()
    module.setup("fit")
    return module


def epoch_rows(loader) -> list[tuple[tuple[int, int, int], float]]:
    rows = []
    for triples, weights in loader:
        assert triples.shape[0] == weights.shape[0]
        rows.extend(zip(map(tuple, triples.tolist()), weights.tolist(), strict=True))
    return rows


def test_train_batches_cover_each_triple_once_per_epoch(module_dataset):
    module = make_module(module_dataset, batch_size=16)
    train = [tuple(t) for t in module.graph.train.tolist()]
    assert len(set(train)) == len(train)
    loader = module.train_dataloader()
    sizes = [len(triples) for triples, _ in loader]
    assert sizes == [16] * (len(train) // 16) + ([len(train) % 16] if len(train) % 16 else [])
    first = [t for t, _ in epoch_rows(loader)]
    assert [t for t, _ in epoch_rows(loader)] == first  # an epoch's order is fixed by (seed, epoch)
    loader.sampler.steps_done = lambda: len(sizes)  # the trainer's global step after one epoch
    second = [t for t, _ in epoch_rows(loader)]
    for order in (first, second):
        assert Counter(order) == Counter(train)
        assert len(order) == len(train)
    assert first != train  # shuffled
    assert first != second  # reshuffled every epoch


def test_train_order_depends_on_seed_only(module_dataset):
    order = [
        [t for t, _ in epoch_rows(make_module(module_dataset, seed=s).train_dataloader())] for s in (7, 7, 8)
    ]
    assert order[0] == order[1]
    assert order[0] != order[2]
    assert sorted(order[0]) == sorted(order[2])


def test_eval_loaders_return_all_triples_in_order(module_dataset):
    module = make_module(module_dataset, eval_batch_size=7)
    for loader, split in ((module.val_dataloader(), "valid"), (module.test_dataloader(), "test")):
        batches = list(loader)
        assert all(isinstance(b, torch.Tensor) for b in batches)
        assert [len(b) for b in batches[:-1]] == [7] * (len(batches) - 1)
        assert torch.equal(torch.cat(batches), module.graph.splits[split])
        assert decode(module.graph, split) == module_dataset[2][split]


def test_subsampling_weights_brute_force(module_dataset):
    module = make_module(module_dataset)
    train = module.graph.train.tolist()
    hr = Counter((h, r) for h, r, _ in train)
    tr = Counter((t, r) for _, r, t in train)
    expected = [1.0 / math.sqrt(hr[(h, r)] + tr[(t, r)] + 6) for h, r, t in train]
    assert module.train_weights.shape == (len(train),)
    assert module.train_weights.tolist() == pytest.approx(expected, rel=1e-6)
    # some (h, r) and (t, r) pairs occur more than once, so the counts matter
    assert max(hr.values()) > 1 and max(tr.values()) > 1
    # the loader hands out each triple with its own weight
    weight_of = {tuple(t): w for t, w in zip(train, expected, strict=True)}
    for triple, weight in epoch_rows(module.train_dataloader()):
        assert weight == pytest.approx(weight_of[triple], rel=1e-6)


@pytest.mark.parametrize(
    ("key", "kwargs"),
    [("data.batch_size", {"batch_size": 0}), ("data.eval_batch_size", {"eval_batch_size": -1})],
)
def test_datamodule_rejects_non_positive_batch_sizes(key, kwargs):
    with pytest.raises(ValueError, match=re.escape(key)):
        KGDataModule("x", **kwargs)


# --------------------------------------------------------------------------------------------------
# atomic_path
# --------------------------------------------------------------------------------------------------


def test_atomic_path_exception_leaves_target_untouched(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("original")
    with pytest.raises(RuntimeError, match="boom"), atomic_path(target) as tmp:
        assert tmp.parent == tmp_path
        assert tmp != target
        tmp.write_text("half written")
        raise RuntimeError("boom")
    assert target.read_text() == "original"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_atomic_path_exception_without_existing_target(tmp_path):
    target = tmp_path / "new" / "out.txt"
    with pytest.raises(KeyError), atomic_path(target) as tmp:
        tmp.write_text("x")
        raise KeyError("boom")
    assert not target.exists()
    assert list(target.parent.iterdir()) == []


def test_atomic_path_success_replaces_content(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("original")
    with atomic_path(target) as tmp:
        tmp.write_text("replacement")
        assert target.read_text() == "original"  # not visible before the block ends
    assert target.read_text() == "replacement"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_invalid_utf8_after_a_bom_names_the_right_line(tmp_path):
    path = tmp_path / "bom.txt"
    path.write_bytes(b"\xef\xbb\xbfa\tb\tc\n\xff\tb\tc\n")
    with pytest.raises(TripleFormatError, match=re.escape(f"{path}:2:")):
        read_triples(path)


def test_truncated_download_tries_the_next_url(server, tmp_path, monkeypatch):
    from http.server import BaseHTTPRequestHandler

    class Truncating(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b"abc")

        def log_message(self, *args):
            pass

    broken = ThreadingHTTPServer(("127.0.0.1", 0), Truncating)
    thread = threading.Thread(target=broken.serve_forever, daemon=True)
    thread.start()
    try:
        data = to_bytes(SMALL["train"])
        good = server.put("ds/train.txt", data)
        cut = f"http://127.0.0.1:{broken.server_address[1]}/train.txt"
        destination = tmp_path / "dest" / "train.txt"
        download(RemoteFile(f"sha256:{sha256_hex(data)}", (cut, good)), destination)
        assert destination.read_bytes() == data
    finally:
        broken.shutdown()
        broken.server_close()
        thread.join(timeout=5)
