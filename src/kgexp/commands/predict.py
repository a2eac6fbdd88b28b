"""``kgexp predict``: top-k answers of queries given by label, as a TSV."""

from __future__ import annotations

import sys
from pathlib import Path

from omegaconf import DictConfig

from kgexp.config.loading import load_predictor
from kgexp.errors import InputError, MissingFileError
from kgexp.evaluation.prediction import FILTERS, Prediction, read_queries
from kgexp.options import check, one_of
from kgexp.runtime.atomic import atomic_path
from kgexp.sides import HEAD, TAIL, Side

COLUMNS = ("head", "relation", "tail", "rank", "score")


def queries_of(cfg: DictConfig) -> list[tuple[Side, str, str]]:
    """``(side, anchor, relation)`` queries from ``queries=FILE`` or from ``head=``/``tail=`` and
    ``relation=``; checked before any model is loaded."""
    check("filter", one_of(FILTERS), cfg.filter)
    if not isinstance(cfg.k, int) or cfg.k <= 0:
        raise InputError(f"k: expected a positive integer, got {cfg.k!r}")
    if cfg.queries is not None:
        if any(cfg[key] is not None for key in ("head", "relation", "tail")):
            raise InputError("queries: give a query file or head=/tail= with relation=, not both")
        path = Path(cfg.queries).expanduser()
        if not path.is_file():
            raise MissingFileError(f"queries: no file at {path}")
        return [(side, anchor, relation) for _, side, anchor, relation in read_queries(path)]
    if cfg.relation is None or (cfg.head is None) == (cfg.tail is None):
        raise InputError(
            "predict: give relation= and exactly one of head= (best tails) or tail= (best heads)"
        )
    return (
        [(TAIL, str(cfg.head), str(cfg.relation))]
        if cfg.head is not None
        else [(HEAD, str(cfg.tail), str(cfg.relation))]
    )


def rows_of(prediction: Prediction) -> list[tuple[str, str, str, int, float]]:
    rows = []
    for rank, (answer, score) in enumerate(zip(prediction.answers, prediction.scores, strict=True), start=1):
        if prediction.side == TAIL:
            rows.append((prediction.anchor, prediction.relation, answer, rank, score))
        else:
            rows.append((answer, prediction.relation, prediction.anchor, rank, score))
    return rows


def predict(cfg: DictConfig) -> list[Prediction]:
    """Answer the queries of ``cfg`` and write the TSV."""
    queries = queries_of(cfg)
    predictor = load_predictor(cfg.ckpt, with_known=cfg.filter != "none")
    predictions: list[Prediction | None] = [None] * len(queries)
    for side in (HEAD, TAIL):
        positions = [i for i, (s, _, _) in enumerate(queries) if s == side]
        answers = predictor.predict(
            side, [queries[i][1:] for i in positions], cfg.k, cfg.filter, cfg.batch_size
        )
        for i, prediction in zip(positions, answers, strict=True):
            predictions[i] = prediction
    lines = ["\t".join(COLUMNS)]
    lines += ["\t".join(map(str, row)) for p in predictions for row in rows_of(p)]
    text = "\n".join(lines) + "\n"
    if cfg.out is None:
        sys.stdout.write(text)
    else:
        with atomic_path(Path(cfg.out).expanduser()) as tmp:
            tmp.write_text(text, encoding="utf-8")
    return predictions
