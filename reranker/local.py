"""In-process cross-encoder scorer on torch + transformers (CPU, CUDA or MPS)."""

from __future__ import annotations

import asyncio
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from .config import RerankConfig
from .encoding import EncodedPairs, Ids, PairEncoder
from .errors import ModelLoadError, ScorerError
from .scoring import ScoreRequest, ScoreResult

__all__ = ["LocalScorer", "PaddedBatch", "pick_device", "pick_dtype"]


class PaddedBatch(NamedTuple):
    """Model inputs of one batch, right-padded to its longest row."""

    input_ids: np.ndarray
    token_type_ids: np.ndarray
    attention_mask: np.ndarray


# Models whose position ids start after the padding index (RoBERTa family).
_POSITION_OFFSET_MODELS = {"roberta", "xlm-roberta", "camembert", "xlm-roberta-xl", "longformer"}


def pick_device(requested: str = "auto") -> str:
    """``auto`` → cuda, then mps, then cpu."""
    import torch

    if requested != "auto":
        return requested
    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"


def _cpu_has_fast_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def pick_dtype(device: str, requested: str = "auto") -> Any:
    """``auto`` → bf16 (fp16 where bf16 is unsupported) on GPUs; bf16 on CPUs with
    AMX/AVX512-BF16 (where bf16 matmuls run several times faster); fp32 otherwise."""
    import torch

    if requested != "auto":
        if requested == "bfloat16" and device == "cpu" and not _cpu_has_fast_bf16():
            warnings.warn(
                "bfloat16 on a CPU without AMX/AVX512-BF16 is much slower than float32 "
                "(measured 7-14x on AVX2); dtype='auto' picks float32 here",
                RuntimeWarning,
                stacklevel=2,
            )
        return getattr(torch, requested)
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.startswith("mps"):
        return torch.float16
    return torch.bfloat16 if _cpu_has_fast_bf16() else torch.float32


class LocalScorer:
    """Scores pairs with a Hugging Face sequence-classification cross-encoder.

    Loads ``config.model`` (hub name or local path) once. One-label heads give the logit;
    two-label heads give the positive-class logit margin (``sigmoid=True`` turns it into
    the positive-class probability). Pairs are sorted by length and batched under a token
    budget with dynamic padding; scores are deterministic for the same inputs.
    """

    def __init__(self, config: RerankConfig | None = None, **overrides: Any) -> None:
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.config = (config or RerankConfig()).with_options(overrides or None)
        cfg = self.config
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(cfg.model, use_fast=True)
            model = AutoModelForSequenceClassification.from_pretrained(cfg.model)
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"cannot load cross-encoder {cfg.model!r}: {exc}") from exc
        self.device = pick_device(cfg.device)
        self.dtype = pick_dtype(self.device, cfg.dtype)
        self.model = model.to(device=self.device, dtype=self.dtype).eval()
        labels = int(getattr(model.config, "num_labels", 1))
        if labels not in (1, 2):
            raise ModelLoadError(f"{cfg.model!r} has {labels} labels; expected 1 or 2")
        self.num_labels = labels
        self.encoder = PairEncoder(
            self.tokenizer,
            max_length=cfg.max_length or self._model_max_length(),
            max_query_tokens=cfg.max_query_tokens,
            long_documents=cfg.long_documents,
            passage_overlap=cfg.passage_overlap,
            max_passages=cfg.max_passages,
            cache_size=cfg.cache_size,
            cache_bytes=cfg.cache_bytes,
        )
        self._uses_types = "token_type_ids" in self.tokenizer.model_input_names
        pad = self.tokenizer.pad_token_id
        self._pad_id = int(pad) if pad is not None else 0
        self._lock = threading.Lock()
        self._torch = torch

    @property
    def name(self) -> str:
        return self.config.model

    def _model_max_length(self) -> int:
        limits = []
        tok_max = getattr(self.tokenizer, "model_max_length", None)
        if isinstance(tok_max, int) and 0 < tok_max < 1_000_000:
            limits.append(tok_max)
        positions = getattr(self.model.config, "max_position_embeddings", None)
        if isinstance(positions, int) and positions > 0:
            offset = 2 if self.model.config.model_type in _POSITION_OFFSET_MODELS else 0
            limits.append(positions - offset)
        return min(limits) if limits else 512

    def _batches(self, enc: EncodedPairs) -> list[list[int]]:
        """Row indexes grouped longest first, each group under the token budget."""
        lengths = np.array([len(ids) for ids in enc.input_ids])
        order = np.argsort(-lengths, kind="stable")
        batches: list[list[int]] = []
        current: list[int] = []
        width = 0
        for row in order.tolist():
            width = width or int(lengths[row])
            if current and (len(current) + 1) * width > self.config.batch_tokens:
                batches.append(current)
                current, width = [], int(lengths[row])
            current.append(row)
        if current:
            batches.append(current)
        return batches

    def pad(self, input_ids: Sequence[Ids], token_type_ids: Sequence[Ids]) -> PaddedBatch:
        """Right-pad encoded rows to the longest one: (ids, token types, attention mask)."""
        width = max(len(row) for row in input_ids)
        ids = np.full((len(input_ids), width), self._pad_id, dtype=np.int64)
        types = np.zeros((len(input_ids), width), dtype=np.int64)
        mask = np.zeros((len(input_ids), width), dtype=np.int64)
        for i, (row, row_types) in enumerate(zip(input_ids, token_type_ids)):
            n = len(row)
            ids[i, :n] = row
            types[i, :n] = row_types
            mask[i, :n] = 1
        return PaddedBatch(ids, types, mask)

    def forward(self, batch: PaddedBatch) -> np.ndarray:
        """Scores of one padded batch (one-label logit or two-label margin; sigmoid if set).

        Not serialised: callers that share the scorer across threads run one at a time.
        """
        torch = self._torch
        inputs = {
            "input_ids": torch.from_numpy(batch.input_ids).to(self.device),
            "attention_mask": torch.from_numpy(batch.attention_mask).to(self.device),
        }
        if self._uses_types:
            inputs["token_type_ids"] = torch.from_numpy(batch.token_type_ids).to(self.device)
        with torch.inference_mode():
            logits = self.model(**inputs).logits.float()
        scores = logits[:, 0] if self.num_labels == 1 else logits[:, 1] - logits[:, 0]
        if self.config.sigmoid:
            scores = torch.sigmoid(scores)
        out: np.ndarray = scores.cpu().numpy()
        return out

    def _forward(self, enc: EncodedPairs, rows: list[int]) -> np.ndarray:
        ids = [enc.input_ids[r] for r in rows]
        return self.forward(self.pad(ids, [enc.token_type_ids[r] for r in rows]))

    def encode(self, requests: Sequence[ScoreRequest]) -> EncodedPairs:
        """Tokenize and assemble the pairs of ``requests`` (documents come from the cache)."""
        return self.encoder.encode([r.query for r in requests], [r.documents for r in requests])

    def score_encoded(
        self, enc: EncodedPairs, requests: Sequence[ScoreRequest]
    ) -> list[ScoreResult]:
        """Run the model over already encoded pairs."""
        row_scores = np.zeros(len(enc.input_ids), dtype=np.float32)
        with self._lock:
            for rows in self._batches(enc):
                row_scores[rows] = self._forward(enc, rows)
        return self.collect(enc, requests, row_scores)

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

    def score(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        """Score every request's (query, document) pairs."""
        if not any(r.documents for r in requests):
            return [ScoreResult([], model=self.name) for _ in requests]
        return self.score_encoded(self.encode(requests), requests)

    async def ascore(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        """Score in a worker thread, off the event loop."""
        return await asyncio.to_thread(self.score, requests)
