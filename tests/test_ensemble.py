"""Ensembles: the one fusion formula (``combine``), the ensemble scorer, and an ensemble's
signals through the flow (wrapper and proxy share it) and in ``crossrank eval``'s runs."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from crossrank.adapters.core.flow import run_async, run_sync, search_flow
from crossrank.adapters.core.plan import calibrated_result, fuse_scores
from crossrank.adapters.evaluation import _window_runs
from crossrank.reranker import RerankConfig, ScoreRequest, ScoreResult
from crossrank.reranker.config import EnsembleMember, FusionConfig
from crossrank.reranker.ensemble import EnsembleScorer, combine, member_weights, normalize
from crossrank.reranker.errors import RerankOptionsError
from crossrank.reranker.scoring import make_scorer

from .fakes import OverlapScorer
from .test_flow import DOCS, Engine

MEMBERS = (EnsembleMember(name="a", model="m-a"), EnsembleMember(name="b", model="m-b", weight=3))
ENSEMBLE = RerankConfig(model="unused", fields=("text",), window=5, ensemble=MEMBERS)
Q = {"query": {"match": {"text": "gamma delta"}}, "size": 5}


class LengthScorer:
    """Scores a document by its length: another signal, unlike word overlap."""

    name = "length"

    def __init__(self) -> None:
        self.calls = 0

    def score(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        self.calls += 1
        return [ScoreResult([float(len(d)) for d in r.documents]) for r in requests]

    async def ascore(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        return self.score(requests)


def ensemble() -> tuple[EnsembleScorer, OverlapScorer, LengthScorer]:
    a, b = OverlapScorer(), LengthScorer()
    return EnsembleScorer(ENSEMBLE, members={"a": a, "b": b}), a, b


def test_normalize_minmax_and_zscore() -> None:
    assert normalize([1.0, 3.0, 2.0], "minmax") == [0.0, 1.0, 0.5]
    z = normalize([1.0, 2.0, 3.0], "zscore")
    assert z[1] == 0.0 and math.isclose(z[2], -z[0]) and math.isclose(sum(v * v for v in z), 3.0)
    assert normalize([4.0, 4.0], "minmax") == [0.0, 0.0] == normalize([4.0, 4.0], "zscore")
    assert normalize([], "zscore") == []


def test_combine_weights_and_checks() -> None:
    signals = {"x": [0.0, 10.0], "y": [1.0, 0.0]}
    assert combine(signals, {"x": 3, "y": 1}, "minmax") == [0.25, 0.75]
    assert combine(signals, {}, "minmax") == [0.5, 0.5]  # unweighted: 1 each
    assert combine(signals, {"x": 0, "y": 0}, "minmax") == [0.0, 0.0]
    with pytest.raises(ValueError, match="one score per document"):
        combine({"x": [1.0], "y": [1.0, 2.0]}, {}, "minmax")


def test_single_model_fusion_is_the_old_formula() -> None:
    ce, engine = [3.0, 1.0, 2.0, 0.0], [1.0, 4.0, 2.0, 3.0]
    cfg = RerankConfig(model="m", fusion=FusionConfig(weight=0.7))
    mm = normalize(ce, "minmax"), normalize(engine, "minmax")
    want = [0.7 * c + 0.3 * e for c, e in zip(*mm)]
    assert fuse_scores(cfg, ScoreResult(ce), engine) == pytest.approx(want)
    rrf = RerankConfig(model="m", fusion=FusionConfig(method="rrf", rank_constant=1))
    ce_rank = {0: 1, 2: 2, 1: 3, 3: 4}
    want = [1 / (1 + i + 1) + 1 / (1 + ce_rank[i]) for i in range(4)]
    assert fuse_scores(rrf, ScoreResult(ce), engine) == pytest.approx(want)
    assert fuse_scores(RerankConfig(model="m"), ScoreResult(ce), engine) == ce  # no fusion


def test_ensemble_fusion_shares_the_model_weight_among_members() -> None:
    cfg = ENSEMBLE.model_copy(update={"fusion": FusionConfig(weight=0.6, normalize="zscore")})
    result = ScoreResult([0.0] * 3, signals={"a": [1.0, 2.0, 0.0], "b": [5.0, 1.0, 2.0]})
    engine = [3.0, 2.0, 1.0]
    want = combine(
        {**result.signals, "engine": engine}, {"a": 0.15, "b": 0.45, "engine": 0.4}, "zscore"
    )
    assert fuse_scores(cfg, result, engine) == pytest.approx(want)
    assert member_weights(ENSEMBLE) == {"a": 0.25, "b": 0.75}


def test_ensemble_rrf_counts_every_ranking() -> None:
    cfg = ENSEMBLE.model_copy(update={"fusion": FusionConfig(method="rrf", rank_constant=10)})
    result = ScoreResult([0.0, 0.0], signals={"a": [1.0, 2.0], "b": [2.0, 1.0]})
    # engine order 0, 1; a ranks 1 first; b ranks 0 first
    want = [1 / 11 + 1 / 12 + 1 / 11, 1 / 12 + 1 / 11 + 1 / 12]
    assert fuse_scores(cfg, result, [5.0, 4.0]) == pytest.approx(want)


def test_ensemble_scorer_one_pass_per_member_and_signals() -> None:
    scorer, a, b = ensemble()
    requests = [ScoreRequest("gamma delta", DOCS), ScoreRequest("alpha", DOCS[:2])]
    results = scorer.score(requests)
    assert len(a.calls) == 1 and b.calls == 1  # every request in one call per member
    for request, result in zip(requests, results):
        raw_a = a.score([request])[0].scores
        raw_b = [float(len(d)) for d in request.documents]
        assert result.signals == {"a": raw_a, "b": raw_b}
        assert result.scores == pytest.approx(
            combine({"a": raw_a, "b": raw_b}, {"a": 0.25, "b": 0.75}, "zscore")
        )
    assert asyncio.run(scorer.ascore(requests))[0].scores == results[0].scores
    assert scorer.name == "ensemble(a,b)"
    assert set(scorer.describe()["ensemble"]) == {"a", "b"}


def test_search_with_an_ensemble_keeps_every_signal_per_hit() -> None:
    scorer, _, _ = ensemble()
    cfg = ENSEMBLE.model_copy(update={"fusion": FusionConfig()})
    out = run_sync(search_flow(dict(Q), {}, cfg), Engine(), scorer)
    hits = out["hits"]["hits"]
    by_rank = sorted(hits, key=lambda h: h["_rerank"]["engine_rank"])
    signals = {k: [h["_rerank"]["signals"][k] for h in by_rank] for k in ("a", "b")}
    engine = [h["_rerank"]["engine_score"] for h in by_rank]
    weights = {"a": 0.125, "b": 0.375, "engine": 0.5}
    fused = combine({**signals, "engine": engine}, weights, "minmax")
    assert [h["_score"] for h in by_rank] == pytest.approx(fused)
    assert [h["_score"] for h in hits] == sorted(fused, reverse=True)
    assert out["_rerank"]["model"] == "ensemble(a,b)"
    same = asyncio.run(run_async(search_flow(dict(Q), {}, cfg), Engine().a, scorer))
    assert same["hits"]["hits"] == hits


def test_eval_reports_each_signal_alone_and_fused() -> None:
    scorer, _, _ = ensemble()
    out = run_sync(search_flow(dict(Q), {}, ENSEMBLE), Engine(), scorer)
    hits = sorted(out["hits"]["hits"], key=lambda h: h["_rerank"]["engine_rank"])
    runs = _window_runs(ENSEMBLE, FusionConfig(), hits)
    assert set(runs) == {"bm25", "reranked", "fused", "a", "a+bm25", "b", "b+bm25"}
    assert runs["b"] == {h["_id"]: float(len(h["_source"]["text"])) for h in hits}
    engine = [h["_rerank"]["engine_score"] for h in hits]
    b = [float(len(h["_source"]["text"])) for h in hits]
    want = combine({"model": b, "engine": engine}, {"model": 0.5, "engine": 0.5}, "minmax")
    assert list(runs["b+bm25"].values()) == pytest.approx(want)


def test_ensemble_configuration_is_checked() -> None:
    with pytest.raises(ValidationError, match="distinct"):
        RerankConfig(ensemble=(MEMBERS[0], MEMBERS[0]))
    with pytest.raises(ValidationError, match="distinct"):
        RerankConfig(ensemble=(EnsembleMember(name="engine", model="m"),))
    with pytest.raises(ValidationError, match="positive weight"):
        RerankConfig(ensemble=(EnsembleMember(name="a", model="m", weight=0),))
    with pytest.raises(ValidationError):
        EnsembleMember(name="a b", model="m")
    with pytest.raises(RerankOptionsError, match="belong to the scorer"):
        RerankConfig().with_options({"ensemble": [{"name": "x", "model": "y"}]})


def test_member_command_line_form() -> None:
    m = EnsembleMember.parse("bi=/models/minilm,kind=bi-encoder,weight=0.5")
    assert (m.name, m.model, m.kind, m.weight) == ("bi", "/models/minilm", "bi-encoder", 0.5)
    r = EnsembleMember.parse("ce=ce-model,scorer_url=http://a:1,scorer_url=http://b:2")
    assert r.scorer_urls == ("http://a:1", "http://b:2")
    for bad in ("no-equals", "a=m,colour=red", "a=m,kind=other"):
        with pytest.raises(ValueError):
            EnsembleMember.parse(bad)


def test_calibrated_result_needs_a_calibration() -> None:
    with pytest.raises(RerankOptionsError, match="no calibration"):
        calibrated_result(ScoreResult([1.0]))
    result = ScoreResult([1.0, 2.0], signals={"a": [1.0, 2.0]}, calibrated=[0.2, 0.9])
    out = calibrated_result(result)
    assert (out.scores, out.signals) == ([0.2, 0.9], {})


def test_make_scorer_builds_real_members(tiny_model_dir: Path) -> None:
    members = (
        EnsembleMember(name="one", model=str(tiny_model_dir)),
        EnsembleMember(name="two", model=str(tiny_model_dir), weight=2),
    )
    cfg = RerankConfig(model="unused", ensemble=members, device="cpu", dtype="float32")
    scorer: Any = make_scorer(cfg)
    assert isinstance(scorer, EnsembleScorer)
    [result] = scorer.score([ScoreRequest("heat transfer", ["heat flow in a pipe", "music"])])
    assert result.signals["one"] == result.signals["two"]  # same model, same scores
    assert len(result.scores) == 2


def test_an_ensemble_is_named_by_its_members_in_logs_and_responses() -> None:
    from crossrank.reranker.scoring import scorer_name

    assert scorer_name(ENSEMBLE) == "ensemble(a,b)" == ensemble()[0].name
    assert scorer_name(RerankConfig(model="m")) == "m"
