"""The ``kgexp`` command: ``kgexp [train] ...``, ``kgexp evaluate|analyze|predict|export ckpt=...``."""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf


def config_dir() -> str:
    """The Hydra config folder: packaged as ``kgexp/conf`` in a wheel, ``conf/`` in a source checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "conf", here.parents[1] / "conf"):
        if (candidate / "config.yaml").is_file():
            return str(candidate)
    raise FileNotFoundError(f"kgexp configs not found in {here / 'conf'} or {here.parents[1] / 'conf'}")


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="config")
def train_command(cfg: DictConfig) -> float | None:
    """The validation metric of ``selection.monitor``, what a sweeper optimises (NaN for a failed job:
    Optuna records the trial as failed and goes on)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from kgexp.commands.train import run_job
    from kgexp.config import ConfigError

    try:
        metrics = run_job(cfg, keep_going=HydraConfig.get().mode == RunMode.MULTIRUN)
    except ConfigError as error:  # the key and what was expected; a traceback would only bury them
        raise SystemExit(f"config error: {error}") from None
    return float("nan") if metrics is None else metrics.get(cfg.selection.monitor)


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="evaluate")
def evaluate_command(cfg: DictConfig) -> None:
    from kgexp.commands.evaluate import evaluate

    evaluate(cfg)


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="analyze")
def analyze_command(cfg: DictConfig) -> None:
    from kgexp.commands.analyze import analyze

    analyze(cfg)


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="export")
def export_command(cfg: DictConfig) -> None:
    from kgexp.commands.export import export

    export(cfg.ckpt, cfg.out)


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="predict")
def predict_command(cfg: DictConfig) -> None:
    from kgexp.commands.predict import predict

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
    command = "train"
    if len(sys.argv) > 1 and sys.argv[1] in COMMANDS:
        command = sys.argv.pop(1)
    if command in USES_GROUPS:
        from kgexp.config import register_schemas

        register_schemas()
    COMMANDS[command]()
