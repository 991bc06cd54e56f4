"""The in-process cross-encoder scorer (torch + transformers).

:mod:`.encoding` (pairs within the token budget, document token cache) →
:mod:`.scorer` (load, batch, forward; :class:`LocalScorer`).
"""

from __future__ import annotations

from crossrank.reranker.local.scorer import LocalScorer, PaddedBatch, pick_device, pick_dtype

__all__ = ["LocalScorer", "PaddedBatch", "pick_device", "pick_dtype"]
