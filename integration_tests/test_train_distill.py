"""``crossrank train`` self-supervised (the default recipe) end to end on a real index."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from crossrank.adapters.cli.train import main as train_main
from crossrank.adapters.core.inputs import document_text
from crossrank.adapters.training.loop import TrainingPairs
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
        # the engine's BM25 score of every candidate, the positive's first (for the teacher)
        assert group.engine is not None and len(group.engine) == 1 + len(group.negatives)
        assert all(score > 0 for score in group.engine)
    everything = engine.raw_search({"query": {"match_all": {}}, "size": 1000})["hits"]["hits"]
    config = RerankConfig(fields=["title", "text"])
    titles = {str(h["_source"].get("title") or "") for h in everything} - {""}
    for group in groups:  # title groups: no candidate carries the title line the positive lost
        assert set(group.negatives) <= _served(everything, config, group.kind)
        if group.kind == "title":
            firsts = {t.split("\n")[0] for t in (group.positive, *group.negatives)}
            assert not firsts & titles


def _served(hits: list[dict[str, Any]], config: RerankConfig, kind: str) -> set[str]:
    """The texts serving builds for ``hits`` (in a ``title`` group: without their title)."""
    if kind == "title":
        hits = [{**h, "_source": {k: v for k, v in h["_source"].items() if k != "title"}}
                for h in hits]  # fmt: skip
    return {document_text(h, config).text for h in hits}


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
    assert scorer.describe()["max_length"] == meta["max_length"] == 128  # its training length
    assert meta["document_text"]["fields"] == ["title", "text"]
    assert meta["temperature"] == 0.4  # the bi-encoder + BM25 teacher's
    config = json.loads((out / "config.json").read_text())
    assert config["crossrank_base"] == str(tiny_model_dir.resolve())  # for the ensemble


TEMPLATE = "{meta.words}: {title}\n{text}"


def test_training_text_and_tokens_are_the_served_ones(
    engine: Any, tiny_model_dir: Path, tmp_path: Path
) -> None:
    """On the real engine's hits: the negatives are the texts serving builds (a template with
    a dotted path, fetched through _source filtering), and the trained model's pairs are the
    served pairs, at the training length."""
    out = tmp_path / "model"
    argv = ["--engine-url", engine.url, "--index", INDEX, "--base", str(tiny_model_dir)]
    argv += ["--output", str(out), "--steps", "2", "--limit", "4", "--dtype", "float32"]
    argv += ["--template", TEMPLATE, "--max-length", "64", "--max-query-tokens", "16"]
    assert train_main(argv) == 0
    meta = json.loads((out / "crossrank_training.json").read_text())
    assert meta["document_text"]["template"] == TEMPLATE
    config = RerankConfig(model=str(out), template=TEMPLATE, dtype="float32", max_query_tokens=16)
    groups = self_supervised_groups(
        engine.client(), INDEX, query_field="title", doc_field="text", negatives=30,
        skip_top=0, limit=4, seed=0, kinds=("title", "sentence"), depth=30, config=config,
    )  # fmt: skip
    everything = engine.raw_search({"query": {"match_all": {}}, "size": 1000})["hits"]["hits"]
    assert all(set(g.negatives) <= _served(everything, config, g.kind) for g in groups)
    assert any(":" in t.split("\n")[0] for g in groups for t in g.negatives)  # meta.words
    scorer = LocalScorer(config)
    assert scorer.describe()["max_length"] == 64
    pairs = TrainingPairs(scorer.tokenizer, max_length=64, max_query_tokens=16)
    for g in groups:
        docs = [g.positive, *g.negatives]
        trained = pairs.encode([g.query], [docs])
        enc = scorer.encode([ScoreRequest(g.query, docs)])
        for mine, theirs in zip(trained, scorer.pad(enc.input_ids, enc.token_type_ids)):
            assert mine.shape == theirs.shape and (mine == theirs).all()
