"""The model behind the service: LocalScorer's score cache and encoder (doc-id cache),
padding and forward."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from crossrank.reranker.config import RerankConfig
from crossrank.reranker.local import LocalScorer, PaddedBatch
from crossrank.reranker.local.encoding import EncodedPairs
from crossrank.reranker.score_cache import ScoreCache
from crossrank.reranker.scoring import ScoreRequest, ScoreResult
from crossrank.reranker.service.queue import Row

__all__ = ["ModelBackend"]


class ModelBackend:
    """One served model: ``encode`` (any thread), ``pad`` (cheap), ``forward`` (one thread).

    ``score_cache``: the service's score cache, shared by its models (None: the model's own,
    of ``config.score_cache_bytes``).
    """

    def __init__(
        self, name: str, config: RerankConfig, score_cache: ScoreCache | None = None
    ) -> None:
        self.name = name
        self.scorer = LocalScorer(config, score_cache=score_cache)

    @property
    def score_cache(self) -> ScoreCache | None:
        """The score cache this model reads and fills (None: none)."""
        return self.scorer.score_cache

    def encode(self, requests: Sequence[ScoreRequest]) -> EncodedPairs:
        """The pairs of ``requests`` the score cache misses, tokenized (documents from the
        token cache where possible); ``collect`` fills in the cached scores."""
        return self.scorer.encode_misses(requests)

    def pad(self, rows: Sequence[Row]) -> PaddedBatch:
        """The padded model inputs of a batch."""
        return self.scorer.pad([r.input_ids for r in rows], [r.token_type_ids for r in rows])

    def forward(self, batch: PaddedBatch) -> np.ndarray:
        """Raw model scores of a padded batch (call from one worker thread at a time)."""
        return self.scorer.forward(batch)

    def collect(
        self, enc: EncodedPairs, requests: Sequence[ScoreRequest], row_scores: np.ndarray
    ) -> list[ScoreResult]:
        """Per-request results (max over passages, cached scores filled in, new ones
        cached); raises ``ScorerError`` on NaN/inf (nothing is cached then)."""
        results = self.scorer.collect(enc, requests, row_scores)
        for result in results:
            result.model = self.name
        return results

    def info(self) -> dict[str, Any]:
        """What ``/info`` reports about this model (never its path)."""
        return {"name": self.name, **self.scorer.describe()}
