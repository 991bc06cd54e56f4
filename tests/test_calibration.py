"""Calibration: fitting, applying, measuring; the scorers that fill ``calibrated``; the search
option ``calibrated``; ``crossrank calibrate``'s and ``eval``'s errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from crossrank.adapters.cli import main as cli_main
from crossrank.adapters.core.plan import RERANK_KEY, finish_search, plan_search
from crossrank.adapters.evaluation import check_calibration, measured_queries, plot_reliability
from crossrank.reranker import RerankConfig, ScoreRequest, ScoreResult
from crossrank.reranker.calibration import (
    CALIBRATION_FILE,
    ISOTONIC_MIN_POSITIVES,
    SPLIT_RULE,
    Calibration,
    FitInfo,
    brier_score,
    expected_calibration_error,
    fit_calibration,
    load_calibration,
    query_split,
    read_calibration,
    sigmoid_scores,
)
from crossrank.reranker.ensemble import EnsembleScorer
from crossrank.reranker.errors import ConfigurationError, RerankOptionsError
from crossrank.reranker.remote import RemoteScorer, plan
from crossrank.reranker.wire import CrossrankResponse


def synthetic(a: float, b: float, n: int = 20_000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Scores N(0, 2) and labels drawn with P(relevant) = sigmoid(a * s + b)."""
    rng = np.random.default_rng(seed)
    s = rng.normal(0.0, 2.0, n)
    return s, (rng.random(n) < sigmoid_scores(a * s + b)).astype(int)


# ---------------------------------------------------------------------- fitting


def test_platt_recovers_known_slope_and_intercept() -> None:
    s, y = synthetic(1.5, -0.7)
    cal = fit_calibration(s, y, "platt")
    assert cal.method == "platt"
    assert cal.slope == pytest.approx(1.5, abs=0.1)
    assert cal.intercept == pytest.approx(-0.7, abs=0.1)


def test_temperature_has_no_intercept() -> None:
    s, y = synthetic(0.5, 0.0)
    cal = fit_calibration(s, y, "temperature")
    assert cal.intercept == 0.0 and cal.slope == pytest.approx(0.5, abs=0.05)


def test_auto_is_isotonic_only_with_enough_positives() -> None:
    s, y = synthetic(1.0, -1.0)
    assert fit_calibration(s, y).method == "isotonic"
    few_s, few_y = s[:400], y[:400].copy()
    few_y[np.flatnonzero(few_y)[ISOTONIC_MIN_POSITIVES - 1 :]] = 0  # 49 relevant left
    assert fit_calibration(few_s, few_y).method == "platt"
    with pytest.raises(ConfigurationError, match="isotonic calibration needs at least 50"):
        fit_calibration(few_s, few_y, "isotonic")


@pytest.mark.parametrize("method", ["temperature", "platt", "isotonic"])
def test_apply_is_strictly_increasing_probabilities(method: Any) -> None:
    s, y = synthetic(1.0, -1.0)
    cal = fit_calibration(s, y, method)
    grid = np.linspace(-12, 12, 5001)  # a cross-encoder's logits
    p = np.asarray(cal.apply(grid))
    assert np.all((p >= 0) & (p <= 1))
    assert np.all(np.diff(p) > 0)  # no ties: the calibrated ranking is the raw ranking
    if method == "isotonic":
        assert np.all(np.diff(cal.knots_x) > 0) and np.all(np.diff(cal.knots_y) >= 0)


def test_calibrating_improves_ece_on_held_out_pairs() -> None:
    s, y = synthetic(0.8, -2.0, n=40_000)
    cal = fit_calibration(s[::2], y[::2])
    before = expected_calibration_error(sigmoid_scores(s[1::2]), y[1::2])
    after = expected_calibration_error(cal.apply(s[1::2]), y[1::2])
    assert after < 0.02 < before


def test_squashed_scores_are_mapped_back_to_raw() -> None:
    cal = Calibration(method="platt", slope=2.0, intercept=-1.0)
    raw = [-3.0, 0.0, 0.5, 4.0]
    assert cal.apply(sigmoid_scores(raw), squashed=True) == pytest.approx(cal.apply(raw))


def test_no_signal_gives_the_base_rate_not_a_decreasing_map() -> None:
    s, y = synthetic(-1.0, 0.0)  # relevance falls as the score rises
    cal = fit_calibration(s, y, "platt")
    assert 0 < cal.slope <= 1e-6
    assert cal.apply([-5.0, 5.0]) == pytest.approx([y.mean()] * 2, abs=1e-3)


def test_one_class_is_an_error() -> None:
    with pytest.raises(ConfigurationError, match="relevant and non-relevant"):
        fit_calibration([1.0, 2.0], [0, 0])


# ---------------------------------------------------------------------- measuring


def test_ece_and_brier_of_a_perfectly_calibrated_set() -> None:
    rng = np.random.default_rng(1)
    p = rng.random(50_000)
    y = (rng.random(50_000) < p).astype(int)
    assert expected_calibration_error(p, y) < 0.01
    assert brier_score(p, y) == pytest.approx(1 / 6, abs=0.005)  # E[p(1-p)], p uniform
    assert expected_calibration_error([0.9] * 4, [1, 0, 1, 0]) == pytest.approx(0.4)
    assert brier_score([1.0, 0.0], [1, 0]) == 0.0


def test_query_split_is_deterministic_halves() -> None:
    ids = [str(i) for i in range(200)]
    halves = [query_split(q) for q in ids]
    assert halves == [query_split(q) for q in ids]
    assert 60 < halves.count("fit") < 140


def test_measured_on_the_other_half_when_fitted_on_this_collection() -> None:
    ids = [str(i) for i in range(40)]
    fitted = Calibration(
        method="platt", slope=1.0, fitted_on=FitInfo(source="beir", collection="adi")
    )
    kept, statement = measured_queries(ids, fitted, "adi")
    assert kept and all(query_split(q) == "measure" for q in kept)
    assert "measure half" in statement and SPLIT_RULE in statement
    kept, statement = measured_queries(ids, fitted, "medline")
    assert kept == ids and "fitted on collection 'adi'" in statement


def test_check_and_reliability_diagram(tmp_path: Path) -> None:
    cal = Calibration(method="platt", slope=1.0, intercept=-2.0)
    runs = {"q": {"a": 3.0, "b": -1.0, "c": 0.0}}
    check = check_calibration(cal, runs, {"q": {"a": 1}}, "all")
    assert check.before.pairs == 3 and check.before.positives == 1
    assert check.after.brier < check.before.brier
    png = plot_reliability(check.curves, tmp_path / "r.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------------- saving and loading


def test_save_load_round_trip(tmp_path: Path) -> None:
    s, y = synthetic(1.0, -1.0)
    info = FitInfo(source="beir", collection="adi", queries=3, pairs=len(s), positives=int(y.sum()))
    cal = fit_calibration(s, y, "isotonic", fitted_on=info)
    assert load_calibration(tmp_path) is None
    path = cal.save(tmp_path)
    assert path == tmp_path / CALIBRATION_FILE
    back = load_calibration(tmp_path)
    assert back == cal and back.apply([0.3]) == cal.apply([0.3])
    assert json.loads(path.read_text())["fitted_on"]["split"] == SPLIT_RULE


@pytest.mark.parametrize(
    "text",
    ["not json", '{"method": "platt", "slope": -1}', '{"method": "isotonic", "slope": 1}'],
)
def test_a_bad_file_is_one_configuration_error(tmp_path: Path, text: str) -> None:
    (tmp_path / CALIBRATION_FILE).write_text(text)
    with pytest.raises(ConfigurationError, match="is not a crossrank calibration") as info:
        load_calibration(tmp_path)
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigurationError, match="cannot read calibration file"):
        read_calibration(tmp_path / "missing.json")


# ---------------------------------------------------------------------- scorers


@pytest.fixture(scope="module")
def calibrated_model(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("calibrated") / "model"
    shutil.copytree(tiny_model_dir, folder)
    Calibration(method="platt", slope=2.0, intercept=-1.0).save(folder)
    return folder


def test_local_scorer_fills_calibrated_only_with_a_calibration(
    tiny_model_dir: Path, calibrated_model: Path
) -> None:
    from crossrank.reranker import LocalScorer

    request = [ScoreRequest("wind tunnel", ["a wind tunnel test", "cooking", "x"])]
    plain = LocalScorer(RerankConfig(model=str(tiny_model_dir), dtype="float32"))
    assert plain.score(request)[0].calibrated is None
    assert plain.calibration is None
    scorer = LocalScorer(RerankConfig(model=str(calibrated_model), dtype="float32"))
    [result] = scorer.score(request)
    assert result.calibrated == pytest.approx(scorer.calibration.apply(result.scores))
    [again] = scorer.score(request)  # from the score cache: calibrated too
    assert again.calibrated == result.calibrated
    squashing = LocalScorer(
        RerankConfig(model=str(calibrated_model), dtype="float32", sigmoid=True)
    )
    assert squashing.score(request)[0].calibrated == pytest.approx(result.calibrated, abs=1e-6)


def finish(scores: list[float], probs: list[float] | None, **kw: Any) -> dict[str, Any]:
    config = RerankConfig(model="m", fields=("text",), **kw)
    body = {"query": {"match": {"text": "q"}}}
    plan_ = plan_search(body, {}, config)
    hits = [{"_id": str(i), "_score": 4.0 - i, "_source": {"text": f"d{i}"}} for i in range(4)]
    resp = {"hits": {"total": {"value": 4, "relation": "eq"}, "max_score": 4.0, "hits": hits}}
    plan_.score_request(resp)
    return finish_search(plan_, resp, ScoreResult(scores, calibrated=probs), 1.0)


def test_search_option_calibrated_scores_and_min_score_are_probabilities() -> None:
    raw = [5.0, 9.0, -2.0, 7.0]
    probs = [0.6, 0.95, 0.1, 0.8]
    out = finish(raw, probs, calibrated=True, min_score=0.7)
    assert [h["_id"] for h in out["hits"]["hits"]] == ["1", "3"]
    assert [h[RERANK_KEY]["score"] for h in out["hits"]["hits"]] == [0.95, 0.8]
    raw_out = finish(raw, probs, min_score=0.7)  # not asked: raw scores, raw threshold
    assert [h["_id"] for h in raw_out["hits"]["hits"]] == ["1", "3", "0"]
    with pytest.raises(RerankOptionsError, match="no calibration"):
        finish(raw, None, calibrated=True)


def test_crossrank_wire_carries_calibrated() -> None:
    result = ScoreResult([1.0, -1.0], model="m", calibrated=[0.7, 0.2])
    data = CrossrankResponse("m", (result,)).to_json()
    assert data["results"][0]["calibrated"] == [0.7, 0.2]
    [back] = CrossrankResponse.from_json(data, [2], "m").results
    assert back.calibrated == [0.7, 0.2]
    data["results"][0]["calibrated"] = [0.7, 1.5]
    with pytest.raises(ValueError, match=r"0\.\.1"):
        CrossrankResponse.from_json(data, [2], "m")
    plain = CrossrankResponse("m", (ScoreResult([1.0], model="m"),)).to_json()
    assert "calibrated" not in plain["results"][0]
    assert CrossrankResponse.from_json(plain, [1], "m").results[0].calibrated is None


def test_remote_scorer_applies_its_calibration_file_for_tei(tmp_path: Path) -> None:
    cal = Calibration(method="platt", slope=1.0, intercept=-1.0)
    path = cal.save(tmp_path / "tei-calibration.json")

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        assert body["raw_scores"] is True
        return httpx.Response(200, json=[{"index": i, "score": float(i)} for i in range(3)])

    config = RerankConfig(
        scorer_urls=("http://tei",), scorer_format="tei", calibration=str(path), sigmoid=True
    )
    scorer = RemoteScorer(config, transport=httpx.MockTransport(handler))
    [result] = scorer.score([ScoreRequest("q", ["a", "b", "c"])])
    assert result.calibrated == pytest.approx(cal.apply([0.0, 1.0, 2.0]))  # of the raw scores
    assert result.scores == pytest.approx(list(sigmoid_scores([0.0, 1.0, 2.0])))
    without = RerankConfig(scorer_urls=("http://tei",), scorer_format="tei")
    (call,) = plan(without, [ScoreRequest("q", ["a"])])
    assert call.decode([{"index": 0, "score": 1.0}])[0].calibrated is None
    with pytest.raises(ConfigurationError, match="cannot read calibration file"):
        RemoteScorer(without.model_copy(update={"calibration": str(tmp_path / "none.json")}))


def test_remote_crossrank_keeps_the_services_calibrated() -> None:
    config = RerankConfig(scorer_urls=("http://s",))
    (call,) = plan(config, [ScoreRequest("q", ["a", "b"])])
    answer = {"model": "m", "results": [{"scores": [1.0, 2.0], "calibrated": [0.3, 0.6]}]}
    assert call.decode(answer)[0].calibrated == [0.3, 0.6]


class Fixed:
    """A scorer with fixed scores, and calibrated probabilities or none."""

    def __init__(self, name: str, scores: list[float], calibrated: list[float] | None) -> None:
        self.name, self.scores, self.calibrated = name, scores, calibrated

    def score(self, requests: Any) -> list[ScoreResult]:
        return [ScoreResult(list(self.scores), calibrated=self.calibrated) for _ in requests]

    async def ascore(self, requests: Any) -> list[ScoreResult]:
        return self.score(requests)


def test_ensemble_calibrated_is_the_weighted_mean_of_its_members() -> None:
    config = RerankConfig.model_validate(
        {
            "ensemble": [
                {"name": "a", "model": "a", "weight": 3},
                {"name": "b", "model": "b", "weight": 1},
            ]
        }
    )
    members = {"a": Fixed("a", [1.0, 2.0], [0.2, 0.6]), "b": Fixed("b", [5.0, 1.0], [1.0, 0.2])}
    [result] = EnsembleScorer(config, members).score([ScoreRequest("q", ["x", "y"])])
    assert result.calibrated == pytest.approx([0.4, 0.5])
    members["b"] = Fixed("b", [5.0, 1.0], None)
    [result] = EnsembleScorer(config, members).score([ScoreRequest("q", ["x", "y"])])
    assert result.calibrated is None


# ---------------------------------------------------------------------- command line errors


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = cli_main(argv)
    err = capsys.readouterr().err
    return code, err


def test_calibrate_bad_input_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], tiny_model_dir: Path
) -> None:
    model = ["--model", str(tiny_model_dir)]
    code, err = run_cli(
        ["calibrate", str(tmp_path / "nope"), "--engine-url", "http://x", *model], capsys
    )
    assert (
        code == 1
        and err.strip() == f"crossrank calibrate: no such BEIR folder: {tmp_path / 'nope'}"
    )
    (tmp_path / "empty.jsonl").write_text("\n")
    code, err = run_cli(["calibrate", "--pairs", str(tmp_path / "empty.jsonl"), *model], capsys)
    assert code == 1 and err.count("\n") == 1 and "no pairs in" in err
    code, err = run_cli(["calibrate", "--pairs", str(tmp_path / "empty.jsonl")], capsys)
    assert code == 1 and "is not a local folder: give --out FILE" in err


def test_calibrate_from_a_labelled_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    s, y = synthetic(1.0, -1.0, n=4000)
    rows = [
        {"query_id": f"q{i % 200}", "score": float(v), "label": int(lab)}
        for i, (v, lab) in enumerate(zip(s, y))
    ]
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "cal.json"
    assert cli_main(["calibrate", "--pairs", str(pairs), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "fitted isotonic" in printed and "measure half" in printed
    cal = read_calibration(out)
    assert cal.fitted_on is not None and cal.fitted_on.source == "file"
    assert cal.measured["after"].ece < cal.measured["before"].ece
    assert (tmp_path / "cal-reliability.png").is_file()


def test_eval_missing_folder_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = run_cli(["eval", str(tmp_path / "nope"), "--engine-url", "http://x"], capsys)
    assert code == 1 and err.strip().startswith("crossrank eval: no such BEIR folder")


def test_service_backend_sends_calibrated_in_the_crossrank_format(calibrated_model: Path) -> None:
    from crossrank.reranker.service.backend import ModelBackend
    from crossrank.reranker.service.protocol import Limits, parse_rerank

    backend = ModelBackend("m", RerankConfig(model=str(calibrated_model), dtype="float32"))
    job = parse_rerank({"requests": [{"query": "q", "documents": ["a", "b"]}]}, Limits(10, 100))
    results = backend.scorer.score(job.requests)  # what the batcher's steps produce
    body = job.render(results, "m")
    [result] = body["results"]
    assert result["calibrated"] == pytest.approx(backend.scorer.calibration.apply(result["scores"]))
