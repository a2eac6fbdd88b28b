"""Checkpoint files: atomic writes, and the errors of a file that is missing or not a kgexp checkpoint."""

from __future__ import annotations

import pathlib

import pytest
import torch

from kgexp.errors import MissingFileError
from kgexp.runtime.checkpointing import FORMAT, AtomicCheckpointIO, CheckpointError, load_checkpoint


def test_a_missing_checkpoint_is_named(tmp_path):
    with pytest.raises(MissingFileError, match=f"ckpt: no checkpoint file at {tmp_path / 'none.ckpt'}"):
        load_checkpoint(tmp_path / "none.ckpt")


@pytest.mark.parametrize(
    "content",
    [{"state_dict": {}}, {"kgexp": {}, "hyper_parameters": {}}, {"hyper_parameters": {"config": {}}}],
    ids=["plain Lightning", "no config", "no kgexp state"],
)
def test_a_checkpoint_of_something_else_is_named(tmp_path, content):
    path = tmp_path / "other.ckpt"
    torch.save(content, path)
    with pytest.raises(CheckpointError, match=f"ckpt: {path} is not a kgexp checkpoint"):
        load_checkpoint(path)


def test_a_kgexp_checkpoint_round_trips_through_the_atomic_writer(tmp_path):
    content = {"kgexp": {"vocabulary": None}, "hyper_parameters": {"config": {"seed": 3}}, "w": torch.ones(2)}
    path = tmp_path / "checkpoints" / "last.ckpt"
    path.parent.mkdir()
    AtomicCheckpointIO().save_checkpoint(content, path)
    loaded = load_checkpoint(path)
    assert loaded["hyper_parameters"] == {"config": {"seed": 3}} and torch.equal(loaded["w"], torch.ones(2))
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]  # no temporary file left behind


class RunsOnLoad:
    """Unpickling this calls ``Path.touch`` on ``marker``: what a crafted checkpoint would do."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


@pytest.mark.parametrize("loader", ["load_checkpoint", "lightning_resume"])
def test_a_checkpoint_carrying_a_pickled_callable_is_refused_without_running_it(tmp_path, loader):
    marker, path = tmp_path / "ran", tmp_path / "crafted.ckpt"
    content = {"kgexp": {}, "hyper_parameters": {"config": {}}, "payload": RunsOnLoad(marker)}
    torch.save(content, path)
    load = load_checkpoint if loader == "load_checkpoint" else AtomicCheckpointIO().load_checkpoint
    with pytest.raises(CheckpointError, match=f"{path} is not a checkpoint kgexp can load safely"):
        load(path)
    assert not marker.exists()
    torch.load(path, weights_only=False)  # the same file, loaded unsafely, does run the call
    assert marker.exists()


@pytest.mark.parametrize(
    "data",
    [b"", b"not a checkpoint at all\n", b"PK\x03\x04truncated"],
    ids=["empty", "text", "truncated zip"],
)
def test_a_corrupt_file_is_one_line_naming_it(tmp_path, data):
    path = tmp_path / "broken.ckpt"
    path.write_bytes(data)
    with pytest.raises(CheckpointError, match=f"^ckpt: {path} is not a") as info:
        load_checkpoint(path)
    assert "\n" not in str(info.value)


def test_a_checkpoint_of_a_newer_format_is_refused_naming_both_formats(tmp_path):
    path = tmp_path / "future.ckpt"
    torch.save({"kgexp": {"format": FORMAT + 1, "version": "9.0"}, "hyper_parameters": {"config": {}}}, path)
    with pytest.raises(
        CheckpointError, match=rf"kgexp 9\.0 \(checkpoint format {FORMAT + 1}\); .* format {FORMAT}"
    ):
        load_checkpoint(path)
    torch.save({"kgexp": {}, "hyper_parameters": {"config": {}}}, path)  # before formats: format 1
    assert load_checkpoint(path)["kgexp"] == {}
