"""``kgexp report DIR [DIR ...]``: one table and one bar chart from the jobs of one or more multiruns.

Jobs are the training-run folders (``status.json`` beside ``.hydra/overrides.yaml``). They are grouped
by their overrides without ``seed``; each group gets mean ± sample standard deviation over its finished
jobs. A job without ``metrics.json`` is failed (``status.json`` says so) or unfinished, and is listed,
never averaged in.

Columns, the chart's axes and its legend are named by what varies, in the config's words: an override
``model=rotate`` is the column ``model``; an experiment (``experiment=codex-s/complex``,
``experiment/codex-s@_global_=complex``) is the groups its option names, read from each job's
``config.yaml`` (``dataset`` codex-s, ``model`` complex), and ``experiment`` where those do not tell its
options apart. ``results.csv`` keeps each group's overrides too.

``--published FILE.csv`` puts published numbers beside the measured ones: each row of the file names a
configuration by the report's columns (``setting``, ``model``, ...; an override's own key works too; a
row matches the groups with those values), gives published metrics in columns named as the measured ones
(``test/mrr``, ``test/hits@10``, ...) and may cite its ``source``. ``results.md`` then lists measured,
published and the difference per cell, and marks the configurations whose MRR is further than
``--tolerance`` away; ``results.png`` marks each bar's published test MRR.
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
#: Config groups a reader knows a run by (``model: {name: transe}``), in the order an experiment's come.
NAMED_GROUPS = ("dataset", "model", "sampler", "regime", "loss", "regularizer", "mi", "optimizer", "schedule")


@dataclass
class Job:
    """One job folder: its overrides (seed apart), its seed, its status and its final metrics."""

    path: Path
    overrides: dict[str, str]
    seed: str
    status: str
    metrics: dict[str, float] = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)  # group -> the name its config.yaml gives it

    @property
    def key(self) -> tuple[tuple[str, str], ...]:
        return tuple(sorted(self.overrides.items()))


def config_names(folder: Path) -> dict[str, str]:
    """``group -> name`` of every config group that the job's ``config.yaml`` names."""
    path = folder / "config.yaml"
    config = OmegaConf.to_container(OmegaConf.load(path), resolve=False) if path.is_file() else {}
    return {
        str(group): str(node["name"])
        for group, node in (config.items() if isinstance(config, dict) else ())
        if isinstance(node, dict) and node.get("name") is not None
    }


def read_job(folder: Path) -> Job:
    pairs = [str(line).split("=", 1) for line in OmegaConf.load(folder / ".hydra" / "overrides.yaml")]
    overrides = {k.lstrip("+~"): v for k, v in pairs if not k.lstrip("+~").startswith(_IGNORED)}
    seed = dict(pairs).get("seed", "0")
    metrics_file, status_file, names = folder / "metrics.json", folder / "status.json", config_names(folder)
    if metrics_file.is_file():
        return Job(folder, overrides, seed, "finished", json.loads(metrics_file.read_text()), names)
    status = json.loads(status_file.read_text()).get("status", "unfinished") if status_file.is_file() else ""
    return Job(folder, overrides, seed, status if status == "failed" else "unfinished", names=names)


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


def option_of(key: str, value: str) -> tuple[str, str]:
    """The group an override picks from and the option, by path: ``experiment/codex-s@_global_=complex``
    and ``experiment=codex-s/complex`` both give (``experiment``, ``codex-s/complex``)."""
    group, _, folder = key.split("@", 1)[0].partition("/")
    return group, f"{folder}/{value}" if folder else value


def is_composite(key: str) -> bool:
    """An override whose option sets other groups: an experiment, or any group addressed by its path."""
    return option_of(key, "")[0] == "experiment" or "/" in key or "@" in key


def _named_by(key: str, members: list[Job]) -> list[str]:
    """The groups whose name is a part of the option ``key`` picks, in every job of ``members``."""
    order = {group: index for index, group in enumerate(NAMED_GROUPS)}
    groups = sorted({g for job in members for g in job.names}, key=lambda g: (order.get(g, len(order)), g))
    parts = [(job, option_of(key, job.overrides[key])[1].split("/")) for job in members]
    return [g for g in groups if all(job.names.get(g) in words for job, words in parts)]


def _separates(key: str, groups: list[str], members: list[Job]) -> bool:
    """Whether the names of ``groups`` tell apart the options of ``key`` that ``members`` picked."""
    pairs = {(job.overrides[key], tuple(job.names[g] for g in groups)) for job in members}
    return len({option for option, _ in pairs}) == len(pairs) == len({names for _, names in pairs})


def label_columns(jobs: list[Job]) -> dict[str, list[str]]:
    """Each override key and the columns it is shown as: a plain override its own (``model``,
    ``model.dim``); a composite one the groups its options name, and its group (``experiment``) where
    those names do not tell its options apart (the key itself if another took that column)."""
    keys = sorted({key for job in jobs for key in job.overrides})
    columns = {key: [key] for key in keys if not is_composite(key)}
    taken = set(columns)
    for key in (k for k in keys if is_composite(k)):
        members = [job for job in jobs if key in job.overrides]
        named = _named_by(key, members)
        if not named or not _separates(key, named, members):
            group = option_of(key, "")[0]
            named.append(key if group in taken else group)
        taken.update(named)
        columns[key] = named
    return columns


def job_labels(job: Job, columns: dict[str, list[str]]) -> dict[str, str]:
    """The job's value of each column: an override's value, a group's name, or the option picked."""
    labels = {}
    for key, value in job.overrides.items():
        group, option = option_of(key, value)
        for column in columns[key]:
            if column == key:
                labels[column] = value
            else:
                labels.setdefault(column, option if column == group else job.names[column])
    for column in {c for shown in columns.values() for c in shown} - labels.keys():
        if column in job.names:  # a group this job leaves to its config (an experiment's, a default)
            labels[column] = job.names[column]
    return labels


def _mean_std(values: list[float]) -> tuple[float, float]:
    if not values:
        return float("nan"), float("nan")
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else float("nan")


def summarize_groups(jobs: list[Job]) -> list[dict[str, object]]:
    """One row per group of finished jobs: its labels (:func:`label_columns`), its ``overrides``, seeds,
    and mean/std of every reported metric."""
    groups: dict[tuple, list[Job]] = {}
    for job in jobs:
        if job.status == "finished":
            groups.setdefault(job.key, []).append(job)
    columns = label_columns([job for members in groups.values() for job in members])
    rows = []
    for key, members in sorted(groups.items()):
        row: dict[str, object] = {**job_labels(members[0], columns), "overrides": key}
        row["seeds"] = " ".join(sorted((job.seed for job in members), key=lambda s: (len(s), s)))
        row["jobs"] = len(members)
        for metric in (*METRICS, *CATEGORY_METRICS):
            values = [job.metrics[metric] for job in members if metric in job.metrics]
            row[f"{metric} mean"], row[f"{metric} std"] = _mean_std(values)
        rows.append(row)
    return rows


#: The columns of a summary row that are no label.
STATISTICS = ("jobs", "seeds", *(f"{m} {s}" for m in (*METRICS, *CATEGORY_METRICS) for s in ("mean", "std")))


def label_keys(rows: list[dict[str, object]]) -> list[str]:
    """The label columns of summary rows, sorted."""
    return sorted({key for row in rows for key in row if key not in ("overrides", *STATISTICS)})


def overrides_text(row: dict[str, object]) -> str:
    return " ".join(f"{key}={value}" for key, value in row["overrides"])


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

    def find(self, row: dict[str, object]) -> tuple[dict[str, float], str] | None:
        """The published metrics and source of the configuration a measured group belongs to, matched by
        the group's labels or its overrides."""
        values = {**dict(row["overrides"]), **row}
        for configuration, metrics, source in self.rows:
            if all(str(values.get(k)) == v for k, v in configuration.items()):
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


def signed_difference(measured: float, published: float) -> str:
    """``measured − published`` to three decimals with its sign; a difference that rounds to zero is
    ``+0.000``, never ``-0.000``."""
    return f"{round(measured - published, 3) + 0.0:+.3f}"


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
            cells.append("–" if reference is None or mean != mean else signed_difference(mean, reference))
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
    axes = label_keys(rows)  # e.g. model, sampler
    with atomic_path(out / "results.csv") as tmp, tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=[*axes, "overrides", *STATISTICS], restval="")
        writer.writeheader()
        writer.writerows({**row, "overrides": overrides_text(row)} for row in rows)

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
    bar_chart(rows, axes, out / "results.png", published)
    return rows


def metric_label(metric: str) -> str:
    """A metric in words: ``test/mrr`` -> ``test MRR``, ``test/1-N/hits@10`` -> ``test 1-N Hits@10``."""
    words = {"mrr": "MRR", "mr": "MR"}
    return " ".join(words.get(part, part.replace("hits@", "Hits@")) for part in metric.split("/"))


def chart_figure(
    rows: list[dict[str, object]],
    axes: list[str],
    metric: str = "test/mrr",
    published: Published | None = None,
) -> Figure:
    """Grouped bars (EMU Fig. 3 style): a group per value of the first varying axis, a bar per the rest;
    the axes, legend and title named by the label columns (``model``, ``sampler``). Error bars where
    there are several seeds; with ``published``, a black mark on each bar at its published value."""
    varying = [a for a in axes if len({str(row.get(a, "")) for row in rows}) > 1] or axes[:1]
    x_axis, hue_axes = (varying[0] if varying else ""), varying[1:]

    def hue_of(row: dict[str, object]) -> str:
        return ", ".join(str(row.get(a, "")) for a in hue_axes)

    groups = sorted({str(row.get(x_axis, "")) for row in rows})
    hues = sorted({hue_of(row) for row in rows})
    figure = Figure(figsize=(max(5.0, 0.6 * len(groups) * len(hues)), 3.6))
    plot = figure.subplots()
    width = 0.8 / len(hues)
    marks: list[tuple[float, float]] = []  # (bar centre, published value)
    for h, hue in enumerate(hues):
        cells = {str(row.get(x_axis, "")): row for row in rows if hue_of(row) == hue}
        means = [float(cells[g][f"{metric} mean"]) if g in cells else float("nan") for g in groups]
        stds = [float(cells[g][f"{metric} std"]) if g in cells else float("nan") for g in groups]
        stds = [0.0 if s != s else s for s in stds]
        offsets = [g + (h - (len(hues) - 1) / 2) * width for g in range(len(groups))]
        plot.bar(offsets, means, width, yerr=stds if any(stds) else None, capsize=2, label=hue or None)
        for offset, group in zip(offsets, groups, strict=True):
            row = cells.get(group)
            found = published.find(row) if published and row else None
            if found is not None and metric in found[0]:
                marks.append((offset, found[0][metric]))
    if marks:
        xs, ys = zip(*marks, strict=True)
        plot.scatter(xs, ys, s=(60 * width) ** 2, marker="_", color="black", zorder=3, label="published")
    plot.set_xticks(range(len(groups)), groups, fontsize=8)
    plot.set_ylabel(metric_label(metric))
    plot.set_xlabel(x_axis)
    by = " and ".join(filter(None, [x_axis, ", ".join(hue_axes)]))
    plot.set_title(f"{metric_label(metric)} by {by}" if by else metric_label(metric), fontsize=9)
    if hue_axes or marks:
        plot.legend(fontsize=7, title=", ".join(hue_axes) or None, title_fontsize=7)
    return figure


def bar_chart(
    rows: list[dict[str, object]], axes: list[str], path: Path, published: Published | None = None
) -> None:
    """:func:`chart_figure` of the test MRR as a PNG at ``path`` (nothing without rows)."""
    if not rows:
        return
    with atomic_path(path) as tmp:
        figure = chart_figure(rows, axes, published=published)
        figure.savefig(tmp, format="png", dpi=110, bbox_inches="tight")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="kgexp report", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
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
