"""``kgexp analyze ckpt=PATH``: negative hardness, PCA of negatives and intra-group similarity of a model."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import torch
from omegaconf import DictConfig

from kgexp.analysis.hardness import cosine_to_positive, draw_negatives, summarize
from kgexp.analysis.plots import pca_panels, similarity_histogram
from kgexp.config.build import build_datamodule
from kgexp.config.loading import load_module
from kgexp.data.registry import SPLITS
from kgexp.evaluation.geometry import intra_group_similarity, pca_2d
from kgexp.options import AT_LEAST_ONE, check, one_of
from kgexp.runtime.atomic import atomic_path, write_json
from kgexp.training.negatives import SamplerSetup

log = logging.getLogger(__name__)


def analyze(cfg: DictConfig) -> dict[str, object]:
    """Write ``hardness.csv``, ``negative_similarity.png``, ``negatives_pca.png`` and ``geometry.json``."""
    check("split", one_of(SPLITS), cfg.split)
    check("num_queries", AT_LEAST_ONE, cfg.num_queries)
    check("num_negatives", AT_LEAST_ONE, cfg.num_negatives)
    module, run_cfg = load_module(cfg.ckpt)
    datamodule = build_datamodule(run_cfg)
    datamodule.prepare_data()
    datamodule.setup("test")
    graph, model = datamodule.graph, module.model
    out = Path(cfg.output_dir)
    generator = torch.Generator().manual_seed(cfg.seed)
    split = graph.splits[cfg.split]
    triples = split[torch.randperm(len(split), generator=generator)[: cfg.num_queries]]
    setup = SamplerSetup(graph, datamodule.cache_root, cfg.seed)

    similarities, summaries, first_query = {}, [], {}
    for name in cfg.samplers:
        sampled = draw_negatives(
            name,
            model,
            triples,
            setup,
            datamodule.train_index,
            cfg.num_negatives,
            generator,
            cfg.warmup_rounds,
        )
        similarities[name] = cosine_to_positive(sampled)
        summaries.append({"sampler": name, **summarize(similarities[name])})
        row = int((sampled.rows == 0).nonzero()[0, 0])
        first_query[name] = (sampled.positives[row], sampled.negatives[row])
        log.info("%s: mean cosine to the positive %.4f", name, summaries[-1]["mean"])

    with atomic_path(out / "hardness.csv") as tmp, tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(summaries[0]))
        writer.writeheader()
        writer.writerows(summaries)
    title = f"{run_cfg.model.name} on {graph.name}: {len(triples)} {cfg.split} positives"
    similarity_histogram(similarities, out / "negative_similarity.png", title)

    points = torch.cat([torch.cat([p.unsqueeze(0), n]) for p, n in first_query.values()])
    coordinates, start = pca_2d(points), 0
    panels = {}
    for name, (_, negatives) in first_query.items():
        panels[name] = (coordinates[start : start + 1], coordinates[start + 1 : start + 1 + len(negatives)])
        start += 1 + len(negatives)
    h, r, t = (graph.entities[triples[0, 0]], graph.relations[triples[0, 1]], graph.entities[triples[0, 2]])
    pca_panels(panels, out / "negatives_pca.png", f"PCA of the true tail and its negatives: ({h}, {r}, {t})")

    geometry = intra_group_similarity(model.entity.weight.detach(), graph.train, graph.num_relations)
    write_json(out / "geometry.json", {"intra_group_cosine": geometry, "samplers": summaries})
    log.info("intra-group cosine: %s; written to %s", geometry, out)
    return {"samplers": summaries, "intra_group_cosine": geometry}
