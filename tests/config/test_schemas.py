"""The config schemas: limits at their boundaries, annotations OmegaConf can check, and defaults that reach
the objects unchanged."""

from __future__ import annotations

import math
from typing import Any, Optional

import pytest
import pytorch_lightning as pl
import torch
from omegaconf import MISSING, OmegaConf
from test_configs import compose_config, resolved

from kgexp.cli import config_dir
from kgexp.config.build import build_module
from kgexp.config.schemas import omegaconf_type, signature_options
from kgexp.options import OneOf, Range, check
from kgexp.training.optim import build_optimizer


@pytest.mark.parametrize(
    ("limit", "allowed", "refused"),
    [
        (
            Range(0, 1, low_open=True),
            [1e-9, 0.5, 1, 1.0],
            [0, 0.0, -1, 1.0000001, math.nan, True, "0.5", None],
        ),
        (Range(1), [1, 2, 10**9], [0, 0.999, False, True, -1]),
        (Range(-1), [-1, 0, 5], [-2, -1.5]),
        (Range(0, 1, high_open=True), [0, 0.999], [1, 1.0]),
        (OneOf((1, 2)), [1, 2, [1, 2]], [3, [], [1, 3], "1"]),
    ],
)
def test_limits_at_their_boundaries(limit, allowed, refused):
    for value in allowed:
        assert limit.allows(value), value
    for value in refused:
        assert not limit.allows(value), value


def test_a_value_out_of_its_limit_names_the_key_and_none_means_unset():
    with pytest.raises(ValueError, match=r"^mi\.ema_rate: expected a value in \(0, 1\], got 0$"):
        check("mi.ema_rate", Range(0, 1, low_open=True), 0)
    with pytest.raises(ValueError, match=r"^sampler\.draw: expected one of uniform, importance, got 'top'$"):
        check("sampler.draw", OneOf(("uniform", "importance")), "top")
    check("model.init_range", Range(0, low_open=True), None)  # null: the constructor's default applies


@pytest.mark.parametrize(
    ("annotation", "expected"),
    [
        (int, int),
        (float | None, Optional[float]),  # noqa: UP045 (what OmegaConf reads)
        (float | torch.Tensor, float),  # torch's learning rates: the tensor form cannot come from a config
        (bool | None, Optional[bool]),  # noqa: UP045
        (int | str, Any),  # OmegaConf 2.3 checks no union of two primitives
        (tuple[str, ...] | list[str], list[str]),
        (tuple[float | torch.Tensor, float | torch.Tensor], list[float]),
        (dict[str, int], Any),
        (torch.nn.Module, Any),
    ],
)
def test_annotations_map_to_types_omegaconf_checks(annotation, expected):
    assert omegaconf_type(annotation) == expected


def test_signature_options_skip_leading_and_variadic_parameters():
    class Toy:
        def __init__(self, size: int, width: int, scale: float | None = None, *rest, names=("a",), **extra):
            pass

    options = signature_options(Toy, skip=1)
    assert [(o.name, o.annotation, o.default) for o in options] == [
        ("width", int, MISSING),
        ("scale", Optional[float], None),  # noqa: UP045
        ("names", Any, ("a",)),
    ]


def test_constructor_defaults_appear_in_the_composed_config():
    cfg = compose_config("sampler=uniform", "optimizer=adam", "regularizer=l2")
    assert cfg.sampler.max_redraws == 10  # UniformSampler's default, not set in sampler/uniform.yaml
    assert list(cfg.optimizer.betas) == [0.9, 0.999] and cfg.optimizer.eps == 1e-8  # torch.optim.Adam's
    assert cfg.regularizer.complex_modulus is False


@pytest.mark.parametrize("name", ["adam", "adagrad", "sgd"])
def test_the_full_optimizer_config_builds_the_optimizer_a_bare_call_would(name):
    """Every torch option written out in the config gives torch's own defaults (and the fused kernel)."""
    cfg = compose_config(f"optimizer={name}")
    options = OmegaConf.to_container(cfg.optimizer)
    table = torch.nn.Parameter(torch.zeros(4, 3))
    ours = build_optimizer([table], **options)
    bare = {"adam": torch.optim.Adam, "adagrad": torch.optim.Adagrad, "sgd": torch.optim.SGD}[name](
        [table], lr=options["lr"], fused=True
    )
    assert ours.defaults == bare.defaults


def test_the_full_trainer_config_sets_what_lightning_would_by_default():
    cfg = compose_config("trainer.max_steps=7")
    written = OmegaConf.to_container(cfg.trainer)
    own = OmegaConf.to_container(OmegaConf.load(f"{config_dir()}/trainer/default.yaml"))
    own.pop("defaults")
    kwargs = {"logger": False, "enable_checkpointing": False}
    full = pl.Trainer(**{**written, **kwargs})
    bare = pl.Trainer(**{**own, "max_steps": 7, **kwargs})
    for attribute in (
        "max_steps",
        "max_epochs",
        "val_check_interval",
        "accumulate_grad_batches",
        "precision",
        "gradient_clip_val",
        "log_every_n_steps",
        "limit_val_batches",
        "num_sanity_val_steps",
    ):
        assert getattr(full, attribute) == getattr(bare, attribute), attribute


def test_emu_leaves_unset_base_options_to_the_base_sampler():
    cfg = compose_config("sampler=emu", "sampler.base=sans")
    assert cfg.sampler.hops is None and cfg.sampler.walks is None
    sampler = build_module(resolved(cfg), num_entities=12, num_relations=3).negatives.sampler
    assert (sampler.hops, sampler.mode, sampler.filtered) == (3, "within", True)  # SANSSampler's own defaults
    cfg = compose_config("sampler=emu", "sampler.base=sans", "sampler.hops=2")
    assert build_module(resolved(cfg), num_entities=12, num_relations=3).negatives.sampler.hops == 2


def test_an_option_the_chosen_base_sampler_does_not_take_is_named():
    from kgexp.commands.train import train
    from kgexp.config import ConfigError

    cfg = compose_config("sampler=emu", "sampler.base=uniform", "sampler.walks=500")
    OmegaConf.update(cfg, "output_dir", "/tmp/kgexp-never-written")
    with pytest.raises(ConfigError, match=r"sampler\.walks: unknown option for UniformSampler"):
        train(cfg)
