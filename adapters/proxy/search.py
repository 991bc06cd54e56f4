"""The async shell of a reranked ``_search`` / ``_msearch``: bytes in, bytes out.

Decisions live elsewhere: per-request control in :mod:`.control`, planning and rewriting in
the core flows (``search_flow`` / ``msearch_flow`` driven by ``run_async``), response
filtering in :mod:`.filtering`. This module parses, moves bytes to the upstream through an
engine callable, and serialises. When the client's ``filter_path`` or ``_source`` would hide
what scoring needs, the engine is asked for everything and the client's filters are applied
to the rewritten response.
"""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode

import httpx

from crossrank.adapters.core.filtering import filter_path
from crossrank.adapters.core.flow import (
    PASSTHROUGH,
    EngineCall,
    msearch_flow,
    parse_msearch,
    run_async,
    search_flow,
)
from crossrank.adapters.proxy.control import ConfigResolver, Control, extract_control
from crossrank.adapters.proxy.errors import BadRequest
from crossrank.adapters.proxy.forward import (
    Headers,
    Upstream,
    client_headers,
    header,
    relay,
    response_headers,
)
from crossrank.adapters.proxy.metrics import ProxyMetrics, Timer
from crossrank.adapters.proxy.routing import Route
from crossrank.adapters.proxy.scorers import BudgetScorer, Scorers
from crossrank.adapters.proxy.settings import ProxySettings, scorer_key
from crossrank.reranker.config import RerankConfig
from crossrank.reranker.errors import MalformedInputError, RerankOptionsError
from crossrank.reranker.jsonio import dumps, dumps_lines, loads, surely_within

__all__ = ["Incoming", "Outgoing", "SearchHandler"]

T = TypeVar("T")
FALLBACK_HEADER = b"x-crossrank-fallback"

_NON_JSON = (b"yaml", b"cbor", b"smile")


@dataclass
class Incoming:
    """One client request, its body read (``body`` decompressed, ``raw_body`` as sent)."""

    method: str
    raw_path: str
    query: bytes
    headers: Headers
    raw_body: bytes
    body: bytes


@dataclass
class Outgoing:
    """A response for the client; ``body`` bytes or a stream; ``info`` for the access log."""

    status: int
    headers: Headers
    body: bytes | AsyncIterator[bytes]
    info: dict[str, Any] = field(default_factory=dict)


class _Reply(Exception):
    """The upstream answered in a way the flow cannot use: return it as it is."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response


#: Request headers not sent with a rewritten search: the body is new, and the answer is
#: wanted uncompressed (the client's ``Accept-Encoding`` is honoured on the way back).
_REWRITTEN_DROP = (b"content-length", b"content-encoding", b"accept-encoding")

#: Bodies larger than this are parsed in a worker thread, so the event loop keeps serving.
_OFF_LOOP_BYTES = 256 * 1024


async def _off_loop(data: bytes, work: Callable[[bytes], T]) -> T:
    """``work(data)``, in a worker thread when ``data`` is large."""
    if len(data) > _OFF_LOOP_BYTES:
        return await asyncio.to_thread(work, data)
    return work(data)


def _plain(body: bytes, depth: int) -> bool:
    """True when ``body`` can neither ask for reranking (no ``ext``, no ``retriever``, no
    ``\\u`` escape that could spell them) nor nest deeper than ``depth`` (fewer brackets than
    that in all): it can go to the engine as it is, unparsed."""
    return (
        b'"ext"' not in body
        and b'"retriever"' not in body
        and b"\\u" not in body
        and surely_within(body, depth)
    )


def _item_indices(item_header: Mapping[str, Any], route: Route) -> tuple[str, ...]:
    index = item_header.get("index")
    if isinstance(index, str):
        return tuple(i.strip() for i in index.split(",") if i.strip())
    if isinstance(index, list):
        return tuple(str(i) for i in index)
    return route.indices


class _Exchange:
    """The engine callable of one request (the flows' only I/O besides scoring)."""

    def __init__(
        self,
        upstream: Upstream,
        req: Incoming,
        params: list[tuple[str, str]],
        original: bytes,
        original_query: bytes,
        metrics: ProxyMetrics,
    ) -> None:
        self.upstream, self.req, self.params = upstream, req, params
        self.original, self.original_query = original, original_query
        self.metrics = metrics
        self.raw: httpx.Response | None = None
        self.response: httpx.Response | None = None

    @staticmethod
    def _serialise(body: Any) -> bytes:
        data: bytes = dumps_lines(body) if isinstance(body, list) else dumps(body)  # msearch: list
        return data

    async def __call__(self, call: EngineCall) -> Any:
        timer = Timer()
        try:
            if call.original:
                raw_unchanged = self.original is self.req.raw_body
                headers = client_headers(
                    self.req.headers,
                    () if raw_unchanged else (b"content-length", b"content-encoding"),
                )
                target = self.upstream.target(self.req.raw_path, self.original_query)
                content = self.original or None
                self.raw = await self.upstream.send(
                    self.req.method, target, headers, content, stream=True, retry=True
                )
                return None
            # The flow names what to drop (from/size, and _source* when it fetches the whole
            # _source to filter it afterwards); filter_path is applied to the rewritten response.
            drop = {*call.drop_params, "filter_path"}
            query = urlencode([(k, v) for k, v in self.params if k not in drop])
            # The answer is parsed here, and compressed again for the client if it asked:
            # the upstream sends it uncompressed (nothing to inflate on the hot path).
            headers = client_headers(self.req.headers, _REWRITTEN_DROP)
            if header(headers, b"content-type") is None:
                headers.append((b"content-type", b"application/json"))
            target = self.upstream.target(self.req.raw_path, query)
            response = await self.upstream.send(
                self.req.method,
                target,
                headers,
                self._serialise(call.body),
                stream=False,
                retry=True,
            )
            self.response = response
            if response.status_code >= 300:
                raise _Reply(response)
            try:
                return loads(response.content, max_depth=None, what="engine response")
            except MalformedInputError:
                raise _Reply(response) from None
        finally:
            self.metrics.stage.labels("engine").observe(timer.seconds)


class SearchHandler:
    """Reranked ``_search`` and ``_msearch`` against one upstream."""

    def __init__(
        self,
        settings: ProxySettings,
        upstream: Upstream,
        resolver: ConfigResolver,
        scorers: Scorers,
        metrics: ProxyMetrics,
    ) -> None:
        self.settings, self.upstream, self.resolver = settings, upstream, resolver
        self.scorers, self.metrics = scorers, metrics

    def _budget(self, budgets: list[float | None]) -> float | None:
        given = [b for b in [*budgets, self.settings.latency_budget_ms] if b is not None]
        return min(given) / 1000 if given else None

    @staticmethod
    def _rerankable(req: Incoming, params: Mapping[str, str]) -> bool:
        """JSON in and out; other formats (yaml, cbor, smile) are forwarded untouched."""
        if params.get("format", "json").lower() != "json":
            return False
        for name in (b"content-type", b"accept"):
            value = (header(req.headers, name) or b"").lower()
            if any(kind in value for kind in _NON_JSON):
                return False
        return True

    async def handle(self, req: Incoming, route: Route) -> Outgoing:
        """Answer one search or msearch."""
        pairs = parse_qsl(req.query.decode("latin-1"), keep_blank_values=True)
        params = dict(pairs)
        if not self._rerankable(req, params):
            exchange = _Exchange(self.upstream, req, pairs, req.raw_body, req.query, self.metrics)
            await exchange(EngineCall(None, original=True))
            return await self._relay(exchange)
        timer = Timer()
        if route.kind == "msearch":
            out = await self._msearch(req, route, pairs, params)
        else:
            out = await self._search(req, route, pairs, params)
        if out.info.get("reranked") is not None:
            self.metrics.stage.labels("total").observe(timer.seconds)
        return out

    async def _search(
        self, req: Incoming, route: Route, pairs: list[tuple[str, str]], params: dict[str, str]
    ) -> Outgoing:
        depth = self.settings.max_json_depth
        if not self.resolver.for_indices(route.indices).enabled and _plain(req.body, depth):
            exchange = _Exchange(self.upstream, req, pairs, req.raw_body, req.query, self.metrics)
            await exchange(EngineCall(None, original=True))
            return await self._relay(exchange)
        body = None
        if req.body.strip():
            body = await _off_loop(req.body, lambda data: loads(data, max_depth=depth))
        control = extract_control(body, params)
        config = self.resolver.resolve(route.indices, control.options)
        flow_params = {k: v for k, v in params.items() if k not in control.drop_params}
        pairs = [(k, v) for k, v in pairs if k not in control.drop_params]
        if control.changed:
            original = dumps(control.body)
            query = urlencode(pairs).encode()
        else:
            original, query = req.raw_body, req.query
        exchange = _Exchange(self.upstream, req, pairs, original, query, self.metrics)
        scorer = BudgetScorer(self.scorers, config, self._budget([control.budget_ms]), self.metrics)
        flow = search_flow(control.body if body is not None else None, flow_params, config)
        try:
            out = await run_async(flow, exchange, scorer)
        except _Reply as reply:
            return self._reply(reply.response)
        if out is PASSTHROUGH:
            return await self._relay(exchange)
        return await self._rewritten(out, [out], exchange, params)

    async def _msearch(
        self, req: Incoming, route: Route, pairs: list[tuple[str, str]], params: dict[str, str]
    ) -> Outgoing:
        depth = self.settings.max_json_depth
        lines = await _off_loop(req.body, lambda data: parse_msearch(data, max_depth=depth))
        configs: list[RerankConfig | RerankOptionsError] = []
        budgets: list[float | None] = []
        changed = False
        for n in range(0, len(lines), 2):
            item_header, item = lines[n], lines[n + 1]
            try:
                control: Control = extract_control(item, {})
                config = self.resolver.resolve(_item_indices(item_header, route), control.options)
            except (BadRequest, RerankOptionsError) as exc:  # this item alone answers 400
                configs.append(RerankOptionsError(str(exc)))
                changed = True
                continue
            lines[n + 1] = control.body
            changed = changed or control.changed
            configs.append(config)
            budgets.append(control.budget_ms)
        active = [c for c in configs if isinstance(c, RerankConfig) and c.enabled]
        if len({scorer_key(c) for c in active}) > 1:
            raise BadRequest("the reranked items of one _msearch must use the same model")
        base = active[0] if active else self.resolver.for_indices(route.indices)
        if changed:
            original = dumps_lines(lines)
        else:
            original = req.raw_body
        exchange = _Exchange(self.upstream, req, pairs, original, req.query, self.metrics)
        scorer = BudgetScorer(self.scorers, base, self._budget(budgets), self.metrics)
        try:
            out = await run_async(msearch_flow(lines, base, configs), exchange, scorer)
        except _Reply as reply:
            return self._reply(reply.response)
        if out is PASSTHROUGH:
            return await self._relay(exchange)
        return await self._rewritten(out, out.get("responses", []), exchange, params)

    async def _rewritten(
        self, out: Any, results: list[Any], exchange: _Exchange, params: Mapping[str, str]
    ) -> Outgoing:
        reranked = fallbacks = 0
        for result in results:
            meta = result.get("_rerank") if isinstance(result, dict) else None
            if isinstance(meta, dict):
                fallbacks += bool(meta.get("fallback"))
                reranked += int(meta.get("reranked", 0))
        self.metrics.reranked_hits.inc(reranked)
        self.metrics.fallbacks.inc(fallbacks)
        if "filter_path" in params:
            out = filter_path(out, params["filter_path"])
        pretty = params.get("pretty", "false").lower() in ("", "true")
        size = len(exchange.response.content) if exchange.response is not None else 0
        if size > _OFF_LOOP_BYTES:
            data = await asyncio.to_thread(dumps, out, pretty=pretty)
        else:
            data = dumps(out, pretty=pretty)
        assert exchange.response is not None
        headers = response_headers(exchange.response, raw=False)
        accept = (header(exchange.req.headers, b"accept-encoding") or b"").lower()
        if b"gzip" in accept:
            data = gzip.compress(data, compresslevel=1)
            headers.append((b"content-encoding", b"gzip"))
        headers.append((b"content-length", str(len(data)).encode()))
        if fallbacks:
            headers.append((FALLBACK_HEADER, str(fallbacks).encode()))
        info = {"reranked": reranked, "fallbacks": fallbacks}
        return Outgoing(exchange.response.status_code, headers, data, info)

    @staticmethod
    def _reply(response: httpx.Response) -> Outgoing:
        headers = response_headers(response, raw=False)
        headers.append((b"content-length", str(len(response.content)).encode()))
        return Outgoing(response.status_code, headers, response.content)

    @staticmethod
    async def _relay(exchange: _Exchange) -> Outgoing:
        raw = exchange.raw
        assert raw is not None
        return Outgoing(raw.status_code, response_headers(raw, raw=True), await relay(raw))
