"""``kgexp report DIR [DIR ...]``: one table and one bar chart from the jobs of one or more multiruns.

Jobs are the training-run folders (``status.json`` beside ``.hydra/overrides.yaml``). They are grouped
by their overrides without ``seed``; each group gets mean ± sample standard deviation over its finished
jobs. A job without ``metrics.json`` is failed (``status.json`` says so) or unfinished, and is listed,
never averaged in.

``--published FILE.csv`` puts published numbers beside the measured ones: each row of the file names a
configuration by override columns (``setting``, ``model``, ...; a row matches the groups whose overrides
have those values), gives published metrics in columns named as the measured ones (``test/mrr``,
``test/hits@10``, ...) and may cite its ``source``. ``results.md`` then lists measured, published and
the difference per cell, and marks the configurations whose MRR is further than ``--tolerance`` away.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from matplotlib.figure import Figure
from omegaconf import OmegaConf

from kgexp.data.statistics import CATEGORIES
from kgexp.evaluation.metrics import REPORTED
from kgexp.runtime.atomic import atomic_path

log = logging.getLogger(__name__)

METRICS = tuple(f"test/{name}" for name in REPORTED)
CATEGORY_METRICS = tuple(f"test/{category}/mrr" for category in CATEGORIES)
#: Overrides that do not make a configuration: the seed (averaged over), Hydra's own, resuming.
_IGNORED = ("seed", "hydra.", "ckpt_path")


@dataclass
class Job:
    """One job folder: its overrides (seed apart), its seed, its status and its final metrics."""

    path: Path
    overrides: dict[str, str]
    seed: str
    status: str
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def key(self) -> tuple[tuple[str, str], ...]:
        return tuple(sorted(self.overrides.items()))


def read_job(folder: Path) -> Job:
    pairs = [str(line).split("=", 1) for line in OmegaConf.load(folder / ".hydra" / "overrides.yaml")]
    overrides = {k.lstrip("+~"): v for k, v in pairs if not k.lstrip("+~").startswith(_IGNORED)}
    seed = dict(pairs).get("seed", "0")
    metrics_file, status_file = folder / "metrics.json", folder / "status.json"
    if metrics_file.is_file():
        return Job(folder, overrides, seed, "finished", json.loads(metrics_file.read_text()))
    status = json.loads(status_file.read_text()).get("status", "unfinished") if status_file.is_file() else ""
    return Job(folder, overrides, seed, status if status == "failed" else "unfinished")


def find_jobs(folders: list[Path]) -> list[Job]:
    """Every job under ``folders``, sorted by path."""
    jobs = []
    for folder in folders:
        if not folder.is_dir():
            raise FileNotFoundError(f"report: {folder} is not a folder")
        for overrides in sorted(folder.rglob(".hydra/overrides.yaml")):
            job_folder = overrides.parent.parent
            if (job_folder / "status.json").is_file():  # a training job (kgexp analyze etc. write none)
                jobs.append(read_job(job_folder))
    if not jobs:
        raise FileNotFoundError(
            f"report: no job folders (with .hydra/overrides.yaml) under {', '.join(map(str, folders))}"
        )
    return jobs


def _mean_std(values: list[float]) -> tuple[float, float]:
    if not values:
        return float("nan"), float("nan")
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else float("nan")


def summarize_groups(jobs: list[Job]) -> list[dict[str, object]]:
    """One row per group of finished jobs: its overrides, seeds, and mean/std of every reported metric."""
    groups: dict[tuple, list[Job]] = {}
    for job in jobs:
        if job.status == "finished":
            groups.setdefault(job.key, []).append(job)
    rows = []
    for key, members in sorted(groups.items()):
        row: dict[str, object] = dict(key)
        row["seeds"] = " ".join(sorted((job.seed for job in members), key=lambda s: (len(s), s)))
        row["jobs"] = len(members)
        for metric in (*METRICS, *CATEGORY_METRICS):
            values = [job.metrics[metric] for job in members if metric in job.metrics]
            row[f"{metric} mean"], row[f"{metric} std"] = _mean_std(values)
        rows.append(row)
    return rows


def _cell(mean: float, std: float) -> str:
    if mean != mean:  # NaN: the metric is absent
        return "–"
    return f"{mean:.4f}" if std != std else f"{mean:.4f} ± {std:.4f}"


@dataclass
class Published:
    """Published numbers: one configuration (override values) and its metrics per row, with the source."""

    rows: list[tuple[dict[str, str], dict[str, float], str]]

    @property
    def metrics(self) -> list[str]:
        return sorted({m for _, metrics, _ in self.rows for m in metrics}, key=_metric_order)

    def find(self, overrides: dict[str, object]) -> tuple[dict[str, float], str] | None:
        """The published metrics of the configuration that ``overrides`` (a measured group) belongs to."""
        for configuration, metrics, source in self.rows:
            if all(str(overrides.get(k)) == v for k, v in configuration.items()):
                return metrics, source
        return None


def _metric_order(metric: str) -> tuple[int, str]:
    order = [*METRICS, *CATEGORY_METRICS]
    return (order.index(metric), metric) if metric in order else (len(order), metric)


def read_published(path: Path) -> Published:
    """``FILE.csv`` with override columns, metric columns (names with a '/') and an optional ``source``."""
    if not path.is_file():
        raise FileNotFoundError(f"report: --published {path}: no such file")
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        fields = reader.fieldnames or []
        metric_columns = [f for f in fields if "/" in f]
        axis_columns = [f for f in fields if "/" not in f and f != "source"]
        if not metric_columns or not axis_columns:
            raise ValueError(
                f"report: --published {path}: expected override columns (e.g. setting, model) and metric "
                f"columns named like test/mrr, got {', '.join(fields) or 'no header'}"
            )
        rows = []
        for line, record in enumerate(reader, start=2):
            metrics = {}
            for column in metric_columns:
                value = (record.get(column) or "").strip()
                if not value:
                    continue
                try:
                    metrics[column] = float(value)
                except ValueError:
                    raise ValueError(
                        f"report: {path}:{line}: column {column}: expected a number, got {value!r}"
                    ) from None
            configuration = {column: (record.get(column) or "").strip() for column in axis_columns}
            rows.append((configuration, metrics, (record.get("source") or "").strip()))
    return Published(rows)


def published_lines(rows: list[dict[str, object]], axes: list[str], published: Published, tolerance: float):
    """The measured-against-published table of ``results.md``."""
    metrics = published.metrics
    header = [*axes]
    for metric in metrics:
        name = metric.removeprefix("test/")
        header += [f"{name}", f"published {name}", f"Δ {name}"]
    header.append(f"within {tolerance:g} (MRR)")
    lines = [
        "",
        f"Against the published numbers (Δ = measured − published; tolerance {tolerance:g} MRR):",
        "",
    ]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    sources: list[str] = []
    matched = 0
    for row in rows:
        found = published.find(row)
        if found is None:
            continue
        matched += 1
        values, source = found
        if source and source not in sources:
            sources.append(source)
        cells = [str(row.get(a, "")) for a in axes]
        for metric in metrics:
            mean, std = row.get(f"{metric} mean", float("nan")), row.get(f"{metric} std", float("nan"))
            reference = values.get(metric)
            cells.append(_cell(mean, std))
            cells.append("–" if reference is None else f"{reference:.3f}")
            cells.append("–" if reference is None or mean != mean else f"{mean - reference:+.3f}")
        mrr, reference = row.get("test/mrr mean", float("nan")), values.get("test/mrr")
        within = reference is not None and mrr == mrr and abs(mrr - reference) <= tolerance + 1e-9
        cells.append("–" if reference is None or mrr != mrr else ("yes" if within else "**no**"))
        lines.append("| " + " | ".join(cells) + " |")
    if not matched:
        lines.append("No measured configuration matches a published row.")
    if sources:
        lines += ["", *(f"Published numbers: {source}." for source in sources)]
    return lines


def write_report(
    jobs: list[Job], out: Path, published: Published | None = None, tolerance: float = 0.01
) -> list[dict[str, object]]:
    """``results.csv``, ``results.md`` and ``results.png`` in ``out``; returns the summary rows."""
    rows = summarize_groups(jobs)
    axes = sorted({k for job in jobs for k in job.overrides})  # e.g. model, experiment/codex-s@_global_
    columns = [*axes, "jobs", "seeds", *(k for k in rows[0] if "/" in k)] if rows else axes
    with atomic_path(out / "results.csv") as tmp, tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(rows)

    shared = [a for a in axes if len({str(row.get(a, "")) for row in rows}) == 1 and len(rows) > 1]
    axes = [a for a in axes if a not in shared]
    lines = ["# Results", "", f"Mean ± sample standard deviation over seeds; {len(jobs)} jobs."]
    if shared:
        lines.append("Common to all: " + ", ".join(f"`{a}={rows[0].get(a)}`" for a in shared) + ".")
    lines.append("")
    header = [*axes, "seeds", *(m.removeprefix("test/") for m in METRICS)]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [str(row.get(a, "")) for a in axes] + [str(row["seeds"])]
        cells += [_cell(row[f"{m} mean"], row[f"{m} std"]) for m in METRICS]
        lines.append("| " + " | ".join(cells) + " |")
    if published is not None:
        lines += published_lines(rows, axes, published, tolerance)
    if any(row[f"{m} mean"] == row[f"{m} mean"] for row in rows for m in CATEGORY_METRICS):
        header = [*axes, *(f"{c} MRR" for c in CATEGORIES)]
        lines += ["", "Test MRR per relation category:", ""]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for row in rows:
            cells = [str(row.get(a, "")) for a in axes]
            cells += [_cell(row[f"{m} mean"], row[f"{m} std"]) for m in CATEGORY_METRICS]
            lines.append("| " + " | ".join(cells) + " |")
    missing = [job for job in jobs if job.status != "finished"]
    if missing:
        lines += ["", "Not averaged in:", ""]
        lines += [
            f"- {job.status}: `{job.path}` ({' '.join(f'{k}={v}' for k, v in job.key)} seed={job.seed})"
            for job in missing
        ]
    with atomic_path(out / "results.md") as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    bar_chart(rows, axes, out / "results.png")
    return rows


def bar_chart(rows: list[dict[str, object]], axes: list[str], path: Path, metric: str = "test/mrr") -> None:
    """Grouped bars (EMU Fig. 3 style): a group per value of the first varying axis, a bar per the rest."""
    if not rows:
        return
    varying = [a for a in axes if len({str(row.get(a, "")) for row in rows}) > 1] or axes[:1]
    x_axis, hue_axes = varying[0], varying[1:]

    def hue_of(row: dict[str, object]) -> str:
        return " ".join(str(row.get(a, "")) for a in hue_axes)

    groups = sorted({str(row.get(x_axis, "")) for row in rows})
    hues = sorted({hue_of(row) for row in rows})
    figure = Figure(figsize=(max(5.0, 0.6 * len(groups) * len(hues)), 3.6))
    plot = figure.subplots()
    width = 0.8 / len(hues)
    for h, hue in enumerate(hues):
        cells = {str(row.get(x_axis, "")): row for row in rows if hue_of(row) == hue}
        means = [float(cells[g][f"{metric} mean"]) if g in cells else float("nan") for g in groups]
        stds = [float(cells[g][f"{metric} std"]) if g in cells else float("nan") for g in groups]
        stds = [0.0 if s != s else s for s in stds]
        offsets = [g + (h - (len(hues) - 1) / 2) * width for g in range(len(groups))]
        plot.bar(offsets, means, width, yerr=stds, capsize=2, label=hue or None)
    plot.set_xticks(range(len(groups)), groups, fontsize=8)
    plot.set_ylabel(metric)
    plot.set_xlabel(x_axis)
    if hue_axes:
        plot.legend(fontsize=7, title=" ".join(hue_axes), title_fontsize=7)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=110, bbox_inches="tight")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="kgexp report", description=__doc__)
    parser.add_argument("folders", nargs="+", type=Path, help="multirun folders (or job folders)")
    parser.add_argument("--out", type=Path, help="where to write results.* (default: the first folder)")
    parser.add_argument("--published", type=Path, help="CSV of published numbers to put beside the measured")
    parser.add_argument(
        "--tolerance", type=float, default=0.01, help="|measured - published| MRR counted as reproduced"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        published = read_published(args.published) if args.published else None
        jobs = find_jobs(args.folders)
    except (FileNotFoundError, ValueError) as error:
        raise SystemExit(str(error)) from None
    out = args.out or args.folders[0]
    rows = write_report(jobs, out, published, args.tolerance)
    missing = [job for job in jobs if job.status != "finished"]
    log.info(
        "report: %d groups from %d finished jobs written to %s", len(rows), len(jobs) - len(missing), out
    )
    for job in missing:
        log.warning("report: %s job not averaged in: %s", job.status, job.path)
