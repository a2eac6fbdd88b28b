"""Prediction: top-k answers against a brute-force ranking, the Python API and ``kgexp predict``."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest
import torch
from conftest import compose_config, mirror_dataset, run_kgexp

from kgexp.commands.export import export
from kgexp.commands.predict import predict
from kgexp.config.loading import load_predictor
from kgexp.data.parsing import TripleFormatError
from kgexp.evaluation.prediction import Predictor, read_queries

# The tests of a checkpoint trained by the real command are marked slow (the full tier); the argument and
# query-file checks run in process.


def short_run(tmp_path_factory, model: str, *overrides: str) -> Path:
    """A short Nations run of ``model``: its best checkpoint."""
    mirror_dataset("nations")
    run_dir = tmp_path_factory.mktemp(f"predict-{model}") / "run"
    run_kgexp(
        "dataset=nations",
        f"model={model}",
        "model.dim=8",
        "trainer.max_steps=30",
        "trainer.val_check_interval=30",
        "logger=csv",  # W&B would add a process per run and nothing to check
        f"hydra.run.dir={run_dir}",
        *overrides,
        cwd=run_dir.parent,
    )
    return run_dir / "checkpoints" / "best.ckpt"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """ComplEx, whose scores differ per side."""
    return short_run(tmp_path_factory, "complex")


@pytest.fixture(scope="module")
def predictor(checkpoint) -> Predictor:
    return load_predictor(checkpoint)


def known_triples(*splits: str) -> set[tuple[str, str, str]]:
    """Label triples read straight from the dataset files (not through kgexp)."""
    folder = mirror_dataset("nations")
    triples = set()
    for split in splits:
        for line in (folder / f"{split}.txt").read_text().splitlines():
            if line.strip():
                triples.add(tuple(line.split("\t")))
    return triples


def brute_force(predictor: Predictor, anchor: str, relation: str, side: str, leave_out: set) -> list[str]:
    """Every entity scored as its own triple, sorted by score, known triples left out."""
    candidates = []
    for entity in predictor.entities:
        triple = (anchor, relation, entity) if side == "tail" else (entity, relation, anchor)
        if triple not in leave_out:
            candidates.append((predictor.score([triple])[0], entity))
    return [entity for _, entity in sorted(candidates, key=lambda c: -c[0])]


@pytest.mark.slow
@pytest.mark.parametrize("side", ["tail", "head"])
@pytest.mark.parametrize("filter", ["none", "train", "all"])
def test_top_k_equals_a_brute_force_ranking(predictor, side, filter):
    leave_out = {
        "none": set(),
        "train": known_triples("train"),
        "all": known_triples("train", "valid", "test"),
    }
    queries = [("usa", "embassy"), ("china", "intergovorgs"), ("egypt", "reldiplomacy")]
    predictions = predictor.predict(side, queries, k=5, filter=filter)
    for (anchor, relation), prediction in zip(queries, predictions, strict=True):
        expected = brute_force(predictor, anchor, relation, side, leave_out[filter])[:5]
        assert prediction.answers == expected
        assert prediction.scores == sorted(prediction.scores, reverse=True)
        rescored = predictor.score(
            [(anchor, relation, e) if side == "tail" else (e, relation, anchor) for e in prediction.answers]
        )
        assert prediction.scores == pytest.approx(rescored, rel=1e-6, abs=1e-5)


@pytest.mark.slow
def test_filtering_leaves_out_exactly_the_known_answers(predictor):
    every = predictor.predict("tail", [("usa", "embassy")], k=len(predictor.entities), filter="none")[0]
    filtered = predictor.predict("tail", [("usa", "embassy")], k=len(predictor.entities), filter="all")[0]
    known = {t for h, r, t in known_triples("train", "valid", "test") if (h, r) == ("usa", "embassy")}
    assert known and set(every.answers) == set(predictor.entities)
    assert filtered.answers == [a for a in every.answers if a not in known]


@pytest.mark.slow
def test_an_export_folder_predicts_as_the_checkpoint(checkpoint, predictor, tmp_path):
    loaded = Predictor.from_export(export(checkpoint, tmp_path / "export"))
    triples = [(h, r, t) for h, r, t in sorted(known_triples("test"))[:50]]
    assert loaded.score(triples) == pytest.approx(predictor.score(triples), rel=1e-6, abs=1e-5)
    with pytest.raises(ValueError, match="filter=all needs the dataset"):
        loaded.predict("tail", [("usa", "embassy")], filter="all")


DISTANCE_RUNS = [("rotate", ()), ("transe", ("model.p_norm=2", "model.gamma=5"))]


@pytest.mark.slow
@pytest.mark.parametrize(("model", "overrides"), DISTANCE_RUNS)
def test_an_export_folder_of_a_distance_model_predicts_as_its_checkpoint(
    model, overrides, tmp_path_factory, tmp_path
):
    """RotatE's relations are exported as phases, TransE's norm and margin are not its defaults: the
    scores of the rebuilt model must be the checkpoint's."""
    checkpoint = short_run(tmp_path_factory, model, *overrides)
    loaded = Predictor.from_export(export(checkpoint, tmp_path / "export"))
    triples = [(h, r, t) for h, r, t in sorted(known_triples("test"))[:50]]
    expected = load_predictor(checkpoint).score(triples)
    assert loaded.score(triples) == pytest.approx(expected, rel=1e-6, abs=1e-5)


@pytest.mark.slow
def test_unknown_labels_and_bad_k_are_named(predictor):
    with pytest.raises(ValueError, match="unknown entity 'atlantis'"):
        predictor.predict("tail", [("atlantis", "embassy")])
    with pytest.raises(ValueError, match="unknown relation 'likes'"):
        predictor.score([("usa", "likes", "china")])
    with pytest.raises(ValueError, match=r"^k: expected a value in \[1, 14\], got 15$"):
        predictor.predict("tail", [("usa", "embassy")], k=15)


@pytest.mark.slow
def test_the_command_writes_the_tsv_of_the_api(checkpoint, predictor, tmp_path):
    queries = tmp_path / "queries.tsv"
    queries.write_text("usa\tembassy\t?\n\n?\tintergovorgs\tchina\n")
    out = tmp_path / "predictions.tsv"
    run_kgexp("predict", f"ckpt={checkpoint}", f"queries={queries}", "k=3", f"out={out}", cwd=tmp_path)
    with out.open() as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    tails = predictor.predict("tail", [("usa", "embassy")], k=3, filter="all")[0]
    heads = predictor.predict("head", [("china", "intergovorgs")], k=3, filter="all")[0]
    assert [(r["head"], r["relation"], r["tail"], int(r["rank"])) for r in rows] == [
        *(("usa", "embassy", t, i) for i, t in enumerate(tails.answers, start=1)),
        *((h, "intergovorgs", "china", i) for i, h in enumerate(heads.answers, start=1)),
    ]
    assert [float(r["score"]) for r in rows[:3]] == pytest.approx(tails.scores, abs=1e-6)
    single = run_kgexp(
        "predict", f"ckpt={checkpoint}", "tail=china", "relation=intergovorgs", "k=3", cwd=tmp_path
    )
    assert single.stdout.splitlines()[0] == "head\trelation\ttail\trank\tscore"  # only the TSV on stdout
    assert [line.split("\t")[0] for line in single.stdout.splitlines()[1:]] == heads.answers


BAD_ARGUMENTS = [
    (["head=usa", "tail=china", "relation=embassy"], "exactly one of head="),
    (["head=usa"], "give relation="),
    (["head=usa", "relation=embassy", "filter=known"], "filter: expected one of none, train, all"),
    (["head=usa", "relation=embassy", "k=0"], "k: expected a positive integer"),
    (["queries=/no/such/file.tsv"], "queries: no file at /no/such/file.tsv"),
]


@pytest.mark.parametrize(("arguments", "message"), BAD_ARGUMENTS)
def test_bad_arguments_fail_before_loading_naming_the_key(arguments, message):
    """Before loading: the checkpoint does not exist, and its error would come first otherwise."""
    cfg = compose_config("ckpt=/no/checkpoint.ckpt", *arguments, config_name="predict")
    with pytest.raises((ValueError, FileNotFoundError), match=re.escape(message)):
        predict(cfg)


@pytest.mark.slow
def test_the_command_fails_on_a_bad_argument_with_its_message(tmp_path):
    arguments, message = BAD_ARGUMENTS[0]
    result = run_kgexp("predict", "ckpt=/no/checkpoint.ckpt", *arguments, cwd=tmp_path, check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: predict: give relation=") and message in last


def test_query_file_errors_name_the_line(tmp_path):
    path = tmp_path / "queries.tsv"
    path.write_text("usa\tembassy\t?\n\nusa\tembassy\tchina\n")
    with pytest.raises(TripleFormatError, match=r"queries\.tsv:3: a query has '\?'"):
        read_queries(path)
    path.write_text("usa\tembassy\n")
    with pytest.raises(TripleFormatError, match=r"queries\.tsv:1: expected 3 tab-separated fields"):
        read_queries(path)
    path.write_text("?\tembassy\t?\n")
    with pytest.raises(TripleFormatError, match=r"queries\.tsv:1"):
        read_queries(path)


@pytest.mark.slow
def test_scores_in_batches_equal_scores_at_once(predictor):
    triples = torch.tensor([[i % 14, i % 55, (3 * i) % 14] for i in range(40)])
    assert torch.allclose(predictor.score_ids(triples, batch_size=7), predictor.score_ids(triples))
