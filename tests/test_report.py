"""``kgexp report`` against hand-made job folders: groups, means and standard deviations, missing jobs."""

from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path

import pytest

from kgexp.report import find_jobs, main, write_report


def make_job(
    root: Path, name: str, overrides: list[str], metrics: dict | None, status: str | None = None
) -> None:
    folder = root / name
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    (folder / "config.yaml").write_text("seed: 0\n")
    if metrics is not None:
        (folder / "metrics.json").write_text(json.dumps(metrics))
    status = status or ("finished" if metrics is not None else "running")  # run_job always writes one
    (folder / "status.json").write_text(json.dumps({"status": status}))


def metrics(mrr: float, hits10: float) -> dict[str, float]:
    return {
        "test/mrr": mrr,
        "test/hits@1": mrr / 2,
        "test/hits@3": mrr,
        "test/hits@10": hits10,
        "test/1-N/mrr": mrr / 3,
    }


@pytest.fixture
def grid(tmp_path) -> Path:
    root = tmp_path / "multirun"
    values = {
        ("transe", "uniform"): [0.30, 0.32, 0.31],
        ("transe", "emu"): [0.35, 0.33],
        ("rotate", "emu"): [0.40],
    }
    index = 0
    for (model, sampler), mrrs in values.items():
        for seed, mrr in enumerate(mrrs):
            make_job(
                root,
                str(index),
                ["dataset=nations", f"model={model}", f"sampler={sampler}", f"seed={seed}"],
                metrics(mrr, mrr + 0.2),
            )
            index += 1
    make_job(root, "crashed", ["model=rotate", "sampler=emu", "seed=1"], None, status="failed")
    make_job(root, "killed", ["model=rotate", "sampler=emu", "seed=2"], None)
    (root / "0" / "analysis" / ".hydra").mkdir(parents=True)  # kgexp analyze output: not a job
    (root / "0" / "analysis" / ".hydra" / "overrides.yaml").write_text("- ckpt=x\n")
    return root


def test_table_numbers_equal_the_means_of_the_jobs_metrics(grid):
    jobs = find_jobs([grid])
    assert len(jobs) == 8
    assert sorted(j.status for j in jobs).count("finished") == 6
    rows = write_report(jobs, grid)
    by_group = {(r["model"], r["sampler"]): r for r in rows}
    uniform = by_group[("transe", "uniform")]
    assert uniform["test/mrr mean"] == pytest.approx(statistics.mean([0.30, 0.32, 0.31]))
    assert uniform["test/mrr std"] == pytest.approx(statistics.stdev([0.30, 0.32, 0.31]))
    assert uniform["test/hits@10 mean"] == pytest.approx(0.51)
    assert uniform["test/1-N/mrr mean"] == pytest.approx(0.31 / 3)
    assert uniform["seeds"] == "0 1 2"
    assert by_group[("rotate", "emu")]["jobs"] == 1  # the failed and the killed job are not averaged in
    with (grid / "results.csv").open() as handle:
        read = {(r["model"], r["sampler"]): r for r in csv.DictReader(handle)}
    assert float(read[("transe", "emu")]["test/mrr mean"]) == pytest.approx(0.34)
    text = (grid / "results.md").read_text()
    assert "| transe | emu | 0 1 | 0.3400 ± 0.0141 |" in text
    assert "Common to all: `dataset=nations`." in text
    assert "- failed: `" in text and "crashed" in text and "- unfinished: `" in text and "killed" in text
    assert (grid / "results.png").read_bytes()[:4] == b"\x89PNG"


def test_command_names_the_missing_jobs(grid, tmp_path, caplog):
    out = tmp_path / "report"
    with caplog.at_level("WARNING"):
        main([str(grid), "--out", str(out)])
    assert (out / "results.md").is_file()
    assert any("failed job not averaged in" in r.message and "crashed" in r.message for r in caplog.records)


def test_a_folder_without_jobs_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no job folders"):
        find_jobs([tmp_path])


def test_an_override_of_a_config_group_path_is_a_column_of_its_own(tmp_path):
    """Sweeping ``experiment/codex-s@_global_`` (a group path, with '/') must separate the groups."""
    root = tmp_path / "multirun"
    for index, (model, mrr) in enumerate([("transe", 0.3), ("transe", 0.5), ("rotate", 0.7)]):
        make_job(
            root, str(index), [f"experiment/codex-s@_global_={model}", f"seed={index}"], metrics(mrr, 0.9)
        )
    rows = write_report(find_jobs([root]), tmp_path)
    assert {row["experiment/codex-s@_global_"]: row["test/mrr mean"] for row in rows} == {
        "transe": pytest.approx(0.4),
        "rotate": pytest.approx(0.7),
    }
    table = (tmp_path / "results.md").read_text()
    assert "| experiment/codex-s@_global_ | seeds | mrr |" in table
    assert "| rotate | 0 2 |" not in table and "| rotate | 2 | 0.7000 |" in table
