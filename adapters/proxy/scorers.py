"""The proxy's scorers: one per distinct scorer configuration, loaded off the event loop.

Each is loaded through a :class:`~crossrank.reranker.loader.ScorerLoader`: a search waits
for a loading model at most its budget (and ``load_timeout``), a failed load is remembered
and retried after a back-off, never once per search. :class:`BudgetScorer` is what a
request scores with: it fetches its config's scorer and bounds the whole call by the
latency budget; a failure or a timeout is raised to the flow, which answers in engine
order (or raises, with ``on_scorer_error="raise"``). :meth:`Scorers.readiness` is what
``/_crossrank/ready`` reports: every configured model loaded, and a remote scorer that
really serves the configured model.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
from collections.abc import Callable, Sequence
from typing import cast

from crossrank.adapters.proxy.metrics import ProxyMetrics, Timer, log_event
from crossrank.adapters.proxy.settings import scorer_key
from crossrank.reranker.config import RerankConfig
from crossrank.reranker.errors import ConfigurationError, ScorerError, ScorerTimeoutError
from crossrank.reranker.loader import ScorerLoader
from crossrank.reranker.score_cache import ScoreCache
from crossrank.reranker.scoring import (
    Scorer,
    ScoreRequest,
    ScoreResult,
    make_scorer,
    scorer_name,
)

__all__ = ["BudgetScorer", "ScorerFactory", "Scorers", "load_factory"]

ScorerFactory = Callable[[RerankConfig], Scorer]


def load_factory(spec: str | None) -> ScorerFactory:
    """``module:callable`` → that callable; ``None`` → :func:`make_scorer`.

    Raises :class:`ConfigurationError` for a malformed spec, a module that cannot be
    imported (its error chained) or a name that is no callable of it.
    """
    if not spec:
        return cast(ScorerFactory, make_scorer)
    module, _, name = spec.partition(":")
    if not module or not name:
        raise ConfigurationError(f"scorer factory must be 'module:callable', got {spec!r}")
    try:
        found = importlib.import_module(module)
    except Exception as exc:  # not found, or failing on import
        raise ConfigurationError(f"cannot import scorer factory {spec!r}: {exc}") from exc
    factory = getattr(found, name, None)
    if not callable(factory):
        raise ConfigurationError(f"scorer factory {spec!r}: {module} has no callable {name!r}")
    return cast(ScorerFactory, factory)


class Scorers:
    """Scorers by scorer configuration, each loaded once in a background thread."""

    def __init__(self, factory: ScorerFactory) -> None:
        self.factory = factory
        self._loaders: dict[object, ScorerLoader] = {}
        self._last_check: dict[object, str | None] = {}

    def loader(self, config: RerankConfig) -> ScorerLoader:
        """The loader of ``config``'s scorer (created, not started, on first use)."""
        key = scorer_key(config)
        loader = self._loaders.get(key)
        if loader is None:
            loader = ScorerLoader(lambda: self.factory(config), name=scorer_name(config))
            self._loaders[key] = loader
        return loader

    async def get(self, config: RerankConfig, wait: float | None = None) -> Scorer:
        """The scorer for ``config``; waits for a load at most ``wait`` / ``load_timeout`` s."""
        limit = config.load_timeout if wait is None else min(wait, config.load_timeout)
        return await self.loader(config).aget(limit)

    async def preload(self, configs: Sequence[RerankConfig]) -> None:
        """Load every configured scorer now (start-up), reporting each failure once."""
        for config in configs:
            try:
                await self.loader(config).aget(None)
            except ScorerError:
                continue  # the loader has logged it, with the reason
            await self._check(config)

    async def _check(self, config: RerankConfig) -> str | None:
        """A loaded scorer's own check (a remote scorer serving the model); logs changes."""
        scorer = await self.loader(config).aget(0)
        check = getattr(scorer, "acheck", None)
        problem: str | None = None
        if check is not None:
            try:
                await check()
            except ScorerError as exc:
                problem = str(exc)
        key = scorer_key(config)
        if problem != self._last_check.get(key, None):
            if problem is not None:
                log_event("scorer check failed", logging.ERROR, error=problem)
            else:
                log_event("scorer check passed", model=scorer_name(config))
        self._last_check[key] = problem
        return problem

    async def readiness(self, configs: Sequence[RerankConfig]) -> dict[str, int]:
        """Count the configured scorers by state: ready, loading, failed."""
        counts = {"ready": 0, "loading": 0, "failed": 0}
        for config in configs:
            loader = self.loader(config)
            if loader.state == "idle":  # not preloaded: start it, give a quick load a second
                try:
                    await loader.aget(min(1.0, config.load_timeout))
                except ScorerError:
                    pass
            state = loader.state
            if state == "ready" and await self._check(config) is not None:
                state = "failed"
            counts["failed" if state == "idle" else state] += 1
        return counts

    def loaded(self) -> list[Scorer]:
        return [loader.get(0) for loader in self._loaders.values() if loader.state == "ready"]

    def cache_hits(self) -> int:
        """Document-cache hits summed over the loaded scorers that keep a cache."""
        hits = (getattr(getattr(s, "encoder", None), "cache_hits", 0) for s in self.loaded())
        return sum(h for h in hits if isinstance(h, int))

    def score_cache_counts(self) -> tuple[int, int]:
        """Score-cache hits and misses summed over the loaded scorers' distinct caches."""
        found = (getattr(s, "score_cache", None) for s in self.loaded())
        caches = {id(c): c for c in found if isinstance(c, ScoreCache)}
        stats = [c.stats() for c in caches.values()]
        return sum(s.hits for s in stats), sum(s.misses for s in stats)


class BudgetScorer:
    """A request's scorer: the config's scorer, bounded by ``budget_s``, timed."""

    def __init__(
        self,
        scorers: Scorers,
        config: RerankConfig,
        budget_s: float | None,
        metrics: ProxyMetrics,
    ) -> None:
        self.scorers, self.config, self.budget_s, self.metrics = scorers, config, budget_s, metrics

    @property
    def name(self) -> str:
        return scorer_name(self.config)

    def score(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        raise NotImplementedError("the proxy scores asynchronously")

    async def _score(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        scorer = await self.scorers.get(self.config, self.budget_s)
        results: list[ScoreResult] = await scorer.ascore(requests)
        return results

    async def ascore(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        timer = Timer()
        try:
            if self.budget_s is None:
                return await self._score(requests)
            try:
                return await asyncio.wait_for(self._score(requests), self.budget_s)
            except asyncio.TimeoutError:
                raise ScorerTimeoutError(
                    f"scoring exceeded the latency budget of {self.budget_s * 1000:g} ms"
                ) from None
        finally:
            self.metrics.stage.labels("scoring").observe(timer.seconds)
