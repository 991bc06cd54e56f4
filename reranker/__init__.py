"""Cross-encoder scoring: configuration, the scoring interface, local and remote scorers.

Pairs in, scores out: nothing here knows what a search hit is (that is
``crossrank.adapters.core``). In the order data flows: :mod:`.config`
(:class:`RerankConfig` = :class:`RequestOptions` + :class:`ScorerOptions`), :mod:`.scoring`
(the :class:`Scorer` interface), :mod:`.loader` (loading without holding searches),
:mod:`.local` (torch, in process: cross-encoders and bi-encoders) or :mod:`.remote`
(HTTP), :mod:`.ensemble` (several scorers combined), :mod:`.service` (the scorer
service), with :mod:`.errors` and :mod:`.jsonio` beside them.

``LocalScorer`` and ``BiEncoderScorer`` need the ``torch`` extra and ``RemoteScorer`` the
``remote`` extra; they are imported lazily, so the engine adapters can use this package
without them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from crossrank.reranker.config import (
    EnsembleMember,
    FusionConfig,
    RequestOptions,
    RerankConfig,
    ScorerOptions,
)
from crossrank.reranker.errors import (
    CrossrankError,
    ModelLoadError,
    QueryTextError,
    RerankOptionsError,
    ScorerError,
)
from crossrank.reranker.scoring import Scorer, ScoreRequest, ScoreResult, make_scorer

if TYPE_CHECKING:
    from crossrank.reranker.ensemble import EnsembleScorer
    from crossrank.reranker.local import BiEncoderScorer, LocalScorer
    from crossrank.reranker.remote import RemoteScorer

__all__ = [
    "BiEncoderScorer",
    "CrossrankError",
    "EnsembleMember",
    "EnsembleScorer",
    "FusionConfig",
    "LocalScorer",
    "ModelLoadError",
    "QueryTextError",
    "RemoteScorer",
    "RequestOptions",
    "RerankConfig",
    "RerankOptionsError",
    "ScoreRequest",
    "ScoreResult",
    "Scorer",
    "ScorerError",
    "ScorerOptions",
    "make_scorer",
]


def __getattr__(name: str) -> Any:
    if name == "BiEncoderScorer":
        from crossrank.reranker.local import BiEncoderScorer

        return BiEncoderScorer
    if name == "EnsembleScorer":
        from crossrank.reranker.ensemble import EnsembleScorer

        return EnsembleScorer
    if name == "LocalScorer":
        from crossrank.reranker.local import LocalScorer

        return LocalScorer
    if name == "RemoteScorer":
        from crossrank.reranker.remote import RemoteScorer

        return RemoteScorer
    raise AttributeError(name)
