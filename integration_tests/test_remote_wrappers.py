"""The drop-in wrappers on a real engine with a real remote scorer process, and its faults."""

from __future__ import annotations

import http.server
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from crossrank.reranker import LocalScorer, RerankConfig

from .conftest import INDEX
from .helpers import body_of, ids
from .scorer_process import ScorerProcess

QUERY = {"match": {"text": "information retrieval systems for documents and indexing"}}
WINDOW = 15


@pytest.fixture(scope="module")
def service(tiny_model_dir: Path) -> Iterator[ScorerProcess]:
    proc = ScorerProcess(["--model", str(tiny_model_dir), "--dtype", "float32"]).start()
    yield proc
    proc.stop()


def config(model: Path, **kw: Any) -> RerankConfig:
    return RerankConfig(
        model=str(model), dtype="float32", fields=("title", "text"), window=WINDOW, **kw
    )


def search(client: Any) -> dict[str, Any]:
    return body_of(client.search(index=INDEX, body={"query": QUERY, "size": WINDOW}))


@pytest.mark.parametrize("fmt", ["crossrank", "tei"])
def test_remote_scorer_gives_the_local_order(
    engine: Any, service: ScorerProcess, tiny_model_dir: Path, fmt: str
) -> None:
    local = search(
        engine.client(rerank=config(tiny_model_dir), scorer=LocalScorer(config(tiny_model_dir)))
    )
    remote_cfg = config(  # a generous deadline: this checks the order, not the speed
        tiny_model_dir, scorer_urls=(service.url,), scorer_format=fmt, scorer_timeout=60.0
    )
    remote = search(engine.client(rerank=remote_cfg))  # no scorer=: made from scorer_urls
    assert "fallback" not in remote["_rerank"]
    assert ids(remote) == ids(local)
    assert [h["_score"] for h in remote["hits"]["hits"]] == pytest.approx(
        [h["_score"] for h in local["hits"]["hits"]], abs=1e-4
    )


def engine_order(engine: Any) -> list[str]:
    raw = engine.raw_search({"query": QUERY, "size": WINDOW})
    return [h["_id"] for h in raw["hits"]["hits"]]


def test_killed_scorer_falls_back_to_engine_order(engine: Any, tiny_model_dir: Path) -> None:
    proc = ScorerProcess(["--model", str(tiny_model_dir)]).start()
    proc.stop(signal.SIGKILL)
    cfg = config(tiny_model_dir, scorer_urls=(proc.url,), scorer_timeout=3.0, scorer_retries=1)
    out = search(engine.client(rerank=cfg))
    assert out["_rerank"]["fallback"] is True
    assert ids(out) == engine_order(engine)


def test_slow_scorer_past_the_deadline_falls_back(
    engine: Any, service: ScorerProcess, tiny_model_dir: Path
) -> None:
    cfg = config(tiny_model_dir, scorer_urls=(service.url,), scorer_timeout=0.001, scorer_retries=0)
    out = search(engine.client(rerank=cfg))
    assert out["_rerank"]["fallback"] is True and ids(out) == engine_order(engine)


class _Garbage(http.server.BaseHTTPRequestHandler):
    """A scorer that answers every request with 200 and a body that is not scores."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = b'{"results": "definitely not scores"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def test_garbage_from_the_scorer_falls_back(engine: Any, tiny_model_dir: Path) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Garbage)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        out = search(engine.client(rerank=config(tiny_model_dir, scorer_urls=(url,))))
        assert out["_rerank"]["fallback"] is True and ids(out) == engine_order(engine)
        strict = config(tiny_model_dir, scorer_urls=(url,), on_scorer_error="raise")
        from crossrank.reranker import ScorerError

        with pytest.raises(ScorerError):
            engine.client(rerank=strict).search(index=INDEX, body={"query": QUERY})
    finally:
        server.shutdown()


class _Stall(http.server.BaseHTTPRequestHandler):
    """A scorer that sends its headers and half a body, then stalls until ``release``."""

    release = threading.Event()

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "1000")
        self.end_headers()
        self.wfile.write(b'{"model": "stalled", "results": [')
        self.wfile.flush()
        self.release.wait(120)

    def log_message(self, *args: Any) -> None:
        pass


async def test_a_scorer_stalling_mid_body_costs_the_deadline(
    engine: Any, tiny_model_dir: Path
) -> None:
    """Sync and async wrappers fall back at the scorer deadline while the scorer still
    stalls: an ordering (it is released only afterwards), not a speed."""
    _Stall.release = threading.Event()  # one per run: the test runs once per engine
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Stall)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    cfg = config(tiny_model_dir, scorer_urls=(url,), scorer_timeout=1.0, scorer_retries=0)
    try:
        started = time.monotonic()
        out = search(engine.client(rerank=cfg))
        aclient = engine.async_client(rerank=cfg)
        try:
            aout = body_of(await aclient.search(index=INDEX, body={"query": QUERY, "size": WINDOW}))
        finally:
            await aclient.close()
        took = time.monotonic() - started
        assert not _Stall.release.is_set()  # still stalled: both gave up on their own
        for got in (out, aout):
            assert got["_rerank"]["fallback"] is True and ids(got) == engine_order(engine)
        assert took < 60  # two deadlines of 1 s, not the 120 s stall
    finally:
        _Stall.release.set()
        server.shutdown()
