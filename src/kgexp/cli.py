"""The ``kgexp`` command: ``kgexp [train] ...``, ``kgexp evaluate|analyze|predict|export ckpt=...``,
``kgexp report DIR``, and ``kgexp [COMMAND] --help``."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from kgexp.commands.help import help_text


def config_dir() -> str:
    """The Hydra config folder: packaged as ``kgexp/conf`` in a wheel, ``conf/`` in a source checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "conf", here.parents[1] / "conf"):
        if (candidate / "config.yaml").is_file():
            return str(candidate)
    raise FileNotFoundError(f"kgexp configs not found in {here / 'conf'} or {here.parents[1] / 'conf'}")


@contextmanager
def one_line_errors() -> Iterator[None]:
    """An error in the user's input ends the command with its one line and exit code 1, no traceback
    (``HYDRA_FULL_ERROR=1`` shows it)."""
    from kgexp.config import ConfigError
    from kgexp.errors import UserError

    try:
        yield
    except UserError as error:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        kind = "config error" if isinstance(error, ConfigError) else "error"
        raise SystemExit(f"{kind}: {error}") from None


def compact(error: Exception) -> str:
    """One line from a Hydra composition error and the OmegaConf error under it: the statements, a
    list of available options inline; without the hints that do not apply (``+key`` into a schema)."""
    from omegaconf.errors import OmegaConfBaseException

    text = str(error)
    if isinstance(error.__cause__, OmegaConfBaseException):
        text += "\n" + str(error.__cause__)
    parts: list[str] = []
    for line in text.splitlines():
        if line.startswith("Config search path"):  # Hydra's folders: nothing the user set
            break
        if line.startswith("\t") and parts:  # an item of "Available options in 'model':"
            parts[-1] += (" " if parts[-1].endswith(":") else ", ") + line.strip()
        elif line.strip() and not line[0].isspace() and not line.startswith(("To append", "Set the env")):
            parts.append(line.strip().rstrip("."))
    return "; ".join(parts)


def one_line_composition_errors() -> None:
    """Hydra's composition errors (a key no schema has, an option no group has, a malformed override)
    print as one ``config error:`` line and exit 1, like kgexp's own; ``HYDRA_FULL_ERROR=1`` shows all.

    Hydra reports them from ``hydra._internal.utils.run_and_report``, which has no hook: its callable
    is wrapped so that they leave as ``SystemExit``, which it lets through."""
    import hydra._internal.utils as hydra_utils
    from hydra.errors import CompactHydraException

    report = hydra_utils.run_and_report
    if getattr(report, "kgexp", False):
        return

    def run_and_report(func):
        def guarded():
            try:
                return func()
            except CompactHydraException as error:
                if os.environ.get("HYDRA_FULL_ERROR") == "1":
                    raise
                raise SystemExit(f"config error: {compact(error)}") from None

        return report(guarded)

    run_and_report.kgexp = True
    hydra_utils.run_and_report = run_and_report


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="config")
def train_command(cfg: DictConfig) -> float | None:
    """The validation metric of ``selection.monitor``, what a sweeper optimises (NaN for a failed job:
    Optuna records the trial as failed and goes on)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from kgexp.commands.train import run_job

    with one_line_errors():
        metrics = run_job(cfg, keep_going=HydraConfig.get().mode == RunMode.MULTIRUN)
    return float("nan") if metrics is None else metrics.get(cfg.selection.monitor)


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="evaluate")
def evaluate_command(cfg: DictConfig) -> None:
    from kgexp.commands.evaluate import evaluate

    with one_line_errors():
        evaluate(cfg)


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="analyze")
def analyze_command(cfg: DictConfig) -> None:
    from kgexp.commands.analyze import analyze

    with one_line_errors():
        analyze(cfg)


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="export")
def export_command(cfg: DictConfig) -> None:
    from kgexp.commands.export import export

    with one_line_errors():
        export(cfg.ckpt, cfg.out)


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="predict")
def predict_command(cfg: DictConfig) -> None:
    from kgexp.commands.predict import predict

    with one_line_errors():
        predict(cfg)


#: The commands whose configs compose the config groups, which extend the schemas of ``kgexp.config``.
USES_GROUPS = ("train", "evaluate")

COMMANDS = {
    "train": train_command,
    "evaluate": evaluate_command,
    "analyze": analyze_command,
    "export": export_command,
    "predict": predict_command,
}


def analysis_dir(ckpt: str) -> str:
    """``<run>/analysis`` for a checkpoint at ``<run>/checkpoints/<name>.ckpt``: where analyze writes."""
    return str(Path(ckpt).expanduser().resolve().parent.parent / "analysis")


def main() -> None:
    if not OmegaConf.has_resolver("kgexp_analysis_dir"):
        OmegaConf.register_new_resolver("kgexp_analysis_dir", analysis_dir)
    if len(sys.argv) > 1 and sys.argv[1] == "report":  # plain arguments (folders), not Hydra overrides
        from kgexp.commands.report import main as report_main

        report_main(sys.argv[2:])
        return
    text = help_text(sys.argv[1:], Path(config_dir()))
    if text is not None:
        print(text)
        return
    one_line_composition_errors()
    command = "train"
    if len(sys.argv) > 1 and sys.argv[1] in COMMANDS:
        command = sys.argv.pop(1)
    if command in USES_GROUPS:
        from kgexp.config import register_schemas

        register_schemas()
    COMMANDS[command]()
    if command == "train":
        exit_on_failed_jobs()


def exit_on_failed_jobs() -> None:
    """After a multirun: exit 1 naming the jobs that failed (each logged its error and ``error.txt``)."""
    from kgexp.runtime.sweep import failed_jobs, jobs_run

    failed = failed_jobs()
    if failed:
        named = "; ".join(f"{folder}: {error}" for folder, error in failed)
        raise SystemExit(f"{len(failed)} of {jobs_run()} jobs failed: {named}")
