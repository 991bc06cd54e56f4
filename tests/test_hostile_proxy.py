"""Hostile input to the proxy, in memory (issue 10): every case answers as the engine would —
its error JSON and status — never a 500, another host, or a secret.

The same cases run against a real OpenSearch node, a real proxy process and raw sockets in
``integration_tests/test_hostile.py``; these pin the decisions without an engine.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import httpx
import pytest

from crossrank.adapters.cli.proxy import build_settings, parser
from crossrank.adapters.proxy import ProxySettings, create_app
from crossrank.adapters.proxy.errors import BadRequest
from crossrank.adapters.proxy.forward import Upstream
from crossrank.adapters.proxy.routing import check_target, match_route
from crossrank.reranker import RerankConfig
from crossrank.reranker.remote import RemoteScorer

from .fakes import OverlapScorer
from .test_proxy_app import CONFIG, QUERY, FakeEngine, _client, _respond


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine()


SURROGATE_DOC = '{"title": "heat \\ud800", "text": "heat flow \\udfff end"}'


async def asgi(app: Any, method: str, raw_path: bytes, body: bytes = b"", **headers: str) -> Any:
    """Call the ASGI app with a request target no HTTP client library would send."""
    sent: list[dict[str, Any]] = []
    chunks = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict[str, Any]:
        return chunks.pop(0) if chunks else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": method,
        "path": raw_path.decode("latin-1"),
        "raw_path": raw_path,
        "query_string": b"",
        "headers": [(k.replace("_", "-").encode(), v.encode()) for k, v in headers.items()],
    }
    await app(scope, receive, send)
    status = sent[0]["status"]
    data = b"".join(m.get("body", b"") for m in sent[1:])
    try:
        return status, json.loads(data) if data else None
    except ValueError:
        return status, data


def _app(engine: FakeEngine, **settings: Any) -> Any:
    return create_app(
        ProxySettings(
            upstream=settings.pop("upstream", "http://engine:9200"), rerank=CONFIG, **settings
        ),
        transport=httpx.MockTransport(engine),
        scorer_factory=lambda config: OverlapScorer(),
    )


# ---------------------------------------------------------------- 1, 10: request targets

BAD_TARGETS = [
    b"@127.0.0.1:18291/steal",
    b".evil.example/x",
    b"http://127.0.0.1:18291/steal",
    b"*",
    b"evil.example:443",
    b"//evil.example/x",
    b"/adi/../_cluster/settings",
    b"/%2e%2e/x",
    b"/a b",
    b"/\xc3\xa9",
    b"",
]


@pytest.mark.parametrize("target", BAD_TARGETS)
async def test_bad_request_targets_get_400_and_reach_no_host(
    engine: FakeEngine, target: bytes
) -> None:
    for upstream in ("http://engine:9200", "http://engine"):
        status, body = await asgi(_app(engine, upstream=upstream), "GET", target)
        assert status == 400, (target, body)
        assert body["error"]["type"] == "illegal_argument_exception"
        assert body["status"] == 400
    assert engine.requests == []


def test_upstream_url_keeps_the_upstream_host_for_any_checked_target() -> None:
    upstream = Upstream(ProxySettings(upstream=["http://engine/prefix", "http://node2:9201"]))
    for path in ["/a", "/@evil:1/x", "/:80@evil/x", "/a%2F..%2Fb", "/%40evil.example", "/~x?y"]:
        target = upstream.target(check_target(path), b"q=1")
        engine, node2 = (upstream.url(node, target) for node in upstream.pool.nodes())
        assert (engine.scheme, engine.host, engine.port) == ("http", "engine", None), path
        assert engine.raw_path.startswith(b"/prefix/")
        assert (node2.scheme, node2.host, node2.port) == ("http", "node2", 9201), path
        assert node2.raw_path == target
    with pytest.raises(BadRequest):
        check_target("@evil/x")


# ---------------------------------------------------------------- 2: lone surrogates


class SurrogateEngine(FakeEngine):
    """Stores one document with lone surrogates, as an engine would return it."""

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        hit = '{"_index":"adi","_id":"s","_score":2.0,"_source":' + SURROGATE_DOC + "}"
        one = (
            '{"took":1,"timed_out":false,"hits":{"total":{"value":1,"relation":"eq"},'
            '"max_score":2.0,"hits":[' + hit + "]}}"
        )
        if request.url.path.endswith("/_msearch"):
            n = len([x for x in request.content.splitlines() if x.strip()]) // 2
            raw = '{"took":1,"responses":[' + ",".join([one] * n) + "]}"
        else:
            raw = one
        return _respond(200, None, {}, raw=raw.encode())


async def test_stored_lone_surrogate_is_returned_as_the_engine_wrote_it() -> None:
    engine = SurrogateEngine()
    async with _client(engine) as client:
        resp = await client.post("/adi/_search", json=QUERY)
        ms = await client.post(
            "/_msearch", content=b'{"index":"adi"}\n' + json.dumps(QUERY).encode() + b"\n"
        )
        asked = await client.post("/adi/_search", content=b'{"query":{"match":{"text":"\\ud800"}}}')
    assert resp.status_code == 200, resp.text
    assert b'"heat \\ud800"' in resp.content  # the escape, as stored
    assert resp.json()["_rerank"]["reranked"] == 1
    assert ms.status_code == 200 and ms.json()["responses"][0]["_rerank"]["reranked"] == 1
    assert asked.status_code == 200 and asked.json()["_rerank"]["query_text"] == "\ufffd"


async def test_invalid_utf8_and_bad_json_are_400(engine: FakeEngine) -> None:
    async with _client(engine) as client:
        for body in [b'{"query": "\xff\xfe"}', b"{", b"[1,2", b'{"size": 1e999999}x', b"1" * 5000]:
            resp = await client.post("/adi/_search", content=body)
            assert resp.status_code == 400, body
            assert resp.json()["error"]["type"] == "parse_exception"
        resp = await client.post("/_msearch", content=b'{}\n{"query": \xff}\n')
        assert resp.status_code == 400 and resp.json()["error"]["type"] == "parse_exception"


# ---------------------------------------------------------------- 3: query length


async def test_long_query_text_is_a_clear_400(engine: FakeEngine) -> None:
    long = "heat " * 2000  # 10,000 characters, over max_query_chars (8192)
    async with _client(engine) as client:
        ext = await client.post(
            "/adi/_search", json={**QUERY, "ext": {"crossrank": {"query_text": long}}}
        )
        dsl = await client.post("/adi/_search", json={"query": {"match": {"text": long}}})
        q = await client.get("/adi/_search", params={"q": long})
        ms = await client.post(
            "/_msearch",
            content=b"{}\n"
            + json.dumps({"query": {"match": {"text": long}}}).encode()
            + b"\n{}\n"
            + json.dumps(QUERY).encode()
            + b"\n",
        )
    for resp in (ext, dsl, q):
        assert resp.status_code == 400, resp.text
        assert "max_query_chars" in resp.json()["error"]["reason"]
    items = ms.json()["responses"]
    assert items[0]["status"] == 400 and "max_query_chars" in items[0]["error"]["reason"]
    assert items[1]["_rerank"]["reranked"] == 5


# ---------------------------------------------------------------- 5: nesting depth


async def test_deep_nesting_is_400_on_searched_and_forwarded_routes(engine: FakeEngine) -> None:
    arrays = b"[" * 100_000 + b"]" * 100_000
    deep_bool = b'{"query":' + b'{"bool":{"must":[' * 450 + b"{}" + b"]}}" * 450 + b"}"
    async with _client(engine) as client:
        for path in ("/adi/_search", "/adi/_count", "/adi/_validate/query"):
            for body in (arrays, deep_bool, b'{"a":' * 500 + b"1" + b"}" * 500):
                resp = await client.post(
                    path, content=body, headers={"content-type": "application/json"}
                )
                assert resp.status_code == 400, (path, resp.text[:200])
                assert "nesting depth" in resp.json()["error"]["reason"]
        resp = await client.post("/_msearch", content=b"{}\n" + arrays + b"\n")
        assert resp.status_code == 400
        shallow = {"bool": {"must": [{"match": {"text": "heat"}}]}}
        ok = await client.post("/adi/_search", json={"query": shallow, "size": 3})
    assert ok.status_code == 200 and ok.json()["_rerank"]["reranked"] == 5
    assert [r.url.path for r in engine.requests] == ["/adi/_search"]  # nothing deep forwarded


# ---------------------------------------------------------------- 6, 10: _msearch items


async def test_bad_msearch_item_fails_alone_and_is_not_sent(engine: FakeEngine) -> None:
    lines = [
        {"index": "adi"},
        {**QUERY, "ext": {"crossrank": {"window": -3}}},
        {"index": "adi"},
        {**QUERY, "ext": {"crossrank": {"no_such_option": 1}}},
        {"index": "adi"},
        QUERY,
        {"index": "adi"},
        {**QUERY, "ext": {"rerank": {"query_context": {}}}},
    ]
    async with _client(engine) as client:
        resp = await client.post("/_msearch", content="".join(json.dumps(x) + "\n" for x in lines))
    assert resp.status_code == 200, resp.text
    items = resp.json()["responses"]
    assert [i.get("status") for i in items] == [400, 400, 200, 400]
    assert items[2]["_rerank"]["reranked"] == 5
    sent = [json.loads(x) for x in engine.requests[-1].content.splitlines() if x.strip()]
    assert len(sent) == 2 and "ext" not in sent[1]


class ShortMsearchEngine(FakeEngine):
    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        first = json.loads(request.content.splitlines()[1])
        only = {**self._search(first, request.url.params), "status": 200}
        return _respond(200, {"took": 2, "responses": [only]}, {})


async def test_engine_answering_fewer_msearch_items_gives_errors_per_item() -> None:
    lines = [{}, QUERY, {}, QUERY, {}, QUERY]
    async with _client(ShortMsearchEngine()) as client:
        resp = await client.post("/_msearch", content="".join(json.dumps(x) + "\n" for x in lines))
    assert resp.status_code == 200
    items = resp.json()["responses"]
    assert items[0]["_rerank"]["reranked"] == 5
    assert [i["status"] for i in items[1:]] == [500, 500]
    assert items[1]["error"]["type"] == "illegal_state_exception"


# ---------------------------------------------------------------- 7: size and from


async def test_invalid_size_and_from_are_left_to_the_engine(engine: FakeEngine) -> None:
    async with _client(engine) as client:
        for bad in ({"size": -1}, {"from": -5}, {"size": True}, {"size": "ten"}, {"size": 1.5}):
            resp = await client.post("/adi/_search", json={**QUERY, **bad})
            sent = json.loads(engine.requests[-1].content)
            assert "_rerank" not in resp.json(), bad  # not reranked: the engine decides
            assert {k: sent[k] for k in bad} == bad  # the caller's value, not a rewrite
        resp = await client.post("/adi/_search?size=-1", json=QUERY)
        assert engine.requests[-1].url.params["size"] == "-1" and "_rerank" not in resp.json()
        ok = await client.post("/adi/_search?size=2&from=1", json=QUERY)
        assert len(ok.json()["hits"]["hits"]) == 2 and ok.json()["_rerank"]["reranked"] == 5
        retriever = {
            "retriever": {
                "text_similarity_reranker": {
                    "retriever": {"standard": {"query": QUERY["query"]}},
                    "field": "text",
                    "inference_text": "heat",
                }
            },
            "size": -1,
        }
        resp = await client.post("/adi/_search", json=retriever)
    assert resp.status_code == 400
    assert resp.json()["error"]["reason"] == "[size] parameter cannot be negative, found [-1]"


# ---------------------------------------------------------------- 8: upstream credentials


async def test_upstream_credentials_are_a_default_never_logged_never_an_upgrade(
    engine: FakeEngine, caplog: pytest.LogCaptureFixture
) -> None:
    settings = ProxySettings(upstream="http://elastic:s3cr%3At@engine:9200", rerank=CONFIG)
    assert settings.upstream == ("http://engine:9200",)
    assert "s3cr" not in repr(settings) and "s3cr" not in str(settings.upstream)
    app = create_app(settings, transport=httpx.MockTransport(engine))
    transport = httpx.ASGITransport(app=app)
    with caplog.at_level(logging.DEBUG):
        async with httpx.AsyncClient(transport=transport, base_url="http://proxy") as client:
            anonymous = (await client.get("/_cat/indices")).json()
            own = (
                await client.get("/_cat/indices", headers={"Authorization": "Basic bG93"})
            ).json()
    assert anonymous["auth"] == "Basic ZWxhc3RpYzpzM2NyOnQ="  # elastic:s3cr:t
    assert own["auth"] == "Basic bG93"  # the client's own identity is kept
    assert "s3cr" not in caplog.text and "ZWxhc3RpYzpzM2NyOnQ" not in caplog.text


# ---------------------------------------------------------------- 9: token and encodings


@pytest.mark.parametrize(
    ("method", "target", "status"),
    [
        ("DELETE", b"/%5Fcrossrank/health", 401),
        ("POST", b"/_crossrank%2Fready", 401),
        ("DELETE", b"/_crossrank/health", 401),
        ("GET", b"/%5Fcrossrank/health", 200),
        ("GET", b"/_crossrank%2Fhealth", 200),
        ("GET", b"/%5fcrossrank/metrics", 401),
        ("GET", b"/%5Fcrossrank/steal", 401),
    ],
)
async def test_token_guard_and_router_read_paths_alike(
    engine: FakeEngine, method: str, target: bytes, status: int
) -> None:
    app = _app(engine, token="T0KEN")
    got, _ = await asgi(app, method, target)
    assert got == status
    with_token, _ = await asgi(app, method, target, x_crossrank_token="T0KEN")
    assert with_token in (200, 404, 405)
    assert engine.requests == [] or all(
        not r.url.path.startswith("/_crossrank") for r in engine.requests
    )
    assert all("crossrank" not in r.url.path for r in engine.requests)


def test_own_paths_are_never_forwarded() -> None:
    for path in ["/_crossrank", "/_crossrank/", "/%5Fcrossrank/x/y", "/_crossrank%2Fa%2Fx"]:
        assert match_route("PUT", path).kind == "own", path


# ---------------------------------------------------------------- 11: scorer checks


def _remote_scorer_app(engine: FakeEngine, served: str) -> Any:
    def scorer_service(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/info":
            return httpx.Response(200, json={"models": [{"name": served}]})
        return httpx.Response(
            400,
            json={
                "error": {"type": "invalid_request", "reason": f"unknown model; served: {served}"}
            },
        )

    def factory(config: RerankConfig) -> RemoteScorer:
        return RemoteScorer(config, transport=httpx.MockTransport(scorer_service))

    config = CONFIG.model_copy(update={"scorer_urls": ("http://scorer.internal:8080",)})
    return create_app(
        ProxySettings(upstream="http://engine:9200", rerank=config),
        transport=httpx.MockTransport(engine),
        scorer_factory=factory,
    )


async def test_ready_says_when_the_remote_scorer_does_not_serve_the_model(
    engine: FakeEngine,
) -> None:
    for served, ready in (("other", 503), ("fake", 200)):
        app = _remote_scorer_app(engine, served)
        async with app_client(app) as client:
            resp = await client.get("/_crossrank/ready")
            search = await client.post("/adi/_search", json=QUERY)
        assert resp.status_code == ready, resp.text
        assert "scorer.internal" not in resp.text
        if ready == 503:
            assert resp.json()["models"] == {"ready": 0, "loading": 0, "failed": 1}
            assert search.json()["_rerank"]["error"] == "the scorer failed"
            assert "scorer.internal" not in search.text and "fake" not in search.text


def app_client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://proxy")


# ---------------------------------------------------------------- 12: secrets on the command line


def test_scorer_api_key_comes_from_env_or_file_never_a_flag(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = ["--upstream", "http://e:9200", "--scorer-url", "http://s:8080"]
    with pytest.raises(ValueError, match="scorer_api_key"):
        build_settings(parser().parse_args([*base, "--rerank-json", '{"scorer_api_key": "k"}']))
    monkeypatch.setenv("CROSSRANK_SCORER_API_KEY", "from-env")
    assert build_settings(parser().parse_args(base)).rerank.scorer_api_key == "from-env"
    key = tmp_path / "key"
    key.write_text("from-file\n")
    args = parser().parse_args([*base, "--scorer-api-key-file", str(key)])
    settings = build_settings(args)
    assert settings.rerank.scorer_api_key == "from-file"
    assert "from-file" not in repr(settings)


# ---------------------------------------------------------------- 13: a model that cannot load


async def test_unloadable_model_is_reported_once_and_costs_searches_nothing(
    engine: FakeEngine, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[str] = []

    def factory(config: RerankConfig) -> Any:
        calls.append(config.model)
        raise OSError("cannot reach https://hub.internal/ for /srv/models/ce")

    app = create_app(
        ProxySettings(upstream="http://engine:9200", rerank=CONFIG),
        transport=httpx.MockTransport(engine),
        scorer_factory=factory,
    )
    with caplog.at_level(logging.ERROR):
        async with _lifespan(app):
            async with app_client(app) as client:
                ready = await client.get("/_crossrank/ready")
                searches = [await client.post("/adi/_search", json=QUERY) for _ in range(3)]
    assert ready.status_code == 503 and ready.json()["models"]["failed"] == 1
    assert "/srv/models" not in ready.text and "hub.internal" not in ready.text
    for resp in searches:
        assert resp.json()["_rerank"]["error"] == "the reranking model is not available"
    assert calls == ["fake"]  # tried at start, remembered since
    assert sum("cannot load" in r.getMessage() for r in caplog.records) == 1


class _lifespan:
    """Run an ASGI app's lifespan startup/shutdown around a block."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.messages: list[dict[str, Any]] = [
            {"type": "lifespan.startup"},
            {"type": "lifespan.shutdown"},
        ]
        self.task: Any = None

    async def __aenter__(self) -> None:
        self.started = asyncio.Event()
        self.stop = asyncio.Event()

        async def receive() -> dict[str, Any]:
            if self.messages[0]["type"] == "lifespan.shutdown":
                await self.stop.wait()
            return self.messages.pop(0)

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "lifespan.startup.complete":
                self.started.set()

        self.task = asyncio.ensure_future(self.app({"type": "lifespan"}, receive, send))
        await self.started.wait()

    async def __aexit__(self, *exc: object) -> None:
        self.stop.set()
        await self.task


def test_the_bracket_count_only_spares_bodies_that_cannot_be_too_deep() -> None:
    from crossrank.reranker.jsonio import loads, surely_within

    deep = b"[" * 6 + b"]" * 6
    assert not surely_within(deep, 5) and surely_within(deep, 6)
    wide = b"[" + b",".join([b"[1]"] * 10) + b"]"  # 11 brackets, 2 deep: parsed, and fine
    assert not surely_within(wide, 5) and loads(wide, max_depth=5)
    in_strings = b'{"a": "[[[[[[[["}'  # brackets in strings only raise the count
    assert not surely_within(in_strings, 5) and loads(in_strings, max_depth=5)
