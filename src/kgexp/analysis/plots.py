"""The analysis pictures, written as PNG files (matplotlib's object API: no display, no global state)."""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure
from torch import Tensor

from kgexp.runtime.atomic import atomic_path


def _save(figure: Figure, path: Path) -> None:
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=110, bbox_inches="tight")


def similarity_histogram(similarities: dict[str, Tensor], path: Path, title: str) -> None:
    """Overlaid histograms of negative-to-positive cosine similarity, one per sampler."""
    figure = Figure(figsize=(7, 4))
    axes = figure.subplots()
    for name, values in similarities.items():
        axes.hist(values.flatten().numpy(), bins=60, range=(-1, 1), histtype="step", density=True, label=name)
    axes.set_xlabel("cosine similarity of a negative to its positive")
    axes.set_ylabel("density")
    axes.set_title(title)
    axes.legend(fontsize=8)
    _save(figure, path)


def pca_panels(coordinates: dict[str, tuple[Tensor, Tensor]], path: Path, title: str) -> None:
    """One panel per sampler: its negatives and the positive on shared principal axes."""
    columns = min(4, len(coordinates))
    rows = -(-len(coordinates) // columns)
    figure = Figure(figsize=(3 * columns, 3 * rows + 0.4))
    axes = figure.subplots(rows, columns, sharex=True, sharey=True, squeeze=False).flatten()
    for unused in axes[len(coordinates) :]:
        unused.set_visible(False)
    for panel, (name, (positive, negatives)) in zip(axes, coordinates.items(), strict=False):
        panel.scatter(negatives[:, 0], negatives[:, 1], s=6, alpha=0.6, label="negatives")
        panel.scatter(positive[:, 0], positive[:, 1], s=60, marker="*", color="red", label="positive")
        panel.set_title(name, fontsize=9)
        panel.tick_params(labelsize=7)
    axes[0].legend(fontsize=7)
    figure.suptitle(title, fontsize=10)
    _save(figure, path)
