"""The sync wrapper clients against real engines: order, window, paging, passthrough."""

from __future__ import annotations

from typing import Any

import pytest

from crossrank.reranker import QueryTextError

from .conftest import INDEX, NO_TEXT_ID, NO_TEXT_TITLE, UNICODE_ID, UNICODE_TEXT, UNICODE_TITLE
from .conftest import WINDOW as W
from .helpers import (
    approx,
    assert_passthrough,
    assert_reranked,
    body_of,
    hits,
    ids,
    rescore,
    scores,
    shape,
    without_documented,
)

# Matches (almost) every ADI document, so there are pages well past the window.
Q = "information retrieval systems for documents and automatic indexing of library data"
QUERY = {"match": {"text": Q}}


def search(client: Any, **body: Any) -> Any:
    return client.search(index=INDEX, body=body)


def test_engine_has_enough_hits(engine: Any) -> None:
    raw = engine.raw_search({"query": QUERY, "size": 0, "track_total_hits": True})
    assert raw["hits"]["total"]["value"] >= 2 * W + 10


def test_order_is_cross_encoder_order(engine: Any, client: Any, verifier: Any) -> None:
    resp = search(client, query=QUERY, size=W)
    raw = engine.raw_search({"query": QUERY, "size": W})
    assert type(resp) is type(engine.raw.search(index=INDEX, body={"query": QUERY, "size": 1}))
    assert_reranked(resp, query_text=Q, window=W, reranked=W, verifier=verifier)
    # engine_rank / engine_score point back at the engine's own order.
    raw_hits = raw["hits"]["hits"]
    for hit in hits(resp):
        rank = hit["_rerank"]["engine_rank"]
        assert raw_hits[rank]["_id"] == hit["_id"]
        assert hit["_rerank"]["engine_score"] == pytest.approx(raw_hits[rank]["_score"])
    assert sorted(h["_rerank"]["engine_rank"] for h in hits(resp)) == list(range(W))
    assert body_of(resp)["_rerank"]["missing_fields"] == 0
    assert ids(resp) != [h["_id"] for h in raw_hits], "random model should reorder something"


def test_window_holds_engine_top_w(engine: Any, client: Any) -> None:
    full = search(client, query=QUERY, size=W)
    raw = engine.raw_search({"query": QUERY, "size": W})
    assert set(ids(full)) == {h["_id"] for h in raw["hits"]["hits"]}
    top5 = search(client, query=QUERY, size=5)
    assert ids(top5) == ids(full)[:5]
    assert body_of(top5)["_rerank"]["reranked"] == W
    # A larger window reranks a larger engine top set.
    wide = client.search(index=INDEX, body={"query": QUERY, "size": 5}, rerank={"window": W + 10})
    raw_wide = engine.raw_search({"query": QUERY, "size": W + 10})
    assert body_of(wide)["_rerank"]["window"] == W + 10
    assert body_of(wide)["_rerank"]["reranked"] == W + 10
    assert set(ids(wide)) <= {h["_id"] for h in raw_wide["hits"]["hits"]}


def test_paging_inside_window(client: Any) -> None:
    full = search(client, query=QUERY, size=W)
    paged: list[str] = []
    paged_scores: list[float] = []
    for start in range(0, W, 5):
        page = search(client, query=QUERY, size=5, **{"from": start})
        assert body_of(page)["_rerank"]["reranked"] == W
        paged += ids(page)
        paged_scores += scores(page)
    assert paged == ids(full)
    assert paged_scores == approx(scores(full))


def test_page_straddling_window(engine: Any, client: Any, verifier: Any) -> None:
    full = search(client, query=QUERY, size=W)
    page = search(client, query=QUERY, size=6, **{"from": W - 3})
    raw = engine.raw_search({"query": QUERY, "size": 3, "from": W})
    page_hits = hits(page)
    assert [h["_id"] for h in page_hits[:3]] == ids(full)[W - 3 :]
    assert [h["_score"] for h in page_hits[:3]] == approx(scores(full)[W - 3 :])
    tail = page_hits[3:]
    assert [h["_id"] for h in tail] == [h["_id"] for h in raw["hits"]["hits"]]
    assert [h["_score"] for h in tail] == pytest.approx([h["_score"] for h in raw["hits"]["hits"]])
    assert all("_rerank" not in h for h in tail)
    assert body_of(page)["_rerank"]["reranked"] == W


@pytest.mark.parametrize("start", [W, W + 7])
def test_page_past_window_is_engine_page(engine: Any, client: Any, start: int) -> None:
    body = {"query": QUERY, "size": 5, "from": start}
    assert_passthrough(search(client, **body), engine.raw.search(index=INDEX, body=body))


def test_response_shape_matches_raw(engine: Any, client: Any) -> None:
    body = {"query": QUERY, "size": W}
    resp = client.search(index=INDEX, body=body)
    raw_resp = engine.raw.search(index=INDEX, body=body)
    assert type(resp) is type(raw_resp)
    got, raw = without_documented(resp), without_documented(raw_resp)
    assert set(body_of(resp)) == set(body_of(raw_resp)) | {"_rerank"}
    # Same key structure once hits are matched up by id.
    by_id = {h["_id"]: h for h in raw["hits"]["hits"]}
    got_hits = got["hits"].pop("hits")
    raw["hits"].pop("hits")
    got["hits"].pop("max_score")
    raw["hits"].pop("max_score")
    assert got == raw  # total, _shards, timed_out, ... untouched
    assert len(got_hits) == len(by_id)
    for hit in got_hits:
        twin = by_id[hit["_id"]]
        assert shape({k: v for k, v in hit.items() if k != "_score"}) == shape(
            {k: v for k, v in twin.items() if k != "_score"}
        )
        for key in ("_index", "_id", "_source"):
            assert hit[key] == twin[key]


def test_aggregations_highlight_suggest_preserved(engine: Any, client: Any, verifier: Any) -> None:
    body = {
        "query": QUERY,
        "size": 10,
        "aggs": {
            "tags": {"terms": {"field": "tags", "size": 50}},
            "avg_len": {"avg": {"field": "meta.len"}},
            "words": {"terms": {"field": "meta.words", "size": 5}},
        },
        "highlight": {"fields": {"text": {}, "title": {}}},
        "suggest": {"fix": {"text": "retreival", "term": {"field": "text"}}},
    }
    resp = search(client, **body)
    raw = engine.raw_search(body)
    assert_reranked(resp, query_text=Q, window=W, reranked=W, verifier=verifier)
    got = body_of(resp)
    assert got["aggregations"] == raw["aggregations"]
    assert got["aggregations"]["tags"]["buckets"], "aggregation should not be empty"
    assert got["suggest"] == raw["suggest"]
    raw_by_id = {h["_id"]: h for h in engine.raw_search({**body, "size": W})["hits"]["hits"]}
    for hit in hits(resp):
        assert hit["highlight"] == raw_by_id[hit["_id"]]["highlight"]


def test_size_zero_passthrough(engine: Any, client: Any) -> None:
    body = {"query": QUERY, "size": 0, "aggs": {"tags": {"terms": {"field": "tags"}}}}
    assert_passthrough(search(client, **body), engine.raw.search(index=INDEX, body=body))


@pytest.mark.parametrize(
    "sort", [[{"doc_id": "asc"}], [{"meta.len": "desc"}, {"doc_id": "asc"}], ["doc_id"]]
)
def test_sort_passthrough(engine: Any, client: Any, sort: Any) -> None:
    body = {"query": QUERY, "size": 10, "sort": sort}
    assert_passthrough(search(client, **body), engine.raw.search(index=INDEX, body=body))


def test_score_sort_is_reranked(client: Any, verifier: Any) -> None:
    resp = search(client, query=QUERY, size=W, sort=["_score"])
    assert_reranked(resp, query_text=Q, window=W, reranked=W, verifier=verifier)


def test_search_after_passthrough(engine: Any, client: Any) -> None:
    first = engine.raw_search({"query": QUERY, "size": 5, "sort": [{"doc_id": "asc"}]})
    after = first["hits"]["hits"][-1]["sort"]
    body = {"query": QUERY, "size": 5, "sort": [{"doc_id": "asc"}], "search_after": after}
    assert_passthrough(search(client, **body), engine.raw.search(index=INDEX, body=body))


def test_scroll_passthrough(engine: Any, client: Any) -> None:
    body = {"query": QUERY, "size": 5}
    resp = body_of(client.search(index=INDEX, body=body, scroll="1m"))
    raw = engine.raw_search(body)
    try:
        assert "_rerank" not in resp
        assert "_scroll_id" in resp
        assert [h["_id"] for h in resp["hits"]["hits"]] == [h["_id"] for h in raw["hits"]["hits"]]
    finally:
        engine.raw.clear_scroll(scroll_id=resp["_scroll_id"])


def test_rerank_false_is_raw(engine: Any, client: Any) -> None:
    body = {"query": QUERY, "size": 10, "from": 3}
    resp = client.search(index=INDEX, body=body, rerank=False)
    assert_passthrough(resp, engine.raw.search(index=INDEX, body=body))


def test_disabled_config_is_raw(engine: Any, rerank_cfg: Any, scorer: Any) -> None:
    off = engine.client(rerank=rerank_cfg.model_copy(update={"enabled": False}), scorer=scorer)
    body = {"query": QUERY, "size": 10}
    assert_passthrough(
        off.search(index=INDEX, body=body), engine.raw.search(index=INDEX, body=body)
    )


def test_min_score_drops_low_hits(engine: Any, client: Any) -> None:
    full = search(client, query=QUERY, size=W)
    ranked = scores(full)
    threshold = ranked[W // 2]
    resp = client.search(
        index=INDEX, body={"query": QUERY, "size": W}, rerank={"min_score": threshold}
    )
    assert scores(resp) == approx([s for s in ranked if s >= threshold])
    assert ids(resp) == ids(full)[: len(scores(resp))]
    assert 0 < len(scores(resp)) < W
    raw = engine.raw_search({"query": QUERY, "size": W})
    assert body_of(resp)["hits"]["total"] == raw["hits"]["total"]


def test_missing_field_is_counted(engine: Any, client: Any, verifier: Any) -> None:
    query = {"match": {"title": NO_TEXT_TITLE}}
    resp = search(client, query=query, size=10)
    meta = body_of(resp)["_rerank"]
    assert NO_TEXT_ID in ids(resp)
    assert meta["missing_fields"] == 1
    hit = next(h for h in hits(resp) if h["_id"] == NO_TEXT_ID)
    [expected] = rescore(verifier, NO_TEXT_TITLE, [hit])
    assert hit["_score"] == approx(expected)
    assert_reranked(
        resp, query_text=NO_TEXT_TITLE, window=W, reranked=meta["reranked"], verifier=verifier
    )
    # A field no document has: every reranked hit misses it, none fails.
    resp = client.search(
        index=INDEX, body={"query": QUERY, "size": 5}, rerank={"fields": ["title", "no_such_field"]}
    )
    assert body_of(resp)["_rerank"]["missing_fields"] == W
    assert_reranked(resp, query_text=Q, window=W, reranked=W, verifier=verifier, fields=["title"])


def test_dotted_path_field(client: Any, verifier: Any) -> None:
    resp = client.search(
        index=INDEX, body={"query": QUERY, "size": 5}, rerank={"fields": ["title", "meta.words"]}
    )
    meta = body_of(resp)["_rerank"]
    assert meta["missing_fields"] == 0
    for hit in hits(resp):
        text = hit["_source"]["title"] + "\n" + "\n".join(hit["_source"]["meta"]["words"])
        [expected] = verifier.score([_request(Q, [text])])[0].scores
        assert hit["_score"] == approx(expected)


def _request(query: str, docs: list[str]) -> Any:
    from crossrank.reranker import ScoreRequest

    return ScoreRequest(query, docs)


def test_unicode_query_and_document(engine: Any, client: Any, verifier: Any) -> None:
    text = "naïve café Über 日本語のテキスト 🚀"
    resp = search(client, query={"match": {"title": text}}, size=5)
    assert UNICODE_ID in ids(resp)
    hit = next(h for h in hits(resp) if h["_id"] == UNICODE_ID)
    assert hit["_source"]["title"] == UNICODE_TITLE
    assert hit["_source"]["text"] == UNICODE_TEXT
    meta = body_of(resp)["_rerank"]
    assert_reranked(resp, query_text=text, window=W, reranked=meta["reranked"], verifier=verifier)


def test_call_styles_agree(engine: Any, client: Any) -> None:
    body_style = client.search(index=INDEX, body={"query": QUERY, "size": 10, "from": 5})
    if engine.is_es:
        other = client.search(index=INDEX, query=QUERY, size=10, from_=5)
    else:  # opensearch-py: size/from_ are URL parameters
        other = client.search(index=INDEX, body={"query": QUERY}, size=10, from_=5)
    assert ids(other) == ids(body_style)
    assert scores(other) == approx(scores(body_style))
    assert body_of(other)["_rerank"]["reranked"] == W
    full = search(client, query=QUERY, size=W)
    assert ids(body_style) == ids(full)[5:15]


def test_per_call_overrides(engine: Any, client: Any, verifier: Any) -> None:
    qt = "automatic indexing"
    resp = client.search(
        index=INDEX,
        body={"query": QUERY, "size": 15},
        rerank={"window": 10, "fields": ["title"], "query_text": qt},
    )
    assert_reranked(
        resp, query_text=qt, window=10, reranked=10, verifier=verifier, fields=["title"]
    )
    raw = engine.raw_search({"query": QUERY, "size": 15})
    assert set(ids(resp)[:10]) == {h["_id"] for h in raw["hits"]["hits"][:10]}
    assert ids(resp)[10:] == [h["_id"] for h in raw["hits"]["hits"][10:]]
    # The client's own config is unchanged afterwards.
    assert body_of(search(client, query=QUERY, size=3))["_rerank"]["window"] == W


def test_template_and_fields_source(engine: Any, client: Any, verifier: Any) -> None:
    resp = client.search(
        index=INDEX, body={"query": QUERY, "size": 5}, rerank={"template": "{title}\n{text}"}
    )
    assert_reranked(resp, query_text=Q, window=W, reranked=W, verifier=verifier)
    resp = client.search(
        index=INDEX,
        body={"query": QUERY, "size": 5, "fields": ["title", "text"]},
        rerank={"source": "fields"},
    )
    assert_reranked(resp, query_text=Q, window=W, reranked=W, verifier=verifier)


def test_match_all_needs_query_text(engine: Any, client: Any, verifier: Any) -> None:
    with pytest.raises(QueryTextError):
        search(client, query={"match_all": {}}, size=5)
    assert issubclass(QueryTextError, ValueError)
    resp = client.search(
        index=INDEX,
        body={"query": {"match_all": {}}, "size": 5},
        rerank={"query_text": "library catalogue"},
    )
    assert_reranked(resp, query_text="library catalogue", window=W, reranked=W, verifier=verifier)


@pytest.mark.parametrize("fusion", [{"method": "rrf"}, {"method": "weighted", "weight": 0.5}])
def test_fusion(engine: Any, client: Any, verifier: Any, fusion: dict[str, Any]) -> None:
    resp = client.search(index=INDEX, body={"query": QUERY, "size": W}, rerank={"fusion": fusion})
    raw = engine.raw_search({"query": QUERY, "size": W})
    assert set(ids(resp)) == {h["_id"] for h in raw["hits"]["hits"]}
    got = scores(resp)
    assert got == sorted(got, reverse=True)
    ce = [h["_rerank"]["score"] for h in hits(resp)]
    assert ce == approx(rescore(verifier, Q, hits(resp)))
    assert body_of(resp)["_rerank"]["reranked"] == W


def test_msearch(engine: Any, client: Any, verifier: Any) -> None:
    q2 = {"match": {"title": "retrieval"}}
    searches: list[dict[str, Any]] = [
        {"index": INDEX},
        {"query": QUERY, "size": 5},
        {"index": INDEX},
        {"query": QUERY, "size": 0, "aggs": {"t": {"terms": {"field": "tags"}}}},
        {"index": INDEX},
        {"query": q2, "size": 4, "from": 2},
        {"index": INDEX},
        {"query": QUERY, "size": 5, "sort": [{"doc_id": "asc"}]},
    ]
    resp = body_of(engine.msearch(client, searches))
    raw = body_of(engine.msearch(engine.raw, searches))
    items, raw_items = resp["responses"], raw["responses"]
    assert len(items) == 4
    assert set(resp) == set(raw)
    single = search(client, query=QUERY, size=5)
    assert [h["_id"] for h in items[0]["hits"]["hits"]] == ids(single)
    assert_reranked(items[0], query_text=Q, window=W, reranked=W, verifier=verifier)
    assert_passthrough(items[1], raw_items[1])
    assert_passthrough(items[3], raw_items[3])
    third = search(client, query=q2, size=4, **{"from": 2})
    assert [h["_id"] for h in items[2]["hits"]["hits"]] == ids(third)
    assert_reranked(
        items[2],
        query_text="retrieval",
        window=W,
        reranked=body_of(third)["_rerank"]["reranked"],
        verifier=verifier,
    )
