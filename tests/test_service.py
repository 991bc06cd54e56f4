"""The scorer service in process (ASGI): shapes, validation, errors, batching, equality."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from crossrank.adapters.cli.serve import main, parse_args
from crossrank.reranker import LocalScorer, RerankConfig, ScoreRequest
from crossrank.reranker.errors import ModelLoadError, OverloadedError
from crossrank.reranker.score_cache import ENTRY_BYTES
from crossrank.reranker.service import ServeSettings, create_app, load_backends
from crossrank.reranker.service import app as app_module
from crossrank.reranker.service.protocol import sigmoid
from crossrank.reranker.service.queue import PairQueue, Reply, Row, pack

# one loop for the app's fixtures (session scope) and the tests
pytestmark = pytest.mark.asyncio(loop_scope="session")

QUERY = "boundary layer flow"
DOCS = ["the boundary layer over a flat plate", "heat transfer to a cylinder", "", "flow " * 700]


def settings(path: Path, **kw: Any) -> ServeSettings:
    base = {"models": {"tiny": str(path)}, "rerank": RerankConfig(dtype="float32")}
    return ServeSettings(**{**base, **kw})


@pytest.fixture(scope="module")
def backends(tiny_model_dir: Path) -> Any:
    return load_backends(settings(tiny_model_dir))


async def open_client(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://svc") as client:
            yield client


@pytest.fixture
async def client(tiny_model_dir: Path, backends: Any) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings(tiny_model_dir, max_documents=20, max_body_bytes=4096), backends)
    async for c in open_client(app):
        c.app = app  # type: ignore[attr-defined]
        yield c


async def test_scores_equal_local_scorer(client: httpx.AsyncClient, tiny_model_dir: Path) -> None:
    body = {
        "requests": [{"query": QUERY, "documents": DOCS}, {"query": "heat", "documents": ["x"]}]
    }
    r = await client.post("/rerank", json=body)
    assert r.status_code == 200, r.text
    local = LocalScorer(RerankConfig(model=str(tiny_model_dir), dtype="float32"))
    expected = local.score([ScoreRequest(QUERY, DOCS), ScoreRequest("heat", ["x"])])
    data = r.json()
    assert data["model"] == "tiny"
    for got, want in zip(data["results"], expected):
        assert got["scores"] == pytest.approx(want.scores, abs=1e-5)
        assert got["truncated"] == want.truncated
    assert data["results"][0]["truncated"] == 1


async def test_tei_and_cohere_shapes(client: httpx.AsyncClient) -> None:
    raw = await client.post("/rerank", json={"requests": [{"query": QUERY, "documents": DOCS}]})
    logits = raw.json()["results"][0]["scores"]
    tei = await client.post("/rerank", json={"query": QUERY, "texts": DOCS, "return_text": True})
    items = tei.json()
    assert [i["index"] for i in items] == sorted(range(4), key=lambda i: -logits[i])
    assert items[0]["score"] == pytest.approx(sigmoid(max(logits)))
    assert items[0]["text"] == DOCS[items[0]["index"]]
    tei_raw = await client.post("/rerank", json={"query": QUERY, "texts": DOCS, "raw_scores": True})
    assert tei_raw.json()[0]["score"] == pytest.approx(max(logits), abs=1e-6)
    for path in ("/v1/rerank", "/v2/rerank"):
        docs = [DOCS[0], {"text": DOCS[1]}]
        body = {"query": QUERY, "documents": docs, "top_n": 1, "return_documents": True}
        out = (await client.post(path, json=body)).json()
        assert set(out) >= {"id", "results", "meta"}
        (best,) = out["results"]
        assert 0 < best["relevance_score"] < 1
        assert best["relevance_score"] == pytest.approx(sigmoid(max(logits[:2])))
        assert best["document"] == {"text": DOCS[best["index"]]}


@pytest.mark.parametrize(
    ("path", "body", "status", "words"),
    [
        ("/rerank", {}, 400, "expected"),
        ("/rerank", {"requests": []}, 400, "non-empty list"),
        ("/rerank", {"requests": [{"query": "", "documents": ["a"]}]}, 400, "query"),
        ("/rerank", {"requests": [{"query": "q", "documents": [1]}]}, 400, "documents[0]"),
        ("/rerank", {"query": "q", "texts": []}, 400, "texts"),
        ("/rerank", {"query": "q", "texts": ["a"], "raw_scores": "yes"}, 400, "raw_scores"),
        (
            "/rerank",
            {"model": "other", "requests": [{"query": "q", "documents": ["a"]}]},
            400,
            "unknown model",
        ),
        ("/v1/rerank", {"query": "q", "documents": [{"title": "a"}]}, 400, "documents[0]"),
        ("/v2/rerank", {"query": "q", "documents": ["a"], "top_n": 0}, 400, "top_n"),
        ("/v2/rerank", {"query": "q", "documents": ["a"] * 21}, 413, "max_documents"),
        ("/rerank", {"query": "q", "texts": ["a"] * 21}, 413, "max_documents"),
        (
            "/rerank",
            {"requests": [{"query": "q", "documents": ["a"] * 11}] * 2},
            413,
            "max_documents",
        ),
    ],
)
async def test_bad_requests_get_one_error_shape(
    client: httpx.AsyncClient, path: str, body: Any, status: int, words: str
) -> None:
    r = await client.post(path, json=body)
    assert r.status_code == status
    data = r.json()
    assert data["status"] == status and words in data["error"]["reason"]
    assert (await client.post("/rerank", json={"query": "q", "texts": ["a"]})).status_code == 200


async def test_body_limits_and_json(client: httpx.AsyncClient) -> None:
    big = await client.post(
        "/rerank", content=b"x" * 5000, headers={"content-type": "application/json"}
    )
    assert big.status_code == 413 and "max_body_bytes" in big.json()["error"]["reason"]
    bad = await client.post("/rerank", content=b"{not json")
    assert bad.status_code == 400 and "JSON" in bad.json()["error"]["reason"]
    assert (await client.post("/rerank", content=b"")).status_code == 400
    missing = await client.get("/nowhere")
    assert missing.status_code == 404 and missing.json()["status"] == 404


async def test_api_key(tiny_model_dir: Path, backends: Any) -> None:
    app = create_app(settings(tiny_model_dir, api_key="s3cret"), backends)
    body = {"query": "q", "texts": ["a"]}
    async for c in open_client(app):
        assert (await c.post("/rerank", json=body)).status_code == 401
        wrong = {"Authorization": "Bearer nope"}
        assert (await c.post("/rerank", json=body, headers=wrong)).status_code == 401
        ok = {"Authorization": "Bearer s3cret"}
        assert (await c.post("/rerank", json=body, headers=ok)).status_code == 200
        assert (await c.get("/health")).json() == {"status": "ok"}


async def test_non_finite_scores_are_a_500(
    client: httpx.AsyncClient,
    backends: Any,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    backend = backends["tiny"]
    monkeypatch.setattr(backend, "forward", lambda batch: np.full(len(batch.input_ids), np.nan))
    with caplog.at_level(logging.ERROR):  # texts no other test sends: not in the score cache
        r = await client.post("/rerank", json={"query": "q", "texts": ["nan a", "nan b"]})
    assert r.status_code == 500 and r.json()["error"]["reason"] == "the scorer failed"
    assert "non-finite" in caplog.text  # the operator's log has the whole story
    monkeypatch.undo()
    assert (await client.post("/rerank", json={"query": "q", "texts": ["a"]})).status_code == 200


async def until(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    """Wait for ``condition`` (polled, sleeping in between); fail after a generous timeout."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout}s: {what}"
        await asyncio.sleep(0.01)


async def test_concurrent_requests_share_forward_passes(
    client: httpx.AsyncClient, backends: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    metrics = client.app.state.metrics  # type: ignore[attr-defined]
    queue = client.app.state.batchers["tiny"].queue  # type: ignore[attr-defined]
    bodies = [{"query": f"q{i}", "texts": [f"doc {i}", "other"]} for i in range(12)]
    # forward passes wait until every request is queued: however slowly the requests come
    # in, the first pass holds the rest, which then share at most two more passes
    queued, put, forward = threading.Event(), queue.put, backends["tiny"].forward
    puts: list[Any] = []

    def counting_put(reply: Any, reserved: int) -> None:
        put(reply, reserved)
        puts.append(reply)
        if len(puts) == len(bodies):
            queued.set()

    def gated_forward(batch: Any) -> Any:
        assert queued.wait(60), "the requests were never all queued"
        return forward(batch)

    monkeypatch.setattr(queue, "put", counting_put)
    monkeypatch.setattr(backends["tiny"], "forward", gated_forward)
    before = metrics.forward_passes.labels("tiny")._value.get()
    replies = await asyncio.gather(*(client.post("/rerank", json=b) for b in bodies))
    assert all(r.status_code == 200 for r in replies)
    passes = metrics.forward_passes.labels("tiny")._value.get() - before
    assert 1 <= passes <= 3 < len(bodies)
    text = (await client.get("/metrics")).text
    assert 'crossrank_requests_total{endpoint="/rerank",outcome="ok"}' in text
    assert "crossrank_stage_seconds_bucket" in text and 'stage="forward"' in text


async def test_a_disconnected_client_has_its_queued_pairs_dropped(
    tiny_model_dir: Path, backends: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ordered by events, not by speed: the first batch is held in the model until the
    client has gone, so the rest of the request is still queued when it goes."""
    app = create_app(settings(tiny_model_dir, batch_tokens=64), backends)
    metrics = app.state.metrics
    entered, gate, gone = threading.Event(), threading.Event(), asyncio.Event()
    forward = backends["tiny"].forward

    def held_forward(batch: Any) -> Any:
        entered.set()
        assert gate.wait(60), "never released"
        return forward(batch)

    monkeypatch.setattr(backends["tiny"], "forward", held_forward)
    body = json.dumps({"query": "q", "texts": [f"document number {i}" for i in range(40)]})
    dropped = metrics.pairs_dropped.labels("tiny")
    before = dropped._value.get()
    async for _ in open_client(app):  # the lifespan runs the batcher
        request = asyncio.ensure_future(asgi_post(app, "/rerank", body.encode(), gone))
        try:
            assert await asyncio.to_thread(entered.wait, 60), "no batch reached the model"
            gone.set()  # the client disconnects while its first batch is in the model
            status, reply = await asyncio.wait_for(request, 60)
        finally:
            gate.set()
        assert status == 499 and reply["error"]["type"] == "disconnected"
        await until(lambda: dropped._value.get() > before, "the queued pairs were dropped")
        outcome = metrics.requests.labels("/rerank", "disconnected")._value.get()
        assert outcome >= 1
        await until(lambda: app.state.batchers["tiny"].queue.pending == 0, "the queue drained")


async def asgi_post(app: Any, path: str, body: bytes, gone: asyncio.Event) -> tuple[int, Any]:
    """POST straight to the ASGI app, whose client disconnects when ``gone`` is set (httpx's
    ASGITransport only reports a disconnect after the response)."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "client": ("127.0.0.1", 1),
        "server": ("svc", 80),
        "headers": [
            (b"host", b"svc"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
    }
    sent: list[dict[str, Any]] = []
    first = True

    async def receive() -> dict[str, Any]:
        nonlocal first
        if first:
            first = False
            return {"type": "http.request", "body": body, "more_body": False}
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    content = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return sent[0]["status"], json.loads(content)


# ---------------------------------------------------------------------- token caps


async def test_token_caps_are_applied(client: httpx.AsyncClient, tiny_model_dir: Path) -> None:
    local = LocalScorer(RerankConfig(model=str(tiny_model_dir), dtype="float32"))
    query, docs = "flow " * 30, ["flow " * 200, "flow " * 5, "heat"]  # under max_body_bytes
    capped = ScoreRequest(query, docs, max_tokens_per_query=4, max_tokens_per_doc=8)
    (want,) = local.score([capped])
    (plain,) = local.score([ScoreRequest(query, docs)])
    assert want.scores != plain.scores and (want.truncated, plain.truncated) == (1, 0)
    item = {"query": query, "documents": docs, "max_tokens_per_query": 4, "max_tokens_per_doc": 8}
    r = await client.post("/rerank", json={"requests": [item, {"query": query, "documents": docs}]})
    got, uncapped = r.json()["results"]
    assert got["scores"] == pytest.approx(want.scores, abs=1e-5)
    assert (got["truncated"], got["query_truncated"]) == (1, True)
    assert uncapped["scores"] == pytest.approx(plain.scores, abs=1e-5)  # caps are per request
    body = {"query": query, "documents": docs, "max_tokens_per_doc": 8, "max_tokens_per_query": 4}
    for path in ("/v1/rerank", "/v2/rerank"):  # Cohere's and Jina's field, and vLLM's
        results = (await client.post(path, json=body)).json()["results"]
        by_index = sorted(results, key=lambda x: x["index"])
        assert [x["relevance_score"] for x in by_index] == pytest.approx(
            [sigmoid(s) for s in want.scores], abs=1e-5
        )
    none = {
        "query": query,
        "documents": docs,
        "max_tokens_per_doc": 0,
        "max_tokens_per_query": None,
    }
    results = (await client.post("/v1/rerank", json=none)).json()["results"]  # 0: no cap (vLLM)
    assert sorted(x["relevance_score"] for x in results) == pytest.approx(
        sorted(sigmoid(s) for s in plain.scores), abs=1e-5
    )


async def test_remote_scorer_and_service_agree_through_the_shared_wire(
    tiny_model_dir: Path, backends: Any
) -> None:
    """RemoteScorer (async shell) against the app in process: every format's request and
    answer, caps included, give a local scorer's scores (sigmoid applied once)."""
    from crossrank.reranker.remote import RemoteScorer

    app = create_app(settings(tiny_model_dir, max_body_bytes=1 << 20), backends)
    local = LocalScorer(RerankConfig(model=str(tiny_model_dir), dtype="float32"))
    query, docs = "flow " * 30, ["flow " * 700, "flow " * 5, "heat transfer"]
    capped = [ScoreRequest(query, docs, max_tokens_per_query=4, max_tokens_per_doc=8)]
    plain = [ScoreRequest(QUERY, DOCS), ScoreRequest("heat", ["x"])]
    formats = [("crossrank", False), ("crossrank", True), ("tei", False), ("tei", True)]
    formats += [("cohere", False), ("jina", True)]
    async for _ in open_client(app):
        for fmt, sig in formats:
            config = RerankConfig(
                scorer_urls=("http://svc",), scorer_format=fmt, sigmoid=sig, model="tiny"
            )
            remote = RemoteScorer(config, transport=httpx.ASGITransport(app=app))
            for requests in (plain, capped) if fmt != "tei" else (plain,):
                want = local.score(requests)
                got = await remote.ascore(requests)
                for g, w in zip(got, want):
                    squash = sig or fmt in ("cohere", "jina")  # 0..1 on their wire
                    expected = [sigmoid(s) for s in w.scores] if squash else w.scores
                    assert g.scores == pytest.approx(expected, abs=1e-5), (fmt, sig)
                    if fmt == "crossrank":
                        cut = (g.truncated, g.query_truncated)
                        assert cut == (w.truncated, w.query_truncated)
            await remote.aclose()


@pytest.mark.parametrize(
    ("path", "body", "words"),
    [
        (
            "/v1/rerank",
            {"query": "q", "documents": ["a"], "max_tokens_per_doc": -1},
            "max_tokens_per_doc",
        ),
        (
            "/v2/rerank",
            {"query": "q", "documents": ["a"], "max_tokens_per_query": "8"},
            "max_tokens_per_query",
        ),
        (
            "/v2/rerank",
            {"query": "q", "documents": ["a"], "max_tokens_per_doc": True},
            "max_tokens_per_doc",
        ),
        (
            "/rerank",
            {"requests": [{"query": "q", "documents": ["a"], "max_tokens_per_doc": 1.5}]},
            "requests[0].max_tokens_per_doc",
        ),
        ("/rerank", {"query": "q", "texts": ["a"], "truncate": "no"}, "truncate"),
    ],
)
async def test_bad_caps_are_400(
    client: httpx.AsyncClient, path: str, body: Any, words: str
) -> None:
    assert words in _error(await client.post(path, json=body), 400, "invalid_request")


async def test_tei_truncate_false_refuses_what_does_not_fit(
    client: httpx.AsyncClient, backends: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    metrics = client.app.state.metrics  # type: ignore[attr-defined]
    queue = client.app.state.batchers["tiny"].queue  # type: ignore[attr-defined]
    passes = metrics.forward_passes.labels("tiny")
    before = passes._value.get()
    strict = {"query": QUERY, "texts": DOCS, "truncate": False}  # DOCS[3] is 700 tokens
    reason = _error(await client.post("/rerank", json=strict), 413, "payload_too_large")
    assert "1 of the 4 texts" in reason and "512 tokens" in reason and "truncate" in reason
    long_query = {"query": "flow " * 100, "texts": ["a"], "truncate": False}  # over 64 tokens
    reason = _error(await client.post("/rerank", json=long_query), 413, "payload_too_large")
    assert "max_query_tokens" in reason
    assert passes._value.get() == before and queue.pending == 0  # refused before any scoring
    fits = await client.post("/rerank", json={**strict, "texts": DOCS[:3]})
    assert fits.status_code == 200 and len(fits.json()) == 3
    for cut in ({"query": QUERY, "texts": DOCS}, {"query": QUERY, "texts": DOCS, "truncate": True}):
        assert (await client.post("/rerank", json=cut)).status_code == 200  # TEI auto-truncate


# ---------------------------------------------------------------------- hostile input

#: the JSON escape of a lone surrogate: valid JSON, not valid Unicode text
LONE = "heat \\ud800"


def _error(r: httpx.Response, status: int, kind: str) -> str:
    """The reason of an error response, after checking its one shape."""
    assert r.status_code == status, r.text
    data = r.json()
    assert set(data) == {"error", "status"} and data["status"] == status
    assert set(data["error"]) == {"type", "reason"} and data["error"]["type"] == kind
    reason: str = data["error"]["reason"]
    return reason


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/rerank", f'{{"requests": [{{"query": "{LONE}", "documents": ["a"]}}]}}'),
        ("/rerank", f'{{"requests": [{{"query": "q", "documents": ["a", "{LONE}"]}}]}}'),
        ("/rerank", f'{{"query": "{LONE}", "texts": ["a"]}}'),
        ("/rerank", f'{{"query": "q", "texts": ["{LONE}"], "return_text": true}}'),
        ("/v1/rerank", f'{{"query": "{LONE}", "documents": ["a"]}}'),
        ("/v2/rerank", f'{{"query": "q", "documents": ["a", "{LONE}"]}}'),
        ("/v2/rerank", f'{{"query": "q", "documents": [{{"text": "{LONE}"}}]}}'),
        ("/v2/rerank", f'{{"query": "q", "documents": ["a"], "model": "{LONE}"}}'),
    ],
)
async def test_lone_surrogates_are_400(client: httpx.AsyncClient, path: str, body: str) -> None:
    r = await client.post(path, content=body.encode(), headers={"content-type": "application/json"})
    assert "not valid Unicode" in _error(r, 400, "invalid_request")
    assert (await client.post("/rerank", json={"query": "q", "texts": ["a"]})).status_code == 200


@pytest.mark.parametrize(
    "body",
    [
        b'{"query": "heat \xff\xfe", "texts": ["a"]}',  # not UTF-8 at all
        b'{"query": "q", "texts": ["\xed\xa0\x80"]}',  # UTF-8 of a surrogate
        b'{"query": "q", "texts": ["\xc3"]}',  # truncated sequence
    ],
)
async def test_invalid_utf8_bodies_are_400(client: httpx.AsyncClient, body: bytes) -> None:
    _error(await client.post("/rerank", content=body), 400, "invalid_request")


def _nested(depth: int) -> bytes:
    return b'{"a": [' * depth + b"1" + b"]}" * depth


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 100_000,
        b"[" * 100_000 + b"]" * 100_000,
        b"{" + b'"a":{' * 100_000,
        _nested(250),  # 500 levels, arrays and objects
        _nested(60),  # 120 levels: parses, but over the limit of 100
    ],
    ids=["open-arrays", "closed-arrays", "objects", "mixed-500", "mixed-120"],
)
async def test_deep_nesting_is_400(tiny_model_dir: Path, backends: Any, body: bytes) -> None:
    app = create_app(settings(tiny_model_dir, max_body_bytes=1 << 20), backends)
    async for c in open_client(app):
        assert "nesting depth" in _error(
            await c.post("/rerank", content=body), 400, "invalid_request"
        )
        assert (await c.post("/rerank", json={"query": "q", "texts": ["a"]})).status_code == 200


async def test_queries_over_max_query_chars_are_400_before_tokenizing(
    tiny_model_dir: Path, backends: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    cli = parse_args(["--model", f"tiny={tiny_model_dir}", "--max-query-chars", "20"])
    assert cli.rerank.max_query_chars == 20
    calls: list[Any] = []
    encode = backends["tiny"].encode
    monkeypatch.setattr(backends["tiny"], "encode", lambda rs: calls.append(rs) or encode(rs))
    long, fits = "q" * 21, "q" * 20
    bodies = [
        (
            "/rerank",
            {
                "requests": [
                    {"query": fits, "documents": ["a"]},
                    {"query": long, "documents": ["a"]},
                ]
            },
        ),
        ("/rerank", {"query": long, "texts": ["a"]}),
        ("/v1/rerank", {"query": long, "documents": ["a"]}),
        ("/v2/rerank", {"query": long, "documents": [{"text": "a"}]}),
    ]
    async for c in open_client(create_app(cli, backends)):
        for path, body in bodies:
            reason = _error(await c.post(path, json=body), 400, "invalid_request")
            assert "max_query_chars" in reason and "20" in reason and "21" in reason
        assert not calls  # refused before tokenization
        assert (await c.post("/rerank", json={"query": fits, "texts": ["a"]})).status_code == 200
        assert (await c.get("/info")).json()["limits"]["max_query_chars"] == 20
    default = RerankConfig().max_query_chars
    assert parse_args(["--model", "m"]).rerank.max_query_chars == default == 8192
    app = create_app(settings(tiny_model_dir, max_body_bytes=1 << 20), backends)
    async for c in open_client(app):
        r = await c.post("/rerank", json={"query": "q" * (default + 1), "texts": ["a"]})
        assert "max_query_chars" in _error(r, 400, "invalid_request")


async def test_info_and_errors_show_no_model_paths(
    client: httpx.AsyncClient, tiny_model_dir: Path, backends: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    info = await client.get("/info")
    assert str(tiny_model_dir) not in info.text and tiny_model_dir.name not in info.text
    (model,) = info.json()["models"]
    assert set(model) == {
        "name",
        "device",
        "dtype",
        "num_labels",
        "max_length",
        "max_query_tokens",
        "long_documents",
    }
    assert model["name"] == "tiny"
    replies = [
        await client.post("/rerank", json={"model": "x", "query": "q", "texts": ["a"]}),
        await client.post("/rerank", content=b"{oops"),
        await client.get("/nowhere"),
    ]
    assert all(str(tiny_model_dir) not in r.text for r in replies)


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (RuntimeError("cannot read /srv/secret/ce/model.safetensors"), "the scorer failed"),
        (ModelLoadError("cannot load '/srv/secret/ce'"), "the reranking model is not available"),
    ],
)
async def test_500_bodies_do_not_echo_internal_text(
    client: httpx.AsyncClient,
    backends: Any,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    error: Exception,
    reason: str,
) -> None:
    def fail(*args: Any) -> Any:
        raise error

    monkeypatch.setattr(backends["tiny"], "forward", fail)
    monkeypatch.setattr(backends["tiny"], "encode", fail)
    with caplog.at_level(logging.ERROR):
        r = await client.post("/rerank", json={"query": "q", "texts": ["a"]})
    assert r.status_code == 500 and r.json()["error"]["reason"] == reason
    assert "/srv/secret" not in r.text and "/srv/secret" in caplog.text


# ---------------------------------------------------------------------- command line


async def test_api_key_comes_from_a_file_or_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("CROSSRANK_API_KEY", raising=False)
    assert parse_args(["--model", "m"]).api_key is None
    monkeypatch.setenv("CROSSRANK_API_KEY", "from-env")
    assert parse_args(["--model", "m"]).api_key == "from-env"
    key = tmp_path / "key"
    key.write_text("  s3cret\n")
    assert parse_args(["--model", "m", "--api-key-file", str(key)]).api_key == "s3cret"
    with pytest.raises(SystemExit) as exit_:  # the flag that put the key into `ps` is gone
        parse_args(["--model", "m", "--api-key", "s3cret"])
    assert exit_.value.code == 2 and "unrecognized arguments: --api-key" in capsys.readouterr().err
    key.write_text(" \n")
    assert main(["--model", "m", "--api-key-file", str(key)]) == 2
    assert "is empty" in capsys.readouterr().err
    assert main(["--model", "m", "--api-key-file", str(tmp_path / "none")]) == 2
    assert "No such file" in capsys.readouterr().err


async def test_a_model_that_cannot_load_is_one_line_and_status_1(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--model", "/nonexistent"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("crossrank serve: cannot load model '/nonexistent': ")
    assert err.count("\n") == 1 and "Traceback" not in err

    def broken(name: str, config: Any, *shared: Any) -> Any:
        raise RuntimeError("CUDA out of memory\nsecond line")

    monkeypatch.setattr(app_module, "ModelBackend", broken)
    assert main(["--model", "tiny=/m/tiny"]) == 1
    err = capsys.readouterr().err
    assert err == "crossrank serve: cannot load model 'tiny': CUDA out of memory second line\n"


# ---------------------------------------------------------------------- queue (pure)


def _row(n: int, reply: Any = None) -> Row:
    return Row(reply, 0, np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64), 0.0)


async def test_pack_longest_first_under_budget() -> None:
    window = [_row(n) for n in (5, 40, 10, 40, 30)]
    batch, rest = pack(window, budget=100)
    assert [len(r) for r in batch] == [40, 40]
    assert [len(r) for r in rest] == [5, 10, 30]
    one, _ = pack([_row(300)], budget=100)  # a row over budget still runs alone
    assert len(one) == 1


async def test_queue_admission_and_dropped_rows() -> None:
    q = PairQueue(max_pairs=4, budget=1000)
    q.reserve(3)
    with pytest.raises(OverloadedError):
        q.reserve(2)
    q.release(3)
    q.reserve(10)  # alone in an empty queue: admitted even over the limit
    loop = asyncio.get_running_loop()
    from crossrank.reranker.local.encoding import EncodedPairs

    ids = [np.zeros(3, dtype=np.int64)] * 2
    enc = EncodedPairs(ids, ids, [(0, 0), (0, 1)], [0], [0], [False])
    gone = Reply([ScoreRequest("q", ["a", "b"])], enc, loop.create_future(), lambda *a: [])
    gone.future.cancel()
    q.put(gone, reserved=10)
    assert q.take() == ([], 2)
    assert q.pending == 0  # the 2 rows admitted for it were given back


async def test_cli_settings(tmp_path: Path) -> None:
    s = parse_args(["--model", "a=/m/a", "--model", "/m/b", "--max-documents", "50"])
    assert s.models == {"a": "/m/a", "/m/b": "/m/b"} and s.default_model == "a"
    assert s.max_documents == 50 and s.model_config_for("/m/b").model == "/m/b"
    assert not s.model_config_for("a").sigmoid
    assert not math.isnan(sigmoid(-1000.0)) and sigmoid(1000.0) == 1.0


# ---------------------------------------------------------------------- score cache


def _metric(text: str, name: str) -> float:
    (line,) = [x for x in text.splitlines() if x.startswith(name + " ")]
    return float(line.split()[1])


async def test_repeated_requests_are_answered_from_the_score_cache(
    client: httpx.AsyncClient, backends: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    metrics = client.app.state.metrics  # type: ignore[attr-defined]
    passes = metrics.forward_passes.labels("tiny")
    docs = ["cached one", "cached two", "cached three"]
    item = {"query": "score cache " * 40, "documents": docs}  # query over 64 tokens
    body = {"requests": [item, {**item, "max_tokens_per_doc": 1}]}  # every document cut
    cohere = {"query": "score cache", "documents": docs}
    before = (await client.get("/metrics")).text
    first = await client.post("/rerank", json=body)
    first_cohere = await client.post("/v2/rerank", json=cohere)
    assert first.status_code == first_cohere.status_code == 200
    scored = passes._value.get()

    def refuse(batch: Any) -> Any:
        raise AssertionError("a cached pair reached the model")

    monkeypatch.setattr(backends["tiny"], "forward", refuse)
    again = await client.post("/rerank", json=body)
    again_cohere = await client.post("/v2/rerank", json=cohere)
    assert passes._value.get() == scored
    assert (
        again.json() == first.json()
        and again_cohere.json()["results"] == (first_cohere.json()["results"])
    )
    result, capped = again.json()["results"]
    assert (result["truncated"], result["query_truncated"]) == (0, True)
    assert capped["truncated"] == 3
    after = (await client.get("/metrics")).text
    hits = "crossrank_score_cache_hits_total"
    assert _metric(after, hits) - _metric(before, hits) == 9
    assert _metric(after, "crossrank_score_cache_entries") >= 9
    assert _metric(after, "crossrank_score_cache_bytes") == ENTRY_BYTES * _metric(
        after, "crossrank_score_cache_entries"
    )
    assert _metric(after, "crossrank_score_cache_misses_total") >= 9


async def test_tei_truncate_false_refuses_cached_texts_too(client: httpx.AsyncClient) -> None:
    passes = client.app.state.metrics.forward_passes.labels("tiny")  # type: ignore[attr-defined]
    texts = ["fits", "too long " * 400, "", "also fits"]
    ok = await client.post("/rerank", json={"query": "cached refusal", "texts": texts})
    assert ok.status_code == 200
    before = passes._value.get()
    strict = {"query": "cached refusal", "texts": texts, "truncate": False}
    reason = _error(await client.post("/rerank", json=strict), 413, "payload_too_large")
    assert "1 of the 4 texts" in reason and passes._value.get() == before


async def test_models_share_one_score_cache_whose_size_is_an_option(tiny_model_dir: Path) -> None:
    two = load_backends(
        settings(tiny_model_dir, models={"a": str(tiny_model_dir), "b": str(tiny_model_dir)})
    )
    cache = two["a"].score_cache
    assert cache is not None and cache is two["b"].score_cache
    assert cache.max_bytes == RerankConfig().score_cache_bytes
    # the same pairs on two models: entries of their own
    two["a"].scorer.score([ScoreRequest("q", ["shared"])])
    two["b"].scorer.score([ScoreRequest("q", ["shared"])])
    assert cache.stats()[:3] == (0, 2, 2)
    off = parse_args(["--model", str(tiny_model_dir), "--score-cache-bytes", "0"])
    assert off.rerank.score_cache_bytes == 0
    assert load_backends(off)[str(tiny_model_dir)].score_cache is None
    sized = parse_args(["--model", "m", "--score-cache-bytes", "1000"])
    assert sized.model_config_for("m").score_cache_bytes == 1000
