"""``kgexp --help`` and ``kgexp COMMAND --help``: what they list, read against conf/ and the composed
configs; the flags Hydra keeps (--cfg, --hydra-help) and the commands still reach it."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from conftest import compose_config, run_kgexp
from omegaconf import OmegaConf

from kgexp.cli import config_dir, main
from kgexp.commands import help as kgexp_help

CONF = Path(config_dir())


def help_text(argv: list[str]) -> str | None:
    return kgexp_help.help_text(argv, CONF)


def overview() -> str:
    return kgexp_help.overview(CONF)


USAGES = (
    "kgexp [train] [overrides]",
    "kgexp evaluate ckpt=",
    "kgexp analyze ckpt=",
    "kgexp predict ckpt=",
    "kgexp export ckpt=",
    "kgexp report DIR",
)
EXAMPLES = (
    "kgexp model=rotate sampler=emu ",
    "kgexp experiment=quickstart ",
    "kgexp -m model=transe,rotate sampler=uniform,emu seed=0,1,2 ",
)
#: The groups a run's config names (``model: {name: transe}``), whose default the help states.
NAMED = ("dataset", "model", "sampler", "loss", "regularizer", "mi", "optimizer", "schedule")


def section(text: str, title: str) -> list[str]:
    """The lines under ``title`` up to the next blank line, wrapped lines joined to the one they continue."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(title)) + 1
    joined: list[str] = []
    for line in lines[start:]:
        if not line.strip():
            break
        if line.startswith("    "):  # a continuation: deeper than the two-space entries
            joined[-1] += " " + line.strip()
        else:
            joined.append(line.strip())
    return joined


def listed_groups(lines: list[str]) -> dict[str, tuple[list[str], str | None]]:
    """``group -> (options, default)`` of lines ``group: a, b, c (default: b)``."""
    groups = {}
    for line in lines:
        group, _, rest = line.partition(": ")
        options, _, default = rest.partition(" (default: ")
        groups[group] = (options.split(", "), default.removesuffix(")") or None)
    return groups


def test_the_overview_lists_every_command_and_no_hydra_internals():
    text = overview()
    assert text.splitlines()[0].startswith("kgexp: ")
    commands = section(text, "Commands:")
    for usage in USAGES:
        assert sum(line.startswith(usage) for line in commands) == 1, usage
    assert len(commands) == 6
    assert "schema" not in text and "powered by Hydra" not in text


def test_the_overview_lists_each_config_folder_with_its_options():
    folders = {p.name: p for p in CONF.iterdir() if p.is_dir()}
    groups = listed_groups(section(overview(), "Config groups"))
    assert set(groups) == set(folders)
    for name, folder in folders.items():
        options = {str(p.relative_to(folder).with_suffix("")) for p in folder.rglob("*.yaml")}
        assert sorted(groups[name][0]) == sorted(options), name
    assert "codex-s/complex" in groups["experiment"][0] and "quickstart" in groups["experiment"][0]


def test_the_defaults_the_overview_states_are_what_a_run_without_overrides_composes():
    cfg = compose_config()
    groups = listed_groups(section(overview(), "Config groups"))
    for group in NAMED:
        assert groups[group][1] == cfg[group].name, group
    assert groups["experiment"][1] is None and groups["hparams_search"][1] is None


def test_the_overview_gives_examples_and_pointers():
    examples = section(overview(), "Examples:")
    for example in EXAMPLES:
        assert any(line.startswith(example) for line in examples), example
    pointers = " ".join(section(overview(), "More:"))
    assert "kgexp train --help" in pointers and "kgexp --cfg job" in pointers and "--hydra-help" in pointers


@pytest.mark.parametrize("argv", [["--help"], ["-h"]])
def test_help_alone_is_the_overview(argv):
    assert help_text(argv) == overview()


@pytest.mark.parametrize(
    "argv", [[], ["model=rotate"], ["--cfg", "job"], ["--hydra-help"], ["-m", "seed=0,1"]]
)
def test_without_help_flags_hydra_runs_as_before(argv):
    assert help_text(argv) is None


def override_text(value: object) -> str:
    """A value as it is typed in an override."""
    if isinstance(value, list):
        return "[" + ",".join(map(str, value)) + "]"
    return "null" if value is None else str(value)


def leaves(node: object, prefix: str = "") -> dict[str, object]:
    if isinstance(node, dict):
        return {k: v for key, child in node.items() for k, v in leaves(child, f"{prefix}{key}.").items()}
    return {prefix.removesuffix("."): node}


@pytest.mark.parametrize("command", ["evaluate", "analyze", "predict", "export"])
def test_a_command_help_lists_each_key_of_its_config_with_its_default(command):
    text = help_text([command, "--help"])
    assert text.startswith(f"Usage: kgexp {command} ckpt=PATH")
    keys = [line.split()[0] for line in section(text, "Keys")]
    composed = OmegaConf.to_container(compose_config(config_name=command), resolve=False)
    expected = {
        f"{key}={override_text(value)}"
        for key, value in leaves(composed).items()
        if key != "output_dir" and not key.startswith("trainer.")  # set by Hydra; the trainer group
    }
    assert set(keys) == expected
    assert any(line.startswith("ckpt=???") and line.endswith("(required)") for line in section(text, "Keys"))


def test_evaluate_help_names_its_trainer_group_and_the_keys_comments():
    groups = listed_groups(section(help_text(["evaluate", "--help"]), "Config groups"))
    options = sorted(p.stem for p in (CONF / "trainer").glob("*.yaml"))
    assert groups == {"trainer": (options, "default")}
    keys = section(help_text(["predict", "-h"]), "Keys")
    assert any(line.startswith("filter=all") and "train (training triples)" in line for line in keys)


@pytest.mark.parametrize("argv", [["train", "model=rotate", "--help"], ["-m", "model=rotate", "-h"]])
def test_train_help_prints_the_config_composed_with_the_overrides(argv):
    text = help_text(argv)
    assert text.startswith("Usage: kgexp [train]")
    assert text.endswith(OmegaConf.to_yaml(compose_config("model=rotate")).rstrip())
    assert "name: rotate" in text and "schema" not in text
    assert set(listed_groups(section(text, "Config groups"))) == {
        p.name for p in CONF.iterdir() if p.is_dir()
    }


def test_train_help_with_a_bad_option_is_hydras_message():
    with pytest.raises(SystemExit, match="Could not find 'model/nosuch'"):
        help_text(["train", "model=nosuch", "--help"])


def test_main_prints_the_help_and_returns(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["kgexp", "--help"])
    main()
    assert capsys.readouterr().out == overview() + "\n"


def test_report_help_is_its_argparse_help(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["kgexp", "report", "--help"])
    with pytest.raises(SystemExit) as stop:
        main()
    assert stop.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: kgexp report [-h]") and "--published" in out and "--tolerance" in out


@pytest.mark.slow
def test_the_command_prints_help_and_keeps_hydras_flags(tmp_path):
    """As a user types them: ``--help`` is kgexp's, exit 0; ``--hydra-help`` and ``--cfg job`` Hydra's."""
    result = run_kgexp("--help", cwd=tmp_path)
    assert result.stdout == overview() + "\n"
    assert "kgexp report DIR" in result.stdout
    hydra_help = run_kgexp("--hydra-help", cwd=tmp_path).stdout
    assert "Hydra (" in hydra_help and "--cfg" in hydra_help
    config = OmegaConf.create(run_kgexp("--cfg", "job", "model=rotate", "sampler=emu", cwd=tmp_path).stdout)
    assert (config.model.name, config.sampler.name) == ("rotate", "emu")
    assert run_kgexp("evaluate", "--help", cwd=tmp_path).stdout == help_text(["evaluate", "--help"]) + "\n"
    assert not list(tmp_path.iterdir())  # no run started, nothing written


def test_hydra_composition_errors_become_one_line():
    from hydra.errors import ConfigCompositionException, MissingConfigException
    from omegaconf.errors import ConfigKeyError

    from kgexp.cli import compact

    try:
        raise ConfigCompositionException(
            "Could not override 'model.dimm'.\nTo append to your config use +model.dimm=200"
        ) from ConfigKeyError("Key 'dimm' not in 'TranseModelSchema'\n    full_key: model.dimm")
    except ConfigCompositionException as error:
        assert compact(error) == "Could not override 'model.dimm'; Key 'dimm' not in 'TranseModelSchema'"
    missing = MissingConfigException(
        "In 'config': Could not find 'model/transr'\n\nAvailable options in 'model':\n\tcomplex\n\ttranse\n"
        "Config search path:\n\tprovider=hydra, path=pkg://hydra.conf"
    )
    assert compact(missing) == (
        "In 'config': Could not find 'model/transr'; Available options in 'model': complex, transe"
    )
