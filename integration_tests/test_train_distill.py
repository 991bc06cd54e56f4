"""``crossrank train`` self-supervised (the default recipe) end to end on a real index."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from crossrank.adapters.cli.train import main as train_main
from crossrank.adapters.training.mining import self_supervised_groups
from crossrank.reranker import LocalScorer, RerankConfig, ScoreRequest

from .conftest import INDEX


def test_sentence_pseudo_queries_with_bm25_candidates(engine: Any) -> None:
    groups = self_supervised_groups(
        engine.client(),
        INDEX,
        query_field="title",
        doc_field="text",
        negatives=30,
        skip_top=0,
        limit=8,
        seed=3,
        kinds=("title", "sentence"),
        depth=30,
    )
    assert len(groups) == 8
    for group in groups:
        assert group.query not in group.positive  # removed from its own document
        assert 1 <= len(group.negatives) <= 30 and group.positive not in group.negatives


def test_default_recipe_trains_a_loadable_cross_encoder(
    engine: Any, tiny_model_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "model"
    argv = ["--engine-url", engine.url, "--index", INDEX, "--base", str(tiny_model_dir)]
    argv += ["--output", str(out), "--steps", "3", "--limit", "6", "--dtype", "float32"]
    assert train_main(argv) == 0
    meta = json.loads((out / "crossrank_training.json").read_text())
    assert (meta["loss"], meta["head_init"], meta["groups"]) == ("distill", "fit", 6)
    scorer = LocalScorer(RerankConfig(model=str(out), dtype="float32"))
    (result,) = scorer.score([ScoreRequest("computer indexing", ["automatic indexing", "x"])])
    assert len(result.scores) == 2
