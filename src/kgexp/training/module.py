"""The LightningModule: composes scorer, negative sampling, loss and regulariser; filtered evaluation."""

from __future__ import annotations

import logging
import warnings
from typing import Annotated, Any

import pytorch_lightning as pl
import torch
from torch import Tensor

from kgexp.evaluation.geometry import intra_group_similarity
from kgexp.evaluation.metrics import RankMetrics
from kgexp.evaluation.ranking import Ranks, rank_queries
from kgexp.mi import MutualInformation
from kgexp.models.base import KGEModel
from kgexp.options import OneOf, Range, checked
from kgexp.runtime import checkpointing
from kgexp.runtime.run_info import package_version
from kgexp.runtime.shards import derive_seed
from kgexp.sides import BOTH_SIDES, Side, split_query
from kgexp.training.emu import EMU
from kgexp.training.losses import Loss
from kgexp.training.negatives import Corruption, NegativeSampling, SamplerSetup
from kgexp.training.optim import OptimizerSwitch, build_optimizer
from kgexp.training.regimes import AllEntityRegime, RegimeStep, regularized_rows
from kgexp.training.regularizers import NormRegularizer

log = logging.getLogger(__name__)
NONFINITE = ("stop", "skip")
# Under DDP the logged metrics come from torchmetrics states already summed over the ranks: every rank
# logs the same value, so Lightning's advice to sync them once more does not apply.
warnings.filterwarnings("ignore", ".*when logging on epoch level in distributed setting.*")


@checked("")
class LinkPredictionModule(pl.LightningModule):
    """Trains a :class:`KGEModel` and evaluates filtered ranks on both sides.

    The KGE loss comes from sampled ``negatives`` (negative sampling, where EMU (``emu``) may replace the
    loss on the negatives) or from an all-entity ``regime`` (1vsAll, KvsAll; ``negatives`` is then
    ``None``). MI-KGE (``mi``) adds a weighted mutual-information term under any regime.

    The filter indices come from the datamodule (``trainer.datamodule``); the vocabularies are stored in
    checkpoints so that a checkpoint is enough to export or query a model.
    """

    def __init__(
        self,
        model: KGEModel,
        negatives: NegativeSampling | None,
        loss: Loss,
        regularizer: NormRegularizer | None,
        optimizer: dict[str, Any],
        switch: OptimizerSwitch | None = None,
        emu: EMU | None = None,
        mi: MutualInformation | None = None,
        seed: Annotated[int, Range(0, 2**32 - 1)] = 0,
        nonfinite: Annotated[str, OneOf(NONFINITE)] = "stop",
        regime: AllEntityRegime | None = None,
    ):
        super().__init__()
        if (negatives is None) == (regime is None):
            raise ValueError("regime: train with sampled negatives or with an all-entity regime, not both")
        self.model, self.negatives, self.loss, self.regularizer = model, negatives, loss, regularizer
        self.regime = regime
        self.optimizer_config, self.switch, self.emu, self.seed = optimizer, switch, emu, seed
        self.mi = mi  # a submodule: its heads train with the model; ranking never uses them
        self.nonfinite = nonfinite
        self.skipped_batches = 0
        self.val_metrics, self.test_metrics = RankMetrics(), RankMetrics()
        self.generator: torch.Generator | None = None
        self._generators_to_load: list[Tensor] | None = None
        self.vocabulary: dict[str, list[str]] | None = None
        self.train_triples: Tensor | None = None

    # -- setup ----------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        datamodule = self.trainer.datamodule  # Lightning has already run its setup(stage)
        graph = datamodule.graph
        self.vocabulary = {"entities": graph.entities, "relations": graph.relations}
        self.filter_index, self.train_index = datamodule.filter_index, datamodule.train_index
        self.train_triples = graph.train
        if stage == "fit" and self.negatives is not None:
            self.negatives.fit(SamplerSetup(graph, datamodule.cache_root, self.seed))

    def _move_indices(self) -> None:
        """Lightning moves the module to its device after ``setup``: follow it with the filter indices."""
        self.filter_index.to(self.device)
        self.train_index.to(self.device)

    def on_fit_start(self) -> None:
        self._move_indices()
        rank = self.trainer.global_rank
        seed = derive_seed(self.seed, "training", rank)  # negatives, EMU masks per rank
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        states = self._generators_to_load
        if states is not None:  # resuming: continue every rank's stream where the checkpoint left it
            if len(states) != self.trainer.world_size:
                raise ValueError(
                    f"the checkpoint holds the random streams of {len(states)} processes; resume it with "
                    f"the same number (trainer.devices x trainer.num_nodes), not {self.trainer.world_size}"
                )
            self.generator.set_state(states[rank])
            self._generators_to_load = None

    def _generator_states(self) -> list[Tensor] | None:
        """Every rank's training generator state (gathered under DDP), for an exact resume."""
        if self.generator is None:
            return None
        state = self.generator.get_state().cpu()
        if self.trainer.world_size == 1:
            return [state]
        states: list[Tensor | None] = [None] * self.trainer.world_size
        torch.distributed.all_gather_object(states, state)
        return states

    def on_validation_start(self) -> None:
        self._move_indices()

    def on_test_start(self) -> None:
        self._move_indices()

    # -- training -------------------------------------------------------------------------------
    def training_step(self, batch: Tensor | tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        sampled = None
        if self.regime is None:
            step, sampled = self._negative_sampling_step(*batch)
        else:  # training triples come with their subsampling weights, which the regimes do not use
            examples = batch[0] if isinstance(batch, tuple | list) else batch
            step = self.regime.step(self.model, self.loss, examples, self.train_index, self.generator)
        terms = {"loss": step.loss}
        if self.mi is not None:
            mutual_information = self.mi(self.model, step.positives, self.train_index, sampled)
            terms["mi"] = self.mi.weight * mutual_information
        if self.regularizer is not None:
            terms["regularization"] = self.regularizer(self.model, step.regularized)
        loss = sum(terms.values())
        if not torch.isfinite(loss):
            return self._nonfinite("loss", terms)
        if self._logging_step():
            if "mi" in terms:
                self.log("train/mi", mutual_information, on_step=True, on_epoch=False)
            if "regularization" in terms:
                self.log("train/regularization", terms["regularization"], on_step=True, on_epoch=False)
            self.log("train/loss", loss, on_step=True, on_epoch=False, prog_bar=True)
        return loss

    def _logging_step(self) -> bool:
        """Whether the loggers write this step: ``self.log`` costs about half a millisecond a call, so the
        training terms are logged only then (as Lightning's own callbacks decide it)."""
        trainer = self._trainer
        return trainer is None or trainer._logger_connector.should_update_logs

    def _nonfinite(self, what: str, values: dict[str, Tensor]) -> None:
        """Stop with an error naming the step and the values (``nonfinite=stop``), or skip the batch."""
        listed = ", ".join(f"{k}={float(v.detach()):.6g}" for k, v in values.items())
        if self.nonfinite == "stop" or self.trainer.world_size > 1:
            raise FloatingPointError(
                f"step {self.global_step}: non-finite {what} ({listed}); the checkpoints in "
                f"{self.trainer.default_root_dir}/checkpoints are from before it (nonfinite=skip skips such "
                "batches instead)"
            )
        self.skipped_batches += 1
        log.warning(
            "step %d: non-finite %s (%s); batch skipped (%d so far)",
            self.global_step,
            what,
            listed,
            self.skipped_batches,
        )
        self.log("train/skipped_batches", float(self.skipped_batches), on_step=True, on_epoch=False)
        return None

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        named = [(name, p.grad) for name, p in self.named_parameters() if p.grad is not None]
        total = torch.nn.utils.get_total_norm([grad for _, grad in named])  # non-finite if any element is
        if not torch.isfinite(total):  # one check per step; the names only when something is wrong
            norms = {name: grad.norm() for name, grad in named}
            bad = {name: norm for name, norm in norms.items() if not torch.isfinite(norm)}
            if self.nonfinite == "skip" and self.trainer.world_size == 1:
                optimizer.zero_grad(set_to_none=True)  # parameters without a gradient are not updated
            self._nonfinite("gradient norm", bad)

    def _negative_sampling_step(
        self, triples: Tensor, weights: Tensor
    ) -> tuple[RegimeStep, dict[Side, tuple[Tensor, Tensor]]]:
        """The loss over sampled negatives, and the negatives per side (MI-KGE's ``extra_negatives``)."""
        corruptions = self.negatives.corrupt(
            triples, self.global_step, self.model.num_entities, self.train_index, self.generator, self.model
        )
        total = triples.new_zeros((), dtype=torch.float32)
        regularized = []
        for corruption in corruptions:
            positives = triples[corruption.rows]
            part = self._corruption_loss(positives, weights[corruption.rows], corruption)
            total = total + part * len(corruption.rows)
            regularized.append(regularized_rows(self.model, positives, corruption.side))
        loss = total / sum(len(c.rows) for c in corruptions)
        sampled = {c.side: (c.rows, c.negatives) for c in corruptions}
        return RegimeStep(loss, triples, torch.cat(regularized)), sampled

    def _corruption_loss(self, positives: Tensor, weights: Tensor, corruption: Corruption) -> Tensor:
        """Loss of positives corrupted on one side: scores of [target, negatives] per positive."""
        model, side = self.model, corruption.side
        anchors, relations, targets = split_query(positives, side)
        queries = model.embed_query(anchors, relations, side)
        candidate_ids = _prepend(targets, corruption.negatives)
        chunk = self.negatives.sampler.shared
        if chunk:  # rows of a chunk share their negatives: score the chunk's once
            positive = model.score_ids(queries, targets.unsqueeze(1))
            scores = torch.cat(
                [positive, model.score_shared(queries, corruption.negatives[::chunk], chunk)], 1
            )
        else:
            scores = model.score_ids(queries, candidate_ids)
        if self.emu is None:
            return self.loss(scores[:, 0], scores[:, 1:], weights)
        if self.emu.resample:
            negatives = self.negatives.sampler.sample(
                anchors, relations, side, model.num_entities, self.train_index, self.generator, model
            )
            candidate_ids = _prepend(targets, negatives)
        return self.emu.loss(scores, self.emu.mutate.scores(model, queries, candidate_ids, self.generator))

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.negatives is not None:
            self.negatives.sampler.synchronize()

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        if self.switch is not None:
            self.switch.maybe_switch(self)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        if self.switch is not None and self.switch.switched:  # resuming after the switch
            return self.switch.replacement(self.parameters(), self.optimizer_config["lr"])
        return build_optimizer(self.parameters(), **self.optimizer_config)

    # -- evaluation -----------------------------------------------------------------------------
    def _evaluate(self, triples: Tensor, metrics: RankMetrics) -> dict[Side, Ranks]:
        ranks = {side: rank_queries(self.model, triples, side, self.filter_index) for side in BOTH_SIDES}
        for side, side_ranks in ranks.items():
            metrics.update(side_ranks, side)
        return ranks

    def validation_step(self, batch: Tensor, batch_idx: int) -> None:
        self._evaluate(batch, self.val_metrics)

    def test_step(self, batch: Tensor, batch_idx: int) -> dict[Side, Ranks]:
        """The batch's ranks per side, for callbacks such as :class:`RelationTable`."""
        return self._evaluate(batch, self.test_metrics)

    def _log_metrics(self, prefix: str, metrics: RankMetrics) -> None:
        self.log_dict({f"{prefix}/{k}": v for k, v in metrics.compute().items()})
        metrics.reset()

    def on_validation_epoch_end(self) -> None:
        self._log_metrics("val", self.val_metrics)
        if self.mi is not None:  # the MI paper's claim: lower similarity within groups of answers
            entity = self.model.entity.weight.detach().cpu()
            similarity = intra_group_similarity(entity, self.train_triples, self.model.num_relations)
            self.log_dict({f"val/intra_group/{k}": v for k, v in similarity.items()})

    def on_test_epoch_end(self) -> None:
        self._log_metrics("test", self.test_metrics)

    # -- checkpoints ----------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["kgexp"] = {
            "format": checkpointing.FORMAT,
            "version": package_version(),
            "vocabulary": self.vocabulary,
            "sampler": self.negatives.sampler.state_dict() if self.negatives is not None else {},
            "skipped_batches": self.skipped_batches,
            "generators": self._generator_states(),
        }
        if self.switch is not None:
            checkpoint["kgexp"]["switched"] = self.switch.switched

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("kgexp", {})
        self.vocabulary = state.get("vocabulary")
        self.skipped_batches = state.get("skipped_batches", 0)
        self._generators_to_load = state.get("generators")
        if self.negatives is not None:
            self.negatives.sampler.load_state_dict(state.get("sampler", {}))
        if self.switch is not None:
            self.switch.switched = state.get("switched", False)


def _prepend(targets: Tensor, negatives: Tensor) -> Tensor:
    """Candidate ids ``(n, 1 + N)``: the true entity in column 0, then the negatives."""
    return torch.cat([targets.unsqueeze(1), negatives], dim=1)
