"""``kgexp --help`` and ``kgexp COMMAND --help``, written by kgexp rather than by Hydra, whose generated
help lists the internal ``schema/*`` groups and knows nothing of the other commands. ``conf`` is the
Hydra config folder the help reads (groups, options, defaults, each command's keys)."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

from omegaconf import OmegaConf

from kgexp.options import dotted, value_text

HELP_FLAGS = ("--help", "-h")

DESCRIPTION = (
    "kgexp: knowledge-graph-embedding link-prediction experiments (TransE, DistMult, ComplEx, RotatE)."
)

#: Each command: its usage and one line on what it does.
USAGES = {
    "train": ("kgexp [train] [overrides]", "train a model (the default command; -m: a job per combination)"),
    "evaluate": ("kgexp evaluate ckpt=PATH", "filtered valid and test metrics of a checkpoint"),
    "analyze": ("kgexp analyze ckpt=PATH", "how hard each sampler's negatives are for a trained model"),
    "predict": (
        "kgexp predict ckpt=PATH head=H relation=R",
        "the k best tails of (H, R, ?); tail=T: the best heads",
    ),
    "export": ("kgexp export ckpt=PATH out=DIR", "embeddings, labels and description of a checkpoint"),
    "report": ("kgexp report DIR [DIR ...]", "a table and a chart of the jobs of one or more multiruns"),
}

EXAMPLES = (
    ("kgexp model=rotate sampler=emu", "RotatE with EMU negatives on FB15k-237"),
    ("kgexp experiment=quickstart", "ComplEx on CoDEx-S, a few minutes on a CPU"),
    ("kgexp experiment=codex-s/1vsAll model=complex", "ComplEx-N3: 1vsAll, reciprocal relations"),
    ("kgexp -m model=transe,rotate sampler=uniform,emu seed=0,1,2", "a sweep: 12 jobs under multirun/"),
    ("kgexp report multirun/DATE/TIME", "the sweep's table and chart"),
    ("kgexp evaluate ckpt=outputs/DATE/TIME/checkpoints/best.ckpt", "re-evaluate a trained model"),
)

POINTERS = (
    ("kgexp COMMAND --help", "a command's usage and keys"),
    ("kgexp train --help", "every training key with its default (overrides after train apply)"),
    ("kgexp --cfg job [overrides]", "the composed config of a run, without running it"),
    ("kgexp --hydra-help", "Hydra's own flags (-m, --cfg, --info, ...) and groups (launchers, sweepers)"),
)

#: Folders of conf/ that are no config group a user picks.
_INTERNAL = ("schema", "hydra")


def _columns(pairs: list[tuple[str, str]] | tuple[tuple[str, str], ...], cap: int = 60) -> list[str]:
    """Two indented columns; the first as wide as its longest entry up to ``cap``."""
    width = min(cap, max(len(left) for left, _ in pairs))
    return [f"  {left.ljust(width)}   {right}".rstrip() for left, right in pairs]


def _wrapped(line: str, indent: int) -> str:
    return textwrap.fill(line, width=110, subsequent_indent=" " * indent, break_on_hyphens=False)


def group_options(conf: Path) -> dict[str, list[str]]:
    """Each config group of ``conf`` (a subfolder, internal ones apart) and its options, sorted; an
    option in a subfolder is named by its path (``experiment: codex-s/complex, ...``)."""
    groups = {}
    for folder in sorted(p for p in conf.iterdir() if p.is_dir()):
        if folder.name.startswith(("_", ".")) or folder.name in _INTERNAL:
            continue
        options = sorted(str(p.relative_to(folder).with_suffix("")) for p in folder.rglob("*.yaml"))
        if options:
            groups[folder.name] = options
    return groups


def default_options(config: Path) -> dict[str, str | None]:
    """``group -> option`` of the defaults list of a primary config (``override``, ``hydra/`` and
    ``schema/`` entries apart), in its order; None for a group off by default."""
    defaults = OmegaConf.to_container(OmegaConf.load(config)).get("defaults", [])
    chosen = {}
    for entry in defaults:
        if isinstance(entry, dict):
            for group, option in entry.items():
                if not str(group).startswith(("override", *(f"{i}/" for i in _INTERNAL))):
                    chosen[str(group)] = None if option is None else str(option)
    return chosen


def group_lines(conf: Path, config: str = "config", only_defaults: bool = False) -> list[str]:
    """``  group: opt1, opt2, ... (default: opt)`` per group: the groups of ``config``'s defaults list
    first, in its order, then (unless ``only_defaults``) the other groups of ``conf``."""
    options, defaults = group_options(conf), default_options(conf / f"{config}.yaml")
    names = [g for g in defaults if g in options]
    names += [] if only_defaults else [g for g in options if g not in names]
    lines = []
    for group in names:
        default = f" (default:\xa0{defaults[group]})" if defaults.get(group) else ""  # kept on one line
        line = _wrapped(f"  {group}: {', '.join(options[group])}{default}", len(group) + 4)
        lines.append(line.replace("\xa0", " "))
    return lines


def overview(conf: Path) -> str:
    """What ``kgexp --help`` prints."""
    lines = [DESCRIPTION, "", "Commands:", *_columns(list(USAGES.values())), ""]
    lines += ["Config groups of train (group=option, e.g. model=rotate; any key too, e.g. model.dim=200):"]
    lines += [*group_lines(conf), "", "Examples:", *_columns(EXAMPLES), "", "More:", *_columns(POINTERS)]
    return "\n".join(lines)


def header_comment(path: Path) -> list[str]:
    """The comment lines that open a config file, without their ``#``."""
    lines = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("#").strip())
    return lines


def key_comments(text: str) -> dict[str, str]:
    """``dotted.key -> its line's trailing comment`` in the text of a YAML config."""
    comments: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    for line in text.splitlines():
        match = re.match(r"^(\s*)([\w.@/-]+):(.*)$", line)
        if not match:
            continue
        while stack and stack[-1][0] >= len(match[1]):
            stack.pop()
        stack.append((len(match[1]), match[2]))
        comment = match[3].partition(" #")[2].strip()
        if comment:
            comments[".".join(key for _, key in stack)] = comment
    return comments


def command_keys(path: Path) -> list[tuple[str, str]]:
    """(``dotted.key=default``, its comment) of a command's config, ``defaults`` and ``hydra`` apart and
    the keys Hydra sets (``${hydra:...}``); ``???`` marks a required key."""
    node = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    leaves = dotted({k: v for k, v in node.items() if k not in ("defaults", "hydra")})
    flat = {key: value for key, value in leaves.items() if not str(value).startswith("${hydra:")}
    comments = key_comments(path.read_text())
    notes = {key: "(required) " * (value == "???") + comments.get(key, "") for key, value in flat.items()}
    return [(f"{key}={value_text(value, ',')}", notes[key].strip()) for key, value in flat.items()]


def command_help(command: str, conf: Path) -> str:
    """What ``kgexp COMMAND --help`` prints for evaluate, analyze, predict and export."""
    lines = [
        f"Usage: {USAGES[command][0]} [KEY=VALUE ...]",
        "",
        *header_comment(conf / f"{command}.yaml"),
        "",
    ]
    lines += [
        "Keys, with their defaults (set one with KEY=VALUE):",
        *_columns(command_keys(conf / f"{command}.yaml"), cap=24),
    ]
    groups = group_lines(conf, command, only_defaults=True)
    if groups:
        lines += ["", "Config groups (group=option):", *groups]
    return "\n".join(lines)


def train_help(overrides: list[str], conf: Path) -> str:
    """What ``kgexp [train] [overrides] --help`` prints: the usage, the groups and the composed config."""
    lines = ["Usage: kgexp [train] [-m] [group=option ...] [KEY=VALUE ...]", ""]
    lines += [*header_comment(conf / "config.yaml"), ""]
    lines += ["-m (--multirun): a job per combination of comma-separated values, e.g."]
    lines += ["  kgexp -m model=transe,rotate seed=0,1,2   (6 jobs under multirun/)"]
    lines += ["", "Config groups (group=option):", *group_lines(conf), ""]
    with_overrides = f" with {' '.join(overrides)}" if overrides else ""
    lines += [f"Config{with_overrides} (kgexp --cfg job prints the same; KEY=VALUE sets any key):", ""]
    return "\n".join([*lines, composed(overrides, conf)])


def composed(overrides: list[str], conf: Path) -> str:
    """The training config composed with ``overrides``, as YAML."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException

    from kgexp.config import register_schemas

    register_schemas()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
            return OmegaConf.to_yaml(compose("config", overrides=overrides)).rstrip()
    except HydraException as error:
        raise SystemExit(f"kgexp: {error}") from None


def help_text(argv: list[str], conf: Path) -> str | None:
    """The help that ``argv`` (the arguments after ``kgexp``) asks for with --help or -h, else None."""
    if not any(arg in HELP_FLAGS for arg in argv):
        return None
    rest = [arg for arg in argv if arg not in HELP_FLAGS]
    if rest and rest[0] in USAGES and rest[0] not in ("train", "report"):
        return command_help(rest[0], conf)
    if not rest:
        return overview(conf)
    overrides = [arg for arg in rest if "=" in arg or arg.startswith("~")]  # not -m, --cfg, train
    return train_help(overrides, conf)
