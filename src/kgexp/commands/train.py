"""The training run: fit, select the best validation checkpoint, test it, write the run's outputs."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import time
import traceback
from pathlib import Path

import pytorch_lightning as pl
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.utilities.exceptions import SIGTERMException

from kgexp.config import ConfigError, validate
from kgexp.config.build import build_datamodule, build_module
from kgexp.evaluation.metrics import REPORTED
from kgexp.evaluation.relations import RelationTable, write_relation_csv
from kgexp.evaluation.stages import evaluate_splits, format_metrics
from kgexp.options import dotted
from kgexp.runtime.atomic import atomic_path, write_json
from kgexp.runtime.checkpointing import (
    AtomicCheckpointIO,
    CheckpointOnSignal,
    load_checkpoint,
    sigint_as_sigterm,
)
from kgexp.runtime.console import Progress, quiet_libraries, quiet_resume, summary_lines
from kgexp.runtime.distributed import SharedOutputDir, launched_as_rank_zero, local_ranks
from kgexp.runtime.run_info import StageTimes, collect, job_began

log = logging.getLogger(__name__)

#: What a resumed run may change: where it writes, how long and on which devices it runs, what it logs.
RESUMABLE = (
    "ckpt_path",
    "output_dir",
    "callbacks",
    "logger",
    "data.eval_batch_size",
    "trainer.max_steps",
    "trainer.max_epochs",
    "trainer.accelerator",
    "trainer.devices",
    "trainer.num_nodes",
    "trainer.strategy",
    "trainer.enable_progress_bar",
    "trainer.log_every_n_steps",
)


def resume_path(cfg: DictConfig) -> Path | None:
    """The checkpoint ``ckpt_path`` resumes from: ``last`` is this run's ``last.ckpt`` (None before the
    first one, a fresh start), anything else a file."""
    ckpt_path = cfg.get("ckpt_path")
    if ckpt_path is None:
        return None
    if ckpt_path == "last":
        last = Path(cfg.output_dir) / "checkpoints" / "last.ckpt"
        return last if last.is_file() else None
    return Path(ckpt_path).expanduser()


def check_resume(cfg: DictConfig) -> int | None:
    """A resumed run must train what its checkpoint trained: a ConfigError lists the keys that differ
    (beyond :data:`RESUMABLE`). Keys the checkpoint predates are not compared. Returns the checkpoint's
    global step (None for a fresh start)."""
    path = resume_path(cfg)
    if path is None:
        return None
    checkpoint = load_checkpoint(path, key="ckpt_path", mmap=True)
    saved = dotted(checkpoint["hyper_parameters"]["config"])
    now = dotted(OmegaConf.to_container(cfg, resolve=True))
    differ = [
        f"{key} (checkpoint {saved[key]!r}, now {value!r})"
        for key, value in now.items()
        if key in saved
        and saved[key] != value
        and not any(key == k or key.startswith(k + ".") for k in RESUMABLE)
    ]
    if differ:
        raise ConfigError(
            f"ckpt_path: {path} was trained with another config; keys that differ: {'; '.join(differ)}"
        )
    return int(checkpoint.get("global_step", 0))  # Lightning writes it; 0 for one without


def finished_metrics(cfg: DictConfig, resume_step: int | None) -> dict[str, float] | None:
    """The metrics of a run that ``ckpt_path=last`` finds already finished: its last.ckpt is at
    ``trainer.max_steps`` and its ``metrics.json`` and ``run_info.json`` are from that step. None
    otherwise (a larger ``trainer.max_steps`` trains on)."""
    output_dir = Path(cfg.output_dir)
    max_steps = cfg.trainer.get("max_steps", -1)
    if cfg.get("ckpt_path") != "last" or resume_step is None or not 0 < max_steps <= resume_step:
        return None
    metrics, info = output_dir / "metrics.json", output_dir / "run_info.json"
    if not (metrics.is_file() and info.is_file()):
        return None
    if json.loads(info.read_text()).get("global_step") != resume_step:
        return None
    return json.loads(metrics.read_text())


def configure_wandb_environment() -> None:
    """W&B runs offline unless ``WANDB_MODE`` or ``WANDB_API_KEY`` says otherwise, and never prompts."""
    if "WANDB_MODE" not in os.environ and "WANDB_API_KEY" not in os.environ:
        os.environ["WANDB_MODE"] = "offline"
    os.environ.setdefault("WANDB_SILENT", "true")
    os.environ.setdefault("WANDB_CONSOLE", "off")


def instantiate_group(node: DictConfig | None, extra: dict[str, dict] | None = None) -> list:
    """Instantiate every entry of a ``callbacks`` or ``logger`` group that has a ``_target_``, with the
    keyword arguments ``extra[name]`` added to entry ``name``."""
    if not node:
        return []
    extra = extra or {}
    return [
        instantiate(entry, **extra.get(name, {}))
        for name, entry in node.items()
        if entry is not None and "_target_" in entry
    ]


def wandb_grouping(cfg: DictConfig) -> dict[str, object]:
    """W&B group, name and tags: the jobs of one multirun share a group (its sweep folder) and carry the
    grid's axes (dataset, model, sampler, mi, setting, seed) as tags, so one dashboard compares them."""
    sampler = cfg.sampler.name if cfg.sampler.name != "emu" else f"{cfg.sampler.base}+emu"
    hydra = HydraConfig.get() if HydraConfig.initialized() else None
    setting = hydra.runtime.choices.get("setting") if hydra is not None else None
    axes = {
        "dataset": cfg.dataset.name,
        "model": cfg.model.name,
        "sampler": sampler,
        "mi": cfg.get("mi", {}).get("name", "none"),
        "setting": None if setting in (None, "none") else setting,
        "seed": cfg.seed,
    }
    tags = [f"{key}={value}" for key, value in axes.items() if value is not None]
    grouping: dict[str, object] = {"tags": tags, "name": " ".join(tags)}
    if hydra is not None and hydra.mode == RunMode.MULTIRUN:
        grouping["group"] = Path(hydra.sweep.dir).as_posix()
    return grouping


def write_resolved_config(cfg: DictConfig, output_dir: Path) -> None:
    with atomic_path(output_dir / "config.yaml") as tmp:
        tmp.write_text(OmegaConf.to_yaml(cfg, resolve=True))


def finish_loggers(loggers: list) -> None:
    for logger in loggers:
        if isinstance(logger, pl.loggers.WandbLogger):
            logger.experiment.finish()


def train(cfg: DictConfig) -> dict[str, float]:
    """Run one experiment in ``cfg.output_dir`` and return its final metrics.

    Under DDP every rank runs this function; only global rank 0 writes the run's files.
    """
    verbose = bool(cfg.get("verbose", False))
    quiet_libraries(verbose)
    began, started = job_began(), time.perf_counter()
    try:  # every config error now, before any data is loaded or file written: the schemas, then the
        validate(cfg)  # rules that join several options, which the constructors check
        build_module(cfg, num_entities=2, num_relations=1)
        datamodule = build_datamodule(cfg)
        resume_step = check_resume(cfg)
    except (ValueError, TypeError) as error:
        raise ConfigError(str(error)) from error
    output_dir = Path(cfg.output_dir)
    finished = finished_metrics(cfg, resume_step)
    if finished is not None:  # the same command continues a sweep without redoing its finished jobs
        log.info("%s finished at step %d; its metrics stand", output_dir, resume_step)
        return finished
    if launched_as_rank_zero():
        output_dir.mkdir(parents=True, exist_ok=True)
        write_resolved_config(cfg, output_dir)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)

    datamodule.prepare_data()
    datamodule.setup("fit")
    graph = datamodule.graph
    module = build_module(cfg, graph.num_entities, graph.num_relations)

    configure_wandb_environment()
    with local_ranks(cfg.trainer, "train", output_dir):
        callbacks = instantiate_group(cfg.get("callbacks"))
        resumed = {"resume_step": resume_step}
        loggers = instantiate_group(
            cfg.get("logger"), {"wandb": {**wandb_grouping(cfg), **resumed}, "csv": resumed}
        )
        times, relations = StageTimes(began), RelationTable()
        progress = Progress(
            cfg.selection.monitor, interactive(), lambda values: format_metrics(values, "val/", REPORTED)
        )
        trainer = pl.Trainer(
            **OmegaConf.to_container(cfg.trainer, resolve=True),
            callbacks=[
                *callbacks,
                SharedOutputDir(output_dir),
                CheckpointOnSignal(),
                times,
                relations,
                progress,
            ],
            logger=loggers,
            plugins=[AtomicCheckpointIO()],
            default_root_dir=str(output_dir),
        )
        resume = resume_path(cfg)  # ckpt_path=last before the first last.ckpt: a fresh start
        if resume is not None:
            log.info("resuming from %s", resume)
        try:
            with sigint_as_sigterm(), quiet_resume(resume is not None, verbose):
                trainer.fit(module, datamodule=datamodule, ckpt_path=str(resume) if resume else None)
            best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
            if not best:
                log.warning("no validation checkpoint was saved: evaluating the final weights")
            metrics = evaluate_splits(trainer, module, datamodule, best or None)
        finally:
            finish_loggers(loggers)
    if trainer.is_global_zero:
        write_json(output_dir / "metrics.json", metrics)
        write_relation_csv(output_dir / "relations.csv", relations.rows)
        wall_s = time.perf_counter() - started
        info = collect(
            seed=cfg.seed,
            device=str(module.device),
            world_size=trainer.world_size,
            wall_time_s=wall_s,
            startup_s=times.startup_s,
            time=times.summary(),
            best_checkpoint=best or None,
            resumed_from=str(resume) if resume else None,
            global_step=trainer.global_step,
            dataset=graph.summary(),
        )
        write_json(output_dir / "run_info.json", info)
        results = [format_metrics(metrics, "test/"), format_metrics(metrics, "val/", REPORTED)]
        stages = {**times.summary(), "startup_s": times.startup_s}
        since_start = time.perf_counter() - began
        for line in summary_lines(results, best or None, output_dir, since_start, stages):
            log.info(line)
    return metrics


def interactive() -> bool:
    """A terminal to draw a progress bar on: stderr is one, and this is not a job of a multirun."""
    multirun = HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    return sys.stderr.isatty() and not multirun


def run_job(cfg: DictConfig, keep_going: bool) -> dict[str, float] | None:
    """:func:`train`, with the outcome in ``status.json`` (``running``, ``finished`` or ``failed``).

    A failed job writes its traceback to ``error.txt``; with ``keep_going`` (a multirun) it returns
    ``None`` instead of raising, so that the other jobs of the sweep still run. Only rank 0 writes them.
    """
    output_dir = Path(cfg.output_dir)
    writes = launched_as_rank_zero()
    if writes:
        write_json(output_dir / "status.json", {"status": "running"})
    try:
        metrics = train(cfg)
    except (KeyboardInterrupt, SystemExit) as stop:  # a signal: last.ckpt holds the state to resume from
        if writes:
            write_json(output_dir / "status.json", {"status": "interrupted", "error": repr(stop)})
        if isinstance(stop, SIGTERMException):  # Lightning's exception exits 0; a stopped run does not
            raise SystemExit(128 + signal.SIGTERM) from stop
        raise
    except Exception as error:
        if writes:
            with atomic_path(output_dir / "error.txt") as tmp:
                tmp.write_text(traceback.format_exc())
            write_json(
                output_dir / "status.json", {"status": "failed", "error": f"{type(error).__name__}: {error}"}
            )
        if not keep_going:
            raise
        log.exception("job failed; the sweep goes on (traceback in %s)", output_dir / "error.txt")
        return None
    if writes:
        write_json(output_dir / "status.json", {"status": "finished"})
    return metrics
