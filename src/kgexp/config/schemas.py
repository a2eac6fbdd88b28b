"""Structured-config schemas of every config group, generated from the constructors they configure.

Each option of a group (``model/transe.yaml``, ``sampler/emu.yaml``, ...) extends its schema in its
defaults list (``/schema/<group>/<schema>@_here_``), so Hydra checks keys and types as it composes: a
typo in a key, or ``model.dim=abc``, fails there, naming the key. The schemas take their fields, types,
defaults and limits (the ``Annotated`` ranges and choices of :mod:`kgexp.options`) from the constructor
signatures, so there is one place for each; :func:`kgexp.config.validation.validate` checks the limits
after composition, before any work starts.
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

from kgexp.data.datamodule import KGDataModule
from kgexp.data.registry import DATASETS
from kgexp.mi import MutualInformation
from kgexp.models import MODELS
from kgexp.options import AT_LEAST_ONE, Limit, Range, limit_of, one_of
from kgexp.training.emu import EMU
from kgexp.training.losses import LOSSES
from kgexp.training.module import LinkPredictionModule
from kgexp.training.negatives import BASE_SAMPLERS, NegativeSampling
from kgexp.training.optim import OPTIMIZER_LIMITS, OPTIMIZERS, SCHEDULES
from kgexp.training.regimes import REGIMES
from kgexp.training.regularizers import REGULARIZERS, NormRegularizer

#: The limits of the Lightning Trainer's options that kgexp checks (its signature carries none).
TRAINER_LIMITS: dict[str, Limit] = {
    "max_steps": Range(-1),
    "num_nodes": AT_LEAST_ONE,
    "accumulate_grad_batches": AT_LEAST_ONE,
    "num_sanity_val_steps": Range(-1),
}

#: The groups that are a node of the config (setting and experiment write into the others).
GROUPS = (
    "dataset",
    "model",
    "sampler",
    "regime",
    "loss",
    "regularizer",
    "mi",
    "optimizer",
    "schedule",
    "trainer",
)
PRIMITIVES = (int, float, bool, str)
#: Trainer arguments that kgexp sets itself.
TRAINER_SET_BY_KGEXP = ("logger", "callbacks", "plugins", "default_root_dir")


@dataclasses.dataclass(frozen=True)
class Option:
    """One field of a schema: its name, OmegaConf-compatible type, default and limit."""

    name: str
    annotation: Any
    default: Any = MISSING
    limit: Limit | None = None


def omegaconf_type(annotation: Any) -> Any:
    """The closest type OmegaConf can check: primitives, ``Optional``, ``List`` of a primitive; ``Any``
    for the rest. Union members OmegaConf cannot hold (a ``Tensor`` learning rate) are dropped;
    ``Annotated`` metadata is dropped (the limit is read separately)."""
    if typing.get_origin(annotation) is typing.Annotated:
        return omegaconf_type(typing.get_args(annotation)[0])
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
    cls: Callable,
    skip: int = 0,
    only: Iterable[str] | None = None,
    exclude: Iterable[str] = (),
    limits: Mapping[str, Limit] | None = None,
) -> list[Option]:
    """The keyword options of ``cls``'s constructor after the first ``skip``, with their defaults and
    the limits their ``Annotated`` hints carry (``limits`` for a class whose signature has none)."""
    hints = typing.get_type_hints(inspect.unwrap(cls.__init__), include_extras=True)
    parameters = list(inspect.signature(cls).parameters.values())[skip:]
    keep = set(only) if only is not None else None
    return [
        Option(
            p.name,
            omegaconf_type(hints.get(p.name, Any)),
            MISSING if p.default is p.empty else p.default,
            limit_of(hints.get(p.name)) or (limits or {}).get(p.name),
        )
        for p in parameters
        if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        and p.name not in exclude
        and (keep is None or p.name in keep)
    ]


def make_schema(class_name: str, options: Iterable[Option]) -> type:
    """A dataclass with one field per option, its limit in the field's ``limit`` metadata."""
    fields = [(o.name, o.annotation, schema_field(o.default, o.limit)) for o in options]
    return dataclasses.make_dataclass(class_name, fields)


def schema_field(default: Any, limit: Limit | None) -> Any:
    """A dataclass field holding ``default`` (a list default is copied per instance) and its limit."""
    if isinstance(default, list | tuple):
        return dataclasses.field(default_factory=lambda: list(default), metadata={"limit": limit})
    if dataclasses.is_dataclass(default):
        return dataclasses.field(default_factory=default, metadata={"limit": limit})
    return dataclasses.field(default=default, metadata={"limit": limit})


def option_schema(group: str, name: str, options: Iterable[Option]) -> type:
    """The schema of option ``name`` of ``group``: its ``name`` key, which must stay ``name``, then
    ``options``."""
    class_name = f"{name.title().replace('_', '')}{group.title()}Schema"
    return make_schema(class_name, [Option("name", str, name, one_of([name])), *options])


def sampler_schema(name: str) -> type:
    cls, imposed_sides = BASE_SAMPLERS[name]
    sides = [] if imposed_sides else signature_options(NegativeSampling, 1)
    return option_schema("sampler", name, [*sides, *signature_options(cls)])


def emu_schema() -> type:
    """EMU's options, the base sampler's choice, and every base sampler's options (``None``: the base
    sampler's default)."""
    base_options: dict[str, Option] = {}
    for cls, _ in BASE_SAMPLERS.values():
        for option in signature_options(cls):
            optional = Optional[option.annotation]  # noqa: UP045 (OmegaConf reads typing.Optional)
            base_options.setdefault(option.name, Option(option.name, optional, None, option.limit))
    emu = [option for part in (EMU, *EMU.PARTS) for option in signature_options(part)]
    own = [
        Option("base", str, "uniform", one_of(BASE_SAMPLERS)),
        *signature_options(NegativeSampling, 1),
        *emu,
    ]
    return option_schema("sampler", "emu", [*own, *base_options.values()])


def group_schemas() -> dict[str, dict[str, type]]:
    """``{group: {schema name: dataclass}}``: what ``/schema/<group>/<name>`` refers to."""
    name = Option("name", str, MISSING, one_of([*DATASETS, "custom"]))  # with a path, any name is allowed
    dataset = [name, *signature_options(KGDataModule, only=("path", "drop_unseen", "cache_dir"))]
    norm = [Option("name", str, MISSING, one_of(REGULARIZERS)), *signature_options(NormRegularizer)]
    trainer = signature_options(pl.Trainer, exclude=TRAINER_SET_BY_KGEXP, limits=TRAINER_LIMITS)
    return {
        "dataset": {"dataset": make_schema("DatasetSchema", dataset)},
        "model": {
            name: option_schema("model", name, signature_options(cls, 2)) for name, cls in MODELS.items()
        },
        "sampler": {
            **{name: sampler_schema(name) for name in BASE_SAMPLERS},
            "emu": emu_schema(),
            "none": option_schema("sampler", "none", []),
        },
        "regime": {"regime": make_schema("RegimeSchema", [Option("name", str, MISSING, one_of(REGIMES))])},
        "loss": {name: option_schema("loss", name, signature_options(cls)) for name, cls in LOSSES.items()},
        "regularizer": {
            "none": option_schema("regularizer", "none", []),
            "norm": make_schema("NormRegularizerSchema", norm),
        },
        "mi": {
            "none": option_schema("mi", "none", []),
            "estimator": make_schema("MISchema", signature_options(MutualInformation, 2)),
        },
        "optimizer": {
            name: option_schema("optimizer", name, signature_options(cls, 1, limits=OPTIMIZER_LIMITS))
            for name, cls in OPTIMIZERS.items()
        },
        "schedule": {
            "none": option_schema("schedule", "none", []),
            **{
                name: option_schema("schedule", name, signature_options(cls))
                for name, cls in SCHEDULES.items()
            },
        },
        "trainer": {"trainer": make_schema("TrainerSchema", trainer)},
    }


def config_schema() -> type:
    """The schema of ``config.yaml``: its own options, and a slot for each group."""
    data = make_schema("DataSchema", signature_options(KGDataModule, only=("batch_size", "eval_batch_size")))
    selection = make_schema(
        "SelectionSchema",
        [Option("monitor", str, "val/mrr"), Option("mode", str, "max", one_of(("max", "min")))],
    )
    options = [
        *signature_options(LinkPredictionModule, only=("seed", "nonfinite")),
        Option("ckpt_path", Optional[str], None),  # noqa: UP045
        Option("verbose", bool, False),  # the libraries' own console lines and warnings too
        Option("output_dir", str),
        Option("recipe", Optional[dict[str, Any]], None),  # noqa: UP045 (a setting's table of values)
        Option("data", data, data),
        Option("selection", selection, selection),
        *(Option(group, Any, None) for group in (*GROUPS, "callbacks", "logger")),
    ]
    return make_schema("KGExpConfig", options)


def register_schemas() -> None:
    """Store the schemas in Hydra's ConfigStore (idempotent); call it before composing ``config``."""
    store = ConfigStore.instance()
    if "schema" in store.repo:
        return
    store.store(group="schema", name="config", node=config_schema())
    for group, schemas in group_schemas().items():
        for name, schema in schemas.items():
            store.store(group=f"schema/{group}", name=name, node=schema)
