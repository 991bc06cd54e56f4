"""Several scorers as one: every member scores each request once, in one batched pass per
model, and their normalised scores are combined with weights.

:func:`combine` is the one fusion formula of the project: the ensemble's own score, an
ensemble fused with the engine's score and a single model fused with it
(:func:`crossrank.adapters.core.fuse_scores`) all go through it, so a weight means the same
wherever it is set. Normalisation is per signal over the documents of one request (the
reranked window): ``minmax`` maps to [0, 1] (a constant signal to 0), ``zscore`` to mean 0,
standard deviation 1 (a constant signal to 0).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from crossrank.reranker.config import EnsembleMember, RerankConfig
from crossrank.reranker.scoring import Scorer, ScoreRequest, ScoreResult, scorer_name

__all__ = ["EnsembleScorer", "combine", "member_config", "member_weights", "normalize"]

Normalize = Literal["minmax", "zscore"]


def normalize(values: Sequence[float], method: Normalize) -> list[float]:
    """``values`` normalised over themselves (``minmax`` or ``zscore``)."""
    if not values:
        return []
    if method == "minmax":
        lo, hi = min(values), max(values)
        return [(v - lo) / (hi - lo) if hi > lo else 0.0 for v in values]
    mean = math.fsum(values) / len(values)
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / len(values))
    return [(v - mean) / std if std > 0 else 0.0 for v in values]


def combine(
    signals: Mapping[str, Sequence[float]], weights: Mapping[str, float], method: Normalize
) -> list[float]:
    """``sum(weight * normalize(signal)) / sum(weight)`` over the signals, per document.

    A signal without a weight counts 1; all signals must have the same length.
    """
    names = list(signals)
    if not names:
        return []
    n = len(signals[names[0]])
    if any(len(signals[k]) != n for k in names):
        raise ValueError("every signal needs one score per document")
    total = math.fsum(weights.get(k, 1.0) for k in names)
    out = [0.0] * n
    if total <= 0:
        return out
    for k in names:
        w = weights.get(k, 1.0) / total
        if w:
            for i, v in enumerate(normalize(signals[k], method)):
                out[i] += w * v
    return out


def member_weights(config: RerankConfig) -> dict[str, float]:
    """The members' weights, normalised to sum to 1 (empty for a single scorer)."""
    total = math.fsum(m.weight for m in config.ensemble)
    return {m.name: m.weight / total for m in config.ensemble} if total > 0 else {}


def member_config(config: RerankConfig, member: EnsembleMember) -> RerankConfig:
    """The scorer configuration of one member: the ensemble's options, the member's model."""
    data: dict[str, Any] = config.model_dump()
    data.update(
        model=member.model,
        kind=member.kind,
        scorer_urls=member.scorer_urls,
        scorer_format=member.scorer_format,
        ensemble=(),
    )
    return RerankConfig.model_validate(data)


class EnsembleScorer:
    """The members of ``config.ensemble``, each made by :func:`make_scorer` (or given in
    ``members``, by name). ``score`` returns, per request, the combined score (z-score
    normalised, member weights) and every member's raw scores in ``signals``."""

    def __init__(self, config: RerankConfig, members: Mapping[str, Scorer] | None = None) -> None:
        from crossrank.reranker.scoring import make_scorer

        if not config.ensemble:
            raise ValueError("EnsembleScorer needs a configuration with an ensemble")
        self.config = config
        self.weights = member_weights(config)
        self.members: dict[str, Scorer] = {
            m.name: (
                members[m.name]
                if members and m.name in members
                else make_scorer(member_config(config, m))
            )
            for m in config.ensemble
        }

    @property
    def name(self) -> str:
        return scorer_name(self.config)

    def describe(self) -> dict[str, Any]:
        """Each member's description (what its own ``describe`` reports) and weight."""
        out: dict[str, Any] = {}
        for name, scorer in self.members.items():
            describe = getattr(scorer, "describe", None)
            info = describe() if callable(describe) else {}
            out[name] = {"model": scorer.name, "weight": self.weights[name], **info}
        return {"ensemble": out}

    def _merge(
        self, requests: Sequence[ScoreRequest], per_member: Sequence[list[ScoreResult]]
    ) -> list[ScoreResult]:
        merged = []
        for i, _ in enumerate(requests):
            parts = {name: res[i] for name, res in zip(self.members, per_member)}
            signals = {name: list(part.scores) for name, part in parts.items()}
            probs = {name: part.calibrated for name, part in parts.items()}
            calibrated: list[float] | None = None  # weighted mean, when every member has one
            if all(p is not None for p in probs.values()):
                calibrated = [
                    math.fsum(self.weights[k] * p[d] for k, p in probs.items() if p is not None)
                    for d in range(len(requests[i].documents))
                ]
            merged.append(
                ScoreResult(
                    scores=combine(signals, self.weights, "zscore"),
                    truncated=max(p.truncated for p in parts.values()),
                    split=max(p.split for p in parts.values()),
                    query_truncated=any(p.query_truncated for p in parts.values()),
                    model=self.name,
                    signals=signals,
                    calibrated=calibrated,
                )
            )
        return merged

    def score(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        """Every member scores all ``requests`` once, one after the other."""
        return self._merge(requests, [m.score(requests) for m in self.members.values()])

    async def ascore(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        """Every member scores all ``requests`` once, concurrently."""
        results = await asyncio.gather(*(m.ascore(requests) for m in self.members.values()))
        return self._merge(requests, list(results))
