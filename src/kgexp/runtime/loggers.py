"""Lightning's loggers as kgexp runs use them: a resumed run continues its ``metrics.csv`` and its
W&B run."""

from __future__ import annotations

import csv
import warnings
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from lightning_fabric.loggers.logger import rank_zero_experiment
from pytorch_lightning.loggers import WandbLogger as LightningWandbLogger
from pytorch_lightning.utilities.rank_zero import rank_zero_only


class CSVLogger(pl.loggers.CSVLogger):
    """Lightning's CSV logger, whose ``metrics.csv`` a resumed run continues instead of deleting.

    ``resume_step`` (the checkpoint's global step; ``kgexp`` sets it when it resumes): the rows logged
    before that step are kept, and the later ones, which the resumed run logs again, dropped. The file is
    written whenever a checkpoint is, so that a killed run has written every row its checkpoint covers.
    """

    def __init__(self, *args: Any, resume_step: int | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.resume_step = resume_step

    @property
    @rank_zero_experiment
    def experiment(self):
        if self._experiment is not None or self.resume_step is None:
            return super().experiment
        path = Path(self.log_dir) / "metrics.csv"
        kept = self._rows_before(path, self.resume_step)
        with warnings.catch_warnings():  # Lightning's warning that it deletes the old rows would mislead
            warnings.filterwarnings("ignore", message="Experiment logs directory")
            writer = super().experiment  # deletes the file
        writer.metrics = kept
        writer.save()  # Lightning's writer writes them back, header first
        return writer

    @staticmethod
    def _rows_before(path: Path, step: int) -> list[dict[str, str]]:
        if not path.is_file():
            return []
        with path.open(newline="") as file:
            return [row for row in csv.DictReader(file) if int(row["step"]) < step]

    @rank_zero_only
    def after_save_checkpoint(self, checkpoint_callback: Any) -> None:
        self.save()


class WandbLogger(LightningWandbLogger):
    """Lightning's W&B logger, whose W&B run a resumed run continues, without the ``anonymous``
    argument, which W&B has retired (it warns on every run that the setting has no effect).

    ``resume_step`` (set by ``kgexp`` when it resumes): the run takes the id of the last W&B run in
    ``save_dir`` (Lightning asks W&B to resume an existing id), so that W&B shows one run, not one per
    segment.
    """

    def __init__(self, resume_step: int | None = None, **kwargs: Any) -> None:
        if resume_step is not None and kwargs.get("id") is None and kwargs.get("version") is None:
            kwargs["id"] = last_wandb_run_id(Path(kwargs.get("save_dir") or kwargs.get("dir") or "."))
        super().__init__(**kwargs)
        self._wandb_init.pop("anonymous", None)


def last_wandb_run_id(save_dir: Path) -> str | None:
    """The id of the newest W&B run under ``save_dir`` (W&B names its folder
    ``[offline-]run-<date>_<time>-<id>`` and links ``latest-run`` to it); None without one."""
    latest = save_dir / "wandb" / "latest-run"
    return latest.resolve().name.rsplit("-", 1)[-1] if latest.is_dir() else None
