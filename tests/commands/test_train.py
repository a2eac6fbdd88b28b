"""``train()`` in process with MI-KGE on: a run stopped by SIGTERM and resumed with ``ckpt_path=last`` ends
as the uninterrupted run, MI heads and MINE's moving average included; its checkpoint evaluates and
exports as the trained module."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import compose_config, mirror_dataset
from pytorch_lightning.utilities.exceptions import SIGTERMException

from kgexp.commands.evaluate import evaluate
from kgexp.commands.export import export
from kgexp.commands.train import train
from kgexp.config.build import build_datamodule
from kgexp.config.loading import load_module
from kgexp.evaluation.prediction import Predictor
from kgexp.evaluation.ranking import rank_queries
from kgexp.sides import BOTH_SIDES

MAX_STEPS, KILL_AT = 16, 10  # Nations: 13 batches of 128 an epoch, so the resumed part crosses an epoch
RUN = (
    "dataset=nations",
    "model=distmult",
    "model.dim=16",
    "sampler.num_negatives=16",
    "data.batch_size=128",
    "logger=csv",
    f"trainer.max_steps={MAX_STEPS}",
    "trainer.val_check_interval=8",  # the optimiser switch (half of max_steps) is before the stop, too
    "callbacks.periodic_checkpoint.every_n_train_steps=4",
    "+callbacks.kill._target_=probes.KillAt",  # SIGTERM to this process after step KILL_AT ...
    f"+callbacks.kill.step={KILL_AT}",
    f"+callbacks.kill.signal={int(signal.SIGTERM)}",  # ... where KGEXP_TEST_KILL is set
)


def run_train(run_dir: Path, monkeypatch: pytest.MonkeyPatch, *extra: str, kill: bool = False):
    """``train()`` of RUN in ``run_dir``; the seeding variables it sets are restored afterwards."""
    for name in ("PL_GLOBAL_SEED", "PL_SEED_WORKERS", "KGEXP_TEST_KILL"):
        monkeypatch.delenv(name, raising=False)
    if kill:
        monkeypatch.setenv("KGEXP_TEST_KILL", "1")
    return train(compose_config(*RUN, *extra, output_dir=run_dir))


def checkpoint(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=False)


@pytest.fixture(scope="module", autouse=True)
def nations() -> Path:
    return mirror_dataset("nations")


@pytest.mark.parametrize("estimator", ["infonce", "mine"])
def test_an_mi_run_stopped_and_resumed_from_last_ends_as_the_uninterrupted_run(
    tmp_path, monkeypatch, estimator
):
    mi = (f"mi={estimator}",)
    straight = run_train(tmp_path / "straight", monkeypatch, *mi)
    run_dir = tmp_path / "stopped"
    with pytest.raises(SIGTERMException):
        run_train(run_dir, monkeypatch, *mi, kill=True)
    stopped = checkpoint(run_dir / "checkpoints" / "last.ckpt")
    assert stopped["global_step"] == KILL_AT
    assert not (run_dir / "metrics.json").exists()

    resumed = run_train(run_dir, monkeypatch, *mi, "ckpt_path=last")
    assert resumed == straight  # every metric, bit for bit
    expected = checkpoint(tmp_path / "straight" / "checkpoints" / "last.ckpt")
    final = checkpoint(run_dir / "checkpoints" / "last.ckpt")
    assert final["global_step"] == expected["global_step"] == MAX_STEPS
    heads = [name for name in expected["state_dict"] if name.startswith("mi.")]
    assert any(".query_heads." in name for name in heads) and any(".key_head." in name for name in heads)
    assert expected["state_dict"].keys() == final["state_dict"].keys()
    for name, value in expected["state_dict"].items():
        assert torch.equal(final["state_dict"][name], value), name
        if name in heads and value.is_floating_point() and name.endswith("weight"):  # the heads trained on
            assert not torch.equal(stopped["state_dict"][name], value), name
    for state, again in zip(expected["optimizer_states"], final["optimizer_states"], strict=True):
        for (key, a), b in zip(state["state"].items(), again["state"].values(), strict=True):
            assert all(torch.equal(a[k], b[k]) for k in a), key
    if estimator == "mine":  # the moving average of E[exp s] is state, checkpointed and resumed
        ema = "mi.estimator.log_ema"
        at_stop, at_end = stopped["state_dict"][ema], expected["state_dict"][ema]
        assert torch.isfinite(at_stop) and torch.isfinite(at_end) and at_stop != at_end


@pytest.fixture(scope="module")
def mi_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, float]]:
    """An uninterrupted InfoNCE run: its best checkpoint and its metrics."""
    run_dir = tmp_path_factory.mktemp("mi") / "run"
    with pytest.MonkeyPatch.context() as monkeypatch:
        metrics = run_train(run_dir, monkeypatch, "mi=infonce")
    return run_dir / "checkpoints" / "best.ckpt", metrics


def test_an_mi_checkpoint_evaluates_to_the_run_metrics(mi_run, tmp_path):
    best, trained = mi_run
    assert any(name.startswith("mi.") for name in checkpoint(best)["state_dict"])
    evaluated = evaluate(compose_config(f"ckpt={best}", config_name="evaluate", output_dir=tmp_path))
    assert set(evaluated) == set(trained)
    assert "val/intra_group/hr_tails" in evaluated  # the module rebuilt with its MI regulariser
    for key, value in trained.items():
        assert evaluated[key] == pytest.approx(value, abs=1e-9), key


def test_an_mi_checkpoint_exports_the_model_without_its_heads_and_ranks_the_same(mi_run, tmp_path):
    best, _ = mi_run
    module, cfg = load_module(best)  # strict: the MI heads of the checkpoint load into the rebuilt module
    assert module.mi is not None
    folder = export(best, tmp_path / "export")
    assert sorted(p.name for p in folder.iterdir()) == [
        "entities.npy",
        "entities.tsv",
        "model.json",
        "relations.npy",
        "relations.tsv",
    ]
    exported = Predictor.from_export(folder)
    datamodule = build_datamodule(cfg)
    datamodule.setup("test")
    test = datamodule.graph.test
    with torch.no_grad():
        expected = module.model.score_triples(*test.unbind(1))
    torch.testing.assert_close(exported.score_ids(test), expected, rtol=1e-6, atol=1e-6)
    for side in BOTH_SIDES:
        ranks = rank_queries(exported.model, test, side, datamodule.filter_index)
        reference = rank_queries(module.model, test, side, datamodule.filter_index)
        assert torch.equal(ranks.optimistic, reference.optimistic)
        assert torch.equal(ranks.pessimistic, reference.pessimistic)


def test_ckpt_path_last_without_a_checkpoint_starts_afresh(mi_run, tmp_path, monkeypatch):
    _, uninterrupted = mi_run
    assert run_train(tmp_path / "fresh", monkeypatch, "mi=infonce", "ckpt_path=last") == uninterrupted
