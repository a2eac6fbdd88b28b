"""``kgexp report`` against hand-made job folders: groups, means and standard deviations, missing jobs."""

from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from kgexp.commands.report import (
    chart_figure,
    find_jobs,
    label_keys,
    main,
    read_published,
    signed_difference,
    summarize_groups,
    write_report,
)


def make_job(
    root: Path,
    name: str,
    overrides: list[str],
    metrics: dict | None,
    status: str | None = None,
    names: dict[str, str] | None = None,
) -> None:
    """A job folder; ``names``: the ``name`` of each config group in its ``config.yaml``."""
    folder = root / name
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    config = {"seed": 0, **{group: {"name": value, "dim": 8} for group, value in (names or {}).items()}}
    (folder / "config.yaml").write_text(OmegaConf.to_yaml(config))
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


def test_an_experiment_whose_config_names_nothing_is_a_column_experiment(tmp_path):
    """Sweeping ``experiment/codex-s@_global_`` (a group path, with '/') must separate the groups; with no
    group names in config.yaml to go by, the column is ``experiment`` with the option picked."""
    root = tmp_path / "multirun"
    for index, (model, mrr) in enumerate([("transe", 0.3), ("transe", 0.5), ("rotate", 0.7)]):
        make_job(
            root, str(index), [f"experiment/codex-s@_global_={model}", f"seed={index}"], metrics(mrr, 0.9)
        )
    rows = write_report(find_jobs([root]), tmp_path)
    assert {row["experiment"]: row["test/mrr mean"] for row in rows} == {
        "codex-s/transe": pytest.approx(0.4),
        "codex-s/rotate": pytest.approx(0.7),
    }
    table = (tmp_path / "results.md").read_text()
    assert "| experiment | seeds | mrr |" in table and "experiment/codex-s@_global_" not in table
    assert "| codex-s/rotate | 0 2 |" not in table and "| codex-s/rotate | 2 | 0.7000 |" in table


#: What ``experiment=codex-s/<model>`` sets (conf/experiment/codex-s/): the names in each job's config.yaml.
CODEX_S = {
    "transe": {"dataset": "codex-s", "model": "transe", "sampler": "uniform", "loss": "self_adversarial"},
    "complex": {"dataset": "codex-s", "model": "complex", "sampler": "uniform", "loss": "softmax_ce"},
}


def test_experiments_are_labelled_by_the_model_they_set(tmp_path):
    """``experiment=codex-s/transe`` against ``experiment=codex-s/complex``: a column ``model``; the dataset
    both set is stated once; the loss, which differs but which no option names, is no column."""
    runs = [("transe", 0, 0.30), ("transe", 1, 0.34), ("complex", 0, 0.42)]
    for index, (model, seed, mrr) in enumerate(runs):
        overrides = [f"experiment=codex-s/{model}", f"seed={seed}"]
        make_job(tmp_path / "sweep", str(index), overrides, metrics(mrr, 0.6), names=CODEX_S[model])
    rows = write_report(find_jobs([tmp_path / "sweep"]), tmp_path)
    assert {row["model"]: row["test/mrr mean"] for row in rows} == {
        "transe": pytest.approx(0.32),
        "complex": pytest.approx(0.42),
    }
    lines = (tmp_path / "results.md").read_text().splitlines()
    assert "| model | seeds | mrr | hits@1 | hits@3 | hits@10 |" in lines
    assert "| transe | 0 1 | 0.3200 ± 0.0283 | 0.1600 ± 0.0141 | 0.3200 ± 0.0283 | 0.6000 ± 0.0000 |" in lines
    assert "Common to all: `dataset=codex-s`." in lines
    with (tmp_path / "results.csv").open() as handle:
        reader = csv.DictReader(handle)
        read = {r["model"]: r for r in reader}
    assert reader.fieldnames[:4] == ["dataset", "model", "overrides", "jobs"]
    assert "experiment" not in reader.fieldnames and "loss" not in reader.fieldnames
    assert read["complex"]["overrides"] == "experiment=codex-s/complex"
    assert float(read["transe"]["test/mrr mean"]) == pytest.approx(0.32)


@pytest.fixture
def codex_grid(tmp_path) -> Path:
    """The jobs of ``kgexp -m experiment=grid/codex_s`` as Hydra records them (the sweep's overrides
    name the experiment by its group path), two models x two samplers x two seeds."""
    root = tmp_path / "grid"
    index = 0
    for model, base in (("transe", 0.30), ("complex", 0.40)):
        for sampler, gain in (("uniform", 0.0), ("emu", 0.02)):
            for seed in (0, 1):
                overrides = [
                    "experiment=grid/codex_s",
                    f"experiment/codex-s@_global_={model}",
                    f"sampler={sampler}",
                    "loss=softmax_ce",
                    f"seed={seed}",
                ]
                names = {**CODEX_S[model], "sampler": sampler, "loss": "softmax_ce"}
                make_job(root, str(index), overrides, metrics(base + gain + 0.01 * seed, 0.6), names=names)
                index += 1
    return root


def test_a_grid_of_experiments_and_samplers_is_labelled_model_and_sampler(codex_grid, tmp_path):
    rows = write_report(find_jobs([codex_grid]), tmp_path)
    means = {(row["model"], row["sampler"]): row["test/mrr mean"] for row in rows}
    assert means == {
        ("transe", "uniform"): pytest.approx(0.305),
        ("transe", "emu"): pytest.approx(0.325),
        ("complex", "uniform"): pytest.approx(0.405),
        ("complex", "emu"): pytest.approx(0.425),
    }
    text = (tmp_path / "results.md").read_text()
    assert "| model | sampler | seeds | mrr | hits@1 | hits@3 | hits@10 |" in text
    assert "Common to all: `dataset=codex-s`, `experiment=grid/codex_s`, `loss=softmax_ce`." in text
    assert "| model | sampler | 1-1 MRR | 1-N MRR | N-1 MRR | N-N MRR |" in text
    assert "@_global_" not in text
    with (tmp_path / "results.csv").open() as handle:
        header = next(csv.reader(handle))
    assert header[:6] == ["dataset", "experiment", "loss", "model", "sampler", "overrides"]
    assert len(header) == len(set(header))  # each column once


def test_the_chart_names_its_axes_legend_and_title_by_the_labels(codex_grid):
    rows = summarize_groups(find_jobs([codex_grid]))
    plot = chart_figure(rows, label_keys(rows)).axes[0]
    assert plot.get_xlabel() == "model"
    assert plot.get_ylabel() == "test MRR"
    assert plot.get_title() == "test MRR by model and sampler"
    legend = plot.get_legend()
    assert legend.get_title().get_text() == "sampler"
    assert sorted(t.get_text() for t in legend.get_texts()) == ["emu", "uniform"]
    assert [t.get_text() for t in plot.get_xticklabels()] == ["complex", "transe"]
    heights = sorted(round(bar.get_height(), 6) for bar in plot.patches)
    assert heights == [0.305, 0.325, 0.405, 0.425]


def test_a_sampler_sweep_is_labelled_sampler_in_the_table_and_the_chart(tmp_path):
    for index, (sampler, mrr) in enumerate([("uniform", 0.30), ("emu", 0.36)]):
        overrides = ["model=transe", f"sampler={sampler}", "seed=0"]
        names = {"model": "transe", "sampler": sampler}
        make_job(tmp_path / "sweep", str(index), overrides, metrics(mrr, 0.6), names=names)
    rows = write_report(find_jobs([tmp_path / "sweep"]), tmp_path)
    assert {row["sampler"]: row["test/mrr mean"] for row in rows} == {
        "uniform": pytest.approx(0.30),
        "emu": pytest.approx(0.36),
    }
    text = (tmp_path / "results.md").read_text()
    assert "| sampler | seeds | mrr |" in text and "Common to all: `model=transe`." in text
    plot = chart_figure(rows, label_keys(rows)).axes[0]
    assert (plot.get_xlabel(), plot.get_title(), plot.get_legend()) == (
        "sampler",
        "test MRR by sampler",
        None,
    )


def test_experiments_that_the_names_do_not_tell_apart_keep_an_experiment_column(tmp_path):
    """Two options of one model and dataset (a longer TransE run, say) stay two rows, told apart by the
    experiment they picked, never averaged together."""
    names = CODEX_S["transe"]
    make_job(tmp_path, "0", ["experiment=codex-s/transe", "seed=0"], metrics(0.30, 0.6), names=names)
    make_job(tmp_path, "1", ["experiment=codex-s/transe_long", "seed=0"], metrics(0.40, 0.6), names=names)
    rows = write_report(find_jobs([tmp_path]), tmp_path / "report")
    assert {row["experiment"]: row["test/mrr mean"] for row in rows} == {
        "codex-s/transe": pytest.approx(0.30),
        "codex-s/transe_long": pytest.approx(0.40),
    }
    text = (tmp_path / "report" / "results.md").read_text()
    assert "| experiment | seeds | mrr |" in text and "Common to all: `dataset=codex-s`." in text


def write_published(path: Path, rows: list[str]) -> Path:
    path.write_text("model,sampler,test/mrr,test/hits@10,source\n" + "".join(f"{row}\n" for row in rows))
    return path


def test_published_numbers_stand_beside_the_measured_with_their_difference(grid, tmp_path):
    published = write_published(
        tmp_path / "published.csv",
        [
            "transe,uniform,0.300,0.500,Paper A Table 1",  # measured 0.31: inside a 0.01 tolerance
            "transe,emu,0.360,,Paper A Table 1",  # measured 0.34: outside; no published H@10
            "distmult,emu,0.500,0.600,Paper B",  # nothing measured
        ],
    )
    main([str(grid), "--out", str(tmp_path), "--published", str(published)])
    lines = (tmp_path / "results.md").read_text().splitlines()
    start = lines.index("Against the published numbers (Δ = measured − published; tolerance 0.01 MRR):")
    table = lines[start + 2 : start + 6]
    assert table[0] == (
        "| model | sampler | mrr | published mrr | Δ mrr | hits@10 | published hits@10 | Δ hits@10 "
        "| within 0.01 (MRR) |"
    )
    rows = {tuple(cell.strip() for cell in line.strip("|").split("|")[:2]): line for line in table[2:]}
    emu, uniform = rows[("transe", "emu")], rows[("transe", "uniform")]
    assert "| 0.3400 ± 0.0141 | 0.360 | -0.020 |" in emu and emu.endswith("| **no** |")
    assert "| 0.5400 ± 0.0141 | – | – |" in emu  # H@10 measured, none published
    assert "| 0.3100 ± 0.0100 | 0.300 | +0.010 |" in uniform and uniform.endswith("| yes |")
    assert ("rotate", "emu") not in rows  # measured, but not in the published file
    assert "Published numbers: Paper A Table 1." in lines  # the source of a matched row, once


def test_the_chart_marks_each_bar_with_a_published_number_at_that_number(grid, tmp_path):
    published = write_published(
        tmp_path / "published.csv",
        ["transe,uniform,0.300,0.500,A", "transe,emu,0.360,,A", "distmult,emu,0.5,,B"],
    )
    rows = summarize_groups(find_jobs([grid]))
    plot = chart_figure(rows, label_keys(rows), published=read_published(published)).axes[0]
    centre = {round(bar.get_height(), 6): bar.get_x() + bar.get_width() / 2 for bar in plot.patches}
    (marks,) = [collection for collection in plot.collections if collection.get_label() == "published"]
    expected = {(round(centre[0.31], 6), 0.3), (round(centre[0.34], 6), 0.36)}  # the means 0.31, 0.34
    assert {(round(x, 6), round(y, 6)) for x, y in marks.get_offsets().tolist()} == expected
    assert "published" in [text.get_text() for text in plot.get_legend().get_texts()]


def test_one_seed_per_bar_draws_no_error_bars(tmp_path):
    for index, (sampler, mrr) in enumerate([("uniform", 0.30), ("emu", 0.36)]):
        make_job(tmp_path, str(index), ["model=transe", f"sampler={sampler}", "seed=0"], metrics(mrr, 0.6))
    rows = summarize_groups(find_jobs([tmp_path]))
    plot = chart_figure(rows, label_keys(rows)).axes[0]
    assert [container.errorbar for container in plot.containers] == [None]  # one hue: one container
    assert len(plot.collections) == 0 and plot.get_legend() is None  # no error bars, marks or hues


def test_a_wider_tolerance_counts_more_cells_as_reproduced(grid, tmp_path):
    published = write_published(tmp_path / "published.csv", ["transe,emu,0.360,0.560,"])
    main([str(grid), "--out", str(tmp_path), "--published", str(published), "--tolerance", "0.05"])
    assert "| 0.3400 ± 0.0141 | 0.360 | -0.020 |" in (tmp_path / "results.md").read_text()
    assert (tmp_path / "results.md").read_text().count("| yes |") == 1


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("model,sampler\ntranse,emu\n", "expected override columns (e.g. setting, model) and metric columns"),
        ("test/mrr\n0.3\n", "expected override columns"),
        ("model,test/mrr\ntranse,0.3\ntranse,high\n", "published.csv:3: column test/mrr: expected a number"),
    ],
)
def test_a_malformed_published_file_is_a_one_line_error_naming_it(grid, tmp_path, content, message):
    path = tmp_path / "published.csv"
    path.write_text(content)
    with pytest.raises(SystemExit) as stop:
        main([str(grid), "--out", str(tmp_path), "--published", str(path)])
    assert message in str(stop.value) and "\n" not in str(stop.value)


def test_a_missing_published_file_is_named(grid, tmp_path):
    with pytest.raises(SystemExit, match=r"--published .*nothing\.csv: no such file"):
        main([str(grid), "--published", str(tmp_path / "nothing.csv")])


def test_published_rows_match_the_models_an_experiment_sets(tmp_path):
    """A published file names configurations by the report's columns (``model``), experiments too."""
    for index, (model, mrr) in enumerate([("transe", 0.30), ("complex", 0.42)]):
        overrides = [f"experiment=codex-s/{model}", "seed=0"]
        make_job(tmp_path / "sweep", str(index), overrides, metrics(mrr, 0.6), names=CODEX_S[model])
    published = tmp_path / "published.csv"
    published.write_text("model,test/mrr,source\ncomplex,0.465,CoDEx paper\ntranse,0.354,CoDEx paper\n")
    main([str(tmp_path / "sweep"), "--out", str(tmp_path), "--published", str(published)])
    text = (tmp_path / "results.md").read_text()
    assert "| model | mrr | published mrr | Δ mrr | within 0.01 (MRR) |" in text
    assert "| complex | 0.4200 | 0.465 | -0.045 | **no** |" in text
    assert "| transe | 0.3000 | 0.354 | -0.054 | **no** |" in text


def test_a_resumed_job_groups_with_the_jobs_that_ran_in_one_go(tmp_path):
    """``ckpt_path=last`` (resuming) is not a configuration: the two seeds form one group, by hand
    mean (0.30 + 0.32) / 2."""
    make_job(tmp_path, "0", ["model=distmult", "seed=0", "ckpt_path=last"], metrics(0.30, 0.5))
    make_job(tmp_path, "1", ["model=distmult", "seed=1"], metrics(0.32, 0.5))
    rows = write_report(find_jobs([tmp_path]), tmp_path / "report")
    assert [(row["model"], row["test/mrr mean"]) for row in rows] == [("distmult", pytest.approx(0.31))]
    assert "ckpt_path" not in rows[0]


def test_a_group_only_some_jobs_override_is_labelled_from_the_others_configs(tmp_path):
    """``regime=KvsAll`` beside runs whose experiment sets 1vsAll: those rows say 1vsAll, not blank."""
    jobs = [
        ("0", ["experiment=codex-s/1vsAll", "model=complex"], "1vsAll", 0.47),
        ("1", ["experiment=codex-s/1vsAll", "model=complex", "regime=KvsAll"], "KvsAll", 0.44),
    ]
    for name, overrides, regime, mrr in jobs:
        names = {"dataset": "codex-s", "model": "complex", "regime": regime}
        make_job(tmp_path / "runs", name, overrides, metrics(mrr, 0.6), names=names)
    rows = write_report(find_jobs([tmp_path / "runs"]), tmp_path)
    assert {row["regime"]: row["test/mrr mean"] for row in rows} == {
        "1vsAll": pytest.approx(0.47),
        "KvsAll": pytest.approx(0.44),
    }


@pytest.mark.parametrize(
    ("measured", "published", "text"),
    [
        (0.3139, 0.314, "+0.000"),
        (0.31449, 0.314, "+0.000"),
        (0.3261, 0.332, "-0.006"),
        (0.3320, 0.300, "+0.032"),
    ],
)
def test_a_difference_has_its_sign_and_none_for_zero(measured, published, text):
    # by hand: 0.3139 - 0.314 = -0.0001, which rounds to zero and is written +0.000, not -0.000
    assert signed_difference(measured, published) == text
