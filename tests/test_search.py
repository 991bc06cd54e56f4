"""Request planning and response rewriting, as pure functions over engine-shaped dicts."""

from __future__ import annotations

from typing import Any

import pytest

from crossrank.adapters.core.plan import RERANK_KEY, finish_search, plan_search
from crossrank.reranker import FusionConfig, RerankConfig, ScoreResult

QUERY = {"match": {"text": "q"}}


def cfg(**kw: Any) -> RerankConfig:
    return RerankConfig(model="m", fields=("text",), **kw)


def response(n: int) -> dict[str, Any]:
    hits = [
        {
            "_index": "i",
            "_id": str(i),
            "_score": float(n - i),
            "_source": {"text": f"d{i}"},
            "highlight": {"text": [f"<em>d{i}</em>"]},
        }
        for i in range(n)
    ]
    return {
        "took": 3,
        "timed_out": False,
        "_shards": {"total": 1},
        "hits": {"total": {"value": 1000, "relation": "eq"}, "max_score": float(n), "hits": hits},
        "aggregations": {"a": {"value": 1}},
    }


@pytest.mark.parametrize(
    ("body", "params", "reason"),
    [
        ({"query": QUERY, "size": 0}, {}, "size=0"),
        ({"query": QUERY}, {"size": "0"}, "size=0"),
        ({"query": QUERY, "sort": [{"date": "desc"}]}, {}, "sort"),
        ({"query": QUERY}, {"sort": "date:asc"}, "sort"),
        ({"query": QUERY, "sort": [{"_score": "asc"}]}, {}, "sort"),
        ({"query": QUERY, "search_after": [1]}, {}, "search_after"),
        ({"query": QUERY}, {"scroll": "1m"}, "scroll"),
        ({"query": QUERY, "pit": {"id": "x"}}, {}, "pit"),
        ({"query": QUERY, "from": 100}, {}, "beyond_window"),
    ],
)
def test_passthrough(body: dict[str, Any], params: dict[str, Any], reason: str) -> None:
    plan = plan_search(body, params, cfg())
    assert plan.passthrough == reason
    assert plan.body == body


def test_score_sort_is_reranked() -> None:
    for sort in ("_score", ["_score"], [{"_score": {"order": "desc"}}], "_score:desc"):
        assert plan_search({"query": QUERY, "sort": sort}, {}, cfg()).rerank


def test_plan_fetches_window_from_zero() -> None:
    plan = plan_search({"query": QUERY, "from": 5, "size": 10}, {}, cfg(window=50))
    assert (plan.body["from"], plan.body["size"], plan.offset, plan.size) == (0, 50, 5, 10)
    straddle = plan_search({"query": QUERY}, {"from": "45", "size": "10"}, cfg(window=50))
    assert (straddle.body["size"], straddle.drop_params) == (55, ("from", "size"))


def test_disabled() -> None:
    assert plan_search({"query": QUERY}, {}, cfg(enabled=False)).passthrough == "disabled"


def finish(body: dict[str, Any], n: int, scores: list[float], **kw: Any) -> dict[str, Any]:
    plan = plan_search(body, {}, cfg(**kw))
    resp = response(n)
    plan.score_request(resp)
    return finish_search(plan, resp, ScoreResult(scores, truncated=1, model="m"), 1.5)


def test_finish_reorders_window_and_pages() -> None:
    scores = [0.1, 0.9, 0.5, 0.7]  # for d0..d3; d4, d5 are past the window
    out = finish({"query": QUERY, "size": 3}, 6, scores, window=4)
    assert [h["_id"] for h in out["hits"]["hits"]] == ["1", "3", "2"]
    assert [h["_score"] for h in out["hits"]["hits"]] == [0.9, 0.7, 0.5]
    assert out["hits"]["max_score"] == 0.9
    first = out["hits"]["hits"][0]
    assert first[RERANK_KEY] == {"engine_score": 5.0, "engine_rank": 1, "score": 0.9}
    assert first["highlight"] == {"text": ["<em>d1</em>"]}
    assert out["hits"]["total"] == {"value": 1000, "relation": "eq"}
    assert out["aggregations"] == {"a": {"value": 1}} and out["took"] == 3
    summary = out[RERANK_KEY]
    assert (summary["reranked"], summary["truncated"], summary["window"]) == (4, 1, 4)
    # a page straddling the window: reranked tail, then engine order
    page = finish({"query": QUERY, "from": 2, "size": 3}, 6, scores, window=4)
    assert [h["_id"] for h in page["hits"]["hits"]] == ["2", "0", "4"]
    assert RERANK_KEY not in page["hits"]["hits"][2]


def test_original_response_is_not_modified() -> None:
    plan = plan_search({"query": QUERY}, {}, cfg(window=3))
    resp = response(3)
    before = repr(resp)
    finish_search(plan, resp, ScoreResult([3.0, 2.0, 1.0]), 0.0)
    assert repr(resp) == before


def test_ties_keep_engine_order() -> None:
    out = finish({"query": QUERY}, 4, [1.0, 2.0, 1.0, 2.0], window=4)
    assert [h["_id"] for h in out["hits"]["hits"]] == ["1", "3", "0", "2"]


def test_min_score_drops_below_threshold() -> None:
    out = finish({"query": QUERY}, 4, [0.1, 0.9, 0.5, 0.7], window=4, min_score=0.6)
    assert [h["_id"] for h in out["hits"]["hits"]] == ["1", "3"]
    assert out[RERANK_KEY]["dropped_below_min_score"] == 2
    assert out["hits"]["total"]["value"] == 1000
    none = finish({"query": QUERY}, 2, [0.1, 0.2], window=2, min_score=5)
    assert none["hits"]["hits"] == [] and none["hits"]["max_score"] is None


def test_weighted_fusion() -> None:
    # engine scores 4,3,2,1 -> 1, 2/3, 1/3, 0; ce 0,1,0,0.5 -> 0,1,0,0.5
    out = finish(
        {"query": QUERY},
        4,
        [0.0, 1.0, 0.0, 0.5],
        window=4,
        fusion=FusionConfig(method="weighted", weight=0.5),
    )
    got = {h["_id"]: h["_score"] for h in out["hits"]["hits"]}
    assert got == pytest.approx({"0": 0.5, "1": 5 / 6, "2": 1 / 6, "3": 0.25})
    assert [h["_id"] for h in out["hits"]["hits"]] == ["1", "0", "3", "2"]
    assert out["hits"]["hits"][0][RERANK_KEY]["score"] == 1.0


def test_rrf_fusion() -> None:
    out = finish(
        {"query": QUERY},
        3,
        [0.0, 1.0, 0.5],
        window=3,
        fusion=FusionConfig(method="rrf", rank_constant=1),
    )
    got = {h["_id"]: h["_score"] for h in out["hits"]["hits"]}
    assert got == pytest.approx({"0": 1 / 2 + 1 / 4, "1": 1 / 3 + 1 / 2, "2": 1 / 4 + 1 / 3})


@pytest.mark.parametrize(
    ("body_source", "params", "expected"),
    [
        (["meta"], {}, {"meta": 1}),
        ({"excludes": ["text"]}, {}, {"meta": 1}),
        (False, {}, None),
        (None, {"_source_includes": ["meta"]}, {"meta": 1}),
        (None, {"_source": "false"}, None),
    ],
)
def test_source_filtering_fetches_what_scoring_needs(
    body_source: Any, params: dict[str, Any], expected: dict[str, Any] | None
) -> None:
    body: dict[str, Any] = {"query": QUERY}
    if body_source is not None:
        body["_source"] = body_source
    plan = plan_search(body, params, cfg(window=3))
    assert "_source" not in plan.body  # the engine returns the whole _source
    assert set(plan.drop_params) >= {"_source", "_source_includes", "_source_excludes"}
    resp = response(3)
    for hit in resp["hits"]["hits"]:
        hit["_source"]["meta"] = 1
    request = plan.score_request(resp)
    assert request.documents == ["d0", "d1", "d2"] and plan.missing_fields == 0
    out = finish_search(plan, resp, ScoreResult([1.0, 3.0, 2.0]), 0.0)
    assert [h["_id"] for h in out["hits"]["hits"]] == ["1", "2", "0"]
    for hit in out["hits"]["hits"]:
        assert hit.get("_source") == expected
    assert resp["hits"]["hits"][0]["_source"] == {"text": "d0", "meta": 1}  # input untouched


def test_no_source_filtering_leaves_the_request_alone() -> None:
    plan = plan_search({"query": QUERY, "_source": True}, {}, cfg())
    assert plan.source_filter is None and plan.body["_source"] is True
    fields_cfg = RerankConfig(model="m", fields=("text",), source="fields")
    assert plan_search({"query": QUERY, "_source": False}, {}, fields_cfg).body["_source"] is False
