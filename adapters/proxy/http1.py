"""HTTP/1.1 to the upstream nodes: keep-alive connections on asyncio, answers parsed by
httptools (llhttp, in C), behind httpx's transport interface.

Written here, not taken from a library, because the proxy adds its client's cost to every
search: on this path httpx's default transport (httpcore, anyio, h11 in pure Python) measured
about 1 ms a request more than this one, and an aiohttp transport about 0.5 ms more
(``benchmarks/bench_proxy_floor.py --stacks``; benchmarks/README.md, "Proxy overhead").

It speaks only what the proxy needs: requests with a body of known length or streamed in
chunks; answers framed by Content-Length, chunked, or the connection's close; interim 1xx
answers skipped; keep-alive reuse; TLS by asyncio.

Failures are httpx's exceptions with httpcore's meanings, which :class:`.forward.Upstream`
relies on to decide what may be retried: ``ConnectError``/``ConnectTimeout`` — nothing was
sent; ``WriteError``/``ReadError``/``RemoteProtocolError`` — the connection broke after the
request was (partly) sent; ``ReadTimeout``/``WriteTimeout``/``PoolTimeout``.
"""

from __future__ import annotations

import asyncio
import re
import ssl
import time
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

import httptools
import httpx

__all__ = ["Http1Transport"]

_Key = tuple[str, str, int]

#: Bytes no header name or value may hold (they would end it and start another).
_UNSAFE = re.compile(rb"[\r\n\0]")

#: Buffered answer bytes above which reading from the node pauses until the relay catches up.
_HIGH_WATER = 256 * 1024


class _HeadersOnly(Exception):
    """Stops the parser after the headers of an answer that has no body (a HEAD's)."""


class _Connection(asyncio.Protocol):
    """One connection to a node; one request at a time (no pipelining)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.lost = False
        self.idle_since = 0.0
        self._waiter: asyncio.Future[None] | None = None
        self._drained: asyncio.Future[None] | None = None
        self._reset(head=False)

    # -- the next answer
    def _reset(self, *, head: bool) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.head = head
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.reason = b""
        self.headers_done = False
        self.done = False
        self.error: httpx.TransportError | None = None
        self.body: deque[bytes] = deque()
        self.buffered = 0
        self.interim = False
        self.keep_alive = False
        self.framed = False  # Content-Length or chunked: a close before the end truncates

    def expect(self, *, head: bool) -> None:
        """Get ready for the answer to a request just about to be written."""
        self._reset(head=head)

    @property
    def reusable(self) -> bool:
        return (
            self.done
            and self.keep_alive
            and self.error is None
            and not self.lost
            and self.transport is not None
            and not self.transport.is_closing()
        )

    # -- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.done or self.error is not None:
            self.keep_alive = False  # bytes nobody asked for: never reuse this connection
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            if isinstance(exc.__context__, _HeadersOnly):
                self.done = True
            else:
                self._fail(httpx.RemoteProtocolError(f"invalid answer from the node: {exc}"))
        except httptools.HttpParserError as exc:
            self._fail(httpx.RemoteProtocolError(f"invalid answer from the node: {exc}"))
        self._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if not self.done and self.error is None:
            if not self.headers_done:
                self.error = httpx.RemoteProtocolError(
                    "Server disconnected without sending a response."
                )
            elif self.framed:
                self.error = httpx.RemoteProtocolError(
                    "peer closed connection without sending complete message body"
                )
            else:
                self.done = True  # close-delimited body: the close is its end
        self._wake()
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    def pause_writing(self) -> None:
        if self._drained is None or self._drained.done():
            self._drained = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    # -- httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_status(self, reason: bytes) -> None:
        self.reason += reason

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            self.interim, self.headers, self.reason = True, [], b""
            return
        self.status = status
        self.headers_done = True
        for name, value in self.headers:
            lower = name.lower()
            if lower == b"content-length" or (
                lower == b"transfer-encoding" and b"chunked" in value.lower()
            ):
                self.framed = True
        self.keep_alive = self.parser.should_keep_alive()
        if self.head or status in (204, 304):
            raise _HeadersOnly

    def on_body(self, body: bytes) -> None:
        self.body.append(body)
        self.buffered += len(body)
        if self.buffered > _HIGH_WATER and self.transport is not None:
            self.transport.pause_reading()

    def on_message_complete(self) -> None:
        if self.interim:  # a 1xx: the real answer follows on the same connection
            self.interim = False
            return
        self.done = True
        self.keep_alive = self.keep_alive and self.parser.should_keep_alive()

    # -- waiting, with httpcore's timeouts
    def _fail(self, error: httpx.TransportError) -> None:
        self.error = error
        if self.transport is not None:
            self.transport.close()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def _wait(self, timeout: float | None, request: httpx.Request) -> None:
        loop = asyncio.get_running_loop()
        self._waiter = waiter = loop.create_future()
        timer = None
        if timeout is not None:
            timer = loop.call_later(timeout, _expire, waiter)
        try:
            await waiter
        except TimeoutError:
            error = httpx.ReadTimeout("timed out waiting for the node", request=request)
            self._fail(error)
            raise error from None
        finally:
            if timer is not None:
                timer.cancel()
            self._waiter = None

    async def read_head(self, timeout: float | None, request: httpx.Request) -> None:
        while not self.headers_done and self.error is None:
            await self._wait(timeout, request)
        if self.error is not None:
            raise self.error

    async def next_chunk(self, timeout: float | None, request: httpx.Request) -> bytes | None:
        """The next piece of the body, or None at its end."""
        while not self.body and not self.done and self.error is None:
            await self._wait(timeout, request)
        if self.body:
            chunk = self.body.popleft()
            self.buffered -= len(chunk)
            if self.buffered <= _HIGH_WATER // 2 and self.transport is not None:
                self.transport.resume_reading()
            return chunk
        if self.error is not None:
            raise self.error
        return None

    async def write(self, data: bytes, timeout: float | None, request: httpx.Request) -> None:
        if self.lost or self.transport is None or self.transport.is_closing():
            raise httpx.WriteError("the connection to the node was closed", request=request)
        self.transport.write(data)
        if self._drained is not None and not self._drained.done():
            try:
                await asyncio.wait_for(asyncio.shield(self._drained), timeout)
            except asyncio.TimeoutError:
                error = httpx.WriteTimeout("timed out writing to the node", request=request)
                self._fail(error)
                raise error from None
            if self.lost:
                raise httpx.WriteError("the connection to the node was closed", request=request)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


class _Body(httpx.AsyncByteStream):
    """An answer's body as received (still compressed, de-chunked); the connection goes back
    to the pool once the body is read to its end, and is closed if it is given up before."""

    def __init__(
        self,
        transport: Http1Transport,
        key: _Key,
        conn: _Connection,
        timeout: float | None,
        request: httpx.Request,
    ) -> None:
        self._transport, self._key, self._conn = transport, key, conn
        self._timeout, self._request = timeout, request
        self._released = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            while (chunk := await self._conn.next_chunk(self._timeout, self._request)) is not None:
                yield chunk
        except BaseException:
            self._release()
            raise
        self._release()

    async def aclose(self) -> None:
        self._release()

    def _release(self) -> None:
        if not self._released:
            self._released = True
            self._transport._release(self._key, self._conn)


class Http1Transport(httpx.AsyncBaseTransport):
    """A keep-alive connection pool per node (``max_keepalive`` idle connections kept for
    ``keepalive_expiry`` seconds), at most ``max_connections`` open at once in all."""

    def __init__(
        self,
        *,
        verify: ssl.SSLContext | bool = True,
        max_connections: int = 256,
        max_keepalive: int = 64,
        keepalive_expiry: float = 5.0,
    ) -> None:
        self._verify = verify
        self._ssl: ssl.SSLContext | None = None
        self._max_connections = max_connections
        self._max_keepalive = max_keepalive
        self._expiry = keepalive_expiry
        self._idle: dict[_Key, list[_Connection]] = {}
        self._open = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._closed = False

    def _ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            if isinstance(self._verify, ssl.SSLContext):
                self._ssl = self._verify
            else:
                self._ssl = ssl.create_default_context()
                if not self._verify:
                    self._ssl.check_hostname = False
                    self._ssl.verify_mode = ssl.CERT_NONE
        return self._ssl

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        scheme = url.scheme
        if scheme not in ("http", "https") or not url.host:
            raise httpx.UnsupportedProtocol(f"unsupported URL [{url}]", request=request)
        key = (scheme, url.host, url.port or (443 if scheme == "https" else 80))
        timeout: dict[str, Any] = request.extensions.get("timeout", {})
        conn = await self._acquire(key, timeout, request)
        try:
            await self._send(conn, request, timeout.get("write"))
            await conn.read_head(timeout.get("read"), request)
        except BaseException:
            conn.close()
            self._release(key, conn)
            raise
        return httpx.Response(
            conn.status,
            headers=conn.headers,
            stream=_Body(self, key, conn, timeout.get("read"), request),
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": conn.reason},
        )

    async def _send(self, conn: _Connection, request: httpx.Request, timeout: float | None) -> None:
        head = [request.method.encode("ascii"), b" ", request.url.raw_path, b" HTTP/1.1\r\n"]
        length: int | None = None
        chunked = False
        for name, value in request.headers.raw:
            if _UNSAFE.search(name) or _UNSAFE.search(value):
                raise httpx.LocalProtocolError("illegal header", request=request)
            lower = name.lower()
            if lower == b"content-length":
                length = int(value) if value.isdigit() else -1
            elif lower == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            head += [name, b": ", value, b"\r\n"]
        head.append(b"\r\n")
        conn.expect(head=request.method == "HEAD")
        try:
            body = request.content
        except httpx.RequestNotRead:  # streamed, framed as httpx declared it
            if length is None and not chunked:
                raise httpx.LocalProtocolError(
                    "a streamed body needs a length or chunks", request=request
                ) from None
            await conn.write(b"".join(head), timeout, request)
            sent = 0
            async for chunk in request.stream:  # type: ignore[union-attr]
                sent += len(chunk)
                if length is not None and sent > length:
                    raise httpx.LocalProtocolError(
                        "Too much data for declared Content-Length", request=request
                    ) from None
                if chunk:
                    framed = b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk
                    await conn.write(framed, timeout, request)
            if chunked:
                await conn.write(b"0\r\n\r\n", timeout, request)
            elif sent != length:
                raise httpx.LocalProtocolError(
                    "Too little data for declared Content-Length", request=request
                ) from None
            return
        if (length is not None and length != len(body)) or (chunked and body):
            raise httpx.LocalProtocolError(
                "the body does not match its declared framing", request=request
            )
        head.append(body)
        await conn.write(b"".join(head), timeout, request)

    async def _acquire(
        self, key: _Key, timeout: dict[str, Any], request: httpx.Request
    ) -> _Connection:
        """An idle connection to the node, or a new one while fewer than ``max_connections``
        are open (an idle one to another node is closed to make room); else wait for a change
        up to the pool timeout."""
        loop = asyncio.get_running_loop()
        pool_timeout = timeout.get("pool")
        deadline = None if pool_timeout is None else loop.time() + pool_timeout
        while True:
            if self._closed:
                raise httpx.ConnectError("the transport is closed", request=request)
            conn = self._take_idle(key)
            if conn is not None:
                return conn
            if self._open < self._max_connections or self._evict_idle():
                self._open += 1
                try:
                    return await self._connect(key, timeout.get("connect"), request)
                except BaseException:
                    self._open -= 1
                    self._wake_one()
                    raise
            waiter: asyncio.Future[None] = loop.create_future()
            self._waiters.append(waiter)
            try:
                left = None if deadline is None else max(0.0, deadline - loop.time())
                await asyncio.wait_for(waiter, left)
            except asyncio.TimeoutError:
                raise httpx.PoolTimeout("no connection to the node free", request=request) from None
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)

    def _take_idle(self, key: _Key) -> _Connection | None:
        idle = self._idle.get(key)
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            if conn.reusable and now - conn.idle_since < self._expiry:
                return conn
            conn.close()
            self._open -= 1
        return None

    def _evict_idle(self) -> bool:
        for idle in self._idle.values():
            if idle:
                idle.pop(0).close()
                self._open -= 1
                return True
        return False

    def _wake_one(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def _connect(
        self, key: _Key, timeout: float | None, request: httpx.Request
    ) -> _Connection:
        scheme, host, port = key
        loop = asyncio.get_running_loop()
        tls = self._ssl_context() if scheme == "https" else None
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(
                    _Connection, host, port, ssl=tls, server_hostname=host if tls else None
                ),
                timeout,
            )
        except asyncio.TimeoutError:
            raise httpx.ConnectTimeout(
                f"connecting to {host}:{port} timed out", request=request
            ) from None
        except (OSError, ssl.SSLError) as exc:
            raise httpx.ConnectError(f"{type(exc).__name__}: {exc}", request=request) from None
        return conn

    def _release(self, key: _Key, conn: _Connection) -> None:
        """Back to the pool when reusable, else closed; either way a waiter is told."""
        if conn.reusable and not self._closed:
            idle = self._idle.setdefault(key, [])
            if len(idle) < self._max_keepalive:
                conn.idle_since = time.monotonic()
                idle.append(conn)
                self._wake_one()
                return
        conn.close()
        self._open -= 1
        self._wake_one()

    async def aclose(self) -> None:
        self._closed = True
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()
