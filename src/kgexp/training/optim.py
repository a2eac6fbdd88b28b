"""Optimisers by name, and the reference recipe's mid-run switch to a fresh Adam at a lower rate."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Annotated

import pytorch_lightning as pl
import torch

from kgexp.options import (
    NON_NEGATIVE,
    OPEN_UNIT,
    POSITIVE,
    Limit,
    OneOf,
    PositiveFloat,
    check,
    checked,
    one_of,
)

log = logging.getLogger(__name__)

OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "adam": torch.optim.Adam,
    "adagrad": torch.optim.Adagrad,
    "sgd": torch.optim.SGD,
}
#: The limits of the torch optimisers' options (their signatures carry none).
OPTIMIZER_LIMITS: dict[str, Limit] = {
    "name": one_of(OPTIMIZERS),
    "lr": POSITIVE,
    "weight_decay": NON_NEGATIVE,
    "eps": NON_NEGATIVE,
    "momentum": NON_NEGATIVE,
}
#: Optimisers with a fused implementation for CPU and CUDA float tensors (used unless ``fused: false``).
FUSED = ("adam", "adagrad", "sgd")


def build_optimizer(
    params: Iterable[torch.nn.Parameter], name: str, lr: float, **kwargs
) -> torch.optim.Optimizer:
    """``OPTIMIZERS[name](params, lr=lr, **kwargs)``, with errors that name the config key."""
    for key, value in {"name": name, "lr": lr, **kwargs}.items():
        check(f"optimizer.{key}", OPTIMIZER_LIMITS.get(key), value)
    params = [p for p in params if p.requires_grad]
    if kwargs.get("fused") is None:  # unset: fused where it can be
        fusable = name in FUSED and not (kwargs.get("foreach") or kwargs.get("differentiable"))
        fusable = fusable and all(p.dtype in (torch.float32, torch.float64) for p in params)
        # One fused kernel per update instead of a dozen full passes over the tables (and their temporaries).
        kwargs["fused"] = True if fusable else None
    try:
        return OPTIMIZERS[name](params, lr=lr, **kwargs)
    except TypeError as error:
        raise ValueError(f"optimizer: invalid option for {name}: {error}") from None


@checked("schedule")
class OptimizerSwitch:
    """At ``fraction`` of the run's steps, replace the optimiser by a fresh ``optimizer`` at ``lr * factor``.

    This is the RotatE/EMU reference schedule: Adagrad (EMU) or Adam (RotatE) first, then a new Adam
    at a tenth of the rate at half of ``max_steps``; the old optimiser's state is dropped.
    """

    def __init__(
        self,
        fraction: Annotated[float, OPEN_UNIT] = 0.5,
        lr_factor: PositiveFloat = 0.1,
        optimizer: Annotated[str, OneOf(tuple(OPTIMIZERS))] = "adam",
    ):
        self.fraction, self.lr_factor, self.optimizer = fraction, lr_factor, optimizer
        self.switched = False

    def switch_step(self, trainer: pl.Trainer) -> int:
        return int(self.fraction * trainer.estimated_stepping_batches)

    def replacement(self, params: Iterable[torch.nn.Parameter], lr: float) -> torch.optim.Optimizer:
        """The fresh optimiser that follows one running at ``lr``."""
        return build_optimizer(params, self.optimizer, lr * self.lr_factor)

    def maybe_switch(self, module: pl.LightningModule) -> None:
        trainer = module.trainer
        if self.switched or trainer.global_step < self.switch_step(trainer):
            return
        optimizer = self.replacement(module.parameters(), trainer.optimizers[0].param_groups[0]["lr"])
        trainer.strategy.optimizers = [optimizer]
        self.switched = True
        log.info(
            "step %d: switched to a fresh %s at lr=%g",
            trainer.global_step,
            self.optimizer,
            optimizer.param_groups[0]["lr"],
        )


#: ``schedule=<name>``; ``schedule=none`` keeps one optimiser throughout.
SCHEDULES: dict[str, type[OptimizerSwitch]] = {"switch": OptimizerSwitch}
