"""Hostile input and faults against real engines, a real proxy process and raw sockets
(issue 10's reproductions; the in-memory twins are in ``tests/test_hostile_proxy.py``).

Every answer must be the engine's error JSON with the engine's status (or the engine's own
answer, relayed): never a 500 with internal text, never a hang, never another host.
"""

from __future__ import annotations

import json
import os
import re
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from .conftest import INDEX, Engine
from .proxy_support import ProxyProcess, start_proxy
from .scorer_process import ScorerProcess

HOSTILE = "hostile"
SURROGATE_SOURCE = b'{"title": "heat \\ud800 transfer", "text": "heat flow \\udfff in pipes"}'
QUERY = {"query": {"match": {"text": "heat flow"}}, "size": 5}
TOKEN = "hostile-token-1"


class Listener:
    """A TCP listener on loopback that records whether anything connected to it."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nstolen")
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


def raw_request(url: str, data: bytes, timeout: float = 30) -> tuple[int, bytes]:
    """Send ``data`` as is on a new connection; the status and body of the answer (read to
    its Content-Length, or to the close: OpenSearch keeps a connection whose headers it
    refused open)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(data)
        response = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            response += chunk
            head, found, body = response.partition(b"\r\n\r\n")
            length = re.search(rb"(?im)^content-length:\s*(\d+)", head) if found else None
            if length is not None and len(body) >= int(length.group(1)):
                break
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body


@pytest.fixture(scope="session")
def hostile_index(engine: Engine) -> str:
    """An index holding a document whose stored fields carry lone surrogates."""
    http = httpx.Client(base_url=engine.url, timeout=60)
    http.delete(f"/{HOSTILE}")
    created = http.put(f"/{HOSTILE}", json={"settings": {"number_of_replicas": 0}})
    assert created.status_code == 200, created.text
    for n, source in enumerate([SURROGATE_SOURCE, b'{"title": "heat", "text": "heat flow"}']):
        r = http.put(f"/{HOSTILE}/_doc/{n}?refresh=true", content=source,
                     headers={"content-type": "application/json"})  # fmt: skip
        assert r.status_code in (200, 201), r.text
    return HOSTILE


@pytest.fixture(scope="session")
def guarded(engine: Engine, tiny_model_dir: Path) -> Iterator[ProxyProcess]:
    """A proxy with the tiny model and a proxy token, credentials in its upstream URL."""
    os.environ["CROSSRANK_PROXY_TOKEN"] = TOKEN
    try:
        upstream = engine.url.replace("http://", "http://elastic:pr0xy-secret@")
        proc = start_proxy(
            upstream, "--model", str(tiny_model_dir), "--fields", "title,text",
            "--device", "cpu", "--dtype", "float32", "--window", "20",
        )  # fmt: skip
    finally:
        del os.environ["CROSSRANK_PROXY_TOKEN"]
    yield proc
    proc.stop()
    assert "pr0xy-secret" not in proc.logs()
    assert "heat \\ud800" not in proc.logs() and "heat flow" not in proc.logs()


def _post(proxy: ProxyProcess, path: str, body: Any, **headers: str) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    ctype = "application/x-ndjson" if path.endswith("_msearch") else "application/json"
    return httpx.post(
        proxy.url + path,
        content=content,
        headers={"x-crossrank-token": TOKEN, "content-type": ctype, **headers},
        timeout=60,
    )


def _engine_error(resp: httpx.Response, status: int) -> dict[str, Any]:
    assert resp.status_code == status, resp.text[:500]
    body: dict[str, Any] = resp.json()
    assert body["status"] == status and body["error"]["type"] and body["error"]["reason"]
    assert "Traceback" not in resp.text and "crossrank_proxy_exception" not in resp.text
    return body


# ---------------------------------------------------------------- 1, 10: request targets


@pytest.mark.parametrize(
    "target",
    ["@127.0.0.1:{port}/steal", "http://127.0.0.1:{port}/steal", "*", "127.0.0.1:{port}"],
)
def test_request_targets_never_reach_another_host(
    engine: Engine, guarded: ProxyProcess, target: str
) -> None:
    listener = Listener()
    try:
        for method in ("GET", "OPTIONS", "POST"):
            line = f"{method} {target.format(port=listener.port)} HTTP/1.1\r\n"
            data = f"{line}Host: x\r\nX-Crossrank-Token: {TOKEN}\r\nConnection: close\r\n"
            status, body = raw_request(guarded.url, data.encode() + b"Content-Length: 0\r\n\r\n")
            assert status == 400, (target, body[:300])
            assert b"stolen" not in body and b"Traceback" not in body
    finally:
        listener.close()
    assert listener.connections == 0


@pytest.mark.parametrize(
    ("case", "kind"),
    [("line", "too_long_http_line_exception"), ("headers", "too_long_http_header_exception")],
)
def test_oversized_request_line_or_headers_get_the_engines_own_400(
    engine: Engine, guarded: ProxyProcess, case: str, kind: str
) -> None:
    """The proxy's parser refuses what the engine's refuses, in the engine's words."""
    target = "/" + "a" * 5000 if case == "line" else "/"
    extra = "".join(f"X-H{n}: {'v' * 1000}\r\n" for n in range(20)) if case == "headers" else ""
    data = (
        f"GET {target} HTTP/1.1\r\nHost: x\r\nX-Crossrank-Token: {TOKEN}\r\n{extra}"
        "Connection: close\r\n\r\n"
    ).encode()
    for url in (engine.url, guarded.url):
        status, body = raw_request(url, data)
        assert status == 400, (url, body[:300])
        answer = json.loads(body)
        assert answer["status"] == 400 and answer["error"]["type"] == kind, (url, answer)


# ---------------------------------------------------------------- 2: lone surrogates


def test_stored_lone_surrogate_is_searchable_everywhere(
    engine: Engine, guarded: ProxyProcess, hostile_index: str
) -> None:
    direct = httpx.post(f"{engine.url}/{hostile_index}/_search", json=QUERY, timeout=60)
    resp = _post(guarded, f"/{hostile_index}/_search", QUERY)
    assert resp.status_code == 200, resp.text[:500]
    assert b"heat \\ud800 transfer" in resp.content  # written back as the escape it came in as
    assert resp.json()["_rerank"]["reranked"] == 2
    assert {h["_id"] for h in resp.json()["hits"]["hits"]} == {
        h["_id"] for h in direct.json()["hits"]["hits"]
    }
    lines = b"".join(json.dumps(x).encode() + b"\n" for x in [{"index": hostile_index}, QUERY] * 2)
    ms = _post(guarded, "/_msearch", lines)
    assert ms.status_code == 200 and [r["status"] for r in ms.json()["responses"]] == [200, 200]
    client = engine.client(rerank={"fields": ["title", "text"]}, scorer=_overlap())
    out = client.search(index=hostile_index, body={"query": QUERY["query"]})
    assert len(out["hits"]["hits"]) == 2 and out["_rerank"]["reranked"] == 2


def _overlap() -> Any:
    from .proxy_support import FaultyScorer

    return FaultyScorer()


# ---------------------------------------------------------------- 3: huge query


def test_huge_query_text_is_a_clear_400(engine: Engine, guarded: ProxyProcess) -> None:
    huge = "heat " * 2_000_000  # 10 MB
    body = {**QUERY, "ext": {"crossrank": {"query_text": huge}}}
    resp = _post(guarded, f"/{INDEX}/_search", body)
    error = _engine_error(resp, 400)
    assert "max_query_chars" in error["error"]["reason"]
    assert httpx.get(guarded.url + "/_crossrank/health", timeout=60).status_code == 200


# ---------------------------------------------------------------- 5: nesting depth


def test_deep_nesting_is_400_and_never_reaches_the_engine(
    engine: Engine, guarded: ProxyProcess
) -> None:
    deep_bool = b'{"query":' + b'{"bool":{"must":[' * 450 + b"{}" + b"]}}" * 450 + b"}"
    arrays = b"[" * 100_000 + b"]" * 100_000
    for path in (f"/{INDEX}/_search", f"/{INDEX}/_count", f"/{INDEX}/_validate/query"):
        for body in (deep_bool, arrays):
            _engine_error(_post(guarded, path, body), 400)
    _engine_error(_post(guarded, "/_msearch", b"{}\n" + arrays + b"\n"), 400)
    health = httpx.get(f"{engine.url}/_cluster/health", timeout=60)
    assert health.status_code == 200 and health.json()["status"] in ("green", "yellow")


# ---------------------------------------------------------------- 6: one bad _msearch item


def test_one_bad_msearch_item_fails_alone(engine: Engine, guarded: ProxyProcess) -> None:
    items = [
        {"index": INDEX}, {**QUERY, "ext": {"crossrank": {"window": -1}}},
        {"index": INDEX}, QUERY,
        {"index": INDEX}, {**QUERY, "ext": {"crossrank": {"bogus": True}}},
    ]  # fmt: skip
    resp = _post(guarded, "/_msearch", b"".join(json.dumps(x).encode() + b"\n" for x in items))
    assert resp.status_code == 200, resp.text[:500]
    out = resp.json()["responses"]
    assert [r["status"] for r in out] == [400, 200, 400]
    assert out[1]["_rerank"]["reranked"] > 0 and out[0]["error"]["type"]


# ---------------------------------------------------------------- 7: size and from


@pytest.mark.parametrize("bad", [{"size": -1}, {"from": -5}, {"size": True}])
def test_invalid_size_and_from_get_the_engines_own_answer(
    engine: Engine, guarded: ProxyProcess, bad: dict[str, Any]
) -> None:
    direct = httpx.post(f"{engine.url}/{INDEX}/_search", json={**QUERY, **bad}, timeout=60)
    resp = _post(guarded, f"/{INDEX}/_search", {**QUERY, **bad})
    assert resp.status_code == direct.status_code, (resp.text[:300], direct.text[:300])
    if direct.status_code >= 400:
        assert resp.json()["error"]["type"] == direct.json()["error"]["type"]
    else:  # whatever the engine makes of it, answered as the engine answered it
        assert len(resp.json()["hits"]["hits"]) == len(direct.json()["hits"]["hits"])


# ---------------------------------------------------------------- 8, 9: credentials and token


def test_token_guard_reads_encoded_paths_as_the_router_does(guarded: ProxyProcess) -> None:
    cases = [
        ("DELETE", "/%5Fcrossrank/health", 401),
        ("POST", "/_crossrank%2Fready", 401),
        ("GET", "/%5Fcrossrank/metrics", 401),
        ("GET", "/%5Fcrossrank/health", 200),
    ]
    for method, path, status in cases:
        line = f"{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        got, body = raw_request(guarded.url, line.encode() + b"Content-Length: 0\r\n\r\n")
        assert got == status, (method, path, body[:300])
    got, _ = raw_request(
        guarded.url,
        f"DELETE /%5Fcrossrank/health HTTP/1.1\r\nHost: x\r\nX-Crossrank-Token: {TOKEN}\r\n"
        "Connection: close\r\nContent-Length: 0\r\n\r\n".encode(),
    )
    assert got == 405  # answered by the proxy, never forwarded


def test_upstream_credentials_stay_out_of_logs(engine: Engine, guarded: ProxyProcess) -> None:
    resp = _post(guarded, f"/{INDEX}/_search", QUERY)
    assert resp.status_code == 200 and resp.json()["_rerank"]["reranked"] > 0
    assert httpx.get(guarded.url + "/_crossrank/ready", timeout=60).status_code == 200
    assert "pr0xy-secret" not in guarded.logs()
    assert "proxy ready" in guarded.logs()


# ---------------------------------------------------------------- 11, 12: scorer misconfigured


@pytest.fixture(scope="session")
def scorer(tiny_model_dir: Path) -> Iterator[ScorerProcess]:
    os.environ["CROSSRANK_API_KEY"] = "scorer-key-42"
    try:
        proc = ScorerProcess(["--model", f"tiny={tiny_model_dir}", "--dtype", "float32"]).start()
    finally:
        del os.environ["CROSSRANK_API_KEY"]
    yield proc
    proc.stop()


def test_proxy_with_a_model_the_scorer_does_not_serve_is_not_ready(
    engine: Engine, scorer: ScorerProcess, tiny_model_dir: Path
) -> None:
    os.environ["CROSSRANK_SCORER_API_KEY"] = "scorer-key-42"
    try:
        wrong = start_proxy(engine.url, "--scorer-url", scorer.url, "--model", "other",
                            "--fields", "title,text")  # fmt: skip
        right = start_proxy(engine.url, "--scorer-url", scorer.url, "--model", "tiny",
                            "--fields", "title,text")  # fmt: skip
    finally:
        del os.environ["CROSSRANK_SCORER_API_KEY"]
    try:
        for proxy in (wrong, right):
            cmdline = Path(f"/proc/{proxy.proc.pid}/cmdline").read_bytes()
            assert b"scorer-key-42" not in cmdline
        ready = httpx.get(wrong.url + "/_crossrank/ready", timeout=60)
        assert ready.status_code == 503 and ready.json()["models"]["failed"] == 1
        resp = httpx.post(f"{wrong.url}/{INDEX}/_search", json=QUERY, timeout=60)
        meta = resp.json()["_rerank"]
        assert meta["fallback"] is True and meta["error"] == "the scorer failed"
        assert scorer.url not in resp.text and "127.0.0.1" not in resp.text
        assert "does not serve model 'other'" in wrong.logs()
        assert httpx.get(right.url + "/_crossrank/ready", timeout=60).status_code == 200
        good = httpx.post(f"{right.url}/{INDEX}/_search", json=QUERY, timeout=60).json()
        assert good["_rerank"]["reranked"] > 0
        info = httpx.get(scorer.url + "/info", timeout=60).text
        assert str(tiny_model_dir) not in info
    finally:
        wrong.stop()
        right.stop()


# ---------------------------------------------------------------- 13: a model that cannot load


def test_proxy_whose_model_cannot_load_says_so_and_searches_do_not_wait(
    engine: Engine, tmp_path: Path
) -> None:
    missing = tmp_path / "no-such-model"
    proxy = start_proxy(engine.url, "--model", str(missing), "--fields", "title,text")
    try:
        assert "cannot load scorer" in proxy.logs()
        ready = httpx.get(proxy.url + "/_crossrank/ready", timeout=60)
        assert ready.status_code == 503 and str(missing) not in ready.text
        for _ in range(3):
            resp = httpx.post(f"{proxy.url}/{INDEX}/_search", json=QUERY, timeout=60)
            meta = resp.json()["_rerank"]
            assert meta["fallback"] is True and str(missing) not in resp.text
        assert proxy.logs().count("cannot load scorer") == 1
    finally:
        proxy.stop()


def test_wrapper_with_an_unreachable_hub_model_falls_back_without_retrying(engine: Engine) -> None:
    config = {"model": "crossrank-tests/no-such-model", "fields": ["title", "text"],
              "load_timeout": 1.0}  # fmt: skip
    client = engine.client(rerank=config)
    results = [client.search(index=INDEX, body={"query": QUERY["query"]}) for _ in range(3)]
    for out in results:
        meta = out["_rerank"]
        assert meta["fallback"] is True, meta
        assert meta["error"] == "the reranking model is not available"
    assert client._rerank.loader.state in ("loading", "failed")
