"""The loggers a resumed run continues: ``metrics.csv`` keeps the rows before the checkpoint, and the
W&B run keeps its id."""

from __future__ import annotations

import csv
import warnings
from pathlib import Path

import pytest
import wandb

from kgexp.runtime.loggers import CSVLogger, WandbLogger


def write_rows(path: Path, steps: range) -> None:
    path.parent.mkdir(parents=True)
    with path.open("w", newline="") as file:
        out = csv.DictWriter(file, fieldnames=["step", "train/loss"])
        out.writeheader()
        out.writerows({"step": step, "train/loss": 10 - step} for step in steps)


def read_steps(path: Path) -> list[tuple[int, float]]:
    with path.open(newline="") as file:
        return [(int(row["step"]), float(row["train/loss"])) for row in csv.DictReader(file)]


def test_a_resumed_csv_logger_keeps_the_rows_before_its_step_and_appends(tmp_path):
    write_rows(tmp_path / "csv" / "metrics.csv", range(8))  # a run stopped at step 7, checkpoint at 5
    logger = CSVLogger(save_dir=tmp_path, name="csv", version="", resume_step=5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # not Lightning's warning that the old rows will be deleted
        logger.log_metrics({"train/loss": 0.5}, step=5)
        logger.save()
    expected = [(step, 10.0 - step) for step in range(5)] + [(5, 0.5)]
    assert read_steps(tmp_path / "csv" / "metrics.csv") == expected


def test_a_fresh_csv_logger_starts_its_file_afresh(tmp_path):
    write_rows(tmp_path / "csv" / "metrics.csv", range(8))
    logger = CSVLogger(save_dir=tmp_path, name="csv", version="")
    with pytest.warns(UserWarning, match="will be deleted"):
        logger.log_metrics({"train/loss": 0.5}, step=0)
        logger.save()
    assert read_steps(tmp_path / "csv" / "metrics.csv") == [(0, 0.5)]


def offline_run_id(save_dir: Path) -> str:
    run = wandb.init(project="kgexp-test", dir=save_dir, mode="offline", settings=wandb.Settings(silent=True))
    run.finish()
    return run.id


def test_a_resumed_wandb_logger_takes_the_id_of_the_newest_wandb_run_in_its_folder(tmp_path):
    assert WandbLogger(save_dir=str(tmp_path), project="p", resume_step=5)._wandb_init["id"] is None
    offline_run_id(tmp_path)
    newest = offline_run_id(tmp_path)
    assert WandbLogger(save_dir=str(tmp_path), project="p", resume_step=5)._wandb_init["id"] == newest
    assert WandbLogger(save_dir=str(tmp_path), project="p")._wandb_init["id"] is None  # a fresh run
