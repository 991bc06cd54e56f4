"""Prometheus metrics of one service instance (its own registry)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from crossrank.reranker.score_cache import CacheStats, ScoreCache

__all__ = ["CONTENT_TYPE", "ServiceMetrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_LATENCY = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class _ScoreCacheCollector(Collector):
    """The score caches' own counters, read at each scrape (summed over the caches)."""

    def __init__(self, caches: Sequence[ScoreCache]) -> None:
        self.caches = list(caches)

    def collect(self) -> Iterator[Metric]:
        totals = [sum(s) for s in zip(CacheStats(), *(c.stats() for c in self.caches))]
        hits, misses, entries, nbytes = totals
        yield CounterMetricFamily(
            "crossrank_score_cache_hits", "pairs whose score came from the score cache", hits
        )
        yield CounterMetricFamily(
            "crossrank_score_cache_misses", "pairs looked up and not in the score cache", misses
        )
        yield GaugeMetricFamily(
            "crossrank_score_cache_bytes", "bytes the score cache holds", nbytes
        )
        yield GaugeMetricFamily(
            "crossrank_score_cache_entries", "pairs the score cache holds", entries
        )


class ServiceMetrics:
    """Requests by endpoint and outcome, queue size, batch shapes and stage latencies, and
    the score cache's hits, misses, entries and bytes (of ``score_caches``)."""

    def __init__(self, score_caches: Sequence[ScoreCache] = ()) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "crossrank_requests", "HTTP requests", ["endpoint", "outcome"], registry=r
        )
        self.queue_pairs = Gauge(
            "crossrank_queue_pairs", "pairs admitted and not yet scored", ["model"], registry=r
        )
        self.batch_pairs = Histogram(
            "crossrank_batch_pairs",
            "pairs per forward pass",
            ["model"],
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
            registry=r,
        )
        self.batch_tokens = Histogram(
            "crossrank_batch_tokens",
            "padded tokens per forward pass",
            ["model"],
            buckets=(64, 256, 1024, 2048, 4096, 8192, 16384, 32768, 65536),
            registry=r,
        )
        self.stage_seconds = Histogram(
            "crossrank_stage_seconds",
            "latency per stage: queue_wait, tokenize, forward",
            ["stage"],
            buckets=_LATENCY,
            registry=r,
        )
        self.forward_passes = Counter(
            "crossrank_forward_passes", "model forward passes", ["model"], registry=r
        )
        self.pairs_scored = Counter(
            "crossrank_pairs_scored", "rows run through the model", ["model"], registry=r
        )
        self.pairs_dropped = Counter(
            "crossrank_pairs_dropped",
            "rows skipped because their client disconnected",
            ["model"],
            registry=r,
        )

        self.registry.register(_ScoreCacheCollector(score_caches))

    def render(self) -> bytes:
        """The exposition text."""
        return generate_latest(self.registry)
