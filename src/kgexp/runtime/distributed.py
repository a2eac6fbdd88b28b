"""DDP plumbing: the processes of a one-node DDP run, and which of them writes the outputs.

kgexp starts the extra processes of a run itself (Lightning's contract for external launchers: it sees
``LOCAL_RANK`` and joins instead of launching), so that every rank runs exactly this job (a multirun's job,
``kgexp evaluate``, a job in a joblib or Ray worker) in the job's own output folder, which Lightning's
script re-launcher gets wrong under Hydra multiruns. Under torchrun and SLURM the cluster starts the
processes and kgexp starts none.
"""

from __future__ import annotations

import _thread
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from omegaconf import DictConfig
from pytorch_lightning import Callback, LightningModule, Trainer

from kgexp.runtime.atomic import write_json

log = logging.getLogger(__name__)

#: Environment variables that tell a process its place in a distributed run.
_RANK_VARIABLES = ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "SLURM_PROCID")
_LAUNCH_VARIABLES = ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
#: Exit codes of a rank stopped by SIGTERM or SIGINT (it saved its part of the checkpoint): not a failure.
STOPPED_BY_SIGNAL = (128 + signal.SIGTERM, 128 + signal.SIGINT, -signal.SIGTERM, -signal.SIGINT)


def launched_as_rank_zero() -> bool:
    """Whether the launcher (torchrun, srun, kgexp itself) made this process rank 0, or no launcher did."""
    return all(int(os.environ.get(name, "0")) == 0 for name in _RANK_VARIABLES)


def _external_launcher() -> bool:
    from lightning_fabric.plugins.environments import SLURMEnvironment, TorchElasticEnvironment

    return "LOCAL_RANK" in os.environ or TorchElasticEnvironment.detect() or SLURMEnvironment.detect()


def processes_per_node(trainer: DictConfig) -> int:
    """How many processes a DDP ``trainer`` config runs on each node (1 for any other strategy)."""
    strategy = str(trainer.get("strategy", "auto"))
    if not strategy.startswith("ddp") or strategy.startswith("ddp_spawn"):
        return 1
    devices = trainer.get("devices", "auto")
    if isinstance(devices, int) and devices > 0:
        return devices
    if isinstance(devices, str) and devices.isdigit():
        return int(devices)
    if not isinstance(devices, int | str):  # a list of device ids
        return len(devices)
    if str(trainer.get("accelerator", "auto")) == "cpu":
        raise ValueError(f"trainer.devices: DDP on CPU needs a number of processes, got {devices!r}")
    return max(1, torch.cuda.device_count())


def _quoted(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace("'", "\\'")
    return f"'{escaped}'"


def rank_command(command: str, overrides: list[str], output_dir: Path, local_rank: int) -> list[str]:
    """The command line of one extra rank: this job's overrides, in this job's output folder, with no
    ``.hydra`` folder of its own and a log file of its own."""
    return [
        sys.executable,
        "-m",
        "kgexp",
        command,
        *overrides,
        f"hydra.run.dir={_quoted(str(output_dir))}",
        "hydra.output_subdir=null",
        f"hydra.job.name={command}_rank{local_rank}",
    ]


@contextmanager
def local_ranks(trainer: DictConfig, command: str, output_dir: Path) -> Iterator[None]:
    """Run the body as local rank 0 of a DDP job and the other local ranks as child processes.

    Nothing happens for a single process or when a cluster launcher started the processes. The children
    are started before the body and stopped after it (killed if they outlive it by a minute), and the
    launch variables are restored, so that the next job of a multirun starts a fresh process group.
    """
    count = processes_per_node(trainer)
    if count == 1 or _external_launcher():
        yield
        return
    from hydra.core.hydra_config import HydraConfig
    from lightning_fabric.plugins.environments.lightning import find_free_network_port

    saved = {name: os.environ.get(name) for name in _LAUNCH_VARIABLES}
    num_nodes = int(trainer.get("num_nodes", 1))
    os.environ.update(
        LOCAL_RANK="0",
        NODE_RANK=os.environ.get("NODE_RANK", "0"),
        WORLD_SIZE=str(count * num_nodes),
        MASTER_ADDR=os.environ.get("MASTER_ADDR", "127.0.0.1"),
        MASTER_PORT=os.environ.get("MASTER_PORT") or str(find_free_network_port()),
    )
    overrides = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
    children = []
    for local_rank in range(1, count):
        environment = {**os.environ, "LOCAL_RANK": str(local_rank)}
        children.append(
            subprocess.Popen(rank_command(command, overrides, output_dir, local_rank), env=environment)
        )
    log.info("DDP: started local ranks 1-%d (pids %s)", count - 1, [child.pid for child in children])
    watchdog = _Watchdog(children, output_dir)
    watchdog.start()
    try:
        yield
    except (KeyboardInterrupt, SystemExit):
        if not watchdog.fired:  # the user's Ctrl-C, not a child's failure
            raise
    finally:
        watchdog.done.set()
        failed = _stop(children)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    if failed:
        raise RuntimeError(f"DDP: local ranks {failed} failed; see {output_dir}/{command}_rank<k>.log")


class _Watchdog(threading.Thread):
    """Stops rank 0 when a child rank dies with an error, so that it does not wait for it in a collective
    until the process-group timeout: first a KeyboardInterrupt in the main thread, then, if rank 0 is
    still blocked (in the rendezvous, say) after ``grace_s``, the process ends with exit code 1, as with
    Lightning's own launcher, its ``status.json`` saying failed."""

    def __init__(self, children: list[subprocess.Popen], output_dir: Path, grace_s: float = 20.0):
        super().__init__(daemon=True, name="kgexp-ddp-watchdog")
        self.children, self.output_dir, self.grace_s = children, output_dir, grace_s
        self.done, self.fired = threading.Event(), False

    def run(self) -> None:
        while not self.done.wait(1.0):
            failed = {
                child.pid: child.returncode
                for child in self.children
                if child.poll() not in (None, 0, *STOPPED_BY_SIGNAL)  # a signal stops every rank itself
            }
            if failed:
                break
        else:
            return
        message = f"DDP: rank process(es) {failed} (pid: exit code) failed"
        log.error("%s; stopping rank 0", message)
        self.fired = True
        _thread.interrupt_main()
        if self.done.wait(self.grace_s):
            return
        status = self.output_dir / "status.json"
        if status.is_file():
            write_json(status, {"status": "failed", "error": message})
        for child in self.children:
            child.kill()
        log.error("DDP: rank 0 is blocked; exiting")
        logging.shutdown()
        os._exit(1)


def _stop(children: list[subprocess.Popen], grace_s: float = 60.0) -> list[int]:
    """Wait for the children, kill those still running after ``grace_s``; the local ranks that failed."""
    failed = []
    for local_rank, child in enumerate(children, start=1):
        try:
            code = child.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            child.kill()
            code = child.wait()
        if code != 0:
            failed.append(local_rank)
    return failed


class SharedOutputDir(Callback):
    """Fails every rank, before training, when the ranks of a run would write to different folders (a
    cluster launcher started each process with its own Hydra run folder: pass ``hydra.run.dir``)."""

    def __init__(self, output_dir: Path):
        self.output_dir = str(Path(output_dir).resolve())

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if trainer.world_size == 1:
            return
        folders: list[str | None] = [None] * trainer.world_size
        torch.distributed.all_gather_object(folders, self.output_dir)
        if len(set(folders)) > 1:
            listed = ", ".join(sorted(set(map(str, folders))))
            raise RuntimeError(
                f"DDP: the ranks have different output folders ({listed}); when torchrun or srun starts "
                "every process, set hydra.run.dir to one shared folder"
            )
