"""Soft labels for self-supervised training: the base checkpoint's own similarity, combined
with the engine's BM25 score.

A bi-encoder checkpoint (such as all-MiniLM-L6-v2) embeds the pseudo-query and each
candidate separately (pooled as the checkpoint declares); their cosine is one teacher signal. The
candidates' BM25 scores (kept by mining) are the other: the two are combined per group by
:func:`~crossrank.reranker.ensemble.combine` (z-scores, equal weights by default — not tuned
on any judgments), the teacher score that the cross-encoder learns to reproduce as a
distribution over each group. The ensemble of the two ranks better than either alone (the
"bi-encoder + BM25" column of the domain-adaptation table), so the student learns from a
stronger teacher than the base alone; unlike hard labels it does not punish the unjudged
positives among BM25 candidates. Groups without engine scores get the cosine alone.

The teacher embeds the groups' own texts — the document texts that mining built as serving
builds them — with the serving bi-encoder (single sequences cut at ``max_length``): it labels
the very documents the cross-encoder is trained and served on, with the very scores the
``bi`` member of the offline default ensemble gives them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

from crossrank.adapters.training.loop import TrainGroup
from crossrank.reranker.ensemble import Normalize, combine

__all__ = ["TEACHER_NORMALIZE", "TEACHER_WEIGHTS", "label_groups", "teacher_scores"]

#: Equal weights of the base's cosine (``bi``) and the engine's BM25 (``bm25``): a default
#: chosen without judgments.
TEACHER_WEIGHTS: Mapping[str, float] = {"bi": 1.0, "bm25": 1.0}
#: Per-group normalisation of the two signals before they are combined.
TEACHER_NORMALIZE: Normalize = "zscore"


def teacher_scores(
    cosines: Sequence[float],
    engine: Sequence[float] | None,
    *,
    weights: Mapping[str, float] = TEACHER_WEIGHTS,
    normalize: Normalize = TEACHER_NORMALIZE,
) -> list[float]:
    """One group's teacher scores: :func:`combine` of the cosines and the engine scores
    (``weights`` of ``bi`` and ``bm25``, ``normalize`` per group); the cosines alone where
    there are no engine scores or the ``bm25`` weight is 0."""
    if engine is None or not weights.get("bm25", 1.0):
        return list(cosines)
    if len(engine) != len(cosines):
        raise ValueError("a group needs one engine score per document")
    return combine({"bi": list(cosines), "bm25": list(engine)}, weights, normalize)


def label_groups(
    groups: Sequence[TrainGroup],
    base: str,
    *,
    max_length: int = 128,
    device: str = "auto",
    progress: bool = True,
    weights: Mapping[str, float] = TEACHER_WEIGHTS,
    normalize: Normalize = TEACHER_NORMALIZE,
) -> list[TrainGroup]:
    """``groups`` with ``teacher`` set (positive first, then the negatives): the base's
    score of the query and each document as the bi-encoder scorer gives it in serving
    (:class:`~crossrank.reranker.local.bi_encoder.BiEncoderScorer`, fp32: its pooling, its
    cosine), combined with the group's engine scores where it has them
    (:func:`teacher_scores`). Each distinct text is embedded once (its vector cache)."""
    from tqdm import tqdm

    from crossrank.reranker.config import RerankConfig
    from crossrank.reranker.local.bi_encoder import BiEncoderScorer
    from crossrank.reranker.scoring import ScoreRequest

    scorer = BiEncoderScorer(
        RerankConfig(
            model=base,
            kind="bi-encoder",
            device=device,
            dtype="float32",
            max_length=max_length,
            max_query_tokens=max_length,
        )
    )
    labelled = []
    chunks = range(0, len(groups), 64)
    for start in tqdm(chunks, desc="teacher", unit="batch", disable=not progress):
        chunk = groups[start : start + 64]
        results = scorer.score([ScoreRequest(g.query, (g.positive, *g.negatives)) for g in chunk])
        for g, result in zip(chunk, results):
            scores = teacher_scores(result.scores, g.engine, weights=weights, normalize=normalize)
            labelled.append(replace(g, teacher=tuple(scores)))
    return labelled
