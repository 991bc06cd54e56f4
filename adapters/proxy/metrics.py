"""Prometheus metrics of one proxy (own registry) and its JSON access log."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

__all__ = ["JsonFormatter", "ProxyMetrics", "log_event"]

_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

logger = logging.getLogger("crossrank.proxy")


class _CacheHits(Collector):
    def __init__(self, read: Callable[[], int]) -> None:
        self.read = read

    def collect(self) -> Iterator[CounterMetricFamily]:
        yield CounterMetricFamily(
            "crossrank_proxy_scorer_cache_hits",
            "Document token-id cache hits of the proxy's local scorers.",
            value=self.read(),
        )


class _ScoreCache(Collector):
    def __init__(self, read: Callable[[], tuple[int, int]]) -> None:
        self.read = read

    def collect(self) -> Iterator[CounterMetricFamily]:
        hits, misses = self.read()
        yield CounterMetricFamily(
            "crossrank_proxy_score_cache_hits",
            "Pairs whose score came from the score cache of the proxy's local scorers.",
            value=hits,
        )
        yield CounterMetricFamily(
            "crossrank_proxy_score_cache_misses",
            "Pairs looked up in the score cache of the proxy's local scorers and not found.",
            value=misses,
        )


class ProxyMetrics:
    """Requests, reranked hits, stage latencies (engine, scoring, total), fallbacks, upstream
    node failures."""

    def __init__(
        self,
        cache_hits: Callable[[], int] = lambda: 0,
        score_cache: Callable[[], tuple[int, int]] = lambda: (0, 0),
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "crossrank_proxy_requests",
            "Requests by route (search, msearch, forward, own) and status.",
            ["route", "status"],
            registry=self.registry,
        )
        self.reranked_hits = Counter(
            "crossrank_proxy_reranked_hits", "Hits re-scored.", registry=self.registry
        )
        self.fallbacks = Counter(
            "crossrank_proxy_fallbacks",
            "Searches answered in engine order because scoring failed or ran out of budget.",
            registry=self.registry,
        )
        self.stage = Histogram(
            "crossrank_proxy_stage_seconds",
            "Latency by stage: engine (upstream calls), scoring, total (reranked requests).",
            ["stage"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.upstream_failures = Counter(
            "crossrank_proxy_upstream_failures",
            "Upstream node failures (connect errors, broken connections) by node and error.",
            ["node", "error"],
            registry=self.registry,
        )
        self.registry.register(_CacheHits(cache_hits))
        self.registry.register(_ScoreCache(score_cache))

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and the record's ``fields``."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        out.update(getattr(record, "fields", {}))
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def log_event(msg: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log a structured event (never pass headers or bodies: they may hold credentials)."""
    logger.log(level, msg, extra={"fields": fields})


class Timer:
    """Elapsed seconds since creation."""

    def __init__(self) -> None:
        self.start = time.perf_counter()

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.start
