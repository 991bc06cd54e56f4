"""The model behind the service: LocalScorer's encoder (doc-id cache), padding and forward."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..config import RerankConfig
from ..encoding import EncodedPairs
from ..local import LocalScorer, PaddedBatch
from ..scoring import ScoreRequest, ScoreResult
from .queue import Row

__all__ = ["ModelBackend"]


class ModelBackend:
    """One served model: ``encode`` (any thread), ``pad`` (cheap), ``forward`` (one thread)."""

    def __init__(self, name: str, config: RerankConfig) -> None:
        self.name = name
        self.scorer = LocalScorer(config)

    def encode(self, requests: Sequence[ScoreRequest]) -> EncodedPairs:
        """Tokenize the pairs of ``requests`` (documents from the cache where possible)."""
        return self.scorer.encode(requests)

    def pad(self, rows: Sequence[Row]) -> PaddedBatch:
        """The padded model inputs of a batch."""
        return self.scorer.pad([r.input_ids for r in rows], [r.token_type_ids for r in rows])

    def forward(self, batch: PaddedBatch) -> np.ndarray:
        """Raw model scores of a padded batch (call from one worker thread at a time)."""
        return self.scorer.forward(batch)

    def collect(
        self, enc: EncodedPairs, requests: Sequence[ScoreRequest], row_scores: np.ndarray
    ) -> list[ScoreResult]:
        """Per-request results (max over passages); raises ``ScorerError`` on NaN/inf."""
        results = self.scorer.collect(enc, requests, row_scores)
        for result in results:
            result.model = self.name
        return results

    def info(self) -> dict[str, Any]:
        """What ``/info`` reports about this model: its served name, never its path."""
        s = self.scorer
        return {
            "name": self.name,
            "device": s.device,
            "dtype": str(s.dtype).removeprefix("torch."),
            "num_labels": s.num_labels,
            "max_length": s.encoder.max_length,
            "max_query_tokens": s.encoder.max_query_tokens,
            "long_documents": s.config.long_documents,
        }
