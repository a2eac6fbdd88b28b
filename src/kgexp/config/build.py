"""From a composed config to the objects of a run; every error names the config key."""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any

from omegaconf import DictConfig, OmegaConf

from kgexp.data.datamodule import KGDataModule
from kgexp.mi import MutualInformation
from kgexp.models import MODELS, KGEModel
from kgexp.options import check, one_of
from kgexp.training.emu import EMU
from kgexp.training.losses import LOSSES
from kgexp.training.module import LinkPredictionModule
from kgexp.training.negatives import BASE_SAMPLERS, NegativeSampling
from kgexp.training.optim import SCHEDULES, build_optimizer
from kgexp.training.regimes import ALL_ENTITY_REGIMES, NEGATIVE_SAMPLING, REGIMES, AllEntityRegime
from kgexp.training.regularizers import REGULARIZERS

NONE = "none"


def _options(node: Mapping[str, Any] | DictConfig, *exclude: str) -> dict[str, Any]:
    plain = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node)
    return {k: v for k, v in plain.items() if k not in exclude}


def parameters(cls: type, skip: int = 0) -> list[str]:
    """Names of the constructor parameters of ``cls`` after the first ``skip``."""
    return list(inspect.signature(cls).parameters)[skip:]


def construct(
    cls: type, key: str, options: dict[str, Any], *args: Any, also_valid: Sequence[str] = ()
) -> Any:
    """``cls(*args, **options)``; an option ``cls`` does not take is reported as ``key.option``."""
    accepted = parameters(cls, len(args))
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        valid = ", ".join([*accepted, *also_valid])
        raise ValueError(f"{key}.{unknown[0]}: unknown option for {cls.__name__}; valid options: {valid}")
    return cls(*args, **options)


def build_option(
    registry: Mapping[str, type], group: str, node: DictConfig, *args: Any, optional: bool = False
) -> Any:
    """``registry[name](*args, **options)`` for the option ``node`` of ``group``; with ``optional``,
    ``name: none`` builds nothing (None)."""
    if optional and node.name == NONE:
        return None
    check(f"{group}.name", one_of([*registry, NONE] if optional else registry), node.name)
    return construct(registry[node.name], group, _options(node, "name"), *args)


def regime_name(cfg: DictConfig) -> str:
    """``regime.name``; configs saved before regimes existed trained with negative sampling."""
    node = cfg.get("regime")
    return NEGATIVE_SAMPLING if node is None else node.name


def build_datamodule(cfg: DictConfig) -> KGDataModule:
    examples = REGIMES.get(regime_name(cfg), "triples")  # an unknown regime is reported by build_regime
    options = {**_options(cfg.dataset), **_options(cfg.data), "seed": cfg.seed, "examples": examples}
    return construct(KGDataModule, "dataset", options)


def build_negatives(cfg: DictConfig) -> tuple[NegativeSampling, EMU | None]:
    """Negative sampling from ``cfg.sampler``; with ``sampler=emu``, EMU on top of ``sampler.base``.

    Under EMU, the options EMU takes configure EMU and the others the base sampler; a base option set to
    ``null`` keeps the base sampler's default.
    """
    options = _options(cfg.sampler)
    name = options.pop("name")
    requested_sides = options.pop("sides", "alternate")
    emu, key, emu_options = None, "sampler.name", []
    if name == "emu":
        name, key, emu_options = options.pop("base", "uniform"), "sampler.base", ["base", *EMU.option_names()]
        emu = EMU(**{k: options.pop(k) for k in list(options) if k in emu_options})
        options = {k: v for k, v in options.items() if v is not None}
    check(key, one_of(BASE_SAMPLERS), name)
    cls, imposed_sides = BASE_SAMPLERS[name]
    sampler = construct(cls, "sampler", options, also_valid=["sides", *emu_options])
    return NegativeSampling(sampler, imposed_sides or requested_sides), emu


def build_regime(cfg: DictConfig) -> AllEntityRegime | None:
    """The all-entity regime of ``cfg.regime`` (``None``: negative sampling), checked against the sampler,
    the loss and MI-KGE's options before any work starts."""
    name, sampler = regime_name(cfg), cfg.sampler.name
    check("regime.name", one_of(REGIMES), name)
    if name == NEGATIVE_SAMPLING:
        if sampler == NONE:
            raise ValueError("sampler.name: regime=negative_sampling needs a sampler, not sampler=none")
        return None
    if sampler == "emu":
        raise ValueError(
            f"sampler.name: EMU mutates sampled negatives, and regime={name} scores every entity instead; "
            "use EMU with regime=negative_sampling (the default)"
        )
    if sampler != NONE:
        raise ValueError(
            f"sampler.name: regime={name} scores every entity and draws no negatives; "
            f"drop sampler={sampler} (regime={name} sets sampler=none)"
        )
    loss = LOSSES.get(cfg.loss.name)
    if loss is not None and not loss.has_all_entity_form():
        fitting = " or ".join(n for n, cls in LOSSES.items() if cls.has_all_entity_form())
        raise ValueError(f"loss.name: regime={name} trains with {fitting}, not {cfg.loss.name!r}")
    mi = cfg.get("mi")
    if mi is not None and mi.name != NONE and mi.get("extra_negatives") == "kge":
        raise ValueError(
            f"mi.extra_negatives: 'kge' adds the KGE loss's sampled negatives, and regime={name} samples none"
        )
    return ALL_ENTITY_REGIMES[name]()


def build_model(cfg: DictConfig, num_entities: int, num_relations: int) -> KGEModel:
    return build_option(MODELS, "model", cfg.model, num_entities, num_relations)


def build_mi(cfg: DictConfig, model: KGEModel) -> MutualInformation | None:
    """The MI-KGE regulariser of ``cfg.mi`` sized for ``model``; ``None`` for ``mi=none``."""
    node = cfg.get("mi")
    if node is None or node.name == NONE:
        return None
    widths = (model.entity.embedding_dim, model.relation.embedding_dim)
    return construct(MutualInformation, "mi", _options(node), *widths)


def build_module(cfg: DictConfig, num_entities: int, num_relations: int) -> LinkPredictionModule:
    """The LightningModule of a run; the config and graph size are saved as its hyper-parameters."""
    model = build_model(cfg, num_entities, num_relations)
    regime = build_regime(cfg)
    negatives, emu = build_negatives(cfg) if regime is None else (None, None)
    if emu is not None and cfg.loss.name != "softmax_ce":
        raise ValueError(
            f"loss.name: sampler=emu trains with its own softmax cross-entropy terms; "
            f"use loss=softmax_ce, not {cfg.loss.name!r}"
        )
    loss = build_option(LOSSES, "loss", cfg.loss)
    regularizer = build_option(REGULARIZERS, "regularizer", cfg.regularizer, optional=True)
    if regularizer is not None and regularizer.weight == 0:  # as the reference's -r 0: no penalty at all
        regularizer = None
    switch = build_option(SCHEDULES, "schedule", cfg.schedule, optional=True)
    optimizer = _options(cfg.optimizer)
    build_optimizer(model.parameters(), **optimizer)  # fail now, not at the first step, on a bad option
    module = LinkPredictionModule(
        model,
        negatives,
        loss,
        regularizer,
        optimizer,
        switch=switch,
        emu=emu,
        mi=build_mi(cfg, model),
        seed=cfg.seed,
        nonfinite=cfg.get("nonfinite", "stop"),
        regime=regime,
    )
    module.save_hyperparameters(
        {
            "config": OmegaConf.to_container(cfg, resolve=True),
            "num_entities": num_entities,
            "num_relations": num_relations,
        }
    )
    return module
