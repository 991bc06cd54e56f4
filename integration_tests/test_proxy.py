"""``crossrank proxy`` as a real subprocess in front of real engines, used by official clients."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from .conftest import INDEX, WINDOW, Engine
from .helpers import (
    approx,
    assert_reranked,
    body_of,
    hits,
    ids,
    scores,
    without_documented,
    without_took,
)
from .proxy_support import ProxyProcess, official, start_proxy

QUERY = "computer programs for information retrieval"
MATCH = {"match": {"text": QUERY}}
ALIAS = "adi-titles"
MAX_BODY = 1_000_000


@pytest.fixture(scope="session")
def proxy(
    engine: Engine, tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ProxyProcess]:
    """The proxy with the tiny model, ``title`` + ``text``, window 20, and an index rule."""
    defaults = tmp_path_factory.mktemp("proxy") / "defaults.yaml"
    defaults.write_text(
        "indices:\n  - pattern: adi-t*\n    rerank:\n      fields: [title]\n      window: 5\n"
    )
    proc = start_proxy(
        engine.url,
        "--model", str(tiny_model_dir), "--fields", "title,text", "--window", str(WINDOW),
        "--device", "cpu", "--dtype", "float32", "--defaults", str(defaults),
        "--max-body-bytes", str(MAX_BODY),
    )  # fmt: skip
    yield proc
    assert proc.stop(), proc.logs()[-2000:]


@pytest.fixture(scope="session")
def faulty_proxy(engine: Engine) -> Iterator[ProxyProcess]:
    """A proxy whose scorer fails on ``FAIL`` and stalls on ``SLOW`` (budget 300 ms)."""
    proc = start_proxy(
        engine.url,
        "--scorer-factory", "integration_tests.proxy_support:faulty_scorer",
        "--fields", "title,text", "--window", str(WINDOW), "--latency-budget-ms", "300",
    )  # fmt: skip
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def via(engine: Engine, proxy: ProxyProcess) -> Iterator[Any]:
    """The engine's official client pointed at the proxy."""
    client = official(engine, proxy.url)
    yield client
    client.close()


def _post(url: str, path: str, body: Any = None, **kwargs: Any) -> httpx.Response:
    if body is not None and not isinstance(body, (bytes, str)):
        kwargs["json"] = body
    elif body is not None:
        kwargs["content"] = body
    return httpx.post(f"{url}{path}", timeout=60, **kwargs)


def _assert_engine_error(resp: httpx.Response, status: int, kind: str, proxy: ProxyProcess) -> None:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert body["status"] == status and body["error"]["type"] == kind
    assert body["error"]["root_cause"][0]["type"] == kind and body["error"]["reason"]
    assert httpx.get(f"{proxy.url}/_crossrank/health", timeout=10).status_code == 200


def test_search_is_the_engines_response_with_reranked_hits(
    engine: Engine, via: Any, client: Any, verifier: Any
) -> None:
    body = {"query": MATCH, "size": 10}
    got = via.search(index=INDEX, body=body)
    assert_reranked(got, query_text=QUERY, window=WINDOW, reranked=WINDOW, verifier=verifier)
    wrapped = client.search(index=INDEX, body=body)
    assert ids(got) == ids(wrapped) and scores(got) == approx(scores(wrapped))
    direct = engine.raw_search({"query": MATCH, "size": WINDOW})
    mine, theirs = without_documented(got), without_took(direct)
    by_id = {h["_id"]: h for h in theirs["hits"].pop("hits")}
    for hit in mine["hits"].pop("hits"):
        assert {**hit, "_score": None} == {**by_id[hit["_id"]], "_score": None}
    mine["hits"].pop("max_score"), theirs["hits"].pop("max_score")
    assert mine == theirs


def test_paging_and_url_parameters(engine: Engine, proxy: ProxyProcess) -> None:
    full = _post(proxy.url, f"/{INDEX}/_search?size=20", {"query": MATCH}).json()
    page = _post(
        proxy.url, f"/{INDEX}/_search?from=5&size=5&rest_total_hits_as_int=true", {"query": MATCH}
    ).json()
    assert ids(page) == ids(full)[5:10]
    assert isinstance(page["hits"]["total"], int)
    q = _post(proxy.url, f"/{INDEX}/_search?q=text:retrieval&size=3").json()
    assert q["_rerank"]["query_text"] == "retrieval" and len(q["hits"]["hits"]) == 3


def test_msearch_mixes_reranked_and_passthrough_items(engine: Engine, via: Any) -> None:
    searches = [
        {"index": INDEX}, {"query": MATCH, "size": 5},
        {"index": INDEX}, {"query": MATCH, "size": 0, "track_total_hits": True},
        {"index": INDEX}, {"query": MATCH, "size": 3, "sort": [{"doc_id": "asc"}]},
        {"index": INDEX}, {"query": {"match_all": {}}, "size": 3},
    ]  # fmt: skip
    got = body_of(engine.msearch(via, searches))["responses"]
    direct = body_of(engine.msearch(engine.raw, searches[:6]))["responses"]
    assert got[0]["_rerank"]["reranked"] == WINDOW and len(got[0]["hits"]["hits"]) == 5
    for mine, theirs in zip(got[1:3], direct[1:3]):
        assert "_rerank" not in mine and without_took(mine) == without_took(theirs)
    assert got[3]["status"] == 400 and "query text" in got[3]["error"]["reason"]


def test_filter_path_and_source_filtering(engine: Engine, proxy: ProxyProcess) -> None:
    path = f"/{INDEX}/_search"
    full = _post(proxy.url, path, {"query": MATCH}).json()
    fp = _post(proxy.url, path + "?filter_path=hits.hits._id,hits.hits._score", {"query": MATCH})
    assert fp.json() == {
        "hits": {"hits": [{"_id": h["_id"], "_score": h["_score"]} for h in hits(full)]}
    }
    off = _post(proxy.url, path, {"query": MATCH, "_source": False}).json()
    assert ids(off) == ids(full) and all("_source" not in h for h in hits(off))
    inc = _post(proxy.url, path + "?_source_includes=title", {"query": MATCH}).json()
    assert ids(inc) == ids(full)
    assert [h["_source"] for h in hits(inc)] == [
        {"title": h["_source"]["title"]} for h in hits(full)
    ]
    exc = _post(proxy.url, path, {"query": MATCH, "_source": {"excludes": ["meta", "text"]}}).json()
    assert ids(exc) == ids(full)
    assert all(set(h["_source"]) == {"doc_id", "title", "tags"} for h in hits(exc))
    ex = _post(
        proxy.url, path + "?filter_path=-hits.hits._source,-_rerank", {"query": MATCH}
    ).json()
    assert "_rerank" not in ex and all("_source" not in h for h in hits(ex))


def test_other_apis_pass_through(engine: Engine, via: Any, proxy: ProxyProcess) -> None:
    name = "proxy-passthrough"
    if via.indices.exists(index=name):
        via.indices.delete(index=name)
    via.indices.create(
        index=name, body={"settings": {"number_of_shards": 1, "number_of_replicas": 0}}
    )
    via.indices.put_mapping(index=name, body={"properties": {"title": {"type": "text"}}})
    via.index(index=name, id="1", body={"title": "hello"}, refresh=True)
    bulk = body_of(
        via.bulk(body=[{"index": {"_index": name, "_id": "2"}}, {"title": "world"}], refresh=True)
    )
    assert bulk["errors"] is False
    assert via.indices.exists(index=name)
    assert body_of(via.count(index=name))["count"] == 2
    assert body_of(via.indices.get_mapping(index=name)) == body_of(
        engine.raw.indices.get_mapping(index=name)
    )
    cat = httpx.get(f"{proxy.url}/_cat/indices/{name}?format=json&h=index,docs.count", timeout=30)
    assert cat.json() == [{"index": name, "docs.count": "2"}]
    assert cat.headers.get("x-elastic-product") == (
        httpx.get(f"{engine.url}/", timeout=30).headers.get("x-elastic-product")
    )
    via.indices.delete(index=name)
    assert not via.indices.exists(index=name)
    missing = _post(proxy.url, "/no-such-index/_search", {"query": MATCH})
    direct = _post(engine.url, "/no-such-index/_search", {"query": MATCH})
    assert missing.status_code == direct.status_code == 404 and missing.json() == direct.json()


def test_gzip_both_ways_with_the_official_client(
    engine: Engine, proxy: ProxyProcess, via: Any
) -> None:
    compressed = official(engine, proxy.url, http_compress=True)
    try:
        got = compressed.search(index=INDEX, body={"query": MATCH, "size": 5})
    finally:
        compressed.close()
    assert ids(got) == ids(via.search(index=INDEX, body={"query": MATCH, "size": 5}))
    raw = httpx.post(
        f"{proxy.url}/{INDEX}/_search",
        content=gzip.compress(json.dumps({"query": MATCH}).encode()),
        headers={
            "content-encoding": "gzip",
            "content-type": "application/json",
            "accept-encoding": "gzip",
        },
        timeout=60,
    )
    assert raw.headers["content-encoding"] == "gzip" and raw.json()["_rerank"]["reranked"] == WINDOW


def test_opensearch_rerank_ext(
    engine: Engine, via: Any, proxy: ProxyProcess, verifier: Any
) -> None:
    text = "automatic indexing of documents"
    body = {"query": MATCH, "ext": {"rerank": {"query_context": {"query_text": text}}}}
    got = via.search(index=INDEX, body=body)
    assert_reranked(got, query_text=text, window=WINDOW, reranked=WINDOW, verifier=verifier)
    nested = {"query": {"match": {"text": {"query": QUERY}}}}
    by_path = {
        **nested,
        "ext": {"rerank": {"query_context": {"query_text_path": "query.match.text.query"}}},
    }
    assert body_of(via.search(index=INDEX, body=by_path))["_rerank"]["query_text"] == QUERY
    both = {
        "query": MATCH,
        "ext": {"rerank": {"query_context": {"query_text": "a", "query_text_path": "query"}}},
    }
    _assert_engine_error(
        _post(proxy.url, f"/{INDEX}/_search", both), 400, "illegal_argument_exception", proxy
    )


def test_text_similarity_reranker_retriever(
    engine: Engine, proxy: ProxyProcess, verifier: Any
) -> None:
    spec = {
        "retriever": {"standard": {"query": MATCH}},
        "field": "text",
        "inference_text": QUERY,
        "rank_window_size": 5,
    }
    got = _post(
        proxy.url, f"/{INDEX}/_search", {"retriever": {"text_similarity_reranker": spec}, "size": 5}
    )
    assert got.status_code == 200, got.text
    assert_reranked(
        got.json(), query_text=QUERY, window=5, reranked=5, verifier=verifier, fields=("text",)
    )
    engine_top = ids(engine.raw_search({"query": MATCH, "size": 5}))
    assert sorted(ids(got.json())) == sorted(engine_top)
    past = _post(
        proxy.url,
        f"/{INDEX}/_search",
        {"retriever": {"text_similarity_reranker": spec}, "from": 3, "size": 5},
    )
    assert len(hits(past.json())) == 2  # only the window is ever returned
    too_big = _post(
        proxy.url,
        f"/{INDEX}/_search",
        {"retriever": {"text_similarity_reranker": spec}, "size": 10},
    )
    _assert_engine_error(too_big, 400, "action_request_validation_exception", proxy)
    assert (
        "[rank_window_size: 5] be greater than or equal to [size: 10]"
        in too_big.json()["error"]["reason"]
    )
    top = max(scores(got.json()))
    strict = _post(
        proxy.url,
        f"/{INDEX}/_search",
        {"retriever": {"text_similarity_reranker": {**spec, "min_score": top}}, "size": 5},
    ).json()
    assert scores(strict) == [top] and strict["_rerank"]["dropped_below_min_score"] == 4


def test_crossrank_options_and_index_defaults(
    engine: Engine, via: Any, proxy: ProxyProcess, verifier: Any
) -> None:
    got = via.search(
        index=INDEX, body={"query": MATCH, "ext": {"crossrank": {"window": 5, "fields": ["title"]}}}
    )
    assert_reranked(
        got, query_text=QUERY, window=5, reranked=5, verifier=verifier, fields=("title",)
    )
    off = via.search(index=INDEX, body={"query": MATCH, "ext": {"crossrank": False}})
    assert without_took(off) == without_took(engine.raw_search({"query": MATCH}))
    bad = _post(
        proxy.url, f"/{INDEX}/_search", {"query": MATCH, "ext": {"crossrank": {"windw": 5}}}
    )
    _assert_engine_error(bad, 400, "illegal_argument_exception", proxy)
    model = _post(
        proxy.url, f"/{INDEX}/_search", {"query": MATCH, "ext": {"crossrank": {"model": "x/y"}}}
    )
    _assert_engine_error(model, 400, "illegal_argument_exception", proxy)
    via.indices.put_alias(index=INDEX, name=ALIAS)
    try:
        aliased = via.search(index=ALIAS, body={"query": MATCH})
    finally:
        via.indices.delete_alias(index=INDEX, name=ALIAS)
    assert_reranked(
        aliased, query_text=QUERY, window=5, reranked=5, verifier=verifier, fields=("title",)
    )


def test_bad_requests_get_engine_errors_and_the_proxy_stays_up(proxy: ProxyProcess) -> None:
    cases = [
        (f"/{INDEX}/_search", b'{"query": ', 400, "parse_exception"),
        (f"/{INDEX}/_search", b'["not", "an", "object"]', 400, "parse_exception"),
        ("/_msearch", b'{"index": "adi"}\n{"query": {\n', 400, "parse_exception"),
        ("/_msearch", b'{"index": "adi"}\n', 400, "parse_exception"),
        (f"/{INDEX}/_search", b"{" + b" " * MAX_BODY + b"}", 413, "content_too_long_exception"),
        (f"/{INDEX}/_search", b'{"query": {"match_all": {}}}', 400, "illegal_argument_exception"),
    ]
    for path, content, status, kind in cases:
        headers = {"content-type": "application/json"}
        _assert_engine_error(_post(proxy.url, path, content, headers=headers), status, kind, proxy)


def test_scorer_failures_fall_back_flagged(engine: Engine, faulty_proxy: ProxyProcess) -> None:
    client = official(engine, faulty_proxy.url)
    try:
        direct = ids(engine.raw_search({"query": MATCH, "size": 10}))
        for word in ("FAIL", "SLOW"):
            body = {"query": MATCH, "ext": {"crossrank": {"query_text": f"{word} {QUERY}"}}}
            resp = _post(faulty_proxy.url, f"/{INDEX}/_search", body)
            assert resp.status_code == 200 and resp.headers["x-crossrank-fallback"] == "1"
            assert resp.json()["_rerank"]["fallback"] is True and ids(resp.json()) == direct
        searches = [{"index": INDEX}, {"query": {"match": {"text": "FAIL retrieval"}}}] * 2
        items = body_of(engine.msearch(client, searches))["responses"]
        assert [item["_rerank"]["fallback"] for item in items] == [True, True]
        ok = client.search(index=INDEX, body={"query": MATCH})
        assert body_of(ok)["_rerank"]["model"] == "faulty"
    finally:
        client.close()
    metrics = httpx.get(f"{faulty_proxy.url}/_crossrank/metrics", timeout=10).text
    assert "crossrank_proxy_fallbacks_total 4.0" in metrics
    assert 'crossrank_proxy_stage_seconds_count{stage="scoring"}' in metrics
    assert httpx.get(f"{faulty_proxy.url}/_crossrank/ready", timeout=10).json()["status"] == "ready"


def test_json_logs_hold_no_credentials_and_shutdown_is_graceful(engine: Engine) -> None:
    proc = start_proxy(
        engine.url, "--scorer-factory", "integration_tests.proxy_support:faulty_scorer"
    )
    secret = "Basic c2VjcmV0LXZhbHVl"
    try:
        headers = {"authorization": secret, "cookie": "session=topsecret"}
        resp = _post(proc.url, f"/{INDEX}/_search", {"query": MATCH}, headers=headers)
        assert resp.status_code == 200
    finally:
        graceful = proc.stop()
    assert graceful
    logs = proc.logs()
    assert secret not in logs and "topsecret" not in logs
    events = [json.loads(line) for line in logs.splitlines() if line.startswith("{")]
    requests = [e for e in events if e.get("msg") == "request"]
    assert requests and requests[-1]["route"] == "search" and requests[-1]["status"] == 200
