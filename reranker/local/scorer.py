"""In-process cross-encoder scorer on torch + transformers (CPU, CUDA or MPS).

Its public steps are what the scorer service's backend drives, one by one:
:meth:`~LocalScorer.encode_misses` (any thread: score-cache look-up, then only the pairs it
misses are tokenized), :meth:`~LocalScorer.pad`, :meth:`~LocalScorer.forward` (one thread at
a time), :meth:`~LocalScorer.collect` (fills the cached scores in, stores the new ones).
:meth:`~LocalScorer.encode` tokenizes every pair, cache or not.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from crossrank.reranker.calibration import Calibration, apply_calibration, load_calibration
from crossrank.reranker.config import RerankConfig
from crossrank.reranker.errors import ScorerError
from crossrank.reranker.local.batching import PaddedBatch, pack, pad
from crossrank.reranker.local.encoding import EncodedPairs, Ids, PairEncoder
from crossrank.reranker.local.model import load_model, pick_device, pick_dtype
from crossrank.reranker.score_cache import CacheEntry, CacheStats, KeyMaker, ScoreCache
from crossrank.reranker.scoring import ScoreRequest, ScoreResult

__all__ = ["CachedPairs", "LocalScorer", "PaddedBatch", "pick_device", "pick_dtype"]


@dataclass
class CachedPairs(EncodedPairs):
    """The encoded pairs of the documents the score cache missed, for the whole requests.

    Rows, ``owner`` (request, document) indexes and the per-request counts (``truncated``,
    ``split``, ``query_truncated``, ``doc_flags``) are those of the original requests, cached
    documents included; only the missed documents have rows. :meth:`LocalScorer.collect`
    fills in ``cached`` scores, stores the ``fresh`` ones and copies them to ``copies``
    (the same pair asked for again in the same call).
    """

    #: (request, document, score) found in the cache
    cached: list[tuple[int, int, float]] = field(default_factory=list)
    #: (request, document, key, truncated, split): scored by these rows, stored once scored
    fresh: list[tuple[int, int, bytes, bool, bool]] = field(default_factory=list)
    #: (request, document, from request, from document): a pair repeated in this call
    copies: list[tuple[int, int, int, int]] = field(default_factory=list)


class LocalScorer:
    """Scores pairs with a Hugging Face sequence-classification cross-encoder.

    Loads ``config.model`` (hub name or local path) once. One-label heads give the logit;
    two-label heads give the positive-class logit margin (``sigmoid=True`` turns it into
    the positive-class probability). Pairs are sorted by length and batched under a token
    budget with dynamic padding; scores are deterministic for the same inputs.

    Scores are kept in a :class:`~crossrank.reranker.score_cache.ScoreCache` of
    ``config.score_cache_bytes`` bytes (0: none), or in ``score_cache`` when given (the
    scorer service shares one between its models); only the pairs it misses are tokenized
    and scored. Its counters: :meth:`cache_stats`.

    A ``calibration.json`` beside the model (``crossrank calibrate``) is loaded with it:
    every result then carries ``calibrated``, P(relevant) per document.
    """

    def __init__(
        self,
        config: RerankConfig | None = None,
        *,
        score_cache: ScoreCache | None = None,
        **overrides: Any,
    ) -> None:
        import torch

        self.config = (config or RerankConfig()).with_options(overrides or None)
        cfg = self.config
        self.loaded = load_model(cfg)
        self.tokenizer, self.model = self.loaded.tokenizer, self.loaded.model
        self.device, self.dtype = self.loaded.device, self.loaded.dtype
        self.num_labels = self.loaded.num_labels
        self.calibration: Calibration | None = load_calibration(cfg.model)
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
        if score_cache is None and cfg.score_cache_bytes > 0:
            score_cache = ScoreCache(cfg.score_cache_bytes)
        self.score_cache = score_cache
        #: keys of this loaded instance: a new load (same path or not) never shares entries
        self.cache_keys = KeyMaker(
            {
                "model": cfg.model,
                "load_id": uuid.uuid4().hex,
                "device": str(self.device),
                "dtype": str(self.dtype),
                "num_labels": self.num_labels,
                "max_length": self.encoder.max_length,
                "max_query_tokens": self.encoder.max_query_tokens,
                "long_documents": cfg.long_documents,
                "passage_overlap": cfg.passage_overlap,
                "max_passages": cfg.max_passages,
                "sigmoid": cfg.sigmoid,
            }
        )

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

    def cache_stats(self) -> CacheStats:
        """Score-cache counters: hits, misses, entries, bytes (all 0 without a cache)."""
        return self.score_cache.stats() if self.score_cache is not None else CacheStats()

    # ------------------------------------------------------------------ steps

    def encode(self, requests: Sequence[ScoreRequest]) -> EncodedPairs:
        """Tokenize and assemble every pair of ``requests`` (document tokens come from the
        token cache; the score cache is not consulted), honouring each request's caps."""
        return self.encoder.encode(
            [r.query for r in requests],
            [r.documents for r in requests],
            max_tokens_per_query=[r.max_tokens_per_query for r in requests],
            max_tokens_per_doc=[r.max_tokens_per_doc for r in requests],
        )

    def encode_misses(self, requests: Sequence[ScoreRequest]) -> EncodedPairs:
        """The pairs of ``requests`` that the score cache misses, encoded (:meth:`encode`
        without a cache). A pair found in the cache, or asked for twice, is not tokenized; a
        request found whole costs no tokenization at all. The result (:class:`CachedPairs`)
        describes the whole requests; :meth:`collect` completes it."""
        cache = self.score_cache
        if cache is None:
            return self.encode(requests)
        keys = [
            self.cache_keys.keys(r.query, r.documents, r.max_tokens_per_query, r.max_tokens_per_doc)
            for r in requests
        ]
        found = iter(cache.get([k for ks in keys for k in ks]))
        out = CachedPairs([], [], [], [], [], [])
        flags: list[list[tuple[bool, bool]]] = [
            [(False, False)] * len(r.documents) for r in requests
        ]
        query_cut: list[bool | None] = [None] * len(requests)
        first: dict[bytes, tuple[int, int]] = {}
        todo: list[tuple[int, list[int]]] = []  # (request, its documents to encode)
        for r, (request, request_keys) in enumerate(zip(requests, keys)):
            missed: list[int] = []
            for d, key in enumerate(request_keys):
                entry = next(found)
                if entry is not None:
                    out.cached.append((r, d, entry.score))
                    flags[r][d] = (entry.truncated, entry.split)
                    query_cut[r] = entry.query_truncated
                elif key in first:
                    out.copies.append((r, d, *first[key]))
                else:
                    first[key] = (r, d)
                    missed.append(d)
            if missed or not request.documents:
                todo.append((r, missed))
        if todo:
            enc = self.encode(
                [
                    ScoreRequest(
                        requests[r].query,
                        [requests[r].documents[d] for d in docs],
                        requests[r].max_tokens_per_query,
                        requests[r].max_tokens_per_doc,
                    )
                    for r, docs in todo
                ]
            )
            out.input_ids, out.token_type_ids = enc.input_ids, enc.token_type_ids
            out.owner = [(todo[i][0], todo[i][1][d]) for i, d in enc.owner]
            fresh_flags = iter(enc.doc_flags)
            for (r, docs), cut in zip(todo, enc.query_truncated):
                query_cut[r] = cut
                for d in docs:
                    flags[r][d] = next(fresh_flags)
                    out.fresh.append((r, d, keys[r][d], *flags[r][d]))
        for r, d, r0, d0 in out.copies:
            flags[r][d] = flags[r0][d0]
            if query_cut[r] is None:
                query_cut[r] = query_cut[r0]
        for request_flags, request_cut in zip(flags, query_cut):
            out.truncated.append(sum(t for t, _ in request_flags))
            out.split.append(sum(s for _, s in request_flags))
            out.query_truncated.append(bool(request_cut))
            out.doc_flags.extend(request_flags)
        return out

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
        if isinstance(enc, CachedPairs):
            self._complete(enc, results)
        for result in results:
            result.calibrated = self._calibrated(result.scores)
        return results

    def _calibrated(self, scores: list[float]) -> list[float] | None:
        return apply_calibration(self.calibration, scores, squashed=self.config.sigmoid)

    def _complete(self, enc: CachedPairs, results: list[ScoreResult]) -> None:
        """Fill in the cached scores, store the fresh ones, copy repeated pairs."""
        for r, d, value in enc.cached:
            results[r].scores[d] = value
        if self.score_cache is not None and enc.fresh:
            self.score_cache.put(
                (key, CacheEntry(results[r].scores[d], cut, split, enc.query_truncated[r]))
                for r, d, key, cut, split in enc.fresh
            )
        for r, d, r0, d0 in enc.copies:
            results[r].scores[d] = results[r0].scores[d0]

    # ------------------------------------------------------------------ the Scorer interface

    def score_encoded(
        self, enc: EncodedPairs, requests: Sequence[ScoreRequest]
    ) -> list[ScoreResult]:
        """Run the model over already encoded pairs, in token-budget batches."""
        row_scores = np.zeros(len(enc.input_ids), dtype=np.float32)
        lengths = [len(ids) for ids in enc.input_ids]
        if lengths:  # a request found whole in the score cache waits for no model
            with self._lock:
                for rows in pack(lengths, self.config.batch_tokens):
                    ids = [enc.input_ids[r] for r in rows]
                    types = [enc.token_type_ids[r] for r in rows]
                    row_scores[rows] = self.forward(self.pad(ids, types))
        return self.collect(enc, requests, row_scores)

    def score(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        """Score every request's (query, document) pairs (cached scores where found)."""
        if not any(r.documents for r in requests):
            return [
                ScoreResult([], model=self.name, calibrated=self._calibrated([])) for _ in requests
            ]
        return self.score_encoded(self.encode_misses(requests), requests)

    async def ascore(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        """Score in a worker thread, off the event loop."""
        return await asyncio.to_thread(self.score, requests)
