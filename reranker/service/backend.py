"""The model behind the service: LocalScorer's score cache and encoder (doc-id cache),
padding and forward; or a bi-encoder, scored whole while its requests are encoded.

``ModelBackend(name, config)`` is the backend of the model's kind (like ``pathlib.Path``
giving a ``PosixPath``): :class:`ModelBackend` itself for a cross-encoder,
:class:`BiEncoderBackend` for a bi-encoder (``config.kind``, ``auto`` read from the
checkpoint).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from crossrank.reranker.config import RerankConfig
from crossrank.reranker.errors import ScorerError
from crossrank.reranker.local import BiEncoderScorer, LocalScorer, PaddedBatch, resolve_kind
from crossrank.reranker.local.encoding import EncodedPairs
from crossrank.reranker.score_cache import ScoreCache
from crossrank.reranker.scoring import ScoreRequest, ScoreResult
from crossrank.reranker.service.queue import Row

__all__ = ["BiEncoderBackend", "ModelBackend", "ScoredPairs"]


class ModelBackend:
    """One served model: ``encode`` (any thread), ``pad`` (cheap), ``forward`` (one thread).

    ``score_cache``: the service's score cache, shared by its models (None: the model's own,
    of ``config.score_cache_bytes``). A bi-encoder ``config`` makes a :class:`BiEncoderBackend`.
    """

    def __new__(
        cls, name: str, config: RerankConfig, score_cache: ScoreCache | None = None
    ) -> ModelBackend:
        if cls is ModelBackend and resolve_kind(config) == "bi-encoder":
            cls = BiEncoderBackend
        return super().__new__(cls)

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


@dataclass
class ScoredPairs(EncodedPairs):
    """A bi-encoder's requests, already scored: no rows to queue, the ``results`` kept, and
    the truncation counts (``truncated``, ``query_truncated``, ``doc_flags``) filled in for
    a request's check (TEI's ``"truncate": false``)."""

    results: list[ScoreResult] = field(default_factory=list)


class BiEncoderBackend(ModelBackend):
    """A served bi-encoder (:class:`~crossrank.reranker.local.BiEncoderScorer`).

    Its ``encode`` (run in a worker thread by the batcher) scores the requests whole: the
    query embedded, the documents' vectors from the scorer's own cache (the misses of the
    request embedded, longest first under the token budget), a matrix-vector product. It
    returns no rows, so nothing is queued and ``collect`` only hands the results over:
    a warm request is a single short forward pass, nothing to batch across requests, and
    the scorer runs its forward passes one at a time. Admission (429) still applies while
    a request is encoded. The bi-encoder caches vectors, not scores: ``score_cache`` is None
    (the service's score cache is not used).
    """

    def __init__(
        self, name: str, config: RerankConfig, score_cache: ScoreCache | None = None
    ) -> None:
        self.name = name
        self.bi_encoder = BiEncoderScorer(config)

    @property
    def score_cache(self) -> ScoreCache | None:
        """None: a bi-encoder caches document vectors (its own cache), not scores."""
        return None

    def encode(self, requests: Sequence[ScoreRequest]) -> ScoredPairs:
        """Score ``requests`` (blocking: call from a worker thread); no rows are left."""
        results, flags = self.bi_encoder.score_flagged(requests)
        return ScoredPairs(
            [],
            [],
            [],
            truncated=[r.truncated for r in results],
            split=[0] * len(results),
            query_truncated=[r.query_truncated for r in results],
            doc_flags=flags,
            results=results,
        )

    def pad(self, rows: Sequence[Row]) -> PaddedBatch:
        """Never called: a bi-encoder queues no rows."""
        raise ScorerError(f"bi-encoder {self.name!r} queues no rows to pad")

    def forward(self, batch: PaddedBatch) -> np.ndarray:
        """Never called: a bi-encoder queues no rows."""
        raise ScorerError(f"bi-encoder {self.name!r} queues no rows to run")

    def collect(
        self, enc: EncodedPairs, requests: Sequence[ScoreRequest], row_scores: np.ndarray
    ) -> list[ScoreResult]:
        """The results :meth:`encode` computed, named after this model."""
        if not isinstance(enc, ScoredPairs):
            raise ScorerError(f"bi-encoder {self.name!r} got pairs it did not encode")
        for result in enc.results:
            result.model = self.name
        return enc.results

    def info(self) -> dict[str, Any]:
        """What ``/info`` reports about this model (never its path)."""
        return {"name": self.name, **self.bi_encoder.describe()}
