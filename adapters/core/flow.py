"""Reranking as one flow, driven by thin sync and async shells.

A flow is a generator that yields the I/O it needs (:class:`EngineCall`, :class:`ScoreCall`)
and receives the results; :func:`run_sync` and :func:`run_async` perform that I/O. The
decisions live once, in the flow and in :mod:`._search`; the wrappers of each client only
supply the two I/O callables.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Generator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from crossrank.adapters.core.plan import (
    SearchPlan,
    error_item,
    fallback_response,
    finish_search,
    plan_search,
)
from crossrank.reranker.config import RerankConfig
from crossrank.reranker.errors import (
    MalformedInputError,
    QueryTextError,
    RerankOptionsError,
    ScorerError,
    public_reason,
)
from crossrank.reranker.jsonio import MAX_DEPTH, loads
from crossrank.reranker.scoring import Scorer, ScoreRequest, ScoreResult

__all__ = [
    "PASSTHROUGH",
    "EngineCall",
    "ScoreCall",
    "msearch_flow",
    "run_async",
    "run_sync",
    "search_flow",
]


@dataclass
class EngineCall:
    """Send this body (with ``drop_params`` removed from the URL parameters) to the engine."""

    body: Any
    drop_params: tuple[str, ...] = ()
    #: Send the caller's request exactly as given (the response will be returned untouched).
    original: bool = False


@dataclass
class ScoreCall:
    """Score these requests together."""

    requests: Sequence[ScoreRequest]


class _Passthrough:
    def __repr__(self) -> str:
        return "PASSTHROUGH"


#: Returned by a flow when the engine's response must be returned exactly as it came.
PASSTHROUGH = _Passthrough()

log = logging.getLogger("crossrank.rerank")

Call = EngineCall | ScoreCall
Flow = Generator[Call, Any, Any]


def _score(config: RerankConfig, requests: Sequence[ScoreRequest]) -> Generator[Call, Any, Any]:
    """Yield a ScoreCall; return (results or the public error text, elapsed ms).

    The full error goes to the log; the response only says what kind of failure it was
    (:func:`public_reason`: no scorer URLs or model paths reach search clients).
    """
    start = time.perf_counter()
    try:
        results: list[ScoreResult] = yield ScoreCall(requests)
    except Exception as exc:
        if config.on_scorer_error == "raise":
            if isinstance(exc, ScorerError):
                raise
            raise ScorerError(f"scoring failed: {exc}") from exc
        log.warning("scoring failed, answering in engine order: %s: %s", type(exc).__name__, exc)
        return public_reason(exc), (time.perf_counter() - start) * 1000
    return results, (time.perf_counter() - start) * 1000


def search_flow(
    body: Mapping[str, Any] | None, params: Mapping[str, Any], config: RerankConfig
) -> Flow:
    """One ``_search``: plan, fetch the window, score, rewrite."""
    plan = plan_search(body, params, config)
    if not plan.rerank:
        yield EngineCall(body, original=True)
        return PASSTHROUGH
    response = yield EngineCall(plan.body, plan.drop_params)
    request = plan.score_request(response)
    results, ms = yield from _score(config, [request])
    if isinstance(results, str):
        return fallback_response(plan, response, results)
    return finish_search(plan, response, results[0], ms)


def parse_msearch(body: Any, *, max_depth: int = MAX_DEPTH) -> list[dict[str, Any]]:
    """Header/body lines of an ``_msearch`` body given as a list, NDJSON text or bytes.

    Checked as the engines check it: header/body pairs of JSON objects; malformed input
    raises :class:`MalformedInputError` (400).
    """
    if isinstance(body, (bytes, bytearray, str)):
        data = bytes(body) if not isinstance(body, str) else body.encode("utf-8", "surrogatepass")
        lines = [
            loads(line, max_depth=max_depth, what=f"_msearch line {n}")
            for n, line in enumerate(data.split(b"\n"), 1)
            if line.strip()
        ]
    else:
        lines = [dict(item) if isinstance(item, Mapping) else item for item in body]
    if len(lines) % 2:
        raise MalformedInputError("_msearch body must be header/body line pairs")
    for n, line in enumerate(lines, 1):
        if not isinstance(line, dict):
            raise MalformedInputError(f"_msearch line {n} must be a JSON object")
    return lines


def _responses(response: Any, sent: int) -> list[Any]:
    """The engine's per-item responses; items it did not answer get an error of their own."""
    items = response.get("responses") if isinstance(response, Mapping) else None
    items = list(items) if isinstance(items, list) else []
    missing = error_item(
        500,
        "illegal_state_exception",
        f"the engine answered {len(items)} of {sent} searches; no response for this one",
    )
    return [*items[:sent], *([missing] * (sent - len(items)))]


def msearch_flow(
    body: Any,
    config: RerankConfig,
    item_configs: Sequence[RerankConfig | RerankOptionsError] | None = None,
) -> Flow:
    """One ``_msearch``: every item planned, all pairs scored together, items rewritten.

    An item whose query text cannot be found gets an engine-style error of its own; the
    other items are unaffected. Items the engine answered with an error pass through.
    ``item_configs`` (optional, one per item) gives each item its own config, or an error
    that item answers with; ``config`` still decides ``on_scorer_error``.
    """
    lines = parse_msearch(body)
    if item_configs is not None and len(item_configs) != len(lines) // 2:
        raise ValueError("item_configs needs one entry per msearch item")
    plans: list[SearchPlan | dict[str, Any]] = []
    out_lines: list[Any] = []
    for k, (header, item) in enumerate(zip(lines[::2], lines[1::2])):
        item_config = config if item_configs is None else item_configs[k]
        try:
            if isinstance(item_config, RerankOptionsError):
                raise item_config
            plan: SearchPlan | dict[str, Any] = plan_search(item, {}, item_config)
        except (QueryTextError, RerankOptionsError) as exc:
            plan = error_item(400, "illegal_argument_exception", str(exc))
        plans.append(plan)
        if isinstance(plan, SearchPlan):  # an item in error is answered here, never sent
            out_lines += [header, plan.body]
    if all(isinstance(p, SearchPlan) and not p.rerank for p in plans):
        yield EngineCall(body, original=True)
        return PASSTHROUGH
    sent = len(out_lines) // 2
    response: Any = (yield EngineCall(out_lines)) if sent else {"took": 0, "responses": []}
    answers = iter(_responses(response, sent))
    items = [plan if isinstance(plan, dict) else next(answers) for plan in plans]
    scored: list[tuple[int, SearchPlan, ScoreRequest]] = []
    for i, plan in enumerate(plans):
        if isinstance(plan, SearchPlan) and plan.rerank and "error" not in items[i]:
            scored.append((i, plan, plan.score_request(items[i])))
    if scored:
        results, ms = yield from _score(config, [req for _, _, req in scored])
        for k, (i, plan, _) in enumerate(scored):
            status = items[i].get("status")
            if isinstance(results, str):
                items[i] = fallback_response(plan, items[i], results)
            else:
                items[i] = finish_search(plan, items[i], results[k], ms)
            if status is not None:
                items[i]["status"] = status
    return {**response, "responses": items}


def run_sync(flow: Flow, engine: Callable[[EngineCall], Any], scorer: Scorer) -> Any:
    """Drive ``flow`` with blocking I/O."""
    try:
        call = next(flow)
        while True:
            if isinstance(call, EngineCall):
                call = flow.send(engine(call))
                continue
            try:
                results = scorer.score(call.requests)
            except Exception as exc:
                call = flow.throw(exc)
            else:
                call = flow.send(results)
    except StopIteration as stop:
        return stop.value


async def run_async(
    flow: Flow, engine: Callable[[EngineCall], Awaitable[Any]], scorer: Scorer
) -> Any:
    """Drive ``flow`` with async I/O."""
    try:
        call = next(flow)
        while True:
            if isinstance(call, EngineCall):
                call = flow.send(await engine(call))
                continue
            try:
                results = await scorer.ascore(call.requests)
            except Exception as exc:
                call = flow.throw(exc)
            else:
                call = flow.send(results)
    except StopIteration as stop:
        return stop.value
