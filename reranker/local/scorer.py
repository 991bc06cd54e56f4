"""In-process cross-encoder scorer on torch + transformers (CPU, CUDA or MPS).

Its public steps are what the scorer service's backend drives, one by one: :meth:`encode`
(any thread), :meth:`pad`, :meth:`forward` (one thread at a time), :meth:`collect`.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from crossrank.reranker.config import RerankConfig
from crossrank.reranker.errors import ScorerError
from crossrank.reranker.local.batching import PaddedBatch, pack, pad
from crossrank.reranker.local.encoding import EncodedPairs, Ids, PairEncoder
from crossrank.reranker.local.model import load_model, pick_device, pick_dtype
from crossrank.reranker.scoring import ScoreRequest, ScoreResult

__all__ = ["LocalScorer", "PaddedBatch", "pick_device", "pick_dtype"]


class LocalScorer:
    """Scores pairs with a Hugging Face sequence-classification cross-encoder.

    Loads ``config.model`` (hub name or local path) once. One-label heads give the logit;
    two-label heads give the positive-class logit margin (``sigmoid=True`` turns it into
    the positive-class probability). Pairs are sorted by length and batched under a token
    budget with dynamic padding; scores are deterministic for the same inputs.
    """

    def __init__(self, config: RerankConfig | None = None, **overrides: Any) -> None:
        import torch

        self.config = (config or RerankConfig()).with_options(overrides or None)
        cfg = self.config
        self.loaded = load_model(cfg)
        self.tokenizer, self.model = self.loaded.tokenizer, self.loaded.model
        self.device, self.dtype = self.loaded.device, self.loaded.dtype
        self.num_labels = self.loaded.num_labels
        self.encoder = PairEncoder(
            self.tokenizer,
            max_length=self.loaded.max_length,
            max_query_tokens=self.loaded.max_query_tokens,
            long_documents=cfg.long_documents,
            passage_overlap=cfg.passage_overlap,
            max_passages=cfg.max_passages,
            cache_size=cfg.cache_size,
            cache_bytes=cfg.cache_bytes,
        )
        self._lock = threading.Lock()
        self._torch = torch

    @property
    def name(self) -> str:
        return self.config.model

    def describe(self) -> dict[str, Any]:
        """What the model is and how it is run (no file paths)."""
        return {
            "device": self.device,
            "dtype": str(self.dtype).removeprefix("torch."),
            "num_labels": self.num_labels,
            "max_length": self.encoder.max_length,
            "max_query_tokens": self.encoder.max_query_tokens,
            "long_documents": self.config.long_documents,
        }

    # ------------------------------------------------------------------ steps

    def encode(self, requests: Sequence[ScoreRequest]) -> EncodedPairs:
        """Tokenize and assemble the pairs of ``requests`` (documents come from the cache),
        honouring each request's own token caps."""
        return self.encoder.encode(
            [r.query for r in requests],
            [r.documents for r in requests],
            max_tokens_per_query=[r.max_tokens_per_query for r in requests],
            max_tokens_per_doc=[r.max_tokens_per_doc for r in requests],
        )

    def pad(self, input_ids: Sequence[Ids], token_type_ids: Sequence[Ids]) -> PaddedBatch:
        """Right-pad encoded rows to the longest one: (ids, token types, attention mask)."""
        return pad(input_ids, token_type_ids, self.loaded.pad_id)

    def forward(self, batch: PaddedBatch) -> np.ndarray:
        """Scores of one padded batch (one-label logit or two-label margin; sigmoid if set).

        Not serialised: callers that share the scorer across threads run one at a time.
        """
        torch = self._torch
        inputs = {
            "input_ids": torch.from_numpy(batch.input_ids).to(self.device),
            "attention_mask": torch.from_numpy(batch.attention_mask).to(self.device),
        }
        if self.loaded.uses_token_types:
            inputs["token_type_ids"] = torch.from_numpy(batch.token_type_ids).to(self.device)
        with torch.inference_mode():
            logits = self.model(**inputs).logits.float()
        scores = logits[:, 0] if self.num_labels == 1 else logits[:, 1] - logits[:, 0]
        if self.config.sigmoid:
            scores = torch.sigmoid(scores)
        out: np.ndarray = scores.cpu().numpy()
        return out

    def collect(
        self, enc: EncodedPairs, requests: Sequence[ScoreRequest], row_scores: np.ndarray
    ) -> list[ScoreResult]:
        """Per-request results from per-row scores (passages aggregate by max)."""
        if not np.all(np.isfinite(row_scores)):
            raise ScorerError(f"model {self.name!r} produced non-finite scores")
        results = [
            ScoreResult(
                scores=[-np.inf] * len(r.documents),
                truncated=enc.truncated[i],
                split=enc.split[i],
                query_truncated=enc.query_truncated[i],
                model=self.name,
            )
            for i, r in enumerate(requests)
        ]
        for (req, doc), value in zip(enc.owner, row_scores.tolist()):
            scores = results[req].scores
            scores[doc] = max(scores[doc], value)  # passages aggregate by max
        return results

    # ------------------------------------------------------------------ the Scorer interface

    def score_encoded(
        self, enc: EncodedPairs, requests: Sequence[ScoreRequest]
    ) -> list[ScoreResult]:
        """Run the model over already encoded pairs, in token-budget batches."""
        row_scores = np.zeros(len(enc.input_ids), dtype=np.float32)
        lengths = [len(ids) for ids in enc.input_ids]
        with self._lock:
            for rows in pack(lengths, self.config.batch_tokens):
                ids = [enc.input_ids[r] for r in rows]
                types = [enc.token_type_ids[r] for r in rows]
                row_scores[rows] = self.forward(self.pad(ids, types))
        return self.collect(enc, requests, row_scores)

    def score(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        """Score every request's (query, document) pairs."""
        if not any(r.documents for r in requests):
            return [ScoreResult([], model=self.name) for _ in requests]
        return self.score_encoded(self.encode(requests), requests)

    async def ascore(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        """Score in a worker thread, off the event loop."""
        return await asyncio.to_thread(self.score, requests)
