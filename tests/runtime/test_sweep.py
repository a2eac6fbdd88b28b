"""A multirun with failed jobs names them and exits non-zero."""

from __future__ import annotations

import json
import os
import time

from kgexp.runtime.sweep import read_outcome


def write_status(folder, status: str, error: str | None = None, age_s: float = 0.0) -> None:
    folder.mkdir(parents=True)
    path = folder / "status.json"
    path.write_text(json.dumps({"status": status, **({"error": error} if error else {})}))
    if age_s:
        stamp = time.time() - age_s
        os.utime(path, (stamp, stamp))


def test_the_failed_jobs_of_this_multirun_are_read_from_their_status(tmp_path):
    write_status(tmp_path / "0", "finished")
    write_status(tmp_path / "1", "failed", "ConfigError: model.dim: expected a value >= 1, got 0")
    write_status(tmp_path / "2", "failed", "an earlier sweep's failure", age_s=3600)
    write_status(tmp_path / "10", "failed", "RuntimeError: out of memory")
    write_status(tmp_path / "3", "running")
    assert read_outcome(tmp_path, since=time.time() - 60) == {
        tmp_path / "0": ("finished", ""),
        tmp_path / "1": ("failed", "ConfigError: model.dim: expected a value >= 1, got 0"),
        tmp_path / "3": ("running", ""),
        tmp_path / "10": ("failed", "RuntimeError: out of memory"),
    }
