"""The proxy's upstream HTTP/1.1 client (``proxy.http1.Http1Transport``) against real sockets.

Each test starts an asyncio server on loopback that answers with scripted bytes, so every
framing (Content-Length, chunked, close-delimited, HEAD, 1xx) and every failure (refused,
closed before answering, closed mid-body, silent) is a real connection. What the failures
must read as is what :class:`.forward.Upstream` retries on: ``ConnectError`` means nothing
was sent; ``RemoteProtocolError`` means the connection broke after sending.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from crossrank.adapters.proxy.http1 import Http1Transport

Answer = Callable[[bytes], bytes | None]


class Node:
    """A loopback server: ``answer(request bytes)`` gives the bytes to send back (None:
    close without answering). Requests are read up to the end of their headers and body."""

    def __init__(self, answer: Answer, *, close_after: bool = False) -> None:
        self.answer, self.close_after = answer, close_after
        self.requests: list[bytes] = []
        self.connections = 0

    async def __aenter__(self) -> Node:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                request = await _read_request(reader)
                if request is None:
                    return
                self.requests.append(request)
                data = self.answer(request)
                if data is None:
                    return
                writer.write(data)
                await writer.drain()
                if self.close_after:
                    return
        finally:
            writer.close()


async def _read_request(reader: asyncio.StreamReader) -> bytes | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    lower = head.lower()
    if b"transfer-encoding: chunked" in lower:
        body = b""
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            chunk = await reader.readexactly(size + 2)
            if size == 0:
                return head + body
            body += chunk[:-2]
    length = 0
    for line in lower.split(b"\r\n"):
        if line.startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return head + await reader.readexactly(length)


def ok(body: bytes = b'{"ok":true}', *, extra: bytes = b"") -> Answer:
    return lambda _: (
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
        + str(len(body)).encode()
        + b"\r\n"
        + extra
        + b"\r\n"
        + body
    )


async def _send(
    transport: Http1Transport,
    url: str,
    method: str = "GET",
    content: bytes | AsyncIterator[bytes] | None = None,
    headers: list[tuple[bytes, bytes]] | None = None,
    timeout: dict[str, Any] | None = None,
) -> tuple[httpx.Response, bytes]:
    request = httpx.Request(
        method,
        url,
        content=content,
        headers=headers,
        extensions={"timeout": timeout or {"connect": 2, "read": 2, "write": 2, "pool": 2}},
    )
    response = await transport.handle_async_request(request)
    try:
        body = b"".join([chunk async for chunk in response.aiter_raw()])
    finally:
        await response.aclose()
    return response, body


async def test_answers_are_read_and_the_connection_is_kept_alive() -> None:
    async with Node(ok()) as node:
        transport = Http1Transport()
        for _ in range(3):
            response, body = await _send(transport, node.url + "/i/_search?q=x", "POST", b"{}")
            assert response.status_code == 200 and body == b'{"ok":true}'
            assert response.headers["content-type"] == "application/json"
        await transport.aclose()
    assert node.connections == 1
    first = node.requests[0]
    assert first.startswith(b"POST /i/_search?q=x HTTP/1.1\r\n")
    assert b"\r\ncontent-length: 2\r\n" in first.lower() and first.endswith(b"\r\n\r\n{}")


async def test_chunked_answers_are_dechunked_and_compressed_bodies_kept_as_sent() -> None:
    raw = b"\x1f\x8b not really gzip"
    chunked = (
        b"HTTP/1.1 200 OK\r\ncontent-encoding: gzip\r\ntransfer-encoding: chunked\r\n\r\n"
        + b"%x\r\n%s\r\n" % (5, raw[:5])
        + b"%x\r\n%s\r\n" % (len(raw) - 5, raw[5:])
        + b"0\r\n\r\n"
    )
    async with Node(lambda _: chunked) as node:
        transport = Http1Transport()
        for _ in range(2):
            response, body = await _send(transport, node.url + "/")
            assert body == raw and response.headers["content-encoding"] == "gzip"
        await transport.aclose()
    assert node.connections == 1


async def test_close_delimited_answer_ends_at_the_close() -> None:
    answer = b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nall of it"
    async with Node(lambda _: answer, close_after=True) as node:
        transport = Http1Transport()
        _, body = await _send(transport, node.url + "/")
        assert body == b"all of it"
        _, body = await _send(transport, node.url + "/")  # a new connection
        await transport.aclose()
    assert node.connections == 2


async def test_head_answers_have_no_body_whatever_their_length_says() -> None:
    async with Node(lambda _: b"HTTP/1.1 200 OK\r\ncontent-length: 1234\r\n\r\n") as node:
        transport = Http1Transport()
        for _ in range(2):
            response, body = await _send(transport, node.url + "/i", "HEAD")
            assert response.status_code == 200 and body == b""
            assert response.headers["content-length"] == "1234"
        await transport.aclose()
    assert node.connections == 1


async def test_interim_answers_are_skipped() -> None:
    interim = b"HTTP/1.1 100 Continue\r\n\r\n"
    async with Node(lambda r: interim + ok(b"final")(r)) as node:  # type: ignore[operator]
        transport = Http1Transport()
        response, body = await _send(transport, node.url + "/", "POST", b"x")
        assert response.status_code == 200 and body == b"final"
        await transport.aclose()


async def test_streamed_request_bodies_are_sent_in_chunks() -> None:
    async def parts() -> AsyncIterator[bytes]:
        for part in (b'{"a":', b"", b"1}"):
            yield part

    async with Node(ok()) as node:
        transport = Http1Transport()
        response, _ = await _send(transport, node.url + "/_bulk", "POST", parts())
        assert response.status_code == 200
        await transport.aclose()
    request = node.requests[0]
    assert b"transfer-encoding: chunked" in request.lower() and request.endswith(b'{"a":1}')


async def test_refused_connection_is_a_connect_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens once closed
    transport = Http1Transport()
    with pytest.raises(httpx.ConnectError):
        await _send(transport, f"http://127.0.0.1:{port}/")
    await transport.aclose()


async def test_closed_before_any_answer_is_a_remote_protocol_error() -> None:
    async with Node(lambda _: None) as node:
        transport = Http1Transport()
        with pytest.raises(httpx.RemoteProtocolError, match="without sending a response"):
            await _send(transport, node.url + "/", "POST", b"{}")
        await transport.aclose()
    assert len(node.requests) == 1  # it was sent: only a read-only request may be retried


async def test_closed_mid_body_is_a_remote_protocol_error_and_not_reused() -> None:
    cut = b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly part"
    async with Node(lambda _: cut, close_after=True) as node:
        transport = Http1Transport()
        with pytest.raises(httpx.RemoteProtocolError, match="complete message body"):
            await _send(transport, node.url + "/")
        await transport.aclose()


async def test_silent_node_is_a_read_timeout() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(5)
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    transport = Http1Transport()
    timeout = {"connect": 1, "read": 0.2, "write": 1, "pool": 1}
    with pytest.raises(httpx.ReadTimeout):
        await _send(transport, f"http://127.0.0.1:{port}/", timeout=timeout)
    await transport.aclose()
    server.close()


async def test_malformed_answer_is_a_remote_protocol_error() -> None:
    async with Node(lambda _: b"HTTP/1.1 abc nonsense\r\n\r\n") as node:
        transport = Http1Transport()
        with pytest.raises(httpx.RemoteProtocolError, match="invalid answer"):
            await _send(transport, node.url + "/")
        await transport.aclose()


@pytest.mark.parametrize("value", [b"a\r\nx-injected: 1", b"a\nb", b"a\x00b"])
async def test_header_values_that_would_split_the_request_are_refused(value: bytes) -> None:
    async with Node(ok()) as node:
        transport = Http1Transport()
        with pytest.raises(httpx.LocalProtocolError):
            await _send(transport, node.url + "/", headers=[(b"x-a", value)])
        await transport.aclose()
    assert node.requests == []


async def test_a_body_longer_than_its_declared_length_is_refused() -> None:
    async def parts() -> AsyncIterator[bytes]:
        yield b"0123456789"

    async with Node(ok()) as node:
        transport = Http1Transport()
        with pytest.raises(httpx.LocalProtocolError, match="Too much data"):
            await _send(transport, node.url + "/", "POST", parts(), [(b"content-length", b"3")])
        await transport.aclose()


async def test_connections_are_bounded_and_a_waiter_gets_a_freed_one() -> None:
    release = asyncio.Event()

    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while (request := await _read_request(reader)) is not None:
            if b"/slow" in request:
                await release.wait()
            writer.write(ok()(request) or b"")
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(slow, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    transport = Http1Transport(max_connections=1)
    first = asyncio.create_task(_send(transport, url + "/slow"))
    await asyncio.sleep(0.05)
    with pytest.raises(httpx.PoolTimeout):
        await _send(
            transport, url + "/", timeout={"connect": 1, "read": 1, "write": 1, "pool": 0.1}
        )
    second = asyncio.create_task(_send(transport, url + "/"))
    await asyncio.sleep(0.05)
    release.set()
    assert (await first)[1] == b'{"ok":true}' and (await second)[1] == b'{"ok":true}'
    await transport.aclose()
    server.close()


async def test_large_answers_stream_through_with_reading_paused_between() -> None:
    big = bytes(range(256)) * 8192  # 2 MiB, past the high-water mark many times
    async with Node(ok(big)) as node:
        transport = Http1Transport()
        request = httpx.Request("GET", node.url + "/", extensions={"timeout": {"read": 5}})
        response = await transport.handle_async_request(request)
        received = bytearray()
        async for chunk in response.aiter_raw():
            received += chunk
            await asyncio.sleep(0)  # a slow reader
        await response.aclose()
        assert bytes(received) == big
        _, body = await _send(transport, node.url + "/")  # the connection was kept
        assert body == big
        await transport.aclose()
    assert node.connections == 1


async def test_an_answer_given_up_early_closes_its_connection() -> None:
    async with Node(ok(b"x" * 500_000)) as node:
        transport = Http1Transport()
        request = httpx.Request("GET", node.url + "/", extensions={"timeout": {"read": 5}})
        response = await transport.handle_async_request(request)
        await response.aclose()  # body not read
        _, body = await _send(transport, node.url + "/")
        assert len(body) == 500_000
        await transport.aclose()
    assert node.connections == 2


@pytest.mark.parametrize("trusted", [True, False])
async def test_tls_nodes_are_verified_against_the_given_ca(trusted: bool) -> None:
    import ssl

    import trustme

    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_ctx)

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while (request := await _read_request(reader)) is not None:
            writer.write(ok(b"secret")(request) or b"")
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=server_ctx)
    url = f"https://localhost:{server.sockets[0].getsockname()[1]}/"
    client_ctx = ssl.create_default_context()
    if trusted:
        ca.configure_trust(client_ctx)
    transport = Http1Transport(verify=client_ctx)
    if trusted:
        for _ in range(2):
            _, body = await _send(transport, url)
            assert body == b"secret"
    else:
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            await _send(transport, url)
    await transport.aclose()
    server.close()
