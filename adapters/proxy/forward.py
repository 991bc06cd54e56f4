"""Bytes to and from the upstream engine: one httpx client, headers, timeouts, TLS.

Transport only: nothing here knows what a search is. Connection failures become
:class:`UpstreamError` (502; 504 on timeouts); upstream responses, errors included, are
returned as they came.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Iterable
from typing import Any

import httpx

from crossrank.adapters.proxy.errors import BadRequest, UpstreamError
from crossrank.adapters.proxy.settings import ProxySettings

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
    if not settings.upstream.startswith("https://"):  # credentials were moved out of it
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


class Upstream:
    """The engine behind the proxy."""

    def __init__(
        self, settings: ProxySettings, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self.base = httpx.URL(settings.upstream)
        self._prefix = self.base.raw_path.split(b"?")[0].rstrip(b"/")
        self._auth = settings.upstream_auth.encode() if settings.upstream_auth else None
        timeout = httpx.Timeout(settings.upstream_timeout, connect=settings.connect_timeout)
        self.client = httpx.AsyncClient(
            verify=ssl_context(settings),
            timeout=timeout,
            transport=transport,
            follow_redirects=False,
            limits=httpx.Limits(max_connections=256, max_keepalive_connections=64),
            trust_env=False,
        )

    def url(self, raw_path: str, query: bytes | str = b"") -> httpx.URL:
        """The upstream URL of a (checked, origin-form) path: built from parts, so the scheme,
        host and port are always the upstream's, whatever the path holds."""
        query = query.encode("latin-1") if isinstance(query, str) else query
        target = self._prefix + raw_path.encode("latin-1") + (b"?" + query if query else b"")
        try:
            return self.base.copy_with(raw_path=target)
        except (httpx.InvalidURL, UnicodeError) as exc:
            raise BadRequest(f"invalid request target: {exc}") from None

    async def send(
        self,
        method: str,
        url: httpx.URL,
        headers: Headers,
        content: bytes | AsyncIterator[bytes] | None,
        *,
        stream: bool,
    ) -> httpx.Response:
        """Send one request; ``stream``: the body is left unread (relay it, then close).

        The upstream credentials (``upstream_auth``) are added only when the client sent no
        ``Authorization`` of its own: a client is never upgraded to the proxy's identity.
        """
        if self._auth is not None and header(headers, b"authorization") is None:
            headers = [*headers, (b"authorization", self._auth)]
        request = self.client.build_request(method, url, headers=headers, content=content)
        try:
            return await self.client.send(request, stream=stream)
        except httpx.TimeoutException as exc:
            raise UpstreamError(
                f"upstream timed out: {type(exc).__name__}",
                kind="crossrank_upstream_timeout_exception",
                status=504,
            ) from exc
        except httpx.HTTPError as exc:
            raise UpstreamError(f"upstream unreachable: {type(exc).__name__}") from exc

    async def ping(self) -> int:
        """Status of ``GET /`` on the upstream (any answer means reachable)."""
        response = await self.send("GET", self.url("/"), [], None, stream=False)
        return response.status_code

    async def aclose(self) -> None:
        await self.client.aclose()


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
