"""Cross-encoder reranking: configuration, inputs from hits, and scorers.

``LocalScorer`` needs the ``torch`` extra and is imported lazily, so the engine adapters can
use this package without torch installed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from crossrank.reranker.config import FusionConfig, RerankConfig
from crossrank.reranker.errors import (
    CrossrankError,
    ModelLoadError,
    QueryTextError,
    RerankOptionsError,
    ScorerError,
)
from crossrank.reranker.scoring import Scorer, ScoreRequest, ScoreResult

if TYPE_CHECKING:
    from crossrank.reranker.local import LocalScorer

__all__ = [
    "CrossrankError",
    "FusionConfig",
    "LocalScorer",
    "ModelLoadError",
    "QueryTextError",
    "RerankConfig",
    "RerankOptionsError",
    "ScoreRequest",
    "ScoreResult",
    "Scorer",
    "ScorerError",
]


def __getattr__(name: str) -> Any:
    if name == "LocalScorer":
        from crossrank.reranker.local import LocalScorer

        return LocalScorer
    raise AttributeError(name)
