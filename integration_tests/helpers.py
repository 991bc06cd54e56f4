"""Assertion helpers shared by the integration tests."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import pytest

from crossrank.reranker import ScoreRequest

#: Keys the wrappers must add (the implementation may add more to ``_rerank``).
RESPONSE_RERANK_KEYS = {
    "model",
    "window",
    "reranked",
    "truncated",
    "split",
    "missing_fields",
    "scoring_ms",
    "query_text",
}
HIT_RERANK_KEYS = {"engine_score", "engine_rank", "score"}


def approx(expected: Any) -> Any:
    """``pytest.approx`` with the tolerance for cross-encoder scores (batching, padding)."""
    return pytest.approx(expected, rel=1e-4, abs=1e-4)


def body_of(resp: Any) -> dict[str, Any]:
    """The plain dict of a client response (ObjectApiResponse or dict)."""
    body = getattr(resp, "body", resp)
    assert isinstance(body, dict), type(resp)
    return body


def hits(resp: Any) -> list[dict[str, Any]]:
    return list(body_of(resp)["hits"]["hits"])


def ids(resp: Any) -> list[str]:
    return [h["_id"] for h in hits(resp)]


def scores(resp: Any) -> list[float]:
    return [h["_score"] for h in hits(resp)]


def without_took(resp: Any) -> dict[str, Any]:
    body = copy.deepcopy(body_of(resp))
    body.pop("took", None)
    return body


def without_documented(resp: Any) -> dict[str, Any]:
    """The response less the wrapper's documented additions (``_rerank``) and ``took``."""
    body = without_took(resp)
    body.pop("_rerank", None)
    for hit in body.get("hits", {}).get("hits", []):
        hit.pop("_rerank", None)
    return body


def shape(value: Any) -> Any:
    """The key structure of a JSON value: dicts become {key: shape}, lists [shapes]."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(v) for v in value]
    return type(value).__name__ if isinstance(value, (dict, list, str, bool)) else "scalar"


def doc_text(hit: dict[str, Any], fields: Sequence[str] = ("title", "text")) -> str:
    source = hit["_source"]
    return "\n".join(source[f] for f in fields if isinstance(source.get(f), str) and source[f])


def rescore(
    verifier: Any,
    query: str,
    hit_list: list[dict[str, Any]],
    fields: Sequence[str] = ("title", "text"),
) -> list[float]:
    """Cross-encoder scores of ``hit_list`` computed independently of the wrapper."""
    [result] = verifier.score([ScoreRequest(query, [doc_text(h, fields) for h in hit_list])])
    return list(result.scores)


def assert_passthrough(resp: Any, raw: Any) -> None:
    """The wrapper's response is the engine's, untouched apart from ``took``."""
    assert type(resp) is type(raw)
    body = body_of(resp)
    assert "_rerank" not in body
    assert all("_rerank" not in h for h in body.get("hits", {}).get("hits", []))
    assert without_took(resp) == without_took(raw)


def assert_reranked(
    resp: Any,
    *,
    query_text: str,
    window: int,
    reranked: int,
    verifier: Any,
    fields: Sequence[str] = ("title", "text"),
) -> None:
    """Hits are in descending cross-encoder order with correct scores and metadata."""
    body = body_of(resp)
    meta = body["_rerank"]
    assert set(meta) >= RESPONSE_RERANK_KEYS, set(meta)
    assert meta["window"] == window
    assert meta["reranked"] == reranked
    assert meta["query_text"] == query_text
    assert isinstance(meta["model"], str) and meta["model"]
    assert meta["scoring_ms"] >= 0
    for key in ("truncated", "split", "missing_fields"):
        assert isinstance(meta[key], int) and meta[key] >= 0
    hit_list = hits(resp)
    ranked = [h for h in hit_list if "_rerank" in h]
    assert ranked == hit_list[: len(ranked)], "reranked hits must come first"
    got = [h["_score"] for h in ranked]
    assert got == sorted(got, reverse=True)
    for h in ranked:
        assert set(h["_rerank"]) == HIT_RERANK_KEYS
        assert h["_rerank"]["score"] == h["_score"]
        assert isinstance(h["_rerank"]["engine_rank"], int)
    if ranked:
        assert body["hits"]["max_score"] == approx(max(got))
        assert got == approx(rescore(verifier, query_text, ranked, fields))
