"""Checkpoint files: atomic writes, and the errors of a file that is missing or not a kgexp checkpoint."""

from __future__ import annotations

import pytest
import torch

from kgexp.runtime.checkpointing import AtomicCheckpointIO, load_checkpoint


def test_a_missing_checkpoint_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"ckpt: no checkpoint file at {tmp_path / 'none.ckpt'}"):
        load_checkpoint(tmp_path / "none.ckpt")


@pytest.mark.parametrize(
    "content",
    [{"state_dict": {}}, {"kgexp": {}, "hyper_parameters": {}}, {"hyper_parameters": {"config": {}}}],
    ids=["plain Lightning", "no config", "no kgexp state"],
)
def test_a_checkpoint_of_something_else_is_named(tmp_path, content):
    path = tmp_path / "other.ckpt"
    torch.save(content, path)
    with pytest.raises(ValueError, match=f"ckpt: {path} is not a kgexp checkpoint"):
        load_checkpoint(path)


def test_a_kgexp_checkpoint_round_trips_through_the_atomic_writer(tmp_path):
    content = {"kgexp": {"vocabulary": None}, "hyper_parameters": {"config": {"seed": 3}}, "w": torch.ones(2)}
    path = tmp_path / "checkpoints" / "last.ckpt"
    path.parent.mkdir()
    AtomicCheckpointIO().save_checkpoint(content, path)
    loaded = load_checkpoint(path)
    assert loaded["hyper_parameters"] == {"config": {"seed": 3}} and torch.equal(loaded["w"], torch.ones(2))
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]  # no temporary file left behind
