"""Bytes to and from the upstream engine: its nodes, one connection pool, headers, timeouts, TLS.

Transport only: nothing here knows what a search is. Connection failures become
:class:`UpstreamError` (502; 504 on timeouts); upstream responses, errors included, are
returned as they came.
"""

from __future__ import annotations

import asyncio
import math
import ssl
import time
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import httpx

from crossrank.adapters.proxy.errors import BadRequest, UpstreamError
from crossrank.adapters.proxy.http1 import Http1Transport
from crossrank.adapters.proxy.pool import UpstreamNode, UpstreamPool, sniffed_nodes
from crossrank.adapters.proxy.settings import ProxySettings
from crossrank.reranker.errors import MalformedInputError
from crossrank.reranker.jsonio import loads

__all__ = ["HOP_BY_HOP", "Upstream", "client_headers", "response_headers", "ssl_context"]

#: Never forwarded in either direction (RFC 9110 §7.6.1), plus what the proxy sets itself.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"host",
    }
)

Headers = list[tuple[bytes, bytes]]


def ssl_context(settings: ProxySettings) -> ssl.SSLContext | bool:
    """TLS for the upstream: verification on/off, a CA file, a client certificate."""
    if not any(url.startswith("https://") for url in settings.upstream):
        return True
    ctx = ssl.create_default_context(cafile=settings.ca_file)
    if not settings.verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if settings.client_cert:
        ctx.load_cert_chain(settings.client_cert, settings.client_key)
    return ctx


def client_headers(headers: Iterable[tuple[bytes, bytes]], drop: Iterable[bytes] = ()) -> Headers:
    """The client's headers to send upstream: credentials included, hop-by-hop removed."""
    skip = HOP_BY_HOP | {d.lower() for d in drop}
    return [(k, v) for k, v in headers if k.lower() not in skip]


def response_headers(response: httpx.Response, *, raw: bool) -> Headers:
    """The upstream's response headers for the client.

    ``raw``: the body is relayed as received (length and encoding kept); otherwise the
    proxy writes a new body and sets those itself.
    """
    skip = HOP_BY_HOP if raw else HOP_BY_HOP | {b"content-length", b"content-encoding"}
    return [(k, v) for k, v in response.headers.raw if k.lower() not in skip]


#: Failures after which nothing of the request reached the node: any request may try another.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout)
#: Failures of a connection that was sent on: only a read-only request (a search) may retry.
_DROPPED = (httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError)


class Upstream:
    """The engine behind the proxy: one or more nodes, one HTTP connection pool.

    Requests go through an httpx transport directly (the client layer's redirects, cookies
    and auth flows cost ~0.7 ms a request and are not wanted here): :class:`.http1.Http1Transport`
    unless one is given (tests give ``httpx.MockTransport``). A node that cannot be
    reached is marked dead in the :class:`~.pool.UpstreamPool` and the request tried on
    another: any request that failed to connect, and a ``retry``-safe one (a search) whose
    connection broke after it was sent. Optional sniffing (``_nodes/_all/http``) at start and
    after a node failure adds the cluster's other HTTP nodes.
    """

    def __init__(
        self,
        settings: ProxySettings,
        transport: httpx.AsyncBaseTransport | None = None,
        on_failure: Callable[[str, str], None] | None = None,
    ) -> None:
        self.settings = settings
        self.pool = UpstreamPool(
            settings.upstream, backoff=settings.dead_backoff, max_backoff=settings.max_dead_backoff
        )
        self._auth = settings.upstream_auth.encode() if settings.upstream_auth else None
        self._timeout = {
            "connect": settings.connect_timeout,
            "read": settings.upstream_timeout,
            "write": settings.upstream_timeout,
            "pool": settings.upstream_timeout,
        }
        self.transport = transport or Http1Transport(
            verify=ssl_context(settings), max_connections=256, max_keepalive=64
        )
        self._on_failure = on_failure
        self._retry_status = frozenset(settings.retry_on_status)
        self._sniffing: asyncio.Task[list[str]] | None = None
        self._last_sniff = -math.inf

    @staticmethod
    def target(raw_path: str, query: bytes | str = b"") -> bytes:
        """The request target of a (checked, origin-form) path and its query; the node's
        scheme, host and port are added by :meth:`url` (which refuses a target that cannot
        form a URL: 400, before anything is sent)."""
        query = query.encode("latin-1") if isinstance(query, str) else query
        return raw_path.encode("latin-1") + (b"?" + query if query else b"")

    @staticmethod
    def url(node: UpstreamNode, target: bytes) -> httpx.URL:
        """``target`` on ``node``: built from parts, so the host is the node's whatever the
        target holds."""
        try:
            return node.url_for(target)
        except (httpx.InvalidURL, UnicodeError) as exc:
            raise BadRequest(f"invalid request target: {exc}") from None

    async def send(
        self,
        method: str,
        target: bytes,
        headers: Headers,
        content: bytes | AsyncIterator[bytes] | None,
        *,
        stream: bool,
        retry: bool = False,
    ) -> httpx.Response:
        """Send one request; ``stream``: the body is left unread (relay it, then close).

        ``retry``: the request only reads (a search), so a connection that broke after it
        was sent, or an answer with a status of ``retry_on_status``, may be retried on another
        node (the last answer is returned when every attempt gave one). The upstream credentials
        (``upstream_auth``) are added only when the client sent no ``Authorization`` of its
        own: a client is never upgraded to the proxy's identity.
        """
        if self._auth is not None and header(headers, b"authorization") is None:
            headers = [*headers, (b"authorization", self._auth)]
        attempts = 1 + min(self.settings.max_retries, self.pool.size - 1)
        for attempt in range(attempts):
            node = self.pool.get()
            request = httpx.Request(
                method,
                self.url(node, target),
                headers=headers,
                content=content,
                extensions={"timeout": self._timeout},
            )
            try:
                response = await self.transport.handle_async_request(request)
                if not stream:
                    try:
                        await response.aread()
                    finally:
                        await response.aclose()
            except httpx.TimeoutException as exc:
                if isinstance(exc, httpx.ConnectTimeout) and attempt + 1 < attempts:
                    self._failed(node, exc)
                    continue
                raise UpstreamError(
                    f"upstream timed out: {type(exc).__name__}",
                    kind="crossrank_upstream_timeout_exception",
                    status=504,
                ) from exc
            except httpx.HTTPError as exc:
                if isinstance(exc, (*_NOT_SENT, *_DROPPED)):
                    self._failed(node, exc)
                    resend = isinstance(exc, _NOT_SENT) or (retry and not _is_stream(content))
                    if resend and attempt + 1 < attempts:
                        continue
                raise UpstreamError(f"upstream unreachable: {type(exc).__name__}") from exc
            self.pool.mark_live(node)  # it answered: alive, whatever the status
            if retry and attempt + 1 < attempts and response.status_code in self._retry_status:
                await response.aclose()
                continue
            return response
        raise AssertionError("unreachable")  # pragma: no cover

    def _failed(self, node: UpstreamNode, exc: Exception) -> None:
        self.pool.mark_dead(node)
        if self._on_failure is not None:
            self._on_failure(node.label, type(exc).__name__)
        if self.settings.sniff_on_node_failure:
            self.start_sniff()

    def start_sniff(self) -> None:
        """Sniff in the background, at most once per ``sniff_interval`` seconds."""
        now = time.monotonic()
        if self._sniffing is not None and not self._sniffing.done():
            return
        if now - self._last_sniff < self.settings.sniff_interval:
            return
        self._last_sniff = now
        self._sniffing = asyncio.get_running_loop().create_task(self.sniff())

    async def sniff(self) -> list[str]:
        """Ask the cluster for its HTTP nodes and make them the pool; the labels added.
        A failed sniff changes nothing (it is logged by the caller's metrics)."""
        try:
            response = await self.send(
                "GET",
                b"/_nodes/_all/http",
                [(b"accept", b"application/json")],
                None,
                stream=False,
                retry=True,
            )
        except UpstreamError:
            return []
        if response.status_code != 200:
            return []
        try:
            answer = loads(response.content, max_depth=None, what="nodes info")
        except MalformedInputError:
            return []
        found = sniffed_nodes(answer, self.pool.seeds[0])
        return self.pool.update(found) if found else []

    async def ping(self) -> int:
        """Status of ``GET /`` on the upstream (any answer means reachable)."""
        response = await self.send("GET", b"/", [], None, stream=False, retry=True)
        return response.status_code

    async def aclose(self) -> None:
        if self._sniffing is not None:
            self._sniffing.cancel()
        await self.transport.aclose()


def _is_stream(content: object) -> bool:
    return content is not None and not isinstance(content, bytes)


#: Answers up to this long (by their Content-Length) are read whole and sent in one piece.
_WHOLE_BYTES = 64 * 1024


async def relay(response: httpx.Response) -> bytes | AsyncIterator[bytes]:
    """The upstream body as received (still compressed), for the client: read whole when it
    is short (one write to the client, not a stream), else streamed; closed either way."""
    length = response.headers.get("content-length", "")
    if length.isdigit() and int(length) <= _WHOLE_BYTES:
        try:
            return b"".join([chunk async for chunk in response.aiter_raw()])
        finally:
            await response.aclose()
    return relay_raw(response)


async def relay_raw(response: httpx.Response) -> AsyncIterator[bytes]:
    """The upstream body as received (still compressed), closing the response at the end."""
    try:
        async for chunk in response.aiter_raw():
            yield chunk
    finally:
        await response.aclose()


def header(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    """The first value of header ``name`` (lower case), or None."""
    for key, value in headers:
        if key.lower() == name:
            return value
    return None


def as_text(value: Any) -> str:
    return value.decode("latin-1") if isinstance(value, bytes) else str(value)
