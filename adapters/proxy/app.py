"""The proxy as a plain ASGI application; the middleware stack is assembled in
:func:`create_app`, and only there.

Requests are routed by :func:`.routing.match_route`: ``_search``/``_msearch`` go to the
:class:`.search.SearchHandler`, ``/_crossrank/*`` are answered here (``health``, ``ready``,
``metrics``), everything else is streamed to the upstream and back untouched.
"""

from __future__ import annotations

import hmac
import logging
import traceback
import zlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import httpx
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from crossrank.adapters.proxy.control import ConfigResolver
from crossrank.adapters.proxy.errors import (
    BadRequest,
    BodyTooLarge,
    ProxyError,
    Unauthorized,
    error_for,
)
from crossrank.adapters.proxy.forward import (
    Headers,
    Upstream,
    client_headers,
    header,
    relay,
    response_headers,
)
from crossrank.adapters.proxy.metrics import ProxyMetrics, Timer, log_event, logger
from crossrank.adapters.proxy.routing import OWN_PREFIX, PROBES, Route, match_route
from crossrank.adapters.proxy.scorers import ScorerFactory, Scorers, load_factory
from crossrank.adapters.proxy.search import Incoming, Outgoing, SearchHandler
from crossrank.adapters.proxy.settings import ProxySettings
from crossrank.reranker.config import RerankConfig
from crossrank.reranker.errors import CrossrankError, MalformedInputError
from crossrank.reranker.jsonio import dumps, loads, surely_within

__all__ = ["AccessLog", "ProxyApp", "TokenGuard", "create_app"]

_JSON = [(b"content-type", b"application/json; charset=UTF-8")]


def _json_response(status: int, body: Any) -> Outgoing:
    data = body if isinstance(body, bytes) else dumps(body)
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
        self.scorers = Scorers(scorer_factory or load_factory(settings.scorer_factory))
        self.metrics = ProxyMetrics(self.scorers.cache_hits, self.scorers.score_cache_counts)
        self.upstream = Upstream(settings, transport, on_failure=self._node_failed)
        self.resolver = ConfigResolver(
            settings.rerank, settings.rule_configs(), settings.allowed_models()
        )
        self.search = SearchHandler(
            settings, self.upstream, self.resolver, self.scorers, self.metrics
        )

    def _node_failed(self, node: str, error: str) -> None:
        self.metrics.upstream_failures.labels(node, error).inc()
        log_event("upstream node failed", logging.WARNING, node=node, error=error)

    def configured(self) -> list[RerankConfig]:
        """The scorer configurations this proxy is set up to rerank with."""
        configs = [self.resolver.base, *(config for _, config in self.resolver.rules)]
        return [c for c in configs if c.enabled]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            info: dict[str, Any] = scope.setdefault("crossrank", {})
            try:
                out = await self._http(scope, receive, info)
            except Exception as exc:
                if not isinstance(exc, CrossrankError):  # where, not what: an exception's
                    frame = traceback.extract_tb(exc.__traceback__)[-1]  # text may hold data
                    log_event(
                        "unhandled error",
                        logging.ERROR,
                        error=type(exc).__name__,
                        at=f"{Path(frame.filename).name}:{frame.lineno} in {frame.name}",
                    )
                status, body = error_for(exc)
                out = _json_response(status, body)
            await _send(send, out, head=scope["method"] == "HEAD")

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                if self.settings.sniff_on_start:
                    added = await self.upstream.sniff()
                    log_event("sniffed upstream nodes", added=added)
                if self.settings.preload:
                    await self.scorers.preload(self.configured())
                log_event("proxy ready", upstream=list(self.settings.upstream))
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.upstream.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _read(self, receive: Receive) -> bytes:
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
        route = route_of(scope)
        raw_path = target_of(scope)
        info["route"] = route.kind
        headers: Headers = list(scope["headers"])
        length = header(headers, b"content-length")
        limit = self.settings.max_body_bytes
        if length is not None and length.isdigit() and int(length) > limit:
            raise BodyTooLarge(f"request body is larger than the limit of [{limit}] bytes")
        if route.kind == "own":
            return await self._own(method, route.name)
        query: bytes = scope.get("query_string", b"")
        if route.kind == "forward":
            return await self._forward(method, raw_path, query, headers, length, receive)
        raw_body = await self._read(receive)
        body = raw_body
        if (header(headers, b"content-encoding") or b"").lower() == b"gzip" and raw_body:
            body = _gunzip(raw_body, self.settings.max_body_bytes)
        out = await self.search.handle(
            Incoming(method, raw_path, query, headers, raw_body, body), route
        )
        info.update(out.info)
        return out

    async def _forward(
        self,
        method: str,
        raw_path: str,
        query: bytes,
        headers: Headers,
        length: bytes | None,
        receive: Receive,
    ) -> Outgoing:
        """Stream a request to the upstream and its answer back, untouched.

        A small JSON body (``check_forward_bytes``) is read first and refused when nested
        deeper than ``max_json_depth``: the engines crash on deep bool queries.
        """
        target = self.upstream.target(raw_path, query)
        chunked = header(headers, b"transfer-encoding") is not None
        content: bytes | AsyncIterator[bytes] | None = None
        if chunked or length not in (None, b"0"):
            content = _stream(receive)
            if not chunked and length is not None and length.isdigit():
                if int(length) <= self.settings.check_forward_bytes and _is_json(headers):
                    content = await self._read(receive)
                    _check_depth(content, self.settings.max_json_depth)
        response = await self.upstream.send(
            method,
            target,
            client_headers(headers),
            content,
            stream=True,
            retry=method in ("GET", "HEAD"),
        )
        return Outgoing(
            response.status_code, response_headers(response, raw=True), await relay(response)
        )

    async def _own(self, method: str, name: str) -> Outgoing:
        if name not in ("health", "ready", "metrics"):
            raise ProxyError(
                f"no such crossrank endpoint [{name}]",
                kind="resource_not_found_exception",
                status=404,
            )
        if method not in ("GET", "HEAD"):
            raise ProxyError(
                f"Incorrect HTTP method for uri [{OWN_PREFIX}{name}] and method [{method}], "
                "allowed: [GET, HEAD]",
                kind="method_not_allowed_exception",
                status=405,
            )
        if name == "health":
            return _json_response(200, {"status": "ok"})
        if name == "ready":
            return await self._ready()
        data = self.metrics.render()
        return Outgoing(
            200,
            [
                (b"content-type", b"text/plain; version=0.0.4; charset=utf-8"),
                (b"content-length", str(len(data)).encode()),
            ],
            data,
        )

    async def _ready(self) -> Outgoing:
        """Ready when the upstream answers and every configured model can score; the
        upstream nodes by state (a node is dead from its failure to its next answer)."""
        try:
            status = await self.upstream.ping()
        except ProxyError as exc:
            down = {"status": "unavailable", "reason": exc.reason}
            return _json_response(503, {**down, "nodes": self.upstream.pool.status()})
        models = await self.scorers.readiness(self.configured())
        body: dict[str, Any] = {
            "status": "ready",
            "upstream_status": status,
            "nodes": self.upstream.pool.status(),
            "models": models,
        }
        if models["failed"] or models["loading"]:
            body["status"] = "unavailable"
            body["reason"] = (
                f"{models['failed']} configured model(s) cannot score and "
                f"{models['loading']} are still loading (details in the proxy's log)"
            )
            return _json_response(503, body)
        return _json_response(200, body)


def _is_json(headers: Headers) -> bool:
    kind = (header(headers, b"content-type") or b"application/json").lower()
    return b"json" in kind and b"ndjson" not in kind


def _check_depth(data: bytes, limit: int) -> None:
    """400 for a JSON body nested deeper than ``limit``; anything unparsable is the engine's
    to judge (the engines accept some lenient JSON). A body with no more brackets than
    ``limit`` in all cannot nest deeper, and is not parsed."""
    if surely_within(data, limit):
        return
    try:
        loads(data, max_depth=limit)
    except MalformedInputError as exc:
        if "nesting depth" in str(exc):
            raise BadRequest(str(exc), kind="x_content_parse_exception") from None


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
        if _is_probe(scope) or (
            given is not None and hmac.compare_digest(given, self.token.encode())
        ):
            await self.app(scope, receive, send)
            return
        status, body = error_for(Unauthorized("missing or invalid crossrank proxy token"))
        out = _json_response(status, body)
        await _send(send, out, head=scope["method"] == "HEAD")


def target_of(scope: Scope) -> str:
    """The request target's path as sent (percent-encoded), without the query."""
    raw = scope.get("raw_path") or scope["path"].encode("utf-8", "surrogateescape")
    return bytes(raw).decode("latin-1").split("?")[0]


def route_of(scope: Scope) -> Route:
    """The request's route, decided once per request (400 for a bad target)."""
    info: dict[str, Any] = scope.setdefault("crossrank", {})
    route = info.get("_route")
    if route is None:
        route = info["_route"] = match_route(scope["method"], target_of(scope))
    return cast(Route, route)


def _is_probe(scope: Scope) -> bool:
    """A token-exempt probe, read exactly as the router reads it."""
    try:
        route = route_of(scope)
    except ProxyError:
        return False
    return route.kind == "own" and route.name in PROBES and scope["method"] in ("GET", "HEAD")


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
            info = {k: v for k, v in scope.get("crossrank", {}).items() if k != "_route"}
            route = info.get("route", "unknown")
            self.metrics.requests.labels(route, str(status)).inc()
            if logger.isEnabledFor(logging.INFO):
                log_event(
                    "request",
                    method=scope["method"],
                    path=target_of(scope)[:200],
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
