"""The checks Hydra's composition cannot make: ranges and choices, values that interpolations produce,
keys forced in with ``+``, the callbacks' and loggers' options, and which metric selection may monitor."""

from __future__ import annotations

import dataclasses
import inspect

from hydra.utils import get_class
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from kgexp.config.build import NONE
from kgexp.errors import UserError
from kgexp.evaluation.metrics import METRIC_NAMES
from kgexp.options import check, one_of


class ConfigError(UserError, ValueError):
    """A config that cannot run; the message names the key."""


def validate(cfg: DictConfig) -> None:
    """Check a composed training config against its schemas; a ValueError names the first bad key."""
    check_node(cfg, "")
    for group in ("callbacks", "logger"):
        check_targets(cfg.get(group), group)
    check_selection(cfg)


def check_node(node: DictConfig, prefix: str) -> None:
    """Keys, resolved types and limits of ``node`` and the nodes below it that have a schema."""
    schema = OmegaConf.get_type(node)
    if not dataclasses.is_dataclass(schema):
        return
    fields = {field.name: field for field in dataclasses.fields(schema)}
    for key in node:
        if key not in fields:
            raise ValueError(f"{prefix}{key}: unknown option; valid options: {', '.join(fields)}")
    for name, field in fields.items():
        key = prefix + name
        if OmegaConf.is_missing(node, name):
            raise ValueError(f"{key}: a value is required (set {key}=...)")
        try:
            value = node[name]  # resolves an interpolation; OmegaConf checks the result's type
            if isinstance(value, ListConfig):
                value = OmegaConf.to_container(value, resolve=True)
        except OmegaConfBaseException as error:
            raise ValueError(f"{key}: {str(error).splitlines()[0]}") from None
        if isinstance(value, DictConfig):
            check_node(value, key + ".")
        else:
            check(key, field.metadata.get("limit"), value)


def check_targets(node: DictConfig | None, group: str) -> None:
    """Each ``_target_`` entry of ``callbacks`` or ``logger`` names a class that takes its options."""
    for name, entry in (node or {}).items():
        if entry is None or "_target_" not in entry:
            continue
        key = f"{group}.{name}"
        try:
            target = get_class(entry._target_)
        except Exception as error:
            raise ValueError(f"{key}._target_: cannot import {entry._target_!r}: {error}") from None
        parameters = inspect.signature(target).parameters
        if any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
            continue  # e.g. WandbLogger passes its extra options on to wandb.init
        for option in entry:
            if not option.startswith("_") and option not in parameters:
                valid = ", ".join(parameters)
                raise ValueError(
                    f"{key}.{option}: unknown option for {target.__name__}; valid options: {valid}"
                )


def check_selection(cfg: DictConfig) -> None:
    """``selection.monitor`` must be a metric that validation logs (intra-group similarity only with MI)."""
    node = cfg.get("selection")
    if node is None:
        return
    logged = [f"val/{name}" for name in METRIC_NAMES]
    if cfg.get("mi") is not None and cfg.mi.name != NONE:
        logged += ["val/intra_group/hr_tails", "val/intra_group/relation_tails"]
    check("selection.monitor", one_of(logged), node.monitor)
