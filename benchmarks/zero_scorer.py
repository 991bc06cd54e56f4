"""A scorer that costs nothing: the proxy benchmark's reranking-on case measures the proxy's
own work (parsing, planning, rewriting 100 hits), not a model.

    crossrank proxy --scorer-factory zero_scorer:factory   # with benchmarks/ on PYTHONPATH
"""

from __future__ import annotations

from collections.abc import Sequence

from crossrank.reranker.config import RerankConfig
from crossrank.reranker.scoring import ScoreRequest, ScoreResult


class ZeroCostScorer:
    """Scores each document by its length (cheap, deterministic, reorders the hits)."""

    def __init__(self, config: RerankConfig) -> None:
        self._name = config.model

    @property
    def name(self) -> str:
        return self._name

    def score(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        return [
            ScoreResult([float(len(d)) for d in r.documents], model=self._name) for r in requests
        ]

    async def ascore(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        return self.score(requests)


def factory(config: RerankConfig) -> ZeroCostScorer:
    return ZeroCostScorer(config)
