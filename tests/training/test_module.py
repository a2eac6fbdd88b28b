"""The LightningModule in process: the reference optimiser switch, seeding, and checkpoint contents."""

from __future__ import annotations

import random
import re
from types import SimpleNamespace

import pytest
import pytorch_lightning as pl
import torch

from kgexp.data.datamodule import KGDataModule
from kgexp.data.filter_index import FilterIndex
from kgexp.models import DistMult
from kgexp.training.emu import EMU
from kgexp.training.losses import SoftmaxCrossEntropy
from kgexp.training.module import LinkPredictionModule
from kgexp.training.negatives import NegativeSampling, NSCachingSampler, RWSANSSampler, UniformSampler
from kgexp.training.optim import OptimizerSwitch


@pytest.fixture
def toy_dataset(tmp_path):
    rng = random.Random(0)
    lines = {f"e{rng.randrange(20)}\tr{rng.randrange(3)}\te{rng.randrange(20)}" for _ in range(200)}
    lines = sorted(lines)
    folder = tmp_path / "toy"
    folder.mkdir()
    for split, part in (("train", lines[:-20]), ("valid", lines[-20:-10]), ("test", lines[-10:])):
        (folder / f"{split}.txt").write_text("\n".join(part) + "\n")
    return folder


def make_module(switch: OptimizerSwitch | None, seed: int = 0) -> LinkPredictionModule:
    model = DistMult(20, 3, dim=8)
    negatives = NegativeSampling(UniformSampler(num_negatives=5))
    optimizer = {"name": "adagrad", "lr": 0.2}
    return LinkPredictionModule(
        model, negatives, SoftmaxCrossEntropy(), None, optimizer, switch=switch, seed=seed
    )


def fit(module, folder, tmp_path, max_steps=10, ckpt_path=None, callbacks=()) -> pl.Trainer:
    datamodule = KGDataModule("toy", path=str(folder), batch_size=16, cache_dir=str(tmp_path / "cache"))
    trainer = pl.Trainer(
        max_steps=max_steps,
        max_epochs=-1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        default_root_dir=str(tmp_path),
        callbacks=list(callbacks),
    )
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    return trainer


def test_switch_replaces_adagrad_by_a_fresh_adam_at_a_tenth_of_the_rate(toy_dataset, tmp_path):
    seen = []

    class Spy(OptimizerSwitch):
        def maybe_switch(self, module):
            super().maybe_switch(module)
            optimizer = module.trainer.optimizers[0]
            seen.append(
                (module.trainer.global_step, type(optimizer).__name__, optimizer.param_groups[0]["lr"])
            )

    trainer = fit(make_module(Spy(fraction=0.5, lr_factor=0.1)), toy_dataset, tmp_path, max_steps=10)
    assert trainer.global_step == 10
    assert [s for s, name, _ in seen if name == "Adagrad"] == [0, 1, 2, 3, 4]
    assert [s for s, name, _ in seen if name == "Adam"] == [5, 6, 7, 8, 9]
    assert [lr for _, name, lr in seen if name == "Adam"] == pytest.approx([0.02] * 5)
    # One fresh optimiser, never re-created: the Adam state keeps accumulating steps.
    adam = trainer.optimizers[0]
    assert all(state["step"] == 5 for state in adam.state.values())


def test_same_seed_same_weights_different_seed_different(toy_dataset, tmp_path):
    def trained(seed):
        pl.seed_everything(seed)
        module = make_module(None, seed=seed)
        fit(module, toy_dataset, tmp_path / f"s{seed}-{random.random()}", max_steps=6)
        return module.model.entity.weight.detach().clone()

    first, again, other = trained(3), trained(3), trained(4)
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_checkpoint_carries_vocabulary_and_switch_state(toy_dataset, tmp_path):
    module = make_module(OptimizerSwitch(fraction=0.5))
    trainer = fit(module, toy_dataset, tmp_path, max_steps=4)
    path = tmp_path / "m.ckpt"
    trainer.save_checkpoint(path)
    checkpoint = torch.load(path, weights_only=False)
    assert checkpoint["kgexp"]["switched"] is True
    assert (
        checkpoint["kgexp"]["vocabulary"]["entities"]
        == sorted(module.vocabulary["entities"])
        == trainer.datamodule.graph.entities
    )


def test_resuming_after_the_switch_restores_the_adam_state(toy_dataset, tmp_path):
    module = make_module(OptimizerSwitch(fraction=0.5))
    trainer = fit(module, toy_dataset, tmp_path, max_steps=6)
    path = tmp_path / "after-switch.ckpt"
    trainer.save_checkpoint(path)

    resumed = make_module(OptimizerSwitch(fraction=0.5))
    trainer = fit(resumed, toy_dataset, tmp_path, max_steps=8, ckpt_path=path)
    optimizer = trainer.optimizers[0]
    assert type(optimizer).__name__ == "Adam"
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.02)
    assert all(state["step"] == 5 for state in optimizer.state.values())  # 3 steps before, 2 after resuming


def test_checkpoint_carries_the_nscaching_caches_and_resuming_restores_them(toy_dataset, tmp_path):
    def module_with_caches():
        module = make_module(None)
        module.negatives = NegativeSampling(NSCachingSampler(5, cache_size=4, candidates=4))
        return module

    module = module_with_caches()
    trainer = fit(module, toy_dataset, tmp_path, max_steps=5)
    caches = {side: cache.clone() for side, cache in module.negatives.sampler.caches.items()}
    path = tmp_path / "nscaching.ckpt"
    trainer.save_checkpoint(path)
    saved = torch.load(path, weights_only=False)["kgexp"]["sampler"]
    assert torch.equal(saved["tail_cache"], caches["tail"]) and torch.equal(
        saved["head_cache"], caches["head"]
    )

    restored = []

    class Spy(NSCachingSampler):
        def load_state_dict(self, state):
            super().load_state_dict(state)
            restored.append({side: cache.clone() for side, cache in self.caches.items()})

    resumed = make_module(None)
    resumed.negatives = NegativeSampling(Spy(5, cache_size=4, candidates=4))
    fit(resumed, toy_dataset, tmp_path, max_steps=6, ckpt_path=path)
    assert torch.equal(restored[0]["tail"], caches["tail"]) and torch.equal(
        restored[0]["head"], caches["head"]
    )


def test_structured_samplers_cache_their_neighbourhood_in_the_dataset_cache(toy_dataset, tmp_path):
    module = make_module(None)
    module.negatives = NegativeSampling(RWSANSSampler(5, hops=2, walks=10))
    fit(module, toy_dataset, tmp_path, max_steps=2)
    files = list((tmp_path / "cache" / "neighbourhoods").glob("*-rwsans-k2-w10-restart-seed0-v1.pt"))
    assert len(files) == 1


def test_validation_logs_intra_group_similarity_when_mi_is_on(toy_dataset, tmp_path):
    from kgexp.evaluation.geometry import intra_group_similarity
    from kgexp.mi import MutualInformation

    for with_mi in (True, False):
        module = make_module(None)
        if with_mi:
            module.mi = MutualInformation(8, 8, name="infonce")
        datamodule = fit(module, toy_dataset, tmp_path / str(with_mi), max_steps=3).datamodule
        trainer = pl.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False)
        trainer.validate(module, datamodule=datamodule, verbose=False)
        logged = trainer.callback_metrics
        if not with_mi:
            assert "val/intra_group/hr_tails" not in logged
            continue
        graph = datamodule.graph
        expected = intra_group_similarity(
            module.model.entity.weight.detach(), graph.train, graph.num_relations
        )
        for key in ("hr_tails", "relation_tails"):
            assert float(logged[f"val/intra_group/{key}"]) == pytest.approx(expected[key], rel=1e-5)


class PoisonedLoss(SoftmaxCrossEntropy):
    """Softmax cross-entropy, plus at the steps in ``at`` a NaN loss (``kind="loss"``) or a term whose
    value is 0 and whose gradient is NaN (``kind="gradient"``: d sqrt(|x|)/dx at 0 is inf * 0)."""

    def __init__(self, kind: str, at: set[int]):
        super().__init__()
        self.kind, self.at, self.step = kind, at, 0

    def __call__(self, positive, negative, weights=None):
        loss = super().__call__(positive, negative, weights)
        poisoned = self.step in self.at
        self.step += 1
        if not poisoned:
            return loss
        if self.kind == "loss":
            return loss * float("nan")
        return loss + torch.sqrt((positive - positive.detach()).abs()).sum()


def make_poisoned_module(kind: str, at: set[int], nonfinite: str) -> LinkPredictionModule:
    negatives = NegativeSampling(UniformSampler(num_negatives=5))
    optimizer = {"name": "adagrad", "lr": 0.2}
    return LinkPredictionModule(
        DistMult(20, 3, dim=8), negatives, PoisonedLoss(kind, at), None, optimizer, nonfinite=nonfinite
    )


@pytest.mark.parametrize(("kind", "named"), [("loss", "loss (loss=nan)"), ("gradient", "gradient norm")])
def test_a_non_finite_loss_or_gradient_stops_the_run_naming_the_step(toy_dataset, tmp_path, kind, named):
    module = make_poisoned_module(kind, {3}, "stop")
    with pytest.raises(FloatingPointError, match=rf"step 3: non-finite {re.escape(named)}") as error:
        fit(module, toy_dataset, tmp_path)
    if kind == "gradient":
        assert "model.entity.weight=nan" in str(error.value)
    assert "nonfinite=skip" in str(error.value)
    assert all(torch.isfinite(p).all() for p in module.parameters())  # the bad step changed nothing


@pytest.mark.parametrize("kind", ["loss", "gradient"])
def test_skipping_non_finite_batches_counts_them_and_leaves_the_weights_finite(toy_dataset, tmp_path, kind):
    module = make_poisoned_module(kind, {2, 5}, "skip")
    reference = make_poisoned_module(kind, set(), "skip")
    trainer = fit(module, toy_dataset, tmp_path, max_steps=8)
    assert module.skipped_batches == 2
    assert all(torch.isfinite(p).all() for p in module.parameters())
    fit(reference, toy_dataset, tmp_path / "reference", max_steps=8)
    assert reference.skipped_batches == 0
    # a skipped batch updates nothing: the weights differ from a run that learnt from those batches
    assert not torch.equal(module.model.entity.weight, reference.model.entity.weight)
    assert trainer.global_step == 8  # a skipped batch still counts as a step of trainer.max_steps


def emu_over_nscaching_module() -> LinkPredictionModule:
    """Every random stream of training in use: data order, NSCaching draws and caches, EMU masks."""
    torch.manual_seed(0)
    module = make_module(None)
    module.negatives = NegativeSampling(NSCachingSampler(5, cache_size=4, candidates=4))
    module.emu = EMU()
    return module


class SaveAt(pl.Callback):
    """Saves a checkpoint after training step ``step``, as a periodic checkpoint would."""

    def __init__(self, step: int, path):
        self.step, self.path = step, path

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            trainer.save_checkpoint(self.path)


@pytest.mark.parametrize(
    "stop", [6, 11, 15]
)  # in the first epoch, at its end, in the second (11 batches each)
def test_resuming_a_checkpoint_continues_the_run_exactly(toy_dataset, tmp_path, stop):
    straight = emu_over_nscaching_module()
    path = tmp_path / "stopped.ckpt"
    fit(straight, toy_dataset, tmp_path / "straight", max_steps=24, callbacks=[SaveAt(stop, path)])
    resumed = emu_over_nscaching_module()
    trainer = fit(resumed, toy_dataset, tmp_path / "resumed", max_steps=24, ckpt_path=path)
    assert trainer.global_step == 24
    for (name, expected), actual in zip(
        straight.state_dict().items(), resumed.state_dict().values(), strict=True
    ):
        assert torch.equal(expected, actual), name
    for side, cache in straight.negatives.sampler.caches.items():
        assert torch.equal(cache, resumed.negatives.sampler.caches[side])
    at_stop = torch.load(path, weights_only=False)["state_dict"]["model.entity.weight"]
    assert not torch.equal(at_stop, resumed.model.entity.weight)  # it did train on


def test_resuming_with_another_number_of_processes_is_refused_naming_both_numbers(toy_dataset, tmp_path):
    """A checkpoint holds one random stream per process: resumed by another number of processes, some
    rank would get no stream or another rank's. Refused, with both numbers and the keys that set them."""
    trainer = fit(make_module(None), toy_dataset, tmp_path, max_steps=3)
    trainer.save_checkpoint(tmp_path / "one.ckpt")
    saved = torch.load(tmp_path / "one.ckpt", weights_only=False)
    (state,) = saved["kgexp"]["generators"]  # one process wrote it
    other = torch.Generator().manual_seed(123).get_state()
    saved["kgexp"]["generators"] = [state, other]  # as the two ranks of a DDP run write it
    torch.save(saved, tmp_path / "two.ckpt")
    expected = (
        r"random streams of 2 processes; resume it with the same number "
        r"\(trainer\.devices x trainer\.num_nodes\), not 1$"
    )
    with pytest.raises(ValueError, match=expected):
        fit(make_module(None), toy_dataset, tmp_path, max_steps=6, ckpt_path=tmp_path / "two.ckpt")

    def fit_start_on_rank(generators: list[torch.Tensor], rank: int, world_size: int) -> LinkPredictionModule:
        """``on_fit_start`` of one rank of a ``world_size`` run resuming ``generators`` (no processes)."""
        module = make_module(None)
        module.on_load_checkpoint({"kgexp": {"generators": generators}})
        module.filter_index = module.train_index = FilterIndex(torch.tensor([[0, 0, 1]]), 20, 3)
        module.trainer = SimpleNamespace(global_rank=rank, world_size=world_size)
        module.on_fit_start()
        return module

    with pytest.raises(ValueError, match=r"random streams of 1 processes; .* not 2$"):
        fit_start_on_rank([state], rank=1, world_size=2)
    # the same number resumes, each rank with its own stream
    assert torch.equal(fit_start_on_rank([state, other], rank=1, world_size=2).generator.get_state(), other)
    assert torch.equal(fit_start_on_rank([state, other], rank=0, world_size=2).generator.get_state(), state)
