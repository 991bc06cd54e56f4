"""The proxy's ASGI app against an in-memory upstream (httpx MockTransport): no engine."""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

import httpx
import pytest

from crossrank.adapters.proxy import ProxySettings, create_app
from crossrank.reranker import RerankConfig, ScoreRequest, ScoreResult

from .fakes import FailingScorer, OverlapScorer

DOCS = [
    {"title": f"doc {i}", "text": text}
    for i, text in enumerate(["alpha", "beta", "heat flow", "gamma", "heat transfer flow"])
]


class _Stream(httpx.AsyncByteStream):
    """A body that is streamed, as a real transport's is (httpx reads ByteStream eagerly)."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self.data


def _respond(status: int, body: Any, headers: dict[str, str], raw: bytes | None = None) -> Any:
    data = raw if raw is not None else json.dumps(body).encode()
    headers = {"content-type": "application/json", "content-length": str(len(data)), **headers}
    return httpx.Response(status, headers=headers, stream=_Stream(data))


class FakeEngine:
    """Answers _search/_msearch with DOCS in index order (score 5, 4, ...); records requests."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []

    def _search(self, body: dict[str, Any], params: httpx.QueryParams) -> dict[str, Any]:
        size = int(params.get("size", body.get("size", 10)))
        start = int(params.get("from", body.get("from", 0)))
        hits = [
            {"_index": "adi", "_id": str(i), "_score": float(5 - i), "_source": dict(doc)}
            for i, doc in enumerate(DOCS)
        ][start : start + size]
        if body.get("_source") is False or params.get("_source") == "false":
            for hit in hits:
                del hit["_source"]
        return {
            "took": 1,
            "timed_out": False,
            "hits": {
                "total": {"value": len(DOCS), "relation": "eq"},
                "max_score": 5.0,
                "hits": hits,
            },
        }

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path = request.url.path
        headers = {"X-Elastic-Product": "Elasticsearch"}
        if path.endswith("/_msearch"):
            lines = [json.loads(x) for x in request.content.splitlines() if x.strip()]
            responses = [
                {**self._search(b, request.url.params), "status": 200} for b in lines[1::2]
            ]
            return _respond(200, {"took": 2, "responses": responses}, headers)
        if path == "/missing/_search":
            err = {"error": {"type": "index_not_found_exception"}, "status": 404}
            return _respond(404, err, headers)
        if path.endswith("/_search"):
            body = json.loads(request.content) if request.content else {}
            return _respond(200, self._search(body, request.url.params), headers)
        echo = {"path": path, "query": str(request.url.query, "ascii"), "method": request.method}
        echo["auth"] = request.headers.get("authorization")
        echo["token"] = request.headers.get("x-crossrank-token")
        echo["body"] = request.content.decode()
        data = gzip.compress(json.dumps(echo).encode())
        headers["content-encoding"] = "gzip"
        return _respond(200, None, headers, raw=data)


class SlowScorer(OverlapScorer):
    async def ascore(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        await asyncio.sleep(1.0)
        return self.score(requests)


CONFIG = RerankConfig(model="fake", fields=("text",), window=5)


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine()


def _client(engine: FakeEngine, scorer: Any = None, **settings: Any) -> httpx.AsyncClient:
    settings = {"rerank": CONFIG, **settings}
    app = create_app(
        ProxySettings(upstream="http://engine:9200", **settings),
        transport=httpx.MockTransport(engine),
        scorer_factory=lambda config: scorer or OverlapScorer(),
    )
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://proxy")


QUERY = {"query": {"match": {"text": "heat flow"}}, "size": 3}


async def test_search_reranked_with_window_and_page(engine: FakeEngine) -> None:
    async with _client(engine) as client:
        resp = await client.post("/adi/_search", json=QUERY)
    assert resp.status_code == 200
    body = resp.json()
    assert [h["_id"] for h in body["hits"]["hits"]] == ["2", "4", "1"]
    assert body["_rerank"]["reranked"] == 5 and body["_rerank"]["query_text"] == "heat flow"
    assert resp.headers["x-elastic-product"] == "Elasticsearch"
    sent = json.loads(engine.requests[-1].content)
    assert sent["size"] == 5 and sent["from"] == 0


async def test_passthrough_search_is_relayed_untouched(engine: FakeEngine) -> None:
    async with _client(engine) as client:
        resp = await client.post("/adi/_search?size=0", json=QUERY)
        off = await client.post("/adi/_search", json={**QUERY, "ext": {"crossrank": False}})
    assert "_rerank" not in resp.json() and resp.json()["hits"]["hits"] == []
    assert [h["_id"] for h in off.json()["hits"]["hits"]] == ["0", "1", "2"]
    assert "ext" not in json.loads(engine.requests[-1].content)


async def test_filter_path_and_source_applied_by_the_proxy(engine: FakeEngine) -> None:
    async with _client(engine) as client:
        resp = await client.post(
            "/adi/_search?filter_path=hits.hits._id,hits.hits._source",
            json={**QUERY, "_source": False},
        )
        incl = await client.post("/adi/_search?_source_includes=title", json=QUERY)
    assert resp.json() == {"hits": {"hits": [{"_id": "2"}, {"_id": "4"}, {"_id": "1"}]}}
    assert "filter_path" not in str(engine.requests[-2].url)
    assert "_source" not in json.loads(engine.requests[-2].content)
    assert [h["_source"] for h in incl.json()["hits"]["hits"]] == [
        {"title": "doc 2"},
        {"title": "doc 4"},
        {"title": "doc 1"},
    ]


async def test_msearch_mixes_items_and_scores_once(engine: FakeEngine) -> None:
    scorer = OverlapScorer()
    lines = [
        {"index": "adi"},
        QUERY,
        {},
        {**QUERY, "size": 0},
        {},
        {"query": {"match_all": {}}},
    ]
    data = "".join(json.dumps(x) + "\n" for x in lines)
    async with _client(engine, scorer) as client:
        resp = await client.post(
            "/_msearch", content=data, headers={"content-type": "application/x-ndjson"}
        )
    first, second, third = resp.json()["responses"]
    assert [h["_id"] for h in first["hits"]["hits"]] == ["2", "4", "1"]
    assert "_rerank" not in second and second["hits"]["hits"] == []
    assert third["status"] == 400 and "query text" in third["error"]["reason"]
    assert len(scorer.calls) == 1


async def test_fallback_is_flagged_in_body_header_and_metrics(engine: FakeEngine) -> None:
    async with _client(engine, FailingScorer()) as client:
        resp = await client.post("/adi/_search", json=QUERY)
        metrics = (await client.get("/_crossrank/metrics")).text
    assert resp.status_code == 200
    assert resp.json()["_rerank"]["fallback"] is True
    assert resp.headers["x-crossrank-fallback"] == "1"
    assert [h["_id"] for h in resp.json()["hits"]["hits"]] == ["0", "1", "2"]
    assert "crossrank_proxy_fallbacks_total 1.0" in metrics


async def test_latency_budget_falls_back(engine: FakeEngine) -> None:
    async with _client(engine, SlowScorer(), latency_budget_ms=50) as client:
        resp = await client.post("/adi/_search", json=QUERY)
        per_request = await client.post(
            "/adi/_search", json={**QUERY, "ext": {"crossrank": {"budget_ms": 20}}}
        )
    assert "latency budget of 50 ms" in resp.json()["_rerank"]["error"]
    assert "latency budget of 20 ms" in per_request.json()["_rerank"]["error"]


async def test_on_scorer_error_raise_gives_engine_style_503(engine: FakeEngine) -> None:
    config = CONFIG.model_copy(update={"on_scorer_error": "raise"})
    app = create_app(
        ProxySettings(upstream="http://engine:9200", rerank=config),
        transport=httpx.MockTransport(engine),
        scorer_factory=lambda c: FailingScorer(),
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://p") as client:
        resp = await client.post("/adi/_search", json=QUERY)
    assert resp.status_code == 503
    assert resp.json()["error"]["type"] == "crossrank_scorer_exception"


async def test_forward_keeps_everything(engine: FakeEngine) -> None:
    async with _client(engine) as client:
        resp = await client.put(
            "/adi/_doc/1?refresh=true&x=%2F",
            content=b'{"a": 1}',
            headers={"authorization": "Basic dTpw", "accept-encoding": "gzip"},
        )
    assert resp.headers["content-encoding"] == "gzip"
    echo = resp.json()  # httpx decompresses the relayed gzip bytes
    assert echo == {
        "path": "/adi/_doc/1",
        "query": "refresh=true&x=%2F",
        "method": "PUT",
        "auth": "Basic dTpw",
        "token": None,
        "body": '{"a": 1}',
    }


async def test_upstream_errors_pass_through(engine: FakeEngine) -> None:
    async with _client(engine) as client:
        resp = await client.post("/missing/_search", json=QUERY)
    assert resp.status_code == 404
    assert resp.json() == {"error": {"type": "index_not_found_exception"}, "status": 404}


@pytest.mark.parametrize(
    ("path", "content", "status", "kind"),
    [
        ("/adi/_search", b"{not json", 400, "parse_exception"),
        ("/adi/_search", b"[1, 2]", 400, "parse_exception"),
        ("/_msearch", b'{}\n{"query": \n', 400, "parse_exception"),
        ("/_msearch", b"{}\n", 400, "parse_exception"),
        (
            "/adi/_search",
            b'{"ext": {"crossrank": {"bogus": 1}}}',
            400,
            "illegal_argument_exception",
        ),
        ("/adi/_search", b"x" * 2000, 413, "content_too_long_exception"),
        ("/adi/_doc/1", b"x" * 2000, 413, "content_too_long_exception"),
        ("/_crossrank/nope", b"", 404, "resource_not_found_exception"),
    ],
)
async def test_bad_requests_get_engine_errors(
    engine: FakeEngine, path: str, content: bytes, status: int, kind: str
) -> None:
    async with _client(engine, max_body_bytes=1000) as client:
        resp = await client.post(path, content=content)
        health = await client.get("/_crossrank/health")
    assert resp.status_code == status
    error = resp.json()
    assert error["status"] == status and error["error"]["type"] == kind
    assert error["error"]["root_cause"][0]["type"] == kind
    assert health.status_code == 200


async def test_gzip_request_body_is_read(engine: FakeEngine) -> None:
    async with _client(engine) as client:
        resp = await client.post(
            "/adi/_search",
            content=gzip.compress(json.dumps(QUERY).encode()),
            headers={"content-encoding": "gzip", "content-type": "application/json"},
        )
    assert [h["_id"] for h in resp.json()["hits"]["hits"]] == ["2", "4", "1"]


async def test_token_is_checked_and_stripped(engine: FakeEngine) -> None:
    async with _client(engine, token="s3cret") as client:
        denied = await client.get("/adi/_mapping")
        allowed = await client.get("/adi/_mapping", headers={"X-Crossrank-Token": "s3cret"})
        probe = await client.get("/_crossrank/health")
    assert denied.status_code == 401 and denied.json()["error"]["type"] == "security_exception"
    assert allowed.status_code == 200 and allowed.json()["token"] is None
    assert probe.status_code == 200


async def test_ready_reports_the_upstream() -> None:
    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    app = create_app(
        ProxySettings(upstream="http://engine:9200", rerank=CONFIG),
        transport=httpx.MockTransport(down),
        scorer_factory=lambda c: OverlapScorer(),
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://p") as client:
        ready = await client.get("/_crossrank/ready")
        search = await client.post("/adi/_search", json=QUERY)
    assert ready.status_code == 503
    assert search.status_code == 502
    assert search.json()["error"]["type"] == "crossrank_upstream_exception"


async def _chunks() -> AsyncIterator[bytes]:
    yield b'{"a":'
    yield b" 1}"


async def test_chunked_request_body_is_streamed(engine: FakeEngine) -> None:
    async with _client(engine) as client:
        resp = await client.post("/adi/_doc", content=_chunks())
    assert resp.json()["body"] == '{"a": 1}'


async def test_an_internal_error_is_a_500_that_echoes_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An unexpected exception: "internal error" for the client; its type and place, never its
    text (which may hold paths, URLs or data), for the log."""
    secret = "cannot open /srv/internal/ce for user s3cret"

    def broken(request: httpx.Request) -> httpx.Response:
        raise ValueError(secret)

    with caplog.at_level(logging.DEBUG):
        async with _client(broken) as client:  # type: ignore[arg-type]
            resp = await client.post("/adi/_search", json=QUERY)
    assert resp.status_code == 500
    assert resp.json()["error"]["type"] == "crossrank_proxy_exception"
    assert resp.json()["error"]["reason"] == "internal error"
    assert "s3cret" not in resp.text and "/srv/" not in resp.text
    [record] = [r for r in caplog.records if r.getMessage() == "unhandled error"]
    assert getattr(record, "fields", {}).get("error") == "ValueError"
    logged = caplog.text + repr([getattr(r, "fields", None) for r in caplog.records])
    assert "s3cret" not in logged and "/srv/" not in logged


async def test_reranking_off_sends_plain_bodies_unparsed_and_still_reads_every_opt_in(
    engine: FakeEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With reranking off, a body that cannot opt in (no ``ext``, no ``retriever``, no
    ``\\u`` escape) and cannot nest too deep goes to the engine unparsed; any other is read."""
    from crossrank.adapters.proxy import search

    parsed: list[bytes] = []
    real_loads = search.loads

    def counting_loads(data: bytes | str, **kwargs: Any) -> Any:
        if kwargs.get("max_depth") is not None:  # a client body, not the engine's answer
            parsed.append(data if isinstance(data, bytes) else data.encode())
        return real_loads(data, **kwargs)

    monkeypatch.setattr(search, "loads", counting_loads)
    off = CONFIG.model_copy(update={"enabled": False})
    plain = json.dumps(QUERY).encode()
    opt_in = json.dumps({**QUERY, "ext": {"crossrank": {"enabled": True}}}).encode()
    escaped = opt_in.replace(b'"ext"', b'"\\u0065xt"')
    async with _client(engine, rerank=off) as client:
        resp = await client.post("/adi/_search", content=plain, headers=JSON_HEADERS)
        assert "_rerank" not in resp.json() and parsed == []
        assert engine.requests[-1].content == plain  # the bytes as sent
        for body in (opt_in, escaped):
            resp = await client.post("/adi/_search", content=body, headers=JSON_HEADERS)
            assert resp.json()["_rerank"]["reranked"] == 5, body
        assert parsed == [opt_in, escaped]


JSON_HEADERS = {"content-type": "application/json"}
