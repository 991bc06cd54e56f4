"""The proxy as a plain ASGI application; the middleware stack is assembled in
:func:`create_app`, and only there.

Requests are routed by :func:`.routing.match_route`: ``_search``/``_msearch`` go to the
:class:`.search.SearchHandler`, ``/_crossrank/*`` are answered here (``health``, ``ready``,
``metrics``), everything else is streamed to the upstream and back untouched.
"""

from __future__ import annotations

import hmac
import json
import logging
import zlib
from typing import Any

import httpx
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from crossrank.reranker.errors import CrossrankError

from .control import ConfigResolver
from .errors import BadRequest, BodyTooLarge, ProxyError, Unauthorized, error_for
from .forward import Headers, Upstream, client_headers, header, relay_raw, response_headers
from .metrics import ProxyMetrics, Timer, log_event
from .routing import OWN_PREFIX, match_route
from .scorers import ScorerFactory, Scorers, load_factory
from .search import Incoming, Outgoing, SearchHandler
from .settings import ProxySettings

__all__ = ["AccessLog", "ProxyApp", "TokenGuard", "create_app"]

_JSON = [(b"content-type", b"application/json; charset=UTF-8")]
_PROBES = (f"{OWN_PREFIX}health", f"{OWN_PREFIX}ready")


def _json_response(status: int, body: Any) -> Outgoing:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return Outgoing(status, [*_JSON, (b"content-length", str(len(data)).encode())], data)


async def _send(send: Send, out: Outgoing, head: bool = False) -> None:
    await send({"type": "http.response.start", "status": out.status, "headers": out.headers})
    if isinstance(out.body, bytes):
        await send({"type": "http.response.body", "body": b"" if head else out.body})
        return
    async for chunk in out.body:
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await send({"type": "http.response.body", "body": b""})


def _gunzip(data: bytes, limit: int) -> bytes:
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(data, limit + 1)
    except zlib.error as exc:
        raise BadRequest(f"cannot decompress the request body: {exc}") from None
    if len(out) > limit or inflater.unconsumed_tail:
        raise BodyTooLarge(f"request body is larger than the limit of [{limit}] bytes")
    return out


class ProxyApp:
    """The proxy's core: lifespan, own endpoints, search handling and forwarding."""

    def __init__(
        self,
        settings: ProxySettings,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        scorer_factory: ScorerFactory | None = None,
    ) -> None:
        self.settings = settings
        self.upstream = Upstream(settings, transport)
        self.scorers = Scorers(scorer_factory or load_factory(settings.scorer_factory))
        self.metrics = ProxyMetrics(self.scorers.cache_hits)
        self.resolver = ConfigResolver(
            settings.rerank, settings.rule_configs(), settings.allowed_models()
        )
        self.search = SearchHandler(
            settings, self.upstream, self.resolver, self.scorers, self.metrics
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            info: dict[str, Any] = scope.setdefault("crossrank", {})
            try:
                out = await self._http(scope, receive, info)
            except (CrossrankError, Exception) as exc:
                if not isinstance(exc, CrossrankError):
                    log_event("unhandled error", logging.ERROR, error=repr(exc))
                status, body = error_for(exc)
                out = _json_response(status, body)
            await _send(send, out, head=scope["method"] == "HEAD")

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                if self.settings.preload and self.settings.rerank.enabled:
                    try:
                        await self.scorers.get(self.settings.rerank)
                    except Exception as exc:  # requests fall back until it loads
                        log_event("scorer preload failed", logging.ERROR, error=repr(exc))
                log_event("proxy ready", upstream=self.settings.upstream)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.upstream.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _read(self, scope: Scope, receive: Receive) -> bytes:
        limit = self.settings.max_body_bytes
        chunks, size = [], 0
        while True:
            message = await receive()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge(f"request body is larger than the limit of [{limit}] bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _http(self, scope: Scope, receive: Receive, info: dict[str, Any]) -> Outgoing:
        method: str = scope["method"]
        raw_path = scope.get("raw_path", scope["path"].encode()).decode("latin-1").split("?")[0]
        route = match_route(method, raw_path)
        info["route"] = route.kind
        headers: Headers = list(scope["headers"])
        length = header(headers, b"content-length")
        if length is not None and length.isdigit() and int(length) > self.settings.max_body_bytes:
            limit = self.settings.max_body_bytes
            raise BodyTooLarge(f"request body is larger than the limit of [{limit}] bytes")
        if route.kind == "own":
            return await self._own(route.name)
        query: bytes = scope.get("query_string", b"")
        if route.kind == "forward":
            url = self.upstream.url(raw_path, query)
            chunked = header(headers, b"transfer-encoding") is not None
            content = _stream(receive) if chunked or length not in (None, b"0") else None
            response = await self.upstream.send(
                method, url, client_headers(headers), content, stream=True
            )
            return Outgoing(
                response.status_code, response_headers(response, raw=True), relay_raw(response)
            )
        raw_body = await self._read(scope, receive)
        body = raw_body
        if (header(headers, b"content-encoding") or b"").lower() == b"gzip" and raw_body:
            body = _gunzip(raw_body, self.settings.max_body_bytes)
        out = await self.search.handle(
            Incoming(method, raw_path, query, headers, raw_body, body), route
        )
        info.update(out.info)
        return out

    async def _own(self, name: str) -> Outgoing:
        if name == "health":
            return _json_response(200, {"status": "ok"})
        if name == "ready":
            try:
                status = await self.upstream.ping()
            except ProxyError as exc:
                return _json_response(503, {"status": "unavailable", "reason": exc.reason})
            return _json_response(200, {"status": "ready", "upstream_status": status})
        if name == "metrics":
            data = self.metrics.render()
            return Outgoing(
                200,
                [
                    (b"content-type", b"text/plain; version=0.0.4; charset=utf-8"),
                    (b"content-length", str(len(data)).encode()),
                ],
                data,
            )
        raise ProxyError(
            f"no such crossrank endpoint [{name}]", kind="resource_not_found_exception", status=404
        )


async def _stream(receive: Receive) -> Any:
    while True:
        message: Message = await receive()
        if message["type"] == "http.disconnect":
            return
        yield message.get("body", b"")
        if not message.get("more_body", False):
            return


class TokenGuard:
    """Require the proxy token in ``header`` (then strip it); probes are exempt."""

    def __init__(self, app: ASGIApp, *, token: str | None, header: str) -> None:
        self.app, self.token, self.header = app, token, header.lower().encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.token is None:
            await self.app(scope, receive, send)
            return
        given = header(scope["headers"], self.header)
        scope["headers"] = [(k, v) for k, v in scope["headers"] if k.lower() != self.header]
        if scope["path"] in _PROBES or (
            given is not None and hmac.compare_digest(given, self.token.encode())
        ):
            await self.app(scope, receive, send)
            return
        status, body = error_for(Unauthorized("missing or invalid crossrank proxy token"))
        out = _json_response(status, body)
        await _send(send, out, head=scope["method"] == "HEAD")


class AccessLog:
    """One JSON log line and one request count per request. Never logs headers or bodies."""

    def __init__(self, app: ASGIApp, *, metrics: ProxyMetrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        timer, status = Timer(), 0

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            info = scope.get("crossrank", {})
            route = info.get("route", "unknown")
            self.metrics.requests.labels(route, str(status)).inc()
            log_event(
                "request",
                method=scope["method"],
                path=scope["path"],
                status=status,
                ms=round(timer.seconds * 1000, 2),
                **info,
            )


def create_app(
    settings: ProxySettings,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    scorer_factory: ScorerFactory | None = None,
) -> ASGIApp:
    """The proxy with its middleware, outermost first: access log, token guard, core."""
    core = ProxyApp(settings, transport=transport, scorer_factory=scorer_factory)
    app: ASGIApp = TokenGuard(core, token=settings.token, header=settings.token_header)
    app = AccessLog(app, metrics=core.metrics)
    return app
