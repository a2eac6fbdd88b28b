"""Shared test setup: a private dataset cache, W&B off, and access to the dataset mirror."""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import torch
from omegaconf import DictConfig, OmegaConf

from kgexp.config import register_schemas
from kgexp.data.graph import KnowledgeGraph
from kgexp.training.negatives import SamplerSetup

if TYPE_CHECKING:
    import pytorch_lightning as pl

os.environ.setdefault("KGEXP_CACHE_DIR", tempfile.mkdtemp(prefix="kgexp-test-cache-"))
os.environ["WANDB_MODE"] = "disabled"  # the one test that reads W&B records turns it on (offline)
os.environ.pop("WANDB_API_KEY", None)

REPO = Path(__file__).resolve().parents[1]
register_schemas()  # tests compose configs with Hydra's compose API, as kgexp's commands do


def mirror_dataset(name: str) -> Path:
    """A real dataset from the offline mirror ``$KGEXP_DATA_DIR`` (``make test`` and CI set it)."""
    root = os.environ.get("KGEXP_DATA_DIR")
    if not root or not (Path(root) / name / "train.txt").is_file():
        pytest.fail(f"dataset {name!r} not found: set KGEXP_DATA_DIR to a folder holding {name}/train.txt")
    return Path(root) / name


def run_kgexp(
    *args: str, cwd: Path, check: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run ``python -m kgexp ARGS`` in a subprocess, as a user would (``env``: variables to add)."""
    result = subprocess.run(
        [sys.executable, "-m", "kgexp", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, **(env or {})},
    )
    if check and result.returncode != 0:
        raise AssertionError(f"kgexp {' '.join(args)} failed ({result.returncode}):\n{result.stderr[-4000:]}")
    return result


def sampler_setup(
    train: torch.Tensor, num_entities: int, num_relations: int, cache_dir: Path, seed: int = 0
) -> SamplerSetup:
    """What a sampler's ``fit`` gets, for a toy graph of training triples only."""
    splits = {"train": train, "valid": train[:0], "test": train[:0]}
    fingerprint = hashlib.sha256(train.numpy().tobytes()).hexdigest()[:16]
    entities = [f"e{i}" for i in range(num_entities)]
    relations = [f"r{i}" for i in range(num_relations)]
    graph = KnowledgeGraph("toy", entities, relations, splits, fingerprint)
    return SamplerSetup(graph, cache_dir, seed)


def quiet_trainer(max_steps: int, root: Path, *callbacks: pl.Callback, **options) -> pl.Trainer:
    """A CPU Trainer with no logger, checkpoints, progress bar, model summary or validation, for few steps."""
    import pytorch_lightning as pl

    return pl.Trainer(
        max_steps=max_steps,
        max_epochs=-1,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        default_root_dir=str(root),
        callbacks=list(callbacks),
        **options,
    )


def compose_config(
    *overrides: str, config_name: str = "config", output_dir: Path | None = None
) -> DictConfig:
    """A kgexp config composed as the command composes it (Hydra's compose API, the repository's conf/),
    with ``output_dir`` in place of the Hydra run folder that only the command has."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from kgexp.cli import config_dir

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose(config_name, overrides=list(overrides))
    if output_dir is not None:
        OmegaConf.update(cfg, "output_dir", str(output_dir))
    return cfg


def write_toy_dataset(folder: Path, num_entities: int = 20, num_relations: int = 3, seed: int = 0) -> Path:
    """A small random graph in ``folder`` (train, valid, test), about 185 distinct triples."""
    rng = random.Random(seed)
    draws = (
        f"e{rng.randrange(num_entities)}\tr{rng.randrange(num_relations)}\te{rng.randrange(num_entities)}"
        for _ in range(200)
    )
    lines = sorted(set(draws))
    folder.mkdir(parents=True, exist_ok=True)
    for split, part in (("train", lines[:-20]), ("valid", lines[-20:-10]), ("test", lines[-10:])):
        (folder / f"{split}.txt").write_text("\n".join(part) + "\n")
    return folder
