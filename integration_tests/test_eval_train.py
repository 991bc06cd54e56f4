"""``crossrank eval`` and ``crossrank train`` against the real engines, on small data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from crossrank.adapters.cli.evaluate import main as eval_main
from crossrank.adapters.evaluation import (
    evaluate,
    index_collection,
    load_beir,
    pick_analyzer,
    write_outputs,
)
from crossrank.adapters.training.loop import TrainSettings, train
from crossrank.adapters.training.mining import self_supervised_groups
from crossrank.reranker import LocalScorer, RerankConfig, ScoreRequest

from .conftest import INDEX, dataset_dir
from .proxy_support import start_proxy


def test_eval_reports_bm25_reranked_and_fused(
    engine: Any, tiny_model_dir: Path, tmp_path: Path
) -> None:
    collection = load_beir(dataset_dir())
    keep = list(collection.queries)[:6]
    collection.queries = {q: collection.queries[q] for q in keep}
    config = RerankConfig(model=str(tiny_model_dir), dtype="float32", fields=("title", "text"))
    client = engine.client(rerank=config)
    assert index_collection(client, "adi_eval", collection, reuse=False) == len(collection.corpus)
    assert index_collection(client, "adi_eval", collection, reuse=True) == 0
    result = evaluate(client, "adi_eval", collection, window=20, progress=False)
    assert set(result.summary) == {"bm25", "reranked", "fused"}
    for values in result.summary.values():
        assert set(values) == {"ndcg@10", "mrr@10", "recall@20"}
        assert all(0.0 <= v <= 1.0 for v in values.values())
    # The BM25 run is the engine's own order for the query.
    qid = keep[0]
    text = collection.queries[qid]
    raw = engine.raw.search(
        index="adi_eval",
        body={"query": {"multi_match": {"query": text, "fields": ["title", "text"]}}, "size": 20},
    )
    raw_ids = [h["_id"] for h in getattr(raw, "body", raw)["hits"]["hits"]]
    bm25 = result.runs["bm25"][qid]
    assert sorted(bm25, key=lambda d: -bm25[d]) == raw_ids
    # Recall@window is the same for all runs: reranking only re-orders the window.
    assert result.summary["bm25"]["recall@20"] == result.summary["reranked"]["recall@20"]
    assert {"engine", "scoring", "total"} <= set(result.latency_ms)
    paths = write_outputs(result, tmp_path / "out")
    assert all(p.stat().st_size > 0 for p in paths)
    assert paths[3].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_train_self_supervised_from_the_index(
    engine: Any, tiny_model_dir: Path, tmp_path: Path
) -> None:
    client = engine.client()
    groups = self_supervised_groups(
        client,
        INDEX,
        query_field="title",
        doc_field="text",
        negatives=3,
        skip_top=2,
        limit=6,
        seed=0,
    )
    assert len(groups) == 6
    for group in groups:
        assert group.query.lower() not in group.positive.lower()  # pseudo-query stripped
        assert group.negatives and group.positive not in group.negatives
    out = train(
        groups,
        TrainSettings(
            base=str(tiny_model_dir),
            output=tmp_path / "m",
            steps=3,
            batch_groups=2,
            negatives=3,
            max_length=64,
            dtype="float32",
        ),
        progress=False,
    )
    scorer = LocalScorer(RerankConfig(model=str(out)))
    assert len(scorer.score([ScoreRequest(groups[0].query, [groups[0].positive])])[0].scores) == 1
    assert scorer.describe()["max_length"] == 64  # served at its training length

    # ``crossrank eval --model TRAINED``: the offline default, the model and its base as a
    # bi-encoder, each alone and fused, the ensemble alone and fused; --no-ensemble: alone.
    common = [
        str(dataset_dir()), "--engine-url", engine.url, "--index", "adi_trained_eval",
        "--max-queries", "4", "--window", "10", "--model", str(out),
    ]  # fmt: skip
    assert eval_main([*common, "--out", str(tmp_path / "e")]) == 0
    summary = json.loads((tmp_path / "e" / "summary.json").read_text())["summary"]
    assert set(summary) == {"bm25", "reranked", "fused", "ce", "ce+bm25", "bi", "bi+bm25"}
    assert eval_main([*common, "--reuse-index", "--no-ensemble", "--out", str(tmp_path / "a")]) == 0
    alone = json.loads((tmp_path / "a" / "summary.json").read_text())["summary"]
    assert set(alone) == {"bm25", "reranked", "fused"}
    assert alone["reranked"] == pytest.approx(summary["ce"], abs=1e-6)  # the same model
    assert alone["fused"] == pytest.approx(summary["ce+bm25"], abs=1e-6)


def test_strong_bm25_analyzer_where_the_engine_has_it(engine: Any) -> None:
    """OpenSearch nodes get analysis-common from Maven Central (english analyzer); the
    Elasticsearch integ-test zips have no such module, so eval falls back to standard."""
    client = engine.client()
    expected = "standard" if engine.is_es else "english"
    assert pick_analyzer(client) == expected
    if not engine.is_es:
        tokens = client.indices.analyze(body={"analyzer": "english", "text": "The flows"})
        assert [t["token"] for t in tokens["tokens"]] == ["flow"]


def test_eval_through_the_proxy_matches_the_wrapper(
    engine: Any, tiny_model_dir: Path, tmp_path: Path
) -> None:
    """``crossrank eval --proxy-url``: indexes through the engine URL, searches through a real
    proxy subprocess, and scores what the wrapper path scores for the same model."""
    # device and dtype left to auto, as in the wrapper run
    proxy = start_proxy(engine.url, "--model", str(tiny_model_dir), "--fields", "title,text")
    try:
        common = [
            str(dataset_dir()), "--engine-url", engine.url, "--index", "adi_proxy_eval",
            "--max-queries", "6", "--window", "20",
        ]  # fmt: skip
        assert eval_main([*common, "--proxy-url", proxy.url, "--out", str(tmp_path / "p")]) == 0
    finally:
        assert proxy.stop(), proxy.logs()[-2000:]
    events = [json.loads(line) for line in proxy.logs().splitlines() if line.startswith("{")]
    searches = [e for e in events if e.get("msg") == "request" and e.get("route") == "search"]
    assert len(searches) == 6 and all(e["status"] == 200 for e in searches)
    assert eval_main([*common, "--reuse-index", "--model", str(tiny_model_dir),
                      "--out", str(tmp_path / "w")]) == 0  # fmt: skip
    via_proxy = json.loads((tmp_path / "p" / "summary.json").read_text())["summary"]
    wrapper = json.loads((tmp_path / "w" / "summary.json").read_text())["summary"]
    assert set(via_proxy) == {"bm25", "reranked", "fused"}
    assert via_proxy["bm25"] == wrapper["bm25"]  # the engine's order, from _rerank.engine_*
    for run in ("reranked", "fused"):
        assert via_proxy[run] == pytest.approx(wrapper[run], abs=1e-6)
    rows = json.loads((tmp_path / "p" / "per_query.json").read_text())
    assert len(rows) == 6
