"""What a run records beside its results: versions, commit, command line, device, wall time."""

from __future__ import annotations

import platform
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch


def package_version() -> str:
    try:
        return version("kgexp")
    except PackageNotFoundError:
        return "unknown"


def git_commit() -> str:
    """The commit of the kgexp source tree (with ``-dirty`` for uncommitted changes), or ``unknown``."""
    source = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=source, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=source,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit + ("-dirty" if dirty else "")


def command_line() -> str:
    program = Path(sys.argv[0]).name
    program = "python -m kgexp" if program == "__main__.py" else program
    return " ".join([program, *sys.argv[1:]])


def collect(seed: int, device: str, wall_time_s: float, **extra: Any) -> dict[str, Any]:
    return {
        "package": "kgexp",
        "version": package_version(),
        "git_commit": git_commit(),
        "command": command_line(),
        "seed": seed,
        "device": device,
        "wall_time_s": round(wall_time_s, 3),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "hostname": platform.node(),
        **extra,
    }
