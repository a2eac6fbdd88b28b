"""Every option of every config group composes and builds; bad options fail early, naming the key."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from kgexp.cli import config_dir
from kgexp.config import validate
from kgexp.config.build import build_datamodule, build_module
from kgexp.data.registry import DATASETS

CONF = Path(config_dir())
GROUPS = (
    "dataset",
    "model",
    "sampler",
    "loss",
    "regularizer",
    "mi",
    "setting",
    "optimizer",
    "schedule",
    "trainer",
    "callbacks",
    "logger",
)


def options(group: str) -> list[str]:
    return sorted(str(p.relative_to(CONF / group).with_suffix("")) for p in (CONF / group).rglob("*.yaml"))


def compose_config(*overrides: str):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def validated(cfg):
    """``cfg`` after :func:`validate`, with a run folder in place of Hydra's runtime one."""
    OmegaConf.update(cfg, "output_dir", "/tmp/kgexp-run")
    validate(cfg)
    return cfg


def resolved(cfg):
    """The config without the keys that interpolate Hydra's runtime output folder."""
    return OmegaConf.masked_copy(cfg, [k for k in cfg if k not in ("output_dir", "callbacks", "logger")])


@pytest.mark.parametrize(("group", "option"), [(g, o) for g in GROUPS for o in options(g)])
def test_every_group_option_composes_and_builds(group, option):
    overrides = [f"{group}={option}"]
    if option == "custom":
        overrides.append("dataset.path=/some/folder")
    if (group, option) == ("sampler", "none"):  # what the all-entity regimes train without
        overrides.append("regime=1vsAll")
    cfg = validated(compose_config(*overrides))
    if group not in ("setting", "callbacks", "logger"):  # these have no node of their own
        assert dataclasses.is_dataclass(OmegaConf.get_type(cfg[group])), "the option extends no schema"
    assert (
        (cfg.get("recipe") is not None) == (option != "none")
        if group == "setting"
        else cfg[group] is not None
    )
    module = build_module(resolved(cfg), num_entities=12, num_relations=3)
    assert module.model.num_entities == 12
    if group == "dataset":
        assert cfg.dataset.name in DATASETS or cfg.dataset.name == "custom"
        assert build_datamodule(cfg).name == cfg.dataset.name


@pytest.mark.parametrize("experiment", options("experiment"))
def test_every_experiment_composes_and_builds(experiment):
    cfg = validated(compose_config(f"experiment={experiment}"))
    module = build_module(resolved(cfg), num_entities=12, num_relations=3)
    assert module.model.name == cfg.model.name


def test_dataset_registry_matches_config_group():
    assert set(options("dataset")) == set(DATASETS) | {"custom"}


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("model.dim=0", "model.dim"),
        ("model.dim=-3", "model.dim"),
        ("sampler.num_negatives=0", "sampler.num_negatives"),
        ("optimizer.lr=-0.1", "optimizer.lr"),
        ("loss=margin loss.margin=-1", "loss.margin"),
        ("regularizer=n3 regularizer.weight=-1", "regularizer.weight"),
        ("sampler.sides=sideways", "sampler.sides"),
        ("schedule.fraction=1.5", "schedule.fraction"),
        ("optimizer.name=lbfgs", "optimizer.name"),
        ("mi=infonce mi.weight=-1", "mi.weight"),
        ("mi=infonce mi.directions=[t_hr]", "mi.directions"),
        ("mi=jsd mi.key_head=identity mi.width=7", "mi.key_head"),
        ("mi=mine mi.ema_rate=0", "mi.ema_rate"),
        ("mi=infonce +mi.heads=3", "mi.heads"),
        ("sampler=sans sampler.hops=0", "sampler.hops"),
        ("sampler=sans sampler.neighbourhood=ball", "sampler.neighbourhood"),
        ("sampler=rw_sans sampler.walks=0", "sampler.walks"),
        ("sampler=rw_sans sampler.walk_mode=lazy", "sampler.walk_mode"),
        ("sampler=nscaching sampler.cache_size=0", "sampler.cache_size"),
        ("sampler=nscaching sampler.refresh=random", "sampler.refresh"),
        ("sampler=nscaching sampler.temperature=0", "sampler.temperature"),
        ("sampler=emu sampler.base=nope", "sampler.base"),
        ("sampler=emu sampler.base=rw_sans +sampler.hopz=2", "sampler.hopz"),
    ],
)
def test_nonsense_hyperparameters_name_the_key(override, key):
    cfg = compose_config(*override.split())
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        build_module(resolved(cfg), num_entities=12, num_relations=3)


@pytest.mark.parametrize(
    ("override", "key"),
    [("data.batch_size=0", "data.batch_size"), ("data.eval_batch_size=-1", "data.eval_batch_size")],
)
def test_nonsense_data_options_name_the_key(override, key):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        build_datamodule(compose_config(override))


def test_option_a_class_does_not_take_is_named():
    cfg = compose_config("+model.depth=3")
    with pytest.raises(ValueError, match=r"model\.depth: unknown option for TransE; valid options: dim"):
        build_module(resolved(cfg), num_entities=12, num_relations=3)


def test_trainer_group_maps_onto_lightning_trainer_arguments():
    import inspect

    import pytorch_lightning as pl

    accepted = set(inspect.signature(pl.Trainer).parameters)
    for option in options("trainer"):
        cfg = compose_config(f"trainer={option}", "trainer.max_steps=7")
        assert set(cfg.trainer) <= accepted
        assert cfg.trainer.max_steps == 7


def _leaves(node, prefix=""):
    for key, value in node.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            yield from _leaves(value, path + ".")
        else:
            yield path, value


@pytest.mark.parametrize("experiment", options("experiment"))
def test_every_value_an_experiment_sets_wins_over_the_defaults(experiment):
    own = OmegaConf.to_container(OmegaConf.load(CONF / "experiment" / f"{experiment}.yaml"))
    own.pop("defaults", None)
    own.pop("hydra", None)  # a grid's sweep: checked by test_every_job_of_every_grid_composes_and_builds
    composed = dict(_leaves(OmegaConf.to_container(compose_config(f"experiment={experiment}"))))  # unresolved
    for path, value in _leaves(own):
        assert composed[path] == value, path


@pytest.mark.parametrize(
    ("overrides", "valid"),
    [
        (["selection.monitor=val/hits@10"], True),
        (["selection.monitor=val/mr", "selection.mode=min"], True),
        (["selection.monitor=val/hit@10"], False),
        (["selection.mode=lowest"], False),
        (["selection.monitor=val/intra_group/hr_tails"], False),
        (["selection.monitor=val/intra_group/hr_tails", "mi=infonce", "selection.mode=min"], True),
    ],
)
def test_selection_accepts_exactly_the_metrics_validation_logs(overrides, valid):
    cfg = compose_config(*overrides)
    if valid:
        validated(cfg)
    else:
        with pytest.raises(ValueError, match=r"^selection\.(monitor|mode): expected one of"):
            validated(cfg)


# The EMU scripts' values (METHODS.md §1.10), written out independently of conf/setting/.
EMU_LR = {"transe": 0.05, "distmult": 0.1, "complex": 0.1, "rotate": 0.05}
BASELINE_L3 = {"transe": 1e-3, "distmult": 1e-5, "complex": 1e-5, "rotate": 1e-3}


@pytest.mark.parametrize("model", sorted(EMU_LR))
@pytest.mark.parametrize("setting", ["uniform", "emu", "san", "san_emu"])
def test_emu_paper_settings_hold_the_scripts_values(setting, model):
    cfg = OmegaConf.to_container(
        resolved(compose_config(f"setting={setting}", f"model={model}")), resolve=True
    )
    assert (cfg["optimizer"]["name"], cfg["optimizer"]["lr"]) == ("adagrad", EMU_LR[model])
    assert (cfg["data"]["batch_size"], cfg["sampler"]["num_negatives"], cfg["model"]["dim"]) == (
        1000,
        256,
        100,
    )
    assert cfg["schedule"]["name"] == "switch" and cfg["trainer"]["max_steps"] == 100_000
    baseline = setting in ("uniform", "san")
    assert cfg["regularizer"]["name"] == ("l3" if baseline else "none")
    if baseline:
        assert cfg["regularizer"]["weight"] == BASELINE_L3[model]
    sampler = cfg["sampler"]
    base = sampler.get("base", sampler["name"])
    assert (sampler["name"] == "emu") == (setting in ("emu", "san_emu"))
    assert base == ("rw_sans" if setting.startswith("san") else "uniform")
    if setting.startswith("san"):
        assert sampler.get("walk_mode") == "chained" and sampler.get("filtered", True) is True
    if setting == "san_emu":
        assert sampler["resample"] is False and (sampler["hops"], sampler["walks"]) == (3, 1000)


def sweep_jobs(experiment: str) -> list[list[str]]:
    """The overrides of every job of ``experiment``'s sweep, as Hydra's basic sweeper expands them."""
    import itertools

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        params = compose(
            "config", overrides=[f"experiment={experiment}"], return_hydra_config=True
        ).hydra.sweeper.params
    axes = [[f"{key}={value}" for value in str(values).split(",")] for key, values in params.items()]
    return [[f"experiment={experiment}", *job] for job in itertools.product(*axes)]


@pytest.mark.slow
@pytest.mark.parametrize("experiment", [o for o in options("experiment") if o.startswith("grid/")])
def test_every_job_of_every_grid_composes_and_builds(experiment):
    jobs = sweep_jobs(experiment)
    sizes = {"grid/emu": 144, "grid/mi": 72, "grid/emu_ablation": 72, "grid/smoke": 8, "grid/codex_s": 24}
    assert len(jobs) == sizes[experiment]
    for job in jobs:
        cfg = validated(compose_config(*job))
        module = build_module(resolved(cfg), num_entities=12, num_relations=3)
        chosen = dict(o.split("=", 1) for o in job)
        model = chosen.get("model", chosen.get("experiment/codex-s@_global_", cfg.model.name))
        assert module.model.name == model
        assert cfg.dataset.name == chosen.get("dataset", cfg.dataset.name)


# The issue-3 commands of docs/results.md, written out independently of conf/experiment/grid/codex_s.yaml.
CODEX_S_STEPS = {"transe": 400, "distmult": 600, "complex": 500, "rotate": 600}


@pytest.mark.slow
def test_the_codex_s_grid_runs_the_documented_commands():
    jobs = sweep_jobs("grid/codex_s")
    seen = set()
    for job in jobs:
        chosen = dict(o.split("=", 1) for o in job)
        model, sampler, seed = chosen["experiment/codex-s@_global_"], chosen["sampler"], chosen["seed"]
        command = [f"experiment=codex-s/{model}", "loss=softmax_ce", f"sampler={sampler}", f"seed={seed}"]
        command += [f"trainer.max_steps={CODEX_S_STEPS[model]}", "trainer.val_check_interval=100"]
        grid = OmegaConf.to_container(resolved(compose_config(*job)), resolve=True)
        grid.pop("recipe")
        plain = OmegaConf.to_container(resolved(compose_config(*command)), resolve=True)
        assert plain.pop("recipe") is None
        assert grid == plain, job
        seen.add((model, sampler, seed))
    assert len(seen) == 4 * 2 * 3


@pytest.mark.parametrize(
    ("search", "extra"), [("optuna", []), ("optuna_emu", ["sampler=emu"]), ("optuna_mi", ["mi=infonce"])]
)
def test_every_searched_parameter_is_a_key_of_the_config(search, extra):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=[f"hparams_search={search}", *extra], return_hydra_config=True)
    params = cfg.hydra.sweeper.params
    assert cfg.hydra.sweeper._target_.endswith("OptunaSweeper") and len(params) >= 3
    for key in params:
        assert OmegaConf.select(cfg, key) is not None, key


# The RotatE code's best_config.sh rows (METHODS.md §6), written out independently of conf/setting/mi.yaml:
# batch, d, gamma, negatives, lr, L3 weight, adversarial temperature, steps.
ROTATE_CODE = {
    ("fb15k237", "transe"): (1024, 1000, 9.0, 256, 5e-5, None, 1.0, 100_000),
    ("fb15k237", "rotate"): (1024, 1000, 9.0, 256, 5e-5, None, 1.0, 100_000),
    ("fb15k237", "complex"): (1024, 1000, 200.0, 256, 1e-3, 1e-5, 1.0, 100_000),
    ("wn18rr", "transe"): (512, 500, 6.0, 1024, 5e-5, None, 0.5, 80_000),
    ("wn18rr", "rotate"): (512, 500, 6.0, 1024, 5e-5, None, 0.5, 80_000),
    ("wn18rr", "complex"): (512, 500, 200.0, 1024, 2e-3, 5e-6, 1.0, 80_000),
}


@pytest.mark.parametrize(("dataset", "model"), sorted(ROTATE_CODE))
def test_mi_setting_holds_the_rotate_code_recipes(dataset, model):
    cfg = compose_config("setting=mi", f"dataset={dataset}", f"model={model}")
    plain = OmegaConf.to_container(resolved(cfg), resolve=True)
    batch, dim, gamma, negatives, lr, l3, temperature, steps = ROTATE_CODE[(dataset, model)]
    assert (plain["data"]["batch_size"], plain["model"]["dim"], plain["model"]["gamma"]) == (
        batch,
        dim,
        gamma,
    )
    assert (plain["sampler"]["name"], plain["sampler"]["num_negatives"], plain["sampler"]["filtered"]) == (
        "uniform",
        negatives,
        True,
    )
    assert (plain["optimizer"]["name"], plain["optimizer"]["lr"]) == ("adam", lr)
    assert (
        plain["loss"]["name"] == "self_adversarial"
        and plain["loss"]["adversarial_temperature"] == temperature
    )
    assert plain["trainer"]["max_steps"] == steps and plain["mi"]["name"] == "infonce"
    module = build_module(resolved(cfg), num_entities=12, num_relations=3)
    assert (module.regularizer is None) == (l3 is None)
    if l3 is not None:
        assert module.regularizer.weight == l3


@pytest.mark.parametrize(
    ("setting", "changed"),
    [
        ("emu_no_uls", {"beta": 0.0}),
        ("emu_no_mutation", {"mutation": "none"}),
        ("emu_mixup", {"mutation": "mixup"}),
        ("emu_ls", {"labels": "ls"}),
    ],
)
def test_emu_ablation_settings_change_one_thing(setting, changed):
    reference = OmegaConf.to_container(resolved(compose_config("setting=emu")), resolve=True)
    ablated = OmegaConf.to_container(resolved(compose_config(f"setting={setting}")), resolve=True)
    assert ablated["sampler"] == {**reference["sampler"], **changed} != reference["sampler"]
    assert {k: v for k, v in ablated.items() if k != "sampler"} == {
        k: v for k, v in reference.items() if k != "sampler"
    }


# Bad values, written by hand, and what each error must say: composition rejects wrong types and unknown
# keys; validation rejects keys forced in with +, values out of range, and interpolations of the wrong type.
BAD_CONFIGS = [
    (
        ["+model.dimm=64"],
        "model.dimm: unknown option; valid options: name, dim, gamma, init_range, reciprocal, p_norm",
    ),
    (["model.dimm=64"], "Key 'dimm' not in 'TranseModelSchema'"),
    (
        ["model.dim=abc"],
        "Value 'abc' of type 'str' could not be converted to Integer\n    full_key: model.dim",
    ),
    (
        ["model.dim=1.5"],
        "Value '1.5' of type 'float' could not be converted to Integer\n    full_key: model.dim",
    ),
    (["model.dim=0"], "model.dim: expected a value >= 1, got 0"),
    (["model.p_norm=3"], "model.p_norm: expected one of 1, 2, got 3"),
    (["model.gamma=big"], "full_key: model.gamma"),
    (["sampler.num_negatives=-3"], "sampler.num_negatives: expected a value >= 1, got -3"),
    (["sampler.filtered=maybe"], "full_key: sampler.filtered"),
    (["sampler.sides=sideways"], "sampler.sides: expected one of alternate, both, bernoulli, got 'sideways'"),
    (["sampler=emu", "sampler.keep_prob=high"], "full_key: sampler.keep_prob"),
    (["sampler=emu", "sampler.keep_prob=1.5"], "sampler.keep_prob: expected a value in [0, 1], got 1.5"),
    (
        ["sampler=emu", "sampler.base=rw_sans", "sampler.walks=0"],
        "sampler.walks: expected a value >= 1, got 0",
    ),
    (["sampler=rw_sans", "sampler.walks=many"], "full_key: sampler.walks"),
    (["mi=infonce", "mi.weight=x"], "full_key: mi.weight"),
    (
        ["mi=infonce", "mi.directions=[hr_t,t_hr]"],
        "mi.directions: expected one of hr_t, rt_h, got ['hr_t', 't_hr']",
    ),
    (["mi=mine", "mi.ema_rate=0"], "mi.ema_rate: expected a value in (0, 1], got 0.0"),
    (["optimizer.lr=fast"], "full_key: optimizer.lr"),
    (["optimizer.lr=-1"], "optimizer.lr: expected a value > 0, got -1.0"),
    (["optimizer.weight_decay=-0.1"], "optimizer.weight_decay: expected a value >= 0, got -0.1"),
    (["optimizer.momentum=0.9"], "Key 'momentum' not in 'AdagradOptimizerSchema'"),
    (["schedule.fraction=half"], "full_key: schedule.fraction"),
    (["schedule.fraction=1"], "schedule.fraction: expected a value in (0, 1), got 1.0"),
    (["data.batch_size=x"], "full_key: data.batch_size"),
    (["data.eval_batch_size=0"], "data.eval_batch_size: expected a value >= 1, got 0"),
    (["loss=margin", "loss.margin=0"], "loss.margin: expected a value > 0, got 0.0"),
    (["regularizer=n3", "regularizer.weight=heavy"], "full_key: regularizer.weight"),
    (["regularizer=n3", "regularizer.scope=everything"], "regularizer.scope: expected one of batch, table"),
    (["trainer.max_step=10"], "Key 'max_step' not in 'TrainerSchema'"),
    (["trainer.max_steps=-2"], "trainer.max_steps: expected a value >= -1, got -2"),
    (
        ["callbacks=early_stopping", "+callbacks.early_stopping.patiense=3"],
        "callbacks.early_stopping.patiense",
    ),
    (["seed=-1"], "seed: expected a value in [0, 4294967295], got -1"),
    (["nonfinite=ignore"], "nonfinite: expected one of stop, skip, got 'ignore'"),
    (["+foo=1"], "foo: unknown option"),
    (["selection.monitor=val/hit@10"], "selection.monitor"),  # not a metric validation logs
    (["setting=emu", "model=rotate", "recipe.lr.rotate=fast"], "optimizer.lr: While dereferencing"),
    (["setting=mi"], "data.batch_size: Interpolation key 'recipe.custom.transe.batch' not found"),
]


@pytest.mark.parametrize(("overrides", "named"), BAD_CONFIGS)
def test_a_bad_config_fails_before_any_data_is_loaded_naming_the_key(tmp_path, overrides, named):
    """On a dataset folder that does not exist: the config error must come first."""
    from hydra.errors import ConfigCompositionException

    from kgexp.commands.train import train
    from kgexp.config import ConfigError

    try:
        cfg = compose_config("dataset=custom", f"dataset.path={tmp_path / 'no-dataset'}", *overrides)
    except ConfigCompositionException as error:  # Hydra names the key in the error's cause
        assert named in f"{error}\n{error.__cause__}"
        return
    OmegaConf.update(cfg, "output_dir", str(tmp_path / "run"))
    with pytest.raises(ConfigError) as error:
        train(cfg)
    assert named in str(error.value)
    assert not (tmp_path / "run" / "config.yaml").exists()  # nothing written either


@pytest.mark.parametrize(
    ("override", "listed"),
    [
        ("model=transr", ["model/transr", "complex", "distmult", "rotate", "transe"]),
        ("dataset=fb15k", ["dataset/fb15k", "fb15k237", "codex-s", "custom"]),
    ],
)
def test_an_unknown_group_option_lists_the_valid_choices(override, listed):
    """What the command prints for ``kgexp model=transr``: Hydra's composition error, in process."""
    from hydra.errors import MissingConfigException

    with pytest.raises(MissingConfigException) as error:
        compose_config(override)
    options = str(error.value).split("Available options", 1)[1]
    for name in listed[1:]:
        assert f"\t{name}\n" in options
    assert f"Could not find '{listed[0]}'" in str(error.value)


@pytest.mark.slow
def test_a_typo_in_a_key_fails_at_the_command_naming_it(tmp_path):
    from conftest import run_kgexp

    result = run_kgexp("model.dimm=64", cwd=tmp_path, check=False)
    assert result.returncode == 1 and "HYDRA_FULL_ERROR" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "config error: Could not override 'model.dimm'; Key 'dimm' not in 'TranseModelSchema'"
    )
