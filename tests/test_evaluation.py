"""``crossrank eval``'s loop without an engine: a search that fell back is an error, in one
line (an eval of engine order as if reranked would be wrong without saying so)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from crossrank.adapters import cli
from crossrank.adapters.evaluation import Collection, evaluate
from crossrank.reranker import RerankConfig
from crossrank.reranker.errors import ScorerError

COLLECTION = Collection(
    corpus={"d1": {"title": "a", "text": "heat"}, "d2": {"title": "b", "text": "flow"}},
    queries={"q1": "heat", "q2": "flow"},
    qrels={"q1": {"d1": 1}, "q2": {"d2": 1}},
)


class FakeSearch:
    """Answers each query with both documents, reranked or, for ``fallback``, not."""

    rerank_config = RerankConfig(model="fake")

    def __init__(self, fallback: set[str]) -> None:
        self.fallback = fallback

    def search(self, index: str, body: dict[str, Any], rerank: dict[str, Any]) -> Any:
        text = body["query"]["multi_match"]["query"]
        if text in self.fallback:
            hits = [{"_id": d, "_score": 1.0} for d in ("d1", "d2")]
            return {"hits": {"hits": hits}, "_rerank": {"fallback": True, "error": "timed out"}}
        hits = [
            {"_id": d, "_rerank": {"engine_rank": r, "engine_score": 2.0 - r, "score": s}}
            for r, (d, s) in enumerate([("d1", float(text == "heat")), ("d2", 0.5)])
        ]
        return {"hits": {"hits": hits}, "_rerank": {"scoring_ms": 1.0}}


def test_every_query_reranked_is_scored() -> None:
    result = evaluate(FakeSearch(set()), "i", COLLECTION, window=2, progress=False)
    assert set(result.runs) == {"bm25", "reranked", "fused"}


def test_a_search_that_fell_back_is_a_clear_error() -> None:
    with pytest.raises(ScorerError, match=r"query q2: reranking fell back .*timed out"):
        evaluate(FakeSearch({"flow"}), "i", COLLECTION, window=2, progress=False)


def test_the_cli_reports_package_errors_in_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from crossrank.adapters.cli import evaluate as command

    def failing(argv: Any) -> int:
        raise ScorerError("query q2: reranking fell back to engine order (timed out)")

    monkeypatch.setattr(command, "main", failing)
    assert cli.main(["eval", "x"]) == 1
    err = capsys.readouterr().err
    assert err == "crossrank eval: query q2: reranking fell back to engine order (timed out)\n"


def test_a_trained_model_is_evaluated_as_the_offline_default_ensemble(tmp_path: Path) -> None:
    from crossrank.adapters.cli.evaluate import default_ensemble, parse_args

    base = tmp_path / "base"
    base.mkdir()
    trained = tmp_path / "trained"
    trained.mkdir()
    (trained / "config.json").write_text(json.dumps({"crossrank_base": str(base)}))
    ce, bi = default_ensemble(str(trained))
    assert (ce.name, ce.model, ce.kind) == ("ce", str(trained), "auto")
    assert (bi.name, bi.model, bi.kind) == ("bi", str(base), "bi-encoder")
    (trained / "config.json").write_text(json.dumps({"crossrank_base": str(tmp_path / "gone")}))
    assert default_ensemble(str(trained)) == ()  # the base is not there: the model alone
    (trained / "config.json").write_text("{}")
    assert default_ensemble(str(trained)) == ()  # not trained by crossrank train
    assert default_ensemble("some/hub-name") == ()

    args = parse_args(["d", "--engine-url", "u", "--member", "a=m1", "--member", "b=m2,weight=2"])
    assert [m.name for m in args.ensemble] == ["a", "b"] and args.ensemble[1].weight == 2
    for bad in (["--member", "a=m", "--model", "x"], ["--member", "a=m", "--proxy-url", "p"]):
        with pytest.raises(SystemExit):
            parse_args(["d", "--engine-url", "u", *bad])
