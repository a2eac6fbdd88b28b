"""A resume must train what its checkpoint trained: the config check before any work."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from kgexp.cli import config_dir
from kgexp.commands.train import check_resume, resume_path
from kgexp.config import ConfigError, register_schemas


def composed(output_dir, *overrides: str):
    register_schemas()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("config", overrides=list(overrides))
    OmegaConf.update(cfg, "output_dir", str(output_dir))
    return cfg


def checkpoint_of(cfg, path, global_step: int = 0) -> None:
    """The parts of a Lightning checkpoint that the check reads."""
    path.parent.mkdir(parents=True, exist_ok=True)
    config = OmegaConf.to_container(cfg, resolve=True)
    checkpoint = {"kgexp": {"format": 1}, "hyper_parameters": {"config": config}, "global_step": global_step}
    torch.save(checkpoint, path)


def test_last_is_this_runs_last_checkpoint_once_there_is_one(tmp_path):
    cfg = composed(tmp_path, "ckpt_path=last")
    assert resume_path(cfg) is None  # a fresh start: nothing to compare
    checkpoint_of(cfg, tmp_path / "checkpoints" / "last.ckpt")
    assert resume_path(cfg) == tmp_path / "checkpoints" / "last.ckpt"
    assert resume_path(composed(tmp_path, "ckpt_path='~/x.ckpt'")) == Path.home() / "x.ckpt"


def test_a_resume_may_run_longer_elsewhere_and_log_differently(tmp_path):
    last = tmp_path / "checkpoints" / "last.ckpt"
    checkpoint_of(composed(tmp_path, "trainer.max_steps=100"), last, global_step=100)
    longer = composed(tmp_path, "ckpt_path=last", "trainer.max_steps=500", "logger=csv", "trainer=cpu")
    assert check_resume(longer) == 100  # the step the loggers continue from
    assert check_resume(composed(tmp_path / "fresh", "ckpt_path=last")) is None  # no last.ckpt yet


def test_a_resume_with_other_training_options_is_refused_listing_each_key(tmp_path):
    checkpoint_of(composed(tmp_path, "model.dim=100", "sampler.num_negatives=256"), tmp_path / "run.ckpt")
    other = composed(
        tmp_path, f"ckpt_path={tmp_path / 'run.ckpt'}", "model.dim=200", "sampler.num_negatives=64"
    )
    with pytest.raises(ConfigError) as info:
        check_resume(other)
    message = str(info.value)
    assert message.startswith(f"ckpt_path: {tmp_path / 'run.ckpt'} was trained with another config")
    assert "model.dim (checkpoint 100, now 200)" in message
    assert "sampler.num_negatives (checkpoint 256, now 64)" in message
    assert message.count("(checkpoint") == 2  # nothing else differs


def test_keys_a_checkpoint_predates_are_not_compared(tmp_path):
    cfg = composed(tmp_path)
    config = OmegaConf.to_container(cfg, resolve=True)
    del config["sampler"]["max_redraws"]  # an option added after the checkpoint was written
    (tmp_path / "old.ckpt").parent.mkdir(exist_ok=True)
    torch.save({"kgexp": {}, "hyper_parameters": {"config": config}, "global_step": 7}, tmp_path / "old.ckpt")
    check_resume(composed(tmp_path, f"ckpt_path={tmp_path / 'old.ckpt'}"))
