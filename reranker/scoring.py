"""The narrow, stateless scoring interface: (query, documents) pairs in, scores out.

A scorer knows nothing about search hits. Implementations: :class:`~crossrank.reranker.
LocalScorer` (torch, in process); tests add small fakes that implement the same protocol.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from crossrank.reranker.errors import ConfigurationError

if TYPE_CHECKING:
    from crossrank.reranker.config import RerankConfig, ScorerOptions

__all__ = ["ScoreRequest", "ScoreResult", "Scorer", "make_scorer", "scorer_name"]


@dataclass(frozen=True)
class ScoreRequest:
    """One query and the documents to score against it.

    ``max_tokens_per_query`` and ``max_tokens_per_doc`` (None: no cap of its own) cut the
    query and each document to that many tokens before they are paired, on top of the
    scorer's own limits (``max_query_tokens``, the model's length); a document cut by its cap
    counts as ``truncated``. They are Cohere's and vLLM's per-request fields, and a remote
    scorer sends them on.
    """

    query: str
    documents: Sequence[str]
    max_tokens_per_query: int | None = None
    max_tokens_per_doc: int | None = None

    def __post_init__(self) -> None:
        for name in ("max_tokens_per_query", "max_tokens_per_doc"):
            cap = getattr(self, name)
            if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or cap < 1):
                raise ConfigurationError(f"{name} must be a positive int or None, not {cap!r}")


@dataclass
class ScoreResult:
    """Scores for one :class:`ScoreRequest`, in document order.

    ``truncated`` counts documents cut to fit the model (content was dropped); ``split``
    counts documents scored as several overlapping passages (aggregated by max).
    """

    scores: list[float]
    truncated: int = 0
    split: int = 0
    query_truncated: bool = False
    model: str = field(default="")
    #: an ensemble's raw score per member name, in document order (empty: one scorer)
    signals: dict[str, list[float]] = field(default_factory=dict)
    #: P(relevant) per document from the scorer's calibration (None: it has none)
    calibrated: list[float] | None = None


@runtime_checkable
class Scorer(Protocol):
    """Scores (query, document) pairs. Several requests may be scored together."""

    @property
    def name(self) -> str:
        """The model's name, reported in responses."""
        ...

    def score(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        """Score every request; one result per request, in order."""
        ...

    async def ascore(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        """Async :meth:`score`; must not block the event loop."""
        ...


def scorer_name(config: ScorerOptions) -> str:
    """What a configuration's scorer is called in logs and responses: the model, or
    ``ensemble(<member names>)`` (as :class:`~crossrank.reranker.ensemble.EnsembleScorer`)."""
    if config.ensemble:
        return "ensemble(" + ",".join(m.name for m in config.ensemble) + ")"
    return config.model


def make_scorer(config: RerankConfig) -> Scorer:
    """The scorer a configuration asks for: an ensemble when ``ensemble`` is set, remote when
    ``scorer_urls`` is set, else local (a cross-encoder or a bi-encoder, per ``kind``)."""
    if config.ensemble:
        from crossrank.reranker.ensemble import EnsembleScorer

        ensemble: Scorer = EnsembleScorer(config)
        return ensemble
    if config.scorer_urls:
        from crossrank.reranker.remote import RemoteScorer

        remote: Scorer = RemoteScorer(config)
        return remote
    from crossrank.reranker.local import BiEncoderScorer, LocalScorer, resolve_kind

    local: Scorer = (
        BiEncoderScorer(config) if resolve_kind(config) == "bi-encoder" else LocalScorer(config)
    )
    return local
