"""The proxy's scorers: one per distinct scorer configuration, loaded off the event loop.

:class:`BudgetScorer` is what a request scores with: it fetches (or loads) the scorer of its
config and bounds the call by the latency budget; a failure or a timeout is raised to the
flow, which answers in engine order (or raises, with ``on_scorer_error="raise"``).
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Callable, Sequence
from typing import cast

from crossrank.reranker.config import RerankConfig
from crossrank.reranker.errors import ScorerError
from crossrank.reranker.scoring import Scorer, ScoreRequest, ScoreResult, make_scorer

from .metrics import ProxyMetrics, Timer
from .settings import scorer_key

__all__ = ["BudgetScorer", "ScorerFactory", "Scorers", "load_factory"]

ScorerFactory = Callable[[RerankConfig], Scorer]


def load_factory(spec: str | None) -> ScorerFactory:
    """``module:callable`` → that callable; ``None`` → :func:`make_scorer`."""
    if not spec:
        return cast(ScorerFactory, make_scorer)
    module, _, name = spec.partition(":")
    if not module or not name:
        raise ValueError(f"scorer factory must be 'module:callable', got {spec!r}")
    return cast(ScorerFactory, getattr(importlib.import_module(module), name))


class Scorers:
    """Scorers by scorer configuration, each created once in a worker thread."""

    def __init__(self, factory: ScorerFactory) -> None:
        self.factory = factory
        self._tasks: dict[object, asyncio.Future[Scorer]] = {}

    async def get(self, config: RerankConfig) -> Scorer:
        """The scorer for ``config`` (loading survives a cancelled caller)."""
        key = scorer_key(config)
        task = self._tasks.get(key)
        if task is None or (task.done() and task.exception() is not None):
            task = asyncio.ensure_future(asyncio.to_thread(self.factory, config))
            self._tasks[key] = task
        return await asyncio.shield(task)

    def loaded(self) -> list[Scorer]:
        return [t.result() for t in self._tasks.values() if t.done() and not t.exception()]

    def cache_hits(self) -> int:
        """Document-cache hits summed over the loaded scorers that keep a cache."""
        hits = (getattr(getattr(s, "encoder", None), "cache_hits", 0) for s in self.loaded())
        return sum(h for h in hits if isinstance(h, int))


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
        return str(self.config.model)

    def score(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        raise NotImplementedError("the proxy scores asynchronously")

    async def _score(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        scorer = await self.scorers.get(self.config)
        return cast(list[ScoreResult], await scorer.ascore(requests))

    async def ascore(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        timer = Timer()
        try:
            if self.budget_s is None:
                return await self._score(requests)
            try:
                return await asyncio.wait_for(self._score(requests), self.budget_s)
            except asyncio.TimeoutError:
                raise ScorerError(
                    f"scoring exceeded the latency budget of {self.budget_s * 1000:g} ms"
                ) from None
        finally:
            self.metrics.stage.labels("scoring").observe(timer.seconds)
