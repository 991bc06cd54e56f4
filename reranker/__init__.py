"""Cross-encoder reranking: configuration, inputs from hits, and scorers.

``LocalScorer`` needs the ``torch`` extra and is imported lazily, so the engine adapters can
use this package without torch installed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .config import FusionConfig, RerankConfig
from .errors import (
    CrossrankError,
    ModelLoadError,
    QueryTextError,
    RerankOptionsError,
    ScorerError,
)
from .inputs import document_text, extract_query_text
from .scoring import Scorer, ScoreRequest, ScoreResult

if TYPE_CHECKING:
    from .local import LocalScorer

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
    "document_text",
    "extract_query_text",
]


def __getattr__(name: str) -> Any:
    if name == "LocalScorer":
        from .local import LocalScorer

        return LocalScorer
    raise AttributeError(name)
