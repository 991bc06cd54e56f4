"""Small real implementations of the Scorer interface, for tests that need no model."""

from __future__ import annotations

from collections.abc import Sequence

from crossrank.reranker import ScoreRequest, ScoreResult


class OverlapScorer:
    """Scores a document by how many distinct query words it contains (ties: shorter wins)."""

    name = "overlap"

    def __init__(self) -> None:
        self.calls: list[list[ScoreRequest]] = []

    def _one(self, query: str, doc: str) -> float:
        words = set(doc.lower().split())
        return sum(w in words for w in set(query.lower().split())) - len(doc) * 1e-6

    def score(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        self.calls.append(list(requests))
        return [
            ScoreResult([self._one(r.query, d) for d in r.documents], model=self.name)
            for r in requests
        ]

    async def ascore(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        return self.score(requests)


class FailingScorer:
    """Fails every call on purpose, to test fallback."""

    name = "failing"

    def score(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        raise ConnectionError("scorer unreachable")

    async def ascore(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        raise ConnectionError("scorer unreachable")
