"""Checksum-verified downloads and the lookup order of a named dataset's split files."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import urllib.error
import urllib.request
from pathlib import Path

from kgexp.data.registry import SPLITS, DatasetSpec, RemoteFile
from kgexp.errors import UserError
from kgexp.runtime.atomic import atomic_path

log = logging.getLogger(__name__)

DATA_DIR_ENV = "KGEXP_DATA_DIR"
CACHE_DIR_ENV = "KGEXP_CACHE_DIR"


class DatasetNotFoundError(UserError, RuntimeError):
    """The dataset is in no local folder and could not be downloaded."""


class ChecksumError(UserError, RuntimeError):
    """A downloaded file does not match its registered checksum."""


def default_cache_dir() -> Path:
    """``$KGEXP_CACHE_DIR``, else ``$XDG_CACHE_HOME/kgexp``, else ``~/.cache/kgexp``."""
    if os.environ.get(CACHE_DIR_ENV):
        return Path(os.environ[CACHE_DIR_ENV]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "kgexp"


def resolve_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """``cache_dir`` (user-expanded) if given, else :func:`default_cache_dir`."""
    return Path(cache_dir).expanduser() if cache_dir else default_cache_dir()


def file_checksum(path: Path, algorithm: str) -> str:
    """Hex digest of a file: ``sha256`` of its bytes or ``gitsha1``, git's blob id."""
    if algorithm == "sha256":
        digest = hashlib.sha256()
    elif algorithm == "gitsha1":
        digest = hashlib.sha1(usedforsecurity=False)
        digest.update(f"blob {path.stat().st_size}\0".encode())
    else:
        raise ValueError(f"unknown checksum algorithm {algorithm!r}; expected sha256 or gitsha1")
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify(path: Path, checksum: str) -> None:
    """Raise :class:`ChecksumError` unless ``path`` matches ``checksum`` (``algo:hex``)."""
    algorithm, _, expected = checksum.partition(":")
    actual = file_checksum(path, algorithm)
    if actual != expected:
        raise ChecksumError(f"{path}: {algorithm} is {actual}, expected {expected}")


def download(remote: RemoteFile, destination: Path, timeout: float = 60.0) -> Path:
    """Fetch ``remote`` into ``destination``: written under a temporary name, verified, then renamed.

    Each URL is tried in turn. A checksum mismatch removes the temporary file and raises at once:
    a mirror serving other bytes is an error, not a reason to try the next URL.
    """
    errors = []
    for url in remote.urls:
        try:
            with atomic_path(destination) as tmp:
                with tmp.open("wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
                    shutil.copyfileobj(response, out, 1 << 20)
                    expected = response.headers.get("Content-Length")
                if expected is not None and tmp.stat().st_size != int(expected):
                    raise OSError(f"connection closed after {tmp.stat().st_size} of {expected} bytes")
                verify(tmp, remote.checksum)
        except ChecksumError as error:
            raise ChecksumError(f"download from {url} failed verification: {error}") from None
        except (urllib.error.URLError, OSError, TimeoutError) as error:
            errors.append(f"{url}: {error}")
        else:
            log.info("downloaded %s -> %s", url, destination)
            return destination
    raise DatasetNotFoundError("could not download " + "; ".join(errors))


def locate_split_files(spec: DatasetSpec, cache_dir: Path | None = None) -> dict[str, Path]:
    """Find the split files of a registered dataset, downloading them if needed.

    Lookup order: ``$KGEXP_DATA_DIR/<name>/``, the cache ``<cache_dir>/<name>/``, then a download
    into the cache. Files in the cache are verified once, when they are written.
    """
    cache = (cache_dir or default_cache_dir()) / spec.name
    looked_in = []
    mirror_root = os.environ.get(DATA_DIR_ENV)
    if mirror_root:
        mirror = Path(mirror_root).expanduser() / spec.name
        looked_in.append(str(mirror))
        if all((mirror / f"{s}.txt").is_file() for s in SPLITS):
            return {s: mirror / f"{s}.txt" for s in SPLITS}
    looked_in.append(str(cache))
    paths = {}
    for split in SPLITS:
        target = cache / f"{split}.txt"
        if not target.is_file():
            try:
                download(spec.files[split], target)
            except DatasetNotFoundError as error:
                raise DatasetNotFoundError(
                    f"dataset {spec.name!r}: {split}.txt is not in {' or '.join(looked_in)}, and {error}. "
                    f"Without network access, put train.txt/valid.txt/test.txt into "
                    f"$KGEXP_DATA_DIR/{spec.name}/ (export KGEXP_DATA_DIR=/path/to/datasets)."
                ) from None
        paths[split] = target
    return paths
