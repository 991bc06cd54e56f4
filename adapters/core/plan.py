"""Request and response rewriting for reranked searches: pure functions over dicts.

Semantics follow Elasticsearch's ``rank_window_size``: the engine's top ``window`` hits are
fetched (from 0, ``max(window, from + size)`` of them), reranked, and the caller's
``from``/``size`` is applied to the reranked list; hits past the window keep engine order.
Requests whose order is not the relevance score (``size: 0``, a non-``_score`` ``sort``,
``search_after``, ``scroll``, ``pit``) or whose page starts past the window are sent as they
are and their responses returned untouched.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from crossrank.adapters.core.inputs import document_text, query_text_for
from crossrank.adapters.core.source import SOURCE_PARAMS, SourceFilter, parse_source
from crossrank.reranker.config import RerankConfig
from crossrank.reranker.ensemble import combine, member_weights
from crossrank.reranker.errors import RerankOptionsError
from crossrank.reranker.scoring import ScoreRequest, ScoreResult

__all__ = [
    "DEFAULT_SIZE",
    "RERANK_KEY",
    "SearchPlan",
    "calibrated_result",
    "count_param",
    "error_item",
    "fallback_response",
    "finish_search",
    "page_of",
    "plan_search",
]

#: Key added to the response (summary) and to each reranked hit (engine score and rank).
RERANK_KEY = "_rerank"
#: The engines' default page size.
DEFAULT_SIZE = 10
_DIGITS = re.compile(r"[+-]?\d{1,18}")


def count_param(value: Any, name: str) -> int:
    """A ``size``/``from`` value as the engines read it: a non-negative integer, or its
    decimal string (URL parameters); anything else raises RerankOptionsError (400)."""
    if isinstance(value, str) and _DIGITS.fullmatch(value.strip()):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise RerankOptionsError(f"[{name}] must be an integer, found [{str(value)[:50]}]")
    if value < 0:
        raise RerankOptionsError(f"[{name}] parameter cannot be negative, found [{value}]")
    return value


def page_of(body: Mapping[str, Any], params: Mapping[str, Any]) -> tuple[int, int]:
    """The caller's ``(from, size)``: URL parameters win over the body, as in the engines."""
    offset = count_param(params.get("from", body.get("from", 0)), "from")
    size = count_param(params.get("size", body.get("size", DEFAULT_SIZE)), "size")
    return offset, size


def _is_score_sort(sort: Any) -> bool:
    """True when ``sort`` orders by relevance alone (``_score``, descending)."""
    items = sort if isinstance(sort, list) else [sort]
    for item in items:
        if isinstance(item, str):
            name, _, order = item.partition(":")
            if name != "_score" or order not in ("", "desc"):
                return False
        elif isinstance(item, Mapping) and len(item) == 1 and "_score" in item:
            spec = item["_score"]
            order = spec.get("order", "desc") if isinstance(spec, Mapping) else spec
            if order != "desc":
                return False
        else:
            return False
    return True


def _passthrough_reason(
    body: Mapping[str, Any], params: Mapping[str, Any], size: int
) -> str | None:
    if size == 0:
        return "size=0"
    if params.get("scroll") is not None or "scroll" in body:
        return "scroll"
    if "pit" in body:
        return "pit"
    if "search_after" in body:
        return "search_after"
    sort = params.get("sort", body.get("sort"))
    if sort is not None and not _is_score_sort(sort):
        return "sort"
    return None


@dataclass
class SearchPlan:
    """What to send to the engine, and what the caller asked for."""

    config: RerankConfig
    body: dict[str, Any]
    drop_params: tuple[str, ...] = ()
    passthrough: str | None = None
    query_text: str = ""
    offset: int = 0
    size: int = DEFAULT_SIZE
    missing_fields: int = field(default=0)
    #: The caller's ``_source`` filtering, applied to the page when scoring needed more.
    source_filter: SourceFilter | None = None

    def page(self, hits: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The caller's ``from``/``size`` slice of ``hits``, ``_source`` filtered as asked."""
        page = [dict(hit) for hit in hits[self.offset : self.offset + self.size]]
        if self.source_filter is not None:
            self.source_filter.apply(page)
        return page

    @property
    def rerank(self) -> bool:
        return self.passthrough is None

    def score_request(self, response: Mapping[str, Any]) -> ScoreRequest:
        """The (query, documents) to score, built from the window of ``response``."""
        hits = response.get("hits", {}).get("hits", [])[: self.config.window]
        docs = [document_text(hit, self.config) for hit in hits]
        self.missing_fields = sum(d.missing for d in docs)
        return ScoreRequest(self.query_text, [d.text for d in docs])


def plan_search(
    body: Mapping[str, Any] | None, params: Mapping[str, Any], config: RerankConfig
) -> SearchPlan:
    """Decide whether and how to rerank a search given its body and URL parameters.

    ``params`` uses the engine's URL parameter names (``from``, ``size``, ``q``, ``sort``,
    ``scroll``, ``_source*``); URL values win over body values, as in the engines. When the
    caller's ``_source`` filtering could hide the scored fields, the whole ``_source`` is
    fetched and the caller's filter applied to the page.
    Raises :class:`~crossrank.reranker.QueryTextError` when no query text can be found.
    """
    body = dict(body or {})
    if not config.enabled:
        return SearchPlan(config, body, passthrough="disabled")
    try:
        offset, size = page_of(body, params)
    except RerankOptionsError:  # the engine answers it with its own error
        return SearchPlan(config, body, passthrough="invalid_page")
    reason = _passthrough_reason(body, params, size)
    if reason is None and offset >= config.window:
        reason = "beyond_window"
    if reason is not None:
        return SearchPlan(config, body, passthrough=reason, offset=offset, size=size)
    query_text = query_text_for(body, params.get("q"), config)
    body["from"] = 0
    body["size"] = max(config.window, offset + size)
    drop: tuple[str, ...] = ("from", "size")
    source_filter = None
    if config.source == "_source":
        url = {k: _param_text(params[k]) for k in SOURCE_PARAMS if params.get(k) is not None}
        source_filter = parse_source(body.get("_source"), url)
        if source_filter is not None:  # fetch the whole _source, filter the page afterwards
            body.pop("_source", None)
            drop += SOURCE_PARAMS
    return SearchPlan(
        config,
        body,
        drop_params=drop,
        query_text=query_text,
        offset=offset,
        size=size,
        source_filter=source_filter,
    )


def _param_text(value: Any) -> str:
    """A URL parameter as the engine reads it (lists comma-joined, booleans lower-case)."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


def fuse_scores(config: RerankConfig, result: ScoreResult, engine: list[float]) -> list[float]:
    """Final scores of a window: the model's scores (an ensemble's combined score), fused
    with the engine's if configured.

    ``weighted``: :func:`~crossrank.reranker.ensemble.combine` of the engine's score (weight
    ``1 - weight``) and the model's — an ensemble's members each with its share of ``weight``
    — normalised per ``fusion.normalize``. ``rrf``: every ranking (each member, the engine)
    counts ``1 / (rank_constant + rank)``.
    """
    fusion, model = config.fusion, result.scores
    if fusion is None or not model:
        return model
    signals: dict[str, list[float]] = dict(result.signals) or {"model": list(model)}
    shares = member_weights(config) if result.signals else {}
    weights = {k: fusion.weight * shares.get(k, 1.0 / len(signals)) for k in signals}
    if fusion.method == "weighted":
        weights["engine"] = 1.0 - fusion.weight
        return combine({**signals, "engine": engine}, weights, fusion.normalize)
    k = fusion.rank_constant
    out = [1 / (k + i + 1) for i in range(len(model))]  # the engine's own order
    for values in signals.values():
        ranked = sorted(range(len(values)), key=lambda i: -values[i])
        for rank, i in enumerate(ranked, 1):
            out[i] += 1 / (k + rank)
    return out


def calibrated_result(result: ScoreResult) -> ScoreResult:
    """``result`` with its calibrated probabilities as the model's scores (an ensemble's:
    the weighted mean of its members' probabilities, one signal); RerankOptionsError (400)
    when the scorer has no calibration."""
    if result.calibrated is None:
        raise RerankOptionsError(
            "calibrated scores were asked for, but the model has no calibration: "
            "fit one with `crossrank calibrate`"
        )
    return replace(result, scores=list(result.calibrated), signals={})


def _copy_shell(response: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(response)
    out["hits"] = dict(response.get("hits") or {})
    return out


def finish_search(
    plan: SearchPlan, response: Mapping[str, Any], result: ScoreResult, scoring_ms: float
) -> dict[str, Any]:
    """The engine's response with the window re-ordered and the caller's page applied.

    Each reranked hit's ``_score`` is the cross-encoder score (or the fused score) and
    ``_rerank`` keeps ``engine_score``, ``engine_rank`` and ``score``; ``max_score``
    follows. Totals, aggregations, suggest, highlights, ``_shards`` and ``took`` (the
    engine's own time) are left as they are; the response gains a ``_rerank`` summary.
    """
    config = plan.config
    if config.calibrated:
        result = calibrated_result(result)
    out = _copy_shell(response)
    hits = list(response.get("hits", {}).get("hits", []))
    window, rest = hits[: config.window], hits[config.window :]
    engine = [float(h.get("_score") or 0.0) for h in window]
    final = fuse_scores(config, result, engine)
    floor = config.min_score
    kept = [r for r in range(len(window)) if floor is None or result.scores[r] >= floor]
    order = sorted(kept, key=lambda r: (-final[r], r))
    # Only the caller's page is copied and annotated, not the whole window.
    page = plan.page([window[r] for r in order] + rest)
    for position, hit in enumerate(page, plan.offset):
        if position < len(order):
            rank = order[position]
            hit["_score"] = final[rank]
            hit[RERANK_KEY] = {
                "engine_score": window[rank].get("_score"),
                "engine_rank": rank,
                "score": result.scores[rank],
            }
            if result.signals:
                hit[RERANK_KEY]["signals"] = {k: v[rank] for k, v in result.signals.items()}
    out["hits"]["hits"] = page
    out["hits"]["max_score"] = final[order[0]] if order else None
    out[RERANK_KEY] = {
        "model": result.model,
        "window": config.window,
        "reranked": len(window),
        "dropped_below_min_score": len(window) - len(order),
        "truncated": result.truncated,
        "split": result.split,
        "query_truncated": result.query_truncated,
        "missing_fields": plan.missing_fields,
        "scoring_ms": round(scoring_ms, 3),
        "query_text": plan.query_text,
    }
    if config.fusion is not None:
        out[RERANK_KEY]["fusion"] = config.fusion.method
    return out


def fallback_response(plan: SearchPlan, response: Mapping[str, Any], error: str) -> dict[str, Any]:
    """Engine order for the caller's page, flagged, for when scoring failed."""
    out = _copy_shell(response)
    out["hits"]["hits"] = plan.page(response.get("hits", {}).get("hits", []))
    out[RERANK_KEY] = {"fallback": True, "error": error, "window": plan.config.window}
    return out


def error_item(status: int, kind: str, reason: str) -> dict[str, Any]:
    """An engine-style error object (as in one ``_msearch`` response item)."""
    return {
        "error": {"root_cause": [{"type": kind, "reason": reason}], "type": kind, "reason": reason},
        "status": status,
    }
