"""bench/gpu.py, the device machine's script, on the CPU: its agreement check and its cell summary."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from scripts import load_bench_script

from kgexp.runtime.console import Progress


@pytest.fixture(scope="module")
def gpu():
    return load_bench_script("gpu")


def test_agreement_compares_the_fused_kernels_with_tensor_ops_and_finds_them_equal(gpu):
    """On the CPU the check's second side is the tensor-op path a GPU takes, so the figures are real."""
    rows = gpu.agreement("cpu", entities=300, relations=7, dim=16, queries=64, candidates=17, ranked=100)
    assert [row["model"] for row in rows] == ["transe", "distmult", "complex", "rotate"]
    for row in rows:
        assert row["mask bits differing"] == 0
        assert row.get("mask bits differing (shared)", 0) == 0
        for label in ("score_ids", "EMU scores"):
            assert 0 < row[f"{label} max |Δ|"] + row[f"{label} grad max rel |Δ|"] < 1e-4  # two paths
        assert row["ranks differing (of 200)"] <= 2  # float near-ties only
        assert row["MRR |Δ|"] < 1e-3


def test_the_mask_seeds_are_restored_after_the_check(gpu):
    from kgexp.training import emu

    before = emu.draw_seeds
    gpu.agreement("cpu", entities=50, relations=3, dim=4, queries=8, candidates=5, ranked=10)
    assert emu.draw_seeds is before


def test_cell_names_are_setting_dash_model_or_a_one_line_error(gpu):
    assert gpu.parse_cells(["emu_no_uls-rotate", "uniform-transe"]) == [
        ("emu_no_uls", "rotate"),
        ("uniform", "transe"),
    ]
    with pytest.raises(SystemExit, match=r"--cells: 'emu-rescal' is not SETTING-MODEL"):
        gpu.parse_cells(["emu-rescal"])


def test_a_stopped_cell_is_summarised_from_its_log_and_csv_metrics(gpu, tmp_path):
    folder = tmp_path / "emu-distmult-seed0"
    (folder / "csv").mkdir(parents=True)
    (folder / "status.json").write_text(json.dumps({"status": "interrupted"}))
    (folder / "csv" / "metrics.csv").write_text(
        "epoch,step,train/loss,val/mrr\n0,499,1.5,\n0,500,,0.25\n1,1000,,0.31\n1,1500,,0.29\n"
    )
    progress = Progress("val/mrr", interactive=False, describe=str)
    progress.rate = lambda trainer: 123.4
    line = progress.position(SimpleNamespace(max_steps=100_000, global_step=1_700))
    (folder / "cli.log").write_text(f"[2026-12-02 08:00:00,000][kgexp.progress][INFO] - {line}\n")
    row = gpu.cell_summary("emu-distmult-seed0", folder)
    assert row == {
        "cell": "emu-distmult-seed0",
        "status": "interrupted",
        "steps": 1_700,
        "steps/s": 123.4,
        "best val MRR": 0.31,
        "at step": 1000,
    }
    assert gpu.cell_summary("x", tmp_path / "never-started") == {"cell": "x", "status": "not started"}
