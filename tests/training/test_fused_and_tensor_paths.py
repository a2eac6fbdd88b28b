"""Training through the fused CPU kernels and through plain tensor ops (the path off the CPU) gives the
same run: the same losses step by step and the same weights, for every model, uniform negatives and EMU.

Which path ran is checked, not assumed: the fused autograd Functions' ``apply`` and the models'
``compare_each`` (the tensor-op scorer) are counted during training.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
from conftest import compose_config, quiet_trainer, write_toy_dataset
from probes import count_calls_of

from kgexp import kernels
from kgexp.config.build import build_datamodule, build_module
from kgexp.data.datamodule import KGDataModule
from kgexp.models.base import BilinearModel, DistanceModel
from kgexp.sides import HEAD, TAIL, split_query
from kgexp.training.module import LinkPredictionModule

MODELS = ("transe", "distmult", "complex", "rotate")
STEPS = 6  # three tail-corrupted and three head-corrupted batches (sides alternate)
NUM_NEGATIVES = 6


@pytest.fixture(scope="module")
def toy_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_toy_dataset(tmp_path_factory.mktemp("toy") / "toy")


def toy_config(folder: Path, model: str, *overrides: str):
    return compose_config(
        "dataset=custom",
        f"dataset.path={folder}",
        f"model={model}",
        "model.dim=8",
        "optimizer=sgd",  # Adagrad's and Adam's first steps are lr * sign(g): rounding could flip one
        "optimizer.lr=0.5",
        "schedule=none",
        f"sampler.num_negatives={NUM_NEGATIVES}",
        "data.batch_size=16",
        *overrides,
        output_dir=folder.parent / "run",
    )


def built(cfg) -> tuple[LinkPredictionModule, KGDataModule]:
    """The run's module and datamodule, as ``kgexp train`` builds them; weights seeded by ``cfg.seed``."""
    datamodule = build_datamodule(cfg)
    datamodule.prepare_data()
    datamodule.setup("fit")
    torch.manual_seed(cfg.seed)
    module = build_module(cfg, datamodule.graph.num_entities, datamodule.graph.num_relations)
    return module, datamodule


class StepLosses(pl.Callback):
    """The loss of every training step, as ``training_step`` returned it."""

    def __init__(self) -> None:
        self.values: list[float] = []

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, *_
    ) -> None:
        self.values.append(float(outputs["loss"]))


def fit(module: LinkPredictionModule, datamodule: KGDataModule, root: Path, steps: int, *callbacks) -> None:
    trainer = quiet_trainer(steps, root, *callbacks)
    trainer.fit(module, datamodule=datamodule)
    assert trainer.global_step == steps


def count_calls(monkeypatch: pytest.MonkeyPatch) -> Counter:
    """Counts, by name, calls of the fused training kernels and of the tensor-op scorer."""
    calls: Counter = Counter()
    for function in (kernels.ScoreEach, kernels.ScoreMutated):
        count_calls_of(monkeypatch, calls, function.__name__, function, "apply")
    for base in (BilinearModel, DistanceModel):
        count_calls_of(monkeypatch, calls, "compare_each", base, "compare_each")
    return calls


def train_on_path(
    path: str, cfg, root: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[list[float], dict[str, torch.Tensor], Counter]:
    """``STEPS`` steps of ``cfg`` with the fused kernels (``path="fused"``) or without (``"tensor"``):
    the step losses, the final weights and the calls counted."""
    with monkeypatch.context() as patch:
        if path == "tensor":
            patch.setattr(kernels, "available", lambda: False)  # as where no compiler is found
        else:
            assert kernels.available(), "the fused kernels did not build (is a C++ compiler installed?)"
        calls = count_calls(patch)
        module, datamodule = built(cfg)
        initial = {k: v.clone() for k, v in module.model.state_dict().items()}
        losses = StepLosses()
        fit(module, datamodule, root / path, STEPS, losses)
        weights = {k: v.detach().clone() for k, v in module.model.state_dict().items()}
    for name, value in weights.items():
        assert not torch.equal(value, initial[name]), f"{name} did not train"
    return losses.values, weights, calls


@pytest.mark.parametrize("sampler", ["uniform", "emu"])
@pytest.mark.parametrize("model", MODELS)
def test_fused_kernels_and_tensor_ops_train_the_same_run(toy_folder, tmp_path, monkeypatch, model, sampler):
    cfg = toy_config(toy_folder, model, f"sampler={sampler}")
    fused_losses, fused_weights, fused_calls = train_on_path("fused", cfg, tmp_path, monkeypatch)
    tensor_losses, tensor_weights, tensor_calls = train_on_path("tensor", cfg, tmp_path, monkeypatch)

    # (a) which path ran: the vanilla scores (and EMU's mutated ones) through the kernels, or not at all
    assert fused_calls["ScoreEach"] == STEPS and fused_calls["compare_each"] == 0
    assert fused_calls["ScoreMutated"] == (STEPS if sampler == "emu" else 0)
    assert tensor_calls["ScoreEach"] == tensor_calls["ScoreMutated"] == 0
    assert tensor_calls["compare_each"] == (2 if sampler == "emu" else 1) * STEPS

    # (b) the same negatives, masks and arithmetic up to float32 rounding: the same run (measured: losses
    # and weights agree to 2e-7 relative; a wrong gradient or mask would move them by far more)
    assert len(fused_losses) == len(tensor_losses) == STEPS
    torch.testing.assert_close(torch.tensor(fused_losses), torch.tensor(tensor_losses), rtol=1e-5, atol=1e-6)
    assert fused_losses[0] != pytest.approx(fused_losses[-1], rel=1e-3)  # the losses do move: a real check
    for name, weight in fused_weights.items():
        torch.testing.assert_close(weight, tensor_weights[name], rtol=1e-5, atol=1e-5, msg=name)


# -- EMU's fixed-count mask: tensor ops only ---------------------------------------------------------
def textbook_distmult(head: torch.Tensor, relation: torch.Tensor, tail: torch.Tensor) -> torch.Tensor:
    return (head * relation * tail).sum(-1)


def log_softmax(scores: torch.Tensor) -> torch.Tensor:
    return scores - scores.exp().sum(-1, keepdim=True).log()


class StepRecorder(pl.Callback):
    """Per step: the weights before it (float64), the batch, the negatives drawn, the masks, the loss."""

    def __init__(self) -> None:
        self.steps: list[dict[str, Any]] = []

    def on_fit_start(self, trainer: pl.Trainer, pl_module: LinkPredictionModule) -> None:
        sample, keep_mask = pl_module.negatives.sampler.sample, pl_module.emu.mutate.keep_mask

        def recording_sample(*args, **kwargs):
            ids = sample(*args, **kwargs)
            self.steps[-1]["negatives"].append((args[2], ids.clone()))  # (side, ids)
            return ids

        def recording_mask(*args, **kwargs):
            keep = keep_mask(*args, **kwargs)
            self.steps[-1]["masks"].append(keep.clone())
            return keep

        pl_module.negatives.sampler.sample = recording_sample
        pl_module.emu.mutate.keep_mask = recording_mask

    def on_train_batch_start(self, trainer, pl_module: LinkPredictionModule, batch, batch_idx) -> None:
        model = pl_module.model
        self.steps.append(
            {
                "entity": model.entity.weight.detach().double().clone(),
                "relation": model.relation.weight.detach().double().clone(),
                "triples": batch[0].clone(),
                "negatives": [],
                "masks": [],
            }
        )

    def on_train_batch_end(self, trainer, pl_module, outputs: Any, batch, batch_idx) -> None:
        self.steps[-1]["loss"] = float(outputs["loss"])


def emu_loss_by_hand(step: dict[str, Any], beta: float, alpha: float) -> float:
    """EMU's loss of one recorded DistMult step, from its definition, in float64 (one side per step)."""
    (side, vanilla_negatives), (side_again, emu_negatives) = step["negatives"]
    assert side == side_again
    (keep,) = step["masks"]
    entity, relation = step["entity"], step["relation"]
    anchors, relations, targets = split_query(step["triples"], side)
    anchor, rel = entity[anchors].unsqueeze(1), relation[relations].unsqueeze(1)

    def scores(candidates: torch.Tensor) -> torch.Tensor:  # DistMult is symmetric in head and tail
        return textbook_distmult(anchor, rel, candidates)

    vanilla = scores(entity[torch.cat([targets.unsqueeze(1), vanilla_negatives], 1)])
    candidates = entity[torch.cat([targets.unsqueeze(1), emu_negatives], 1)]
    mutated = scores(torch.where(keep, candidates, candidates[:, :1]))  # a copied coordinate: the positive's
    labels = torch.full_like(mutated, beta)
    labels[:, 0] = 1.0
    num_negatives = emu_negatives.shape[1]
    emu_term = -(labels * log_softmax(mutated)).sum(-1).mean() / num_negatives
    plain_term = -log_softmax(vanilla)[:, 0].mean()
    return float(emu_term + alpha * plain_term)


def test_emu_with_a_fixed_count_mask_trains_on_tensor_ops_as_its_definition_says(
    toy_folder, tmp_path, monkeypatch
):
    """The fixed-count mask has no fused kernel: its mutated scores take the tensor ops even where the
    kernels are built (the vanilla scores still take them). Its loss is EMU's loss of the recorded
    negatives and masks, by hand, and training lowers it."""
    assert kernels.available()
    calls = count_calls(monkeypatch)
    cfg = toy_config(
        toy_folder, "distmult", "sampler=emu", "sampler.mask=fixed_count", "sampler.keep_prob=0.25"
    )
    module, datamodule = built(cfg)
    assert not module.emu.mutate.fused
    recorder = StepRecorder()
    steps = 40
    fit(module, datamodule, tmp_path, steps, recorder)

    assert calls["ScoreMutated"] == 0 and calls["compare_each"] == steps  # the mutation: tensor ops
    assert calls["ScoreEach"] == steps  # the vanilla term: the kernel
    dim = module.model.dim
    for step in recorder.steps[:2]:  # a tail-corrupted and a head-corrupted step
        (keep,) = step["masks"]
        assert keep.shape == (16, 1 + NUM_NEGATIVES, dim) and keep[:, 0].all()
        copied = (~keep[:, 1:]).sum(-1)
        assert (copied == round(0.75 * dim)).all()  # exactly round((1 - q) d) coordinates copied: 6 of 8
        expected = emu_loss_by_hand(step, beta=cfg.sampler.beta, alpha=cfg.sampler.alpha)
        assert step["loss"] == pytest.approx(expected, rel=1e-5)
    assert {side for step in recorder.steps[:2] for side, _ in step["negatives"]} == {TAIL, HEAD}

    losses = [step["loss"] for step in recorder.steps]
    assert all(math.isfinite(loss) for loss in losses)
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert last < 0.9 * first, (first, last)
