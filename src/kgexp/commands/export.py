"""``kgexp export``: a checkpoint's embeddings as NumPy arrays, label tables and a model description."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from kgexp.config.loading import load_module
from kgexp.models import RotatE
from kgexp.runtime.atomic import atomic_path, write_json

log = logging.getLogger(__name__)


def _save_array(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp, tmp.open("wb") as handle:
        np.save(handle, array)


def _save_labels(path: Path, labels: list[str]) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text("".join(f"{i}\t{label}\n" for i, label in enumerate(labels)), encoding="utf-8")


def export(ckpt: str | Path, out: str | Path) -> Path:
    """Write ``entities.npy``, ``relations.npy``, ``entities.tsv``, ``relations.tsv`` and ``model.json``.

    Arrays are float32. Complex models keep ``[real | imaginary]`` halves; RotatE relations are written
    as phases in radians. A reciprocal model's ``relations.npy`` has ``2R`` rows, row ``r + R`` being the
    inverse of relation ``r`` (``relations.tsv`` names the ``R`` relations). MI heads and other auxiliary
    parameters are not exported.
    """
    module, _ = load_module(ckpt)
    model = module.model
    out = Path(out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    relations = model.relation.weight.detach()
    if isinstance(model, RotatE):
        relations = model.phases(relations)
    _save_array(out / "entities.npy", model.entity.weight.detach().float().cpu().numpy())
    _save_array(out / "relations.npy", relations.float().cpu().numpy())
    _save_labels(out / "entities.tsv", module.vocabulary["entities"])
    _save_labels(out / "relations.tsv", module.vocabulary["relations"])
    description = {
        **model.hyperparameters(),
        "num_entities": model.num_entities,
        "num_relations": model.num_relations,
        "entity_layout": "[real | imaginary]" if model.entity_factor == 2 else "real",
        "relation_layout": {"rotate": "phase (radians)", "complex": "[real | imaginary]"}.get(
            model.name, "real"
        ),
    }
    write_json(out / "model.json", description)
    log.info("exported %s to %s", ckpt, out)
    return out
