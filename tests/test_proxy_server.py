"""The proxy's server side (``proxy.server.ProxyHttpProtocol`` on uvicorn, as ``crossrank
proxy`` runs it): raw bytes over a real socket, an in-memory upstream behind.

What the C parser must not change: the request target reaches the proxy as sent, so every
non-origin form is refused (400, engine JSON) and never forwarded; what it refuses itself is
answered in the engine's JSON with the engines' limits and texts (a 4,096-byte request line,
16,384 bytes of headers). The same cases against a real proxy process and a real engine are in
``integration_tests/test_hostile.py``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio
import uvicorn

from crossrank.adapters.cli.proxy import server_config
from crossrank.adapters.processes import free_port
from crossrank.adapters.proxy import ProxySettings, create_app
from crossrank.adapters.proxy.server import MAX_HEADER_BYTES, MAX_LINE_BYTES
from crossrank.reranker import RerankConfig


class Engine:
    """The upstream: records what reached it, answers every request with its target."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        target = request.url.raw_path.decode()
        self.seen.append(target)
        data = json.dumps({"target": target}).encode()
        headers = {"content-type": "application/json", "content-length": str(len(data))}
        return httpx.Response(200, headers=headers, stream=httpx.ByteStream(data))


@pytest_asyncio.fixture(loop_scope="function")
async def proxy() -> AsyncIterator[tuple[int, Engine]]:
    engine = Engine()
    port = free_port()
    settings = ProxySettings(
        upstream="http://engine:9200",
        rerank=RerankConfig(enabled=False),
        preload=False,
        host="127.0.0.1",
        port=port,
    )
    app = create_app(settings, transport=httpx.MockTransport(engine))
    server = uvicorn.Server(server_config(app, settings, log_level="warning"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    yield port, engine
    server.should_exit = True
    await task


async def _exchange(port: int, data: bytes) -> list[tuple[int, dict[str, Any]]]:
    """Send ``data``, read until the proxy closes; the answers' statuses and JSON bodies."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    raw = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    answers = []
    while raw:
        head, _, rest = raw.partition(b"\r\n\r\n")
        status = int(head.split(b" ")[1])
        length = next(
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        answers.append((status, json.loads(rest[:length])))
        raw = rest[length:]
    return answers


def _get(target: bytes, *, close: bool = True, extra: bytes = b"") -> bytes:
    ending = b"connection: close\r\n" if close else b""
    return b"GET " + target + b" HTTP/1.1\r\nhost: x\r\n" + extra + ending + b"\r\n"


@pytest.mark.parametrize(
    "target", [b"http://127.0.0.1:1/steal", b"//127.0.0.1:1/steal", b"*", b"127.0.0.1:1"]
)
async def test_non_origin_targets_are_refused_and_never_forwarded(
    proxy: tuple[int, Engine], target: bytes
) -> None:
    port, engine = proxy
    [(status, body)] = await _exchange(port, _get(target))
    assert status == 400 and body["status"] == 400
    assert body["error"]["type"] in ("illegal_argument_exception",)
    assert engine.seen == []


async def test_origin_targets_reach_the_engine_as_sent(proxy: tuple[int, Engine]) -> None:
    port, engine = proxy
    [(status, body)] = await _exchange(port, _get(b"/my%2Dindex/_doc/a%20b?pretty=true"))
    assert status == 200 and body == {"target": "/my%2Dindex/_doc/a%20b?pretty=true"}
    assert engine.seen == ["/my%2Dindex/_doc/a%20b?pretty=true"]


async def test_pipelined_requests_are_answered_in_order(proxy: tuple[int, Engine]) -> None:
    port, _ = proxy
    data = _get(b"/a", close=False) + _get(b"/b", close=False) + _get(b"/c")
    answers = await _exchange(port, data)
    assert [body["target"] for _, body in answers] == ["/a", "/b", "/c"]


async def test_a_request_line_over_the_engines_limit_is_their_400(
    proxy: tuple[int, Engine],
) -> None:
    port, engine = proxy
    [(status, body)] = await _exchange(port, _get(b"/" + b"a" * MAX_LINE_BYTES))
    assert status == 400 and body["error"]["type"] == "too_long_http_line_exception"
    assert body["error"]["reason"] == "An HTTP line is larger than 4096 bytes."
    ok = await _exchange(port, _get(b"/" + b"a" * (MAX_LINE_BYTES - 100)))
    assert ok[0][0] == 200 and len(engine.seen) == 1


async def test_headers_over_the_engines_limit_are_their_400(proxy: tuple[int, Engine]) -> None:
    port, engine = proxy
    big = b"".join(b"x-h%d: %s\r\n" % (n, b"v" * 1000) for n in range(20))
    [(status, body)] = await _exchange(port, _get(b"/", extra=big))
    assert status == 400 and body["error"]["type"] == "too_long_http_header_exception"
    assert body["error"]["reason"] == f"HTTP header is larger than {MAX_HEADER_BYTES} bytes."
    assert engine.seen == []


@pytest.mark.parametrize(
    "data",
    [
        b"NOT HTTP AT ALL\r\n\r\n",
        b"GET / HTTP/1.1\r\nbad header\r\n\r\n",
        b"POST / HTTP/1.1\r\ncontent-length: 1\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n",
        b"GET / HTTP/1.1\r\nx-a: a\rb\r\n\r\n",
    ],
)
async def test_malformed_requests_get_the_engines_json_400(
    proxy: tuple[int, Engine], data: bytes
) -> None:
    port, engine = proxy
    [(status, body)] = await _exchange(port, data)
    assert status == 400 and body["status"] == 400 and body["error"]["reason"]
    assert engine.seen == []
