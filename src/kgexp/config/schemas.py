"""Structured-config schemas of every config group, generated from the constructors they configure.

Each option of a group (``model/transe.yaml``, ``sampler/emu.yaml``, ...) extends its schema in its
defaults list (``/schema/<group>/<schema>@_here_``), so Hydra checks keys and types as it composes: a
typo in a key, or ``model.dim=abc``, fails there, naming the key. The schemas take their fields, types
and defaults from the constructor signatures, so there is one place for each; :mod:`kgexp.config.limits`
adds the ranges and choices, which :func:`kgexp.config.validation.validate` checks after composition.
"""

from __future__ import annotations

import dataclasses
import inspect
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Optional

import pytorch_lightning as pl
from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from kgexp.config.limits import (
    AT_LEAST_ONE,
    NON_NEGATIVE,
    POSITIVE,
    PROBABILITY,
    Limit,
    Range,
    one_of,
)
from kgexp.data.datamodule import KGDataModule
from kgexp.data.registry import DATASETS
from kgexp.mi import MutualInformation
from kgexp.mi.estimators import ESTIMATORS
from kgexp.mi.heads import ACTIVATIONS, CRITICS
from kgexp.mi.regularizer import COMPOSITIONS, DIRECTIONS, EXTRA_NEGATIVES, KEY_HEADS, QUERY_HEADS
from kgexp.models import MODELS
from kgexp.training.emu import EMU, LABELS, MASK_MODES, MUTATIONS, SCALES
from kgexp.training.losses import LOSSES
from kgexp.training.module import NONFINITE
from kgexp.training.negatives import BASE_SAMPLERS, SIDE_MODES
from kgexp.training.negatives.neighbourhood import HOP_MODES, WALK_MODES
from kgexp.training.negatives.nscaching import DRAWS, REFRESHES
from kgexp.training.optim import OPTIMIZERS, SCHEDULES
from kgexp.training.regularizers import REGULARIZERS, SCOPES, NormRegularizer

OPEN_UNIT = Range(0, 1, low_open=True, high_open=True)
BELOW_ONE = Range(0, 1, high_open=True)

#: Ranges and choices by group and option (an option means the same in every schema of its group).
LIMITS: dict[str, dict[str, Limit]] = {
    "": {"seed": Range(0, 2**32 - 1), "nonfinite": one_of(NONFINITE)},
    "data": {"batch_size": AT_LEAST_ONE, "eval_batch_size": AT_LEAST_ONE},
    "dataset": {"name": one_of([*DATASETS, "custom"])},
    "model": {"dim": AT_LEAST_ONE, "init_range": POSITIVE, "p_norm": one_of((1, 2))},
    "sampler": {
        "base": one_of(BASE_SAMPLERS),
        "sides": one_of(SIDE_MODES),
        "num_negatives": AT_LEAST_ONE,
        "max_redraws": NON_NEGATIVE,
        "shared": NON_NEGATIVE,
        "hops": AT_LEAST_ONE,
        "neighbourhood": one_of(HOP_MODES),
        "walks": AT_LEAST_ONE,
        "walk_mode": one_of(WALK_MODES),
        "cache_size": AT_LEAST_ONE,
        "candidates": AT_LEAST_ONE,
        "temperature": POSITIVE,
        "draw": one_of(DRAWS),
        "refresh": one_of(REFRESHES),
        "keep_prob": PROBABILITY,
        "mask": one_of(MASK_MODES),
        "mutation": one_of(MUTATIONS),
        "beta": NON_NEGATIVE,
        "alpha": NON_NEGATIVE,
        "scale": one_of(SCALES),
        "labels": one_of(LABELS),
        "label_smoothing": BELOW_ONE,
    },
    "loss": {"label_smoothing": BELOW_ONE, "adversarial_temperature": POSITIVE, "margin": POSITIVE},
    "regularizer": {"weight": NON_NEGATIVE, "p": AT_LEAST_ONE, "scope": one_of(SCOPES)},
    "mi": {
        "name": one_of(ESTIMATORS),
        "weight": NON_NEGATIVE,
        "directions": one_of(DIRECTIONS),
        "composition": one_of(COMPOSITIONS),
        "depth": NON_NEGATIVE,
        "hidden": AT_LEAST_ONE,
        "width": AT_LEAST_ONE,
        "activation": one_of(ACTIVATIONS),
        "query_heads": one_of(QUERY_HEADS),
        "key_head": one_of(KEY_HEADS),
        "critic": one_of(CRITICS),
        "temperature": POSITIVE,
        "extra_negatives": one_of(EXTRA_NEGATIVES),
        "ema_rate": Range(0, 1, low_open=True),
    },
    "optimizer": {
        "lr": POSITIVE,
        "weight_decay": NON_NEGATIVE,
        "eps": NON_NEGATIVE,
        "momentum": NON_NEGATIVE,
    },
    "schedule": {"fraction": OPEN_UNIT, "lr_factor": POSITIVE, "optimizer": one_of(OPTIMIZERS)},
    "trainer": {
        "max_steps": Range(-1),
        "num_nodes": AT_LEAST_ONE,
        "accumulate_grad_batches": AT_LEAST_ONE,
        "num_sanity_val_steps": Range(-1),
    },
}

#: The groups that are a node of the config (setting and experiment write into the others).
GROUPS = ("dataset", "model", "sampler", "loss", "regularizer", "mi", "optimizer", "schedule", "trainer")
PRIMITIVES = (int, float, bool, str)
#: Trainer arguments that kgexp sets itself.
TRAINER_SET_BY_KGEXP = ("logger", "callbacks", "plugins", "default_root_dir")


@dataclasses.dataclass(frozen=True)
class Option:
    """One field of a schema: its name, OmegaConf-compatible type and default."""

    name: str
    annotation: Any
    default: Any = MISSING


def omegaconf_type(annotation: Any) -> Any:
    """The closest type OmegaConf can check: primitives, ``Optional``, ``List`` of a primitive; ``Any``
    for the rest. Union members OmegaConf cannot hold (a ``Tensor`` learning rate) are dropped."""
    if annotation in PRIMITIVES or annotation is Any:
        return annotation
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        members = [omegaconf_type(a) for a in args if a is not type(None)]
        members = list(dict.fromkeys(m for m in members if m is not Any))
        if len(members) != 1:
            return Any
        return Optional[members[0]] if type(None) in args else members[0]  # noqa: UP045 (OmegaConf)
    if origin in (list, tuple, Sequence):
        elements = {omegaconf_type(a) for a in args if a is not Ellipsis}
        if len(elements) == 1 and (element := elements.pop()) in PRIMITIVES:
            return list[element]
    return Any


def signature_options(
    cls: Callable, skip: int = 0, only: Iterable[str] | None = None, exclude: Iterable[str] = ()
) -> list[Option]:
    """The keyword options of ``cls``'s constructor after the first ``skip``, with their defaults."""
    hints = typing.get_type_hints(cls.__init__)
    parameters = list(inspect.signature(cls).parameters.values())[skip:]
    keep = set(only) if only is not None else None
    return [
        Option(p.name, omegaconf_type(hints.get(p.name, Any)), MISSING if p.default is p.empty else p.default)
        for p in parameters
        if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        and p.name not in exclude
        and (keep is None or p.name in keep)
    ]


def make_schema(
    class_name: str, group: str, options: Iterable[Option], fixed: Mapping[str, Limit] | None = None
) -> type:
    """A dataclass with one field per option; its ``limit`` metadata is ``fixed`` or ``LIMITS[group]``."""
    limits = {**LIMITS.get(group, {}), **(fixed or {})}
    fields = []
    for option in options:
        fields.append((option.name, option.annotation, schema_field(option.default, limits.get(option.name))))
    return dataclasses.make_dataclass(class_name, fields)


def schema_field(default: Any, limit: Limit | None) -> Any:
    """A dataclass field holding ``default`` (a list default is copied per instance) and its limit."""
    if isinstance(default, list | tuple):
        return dataclasses.field(default_factory=lambda: list(default), metadata={"limit": limit})
    if dataclasses.is_dataclass(default):
        return dataclasses.field(default_factory=default, metadata={"limit": limit})
    return dataclasses.field(default=default, metadata={"limit": limit})


def named(name: str) -> Option:
    return Option("name", str, name)


def option_schema(group: str, name: str, options: Iterable[Option]) -> type:
    """The schema of option ``name`` of ``group``: its ``name`` key, which must stay ``name``, then
    ``options``."""
    class_name = f"{name.title().replace('_', '')}{group.title()}Schema"
    return make_schema(class_name, group, [named(name), *options], {"name": one_of([name])})


def sampler_schema(name: str) -> type:
    cls, imposed_sides = BASE_SAMPLERS[name]
    sides = [] if imposed_sides else [Option("sides", str, "alternate")]
    return option_schema("sampler", name, [*sides, *signature_options(cls)])


def emu_schema() -> type:
    """EMU's options, the base sampler's choice, and every base sampler's options (``None``: the base
    sampler's default)."""
    base_options: dict[str, Option] = {}
    for cls, _ in BASE_SAMPLERS.values():
        for option in signature_options(cls):
            optional = Optional[option.annotation]  # noqa: UP045 (OmegaConf reads typing.Optional)
            base_options.setdefault(option.name, Option(option.name, optional, None))
    own = [Option("base", str, "uniform"), Option("sides", str, "alternate"), *signature_options(EMU)]
    return option_schema("sampler", "emu", [*own, *base_options.values()])


def group_schemas() -> dict[str, dict[str, type]]:
    """``{group: {schema name: dataclass}}``: what ``/schema/<group>/<name>`` refers to."""
    dataset = signature_options(KGDataModule, only=("name", "path", "drop_unseen", "cache_dir"))
    norm = [Option("name", str), *signature_options(NormRegularizer)]
    trainer = signature_options(pl.Trainer, exclude=TRAINER_SET_BY_KGEXP)
    return {
        "dataset": {"dataset": make_schema("DatasetSchema", "dataset", dataset)},
        "model": {
            name: option_schema("model", name, signature_options(cls, 2)) for name, cls in MODELS.items()
        },
        "sampler": {**{name: sampler_schema(name) for name in BASE_SAMPLERS}, "emu": emu_schema()},
        "loss": {name: option_schema("loss", name, signature_options(cls)) for name, cls in LOSSES.items()},
        "regularizer": {
            "none": option_schema("regularizer", "none", []),
            "norm": make_schema("NormRegularizerSchema", "regularizer", norm, {"name": one_of(REGULARIZERS)}),
        },
        "mi": {
            "none": option_schema("mi", "none", []),
            "estimator": make_schema("MISchema", "mi", signature_options(MutualInformation, 2)),
        },
        "optimizer": {
            name: option_schema("optimizer", name, signature_options(cls, 1))
            for name, cls in OPTIMIZERS.items()
        },
        "schedule": {
            "none": option_schema("schedule", "none", []),
            **{
                name: option_schema("schedule", name, signature_options(cls))
                for name, cls in SCHEDULES.items()
            },
        },
        "trainer": {"trainer": make_schema("TrainerSchema", "trainer", trainer)},
    }


def config_schema() -> type:
    """The schema of ``config.yaml``: its own options, and a slot for each group."""
    data = make_schema(
        "DataSchema", "data", signature_options(KGDataModule, only=("batch_size", "eval_batch_size"))
    )
    selection = make_schema(
        "SelectionSchema", "selection", [Option("monitor", str, "val/mrr"), Option("mode", str, "max")]
    )
    options = [
        Option("seed", int, 0),
        Option("ckpt_path", Optional[str], None),  # noqa: UP045
        Option("nonfinite", str, "stop"),
        Option("output_dir", str),
        Option("recipe", Optional[dict[str, Any]], None),  # noqa: UP045 (a setting's table of values)
        Option("data", data, data),
        Option("selection", selection, selection),
        *(Option(group, Any, None) for group in (*GROUPS, "callbacks", "logger")),
    ]
    return make_schema("KGExpConfig", "", options)


def register_schemas() -> None:
    """Store the schemas in Hydra's ConfigStore (idempotent); call it before composing ``config``."""
    store = ConfigStore.instance()
    if "schema" in store.repo:
        return
    store.store(group="schema", name="config", node=config_schema())
    for group, schemas in group_schemas().items():
        for name, schema in schemas.items():
            store.store(group=f"schema/{group}", name=name, node=schema)
