"""The rerank flows driven by the sync and async shells, with a fake engine and scorers."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from crossrank.adapters.core.flow import (
    PASSTHROUGH,
    EngineCall,
    msearch_flow,
    parse_msearch,
    run_async,
    run_sync,
    search_flow,
)
from crossrank.reranker import QueryTextError, RerankConfig, ScorerError

from .fakes import FailingScorer, OverlapScorer

DOCS = ["alpha", "beta gamma", "gamma delta alpha", "delta", "alpha beta gamma delta"]


def engine_search(body: dict[str, Any]) -> dict[str, Any]:
    """Scores like BM25 would not: by position. Honours from/size like the engines."""
    size, start = body.get("size", 10), body.get("from", 0)
    hits = [{"_id": str(i), "_score": 10.0 - i, "_source": {"text": d}} for i, d in enumerate(DOCS)]
    return {"took": 1, "hits": {"total": {"value": 5, "relation": "eq"}, "max_score": 10.0,
                                "hits": hits[start : start + size]}}


class Engine:
    def __init__(self) -> None:
        self.calls: list[EngineCall] = []

    def __call__(self, call: EngineCall) -> Any:
        self.calls.append(copy.deepcopy(call))
        if isinstance(call.body, (list, str)):
            lines = parse_msearch(call.body)
            return {"took": 2, "responses": [
                {**engine_search(b), "status": 200} for b in lines[1::2]
            ]}
        return engine_search(call.body or {})

    async def a(self, call: EngineCall) -> Any:
        return self(call)


CFG = RerankConfig(model="m", fields=("text",), window=4)
Q = {"query": {"match": {"text": "gamma delta"}}}


def test_search_sync_and_async_agree() -> None:
    engine = Engine()
    out = run_sync(search_flow({**Q, "size": 3}, {}, CFG), engine, OverlapScorer())
    assert [h["_id"] for h in out["hits"]["hits"]] == ["2", "3", "1"]
    assert engine.calls[0].body["size"] == 4 and engine.calls[0].body["from"] == 0

    async def go() -> Any:
        return await run_async(search_flow({**Q, "size": 3}, {}, CFG), engine.a, OverlapScorer())

    import asyncio

    async_out = asyncio.run(go())
    for o in (async_out, out):
        assert o["_rerank"].pop("scoring_ms") >= 0
    assert async_out == out


def test_passthrough_sends_original() -> None:
    engine = Engine()
    body = {**Q, "size": 0}
    assert run_sync(search_flow(body, {}, CFG), engine, OverlapScorer()) is PASSTHROUGH
    assert engine.calls[0].original and engine.calls[0].body == body


def test_no_query_text_raises_before_engine_call() -> None:
    engine = Engine()
    with pytest.raises(QueryTextError):
        run_sync(search_flow({"query": {"match_all": {}}}, {}, CFG), engine, OverlapScorer())
    assert engine.calls == []


def test_scorer_failure_falls_back_to_engine_order_flagged() -> None:
    out = run_sync(search_flow({**Q, "size": 2, "from": 1}, {}, CFG), Engine(), FailingScorer())
    assert [h["_id"] for h in out["hits"]["hits"]] == ["1", "2"]
    assert out["_rerank"] == {"fallback": True, "error": "the scorer failed", "window": CFG.window}


def test_scorer_failure_raises_when_configured() -> None:
    cfg = CFG.model_copy(update={"on_scorer_error": "raise"})
    with pytest.raises(ScorerError) as info:
        run_sync(search_flow(Q, {}, cfg), Engine(), FailingScorer())
    assert isinstance(info.value.__cause__, ConnectionError)


def test_msearch_scores_all_items_together() -> None:
    scorer = OverlapScorer()
    body = [
        {"index": "i"}, {**Q, "size": 2},
        {"index": "i"}, {**Q, "size": 0},  # passthrough item
        {"index": "i"}, {"query": {"match_all": {}}},  # no query text: item error
        {"index": "i"}, {"query": {"match": {"text": "alpha"}}, "size": 1},
    ]
    out = run_sync(msearch_flow(body, CFG), Engine(), scorer)
    first, passthrough, error, last = out["responses"]
    assert [h["_id"] for h in first["hits"]["hits"]] == ["2", "3"]
    assert "_rerank" not in passthrough and passthrough["status"] == 200
    assert error["status"] == 400 and error["error"]["type"] == "illegal_argument_exception"
    assert last["status"] == 200 and last["_rerank"]["reranked"] == 4
    assert len(scorer.calls) == 1 and len(scorer.calls[0]) == 2


def test_msearch_ndjson_and_full_passthrough() -> None:
    engine = Engine()
    ndjson = '{"index": "i"}\n{"size": 0, "query": {"match": {"text": "x"}}}\n'
    assert run_sync(msearch_flow(ndjson, CFG), engine, OverlapScorer()) is PASSTHROUGH
    assert engine.calls[0].body == ndjson


def test_wrapper_loads_no_model_for_passthrough_calls() -> None:
    from crossrank.adapters._client import RerankState
    from crossrank.reranker import ModelLoadError

    state = RerankState({"model": "/nonexistent/model", "fields": ["text"]}, None)
    engine = Engine()
    assert run_sync(search_flow({**Q, "size": 0}, {}, state.config), engine, state) is PASSTHROUGH
    assert state.loader.state == "idle"
    out = run_sync(search_flow(Q, {}, state.config), engine, state)
    assert out["_rerank"]["fallback"]
    assert out["_rerank"]["error"] == "the reranking model is not available"
    assert state.loader.state == "failed"
    strict = state.config.model_copy(update={"on_scorer_error": "raise"})
    with pytest.raises(ModelLoadError):
        run_sync(search_flow(Q, {}, strict), engine, state)
