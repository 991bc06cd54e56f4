"""The in-process scorers (torch + transformers): a cross-encoder and a bi-encoder.

:mod:`.encoding` (pairs within the token budget, document token cache) →
:mod:`.scorer` (load, batch, forward; :class:`LocalScorer`). :mod:`.bi_encoder`
(sentence embeddings, cached document vectors; :class:`BiEncoderScorer`) beside them.
"""

from __future__ import annotations

from crossrank.reranker.local.bi_encoder import BiEncoderScorer, checkpoint_kind, resolve_kind
from crossrank.reranker.local.scorer import LocalScorer, PaddedBatch, pick_device, pick_dtype

__all__ = [
    "BiEncoderScorer",
    "LocalScorer",
    "PaddedBatch",
    "checkpoint_kind",
    "pick_device",
    "pick_dtype",
    "resolve_kind",
]
