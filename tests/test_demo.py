"""The demo's pure parts: judged queries, the model choice and cache key, the proxy-mode eval
command line, and what is printed."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from crossrank.adapters.cli import demo, demo_model
from crossrank.adapters.cli.demo_queries import JUDGED, SHOWCASE
from crossrank.adapters.cli.evaluate import parse_args
from crossrank.adapters.evaluation import ProxySearch

#: the ``crossrank train`` options the demo uses
TRAIN_OPTIONS = {
    "--kinds",
    "--engine-url",
    "--index",
    "--base",
    "--output",
    "--query-field",
    "--doc-field",
    "--steps",
    "--max-length",
}


@pytest.fixture(scope="module")
def docs() -> list[dict[str, str]]:
    return list(demo.corpus())


# --------------------------------------------------------------------------- judged queries


#: Judged titles that older Pythons lack, and the version that added each.
ADDED_IN = {"hashlib.file_digest": (3, 11)}


def test_every_judged_title_is_in_the_corpus(docs: list[dict[str, str]]) -> None:
    """On every supported Python: a judged title missing from this Python's corpus is one
    this Python lacks (the demo leaves such titles out, and says so)."""
    titles = {d["title"] for d in docs}
    missing = [t for _, judged in JUDGED for t in judged if t not in titles]
    assert missing == [t for t, added in ADDED_IN.items() if sys.version_info < added]
    for _, judged in JUDGED:  # and no query loses all of its judged documents
        assert any(t in titles for t in judged)


def test_judged_set_shape() -> None:
    queries = [q for q, _ in JUDGED]
    assert len(JUDGED) >= 50  # issue 14: at least 50 judged queries
    assert len(set(queries)) == len(queries)
    assert 1 <= SHOWCASE <= len(JUDGED)
    for _, judged in JUDGED:
        assert judged and all(grade in (1, 2) for grade in judged.values())
        assert 2 in judged.values()


def test_judged_collection_maps_titles_to_numeric_ids(docs: list[dict[str, str]]) -> None:
    collection, missing = demo.judged_collection(docs)
    assert len(collection.corpus) == len(docs)
    assert len(collection.queries) == len(JUDGED) - len(
        [j for _, j in JUDGED if all(t in missing for t in j)]
    )
    assert collection.queries["q2"] == "delete a directory and everything in it"
    [(doc_id, grade)] = collection.qrels["q2"].items()
    assert docs[int(doc_id)]["title"] == "shutil.rmtree" and grade == 2
    assert set(collection.corpus[doc_id]) == {"title", "text"}


def test_judged_collection_skips_titles_absent_from_the_corpus() -> None:
    docs = [{"title": "shutil.rmtree", "text": "Recursively delete a directory tree."}]
    collection, missing = demo.judged_collection(docs)
    assert list(collection.queries.values()) == ["delete a directory and everything in it"]
    assert collection.qrels == {"q2": {"0": 2}}
    assert "argparse" in missing and "shutil.rmtree" not in missing


# --------------------------------------------------------------------------- cache key


def test_cache_key_is_stable_and_changes_with_options_and_corpus(
    docs: list[dict[str, str]],
) -> None:
    plan = demo_model.TrainPlan(steps=300, max_length=128, analyzer="english")
    key = plan.key(docs)
    assert key == demo_model.TrainPlan(300, 128, "english").key(list(docs))
    others = {
        demo_model.TrainPlan(301, 128, "english").key(docs),
        demo_model.TrainPlan(300, 256, "english").key(docs),
        demo_model.TrainPlan(300, 128, "standard").key(docs),
        demo_model.TrainPlan(300, 128, "english", query_field="text").key(docs),
        plan.key(docs[:-1]),
        plan.key([{**docs[0], "title": "renamed"}, *docs[1:]]),
    }
    assert key not in others and len(others) == 6
    # The text of a document is not part of the key (ids and titles are).
    assert plan.key([{**docs[0], "text": "other"}, *docs[1:]]) == key


def test_train_argv_is_a_crossrank_train_command_line(tmp_path: Path) -> None:
    from crossrank.adapters.cli.train import parser as train_parser

    argv = demo_model.TrainPlan(7, 64).argv("http://e:9200", "/base", tmp_path / "out")
    args = train_parser().parse_args(argv)
    assert (args.steps, args.max_length, args.index) == (7, 64, demo_model.INDEX)
    assert (args.query_field, args.kinds) == ("title", "sentence")


# --------------------------------------------------------------------------- model choice


def _hub_unreachable(monkeypatch: pytest.MonkeyPatch, cached: str | None = None) -> list[Any]:
    import huggingface_hub

    calls: list[Any] = []

    def model_info(self: Any, repo: str, **kwargs: Any) -> Any:
        calls.append(("model_info", repo, kwargs.get("timeout")))
        raise ConnectionError("no route to the hub")

    def snapshot_download(repo: str, **kwargs: Any) -> str:
        calls.append(("snapshot_download", repo, kwargs.get("local_files_only")))
        if cached and kwargs.get("local_files_only"):
            return cached
        raise OSError("not cached")

    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", model_info)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    return calls


def test_hub_unreachable_and_not_cached(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _hub_unreachable(monkeypatch)
    assert demo_model.hub_model(timeout=5.0) is None
    assert calls[0] == ("model_info", demo_model.HUB_MODEL, 5.0)
    assert calls[1] == ("snapshot_download", demo_model.HUB_MODEL, True)  # the cache only


def test_hub_unreachable_but_cached(monkeypatch: pytest.MonkeyPatch) -> None:
    _hub_unreachable(monkeypatch, cached="/hf/cache/snapshot")
    assert demo_model.hub_model() == "/hf/cache/snapshot"


def test_hub_reachable_downloads(monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", lambda self, repo, **kw: object())
    seen: dict[str, Any] = {}

    def snapshot_download(repo: str, **kwargs: Any) -> str:
        seen.update(kwargs, repo=repo)
        return "/hf/downloaded"

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    assert demo_model.hub_model(timeout=3.0) == "/hf/downloaded"
    assert seen["etag_timeout"] == 3.0 and "model.safetensors" in seen["allow_patterns"]


class FakeTrainer:
    """Stands in for ``crossrank train``: records argv, writes a model dir (or fails)."""

    def __init__(self, status: int = 0) -> None:
        self.status = status
        self.calls: list[list[str]] = []

    def __call__(self, argv: list[str]) -> int:
        self.calls.append(argv)
        if self.status == 0:
            out = Path(argv[argv.index("--output") + 1])
            out.mkdir(parents=True)
            (out / "config.json").write_text("{}")
        return self.status


def test_unreachable_hub_trains_locally_then_reuses_the_cache(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, docs: list[dict[str, str]]
) -> None:
    _hub_unreachable(monkeypatch)
    trainer = FakeTrainer()
    plan = demo_model.TrainPlan(steps=5, max_length=64)
    first = demo_model.choose_model(None, "http://e:9200", docs, plan, tmp_path, trainer=trainer)
    assert first.source == "trained here"
    assert Path(first.model) == tmp_path / f"stdlib-minilm-l6-selfsup-{plan.key(docs)}"
    assert (Path(first.model) / "config.json").is_file()
    [argv] = trainer.calls
    assert {a for a in argv if a.startswith("--")} <= TRAIN_OPTIONS
    assert argv[argv.index("--engine-url") + 1] == "http://e:9200"
    assert argv[argv.index("--base") + 1] == str(demo_model.base_weights())
    assert argv[argv.index("--output") + 1].endswith(".partial")  # moved into place after
    again = demo_model.choose_model(None, "http://e:9200", docs, plan, tmp_path, trainer=trainer)
    assert again.model == first.model and again.source == "trained here (cached)"
    assert len(trainer.calls) == 1
    changed = demo_model.TrainPlan(steps=6, max_length=64)
    third = demo_model.choose_model(None, "http://e:9200", docs, changed, tmp_path, trainer=trainer)
    assert third.model != first.model and len(trainer.calls) == 2


def test_failed_training_falls_back_to_the_untrained_head(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, docs: list[dict[str, str]]
) -> None:
    monkeypatch.setattr(demo_model, "untrained_model", lambda models_dir: models_dir / "untrained")

    def crashes(argv: list[str]) -> int:
        raise SystemExit(2)  # e.g. argparse rejecting an option

    for trainer in (FakeTrainer(status=1), crashes):
        choice = demo_model.choose_model(
            None, "http://e", docs, demo_model.TrainPlan(5, 64), tmp_path, hub=lambda: None,
            trainer=trainer,
        )  # fmt: skip
        assert choice.model == str(tmp_path / "untrained")
        assert "UNTRAINED" in choice.source and "training failed" in choice.detail
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("stdlib-")]  # nothing cached


def test_model_option_and_reachable_hub_skip_training(
    tmp_path: Path, docs: list[dict[str, str]]
) -> None:
    def no_hub() -> str | None:
        raise AssertionError("the hub must not be asked when --model is given")

    trainer = FakeTrainer()
    plan = demo_model.TrainPlan(5, 64)
    given = demo_model.choose_model(
        "/my/model", "u", docs, plan, tmp_path, hub=no_hub, trainer=trainer
    )
    assert given.model == "/my/model"
    hub = demo_model.choose_model(
        None, "u", docs, plan, tmp_path, hub=lambda: "/hf/x", trainer=trainer
    )
    assert hub.model == "/hf/x" and hub.source == demo_model.HUB_MODEL
    assert trainer.calls == []


def test_demo_options() -> None:
    args = demo.parser().parse_args([])
    assert (args.engine, args.train_steps, args.model) == ("opensearch:2.19.6", 100, None)
    assert args.train_max_length == 64
    assert demo.parser().parse_args(["--train-steps", "2"]).train_steps == 2


# --------------------------------------------------------------------------- eval via a proxy


def test_eval_proxy_mode_arguments() -> None:
    base = ["data/adi", "--engine-url", "http://e:9200"]
    assert parse_args(base).proxy_url is None
    args = parse_args([*base, "--proxy-url", "http://p:9299", "--window", "20"])
    assert (args.proxy_url, args.window) == ("http://p:9299", 20)
    assert parse_args([*base, "--proxy-url", "http://p", "--model", "m"]).model == "m"
    for conflict in (["--scorer-url", "http://s"], ["--max-length", "128"]):
        with pytest.raises(SystemExit):
            parse_args([*base, "--proxy-url", "http://p", *conflict])
        assert parse_args([*base, *conflict])  # fine without a proxy


def test_proxy_search_puts_rerank_options_in_ext() -> None:
    search = ProxySearch("http://127.0.0.1:1/", "opensearch")
    body = {"query": {"match_all": {}}, "ext": {"other": {"x": 1}}}
    assert search.url == "http://127.0.0.1:1"
    assert search.request_body(body) == body
    off = search.request_body(body, rerank=False)
    assert off["ext"] == {"other": {"x": 1}, "crossrank": False}
    on = search.request_body({"size": 3}, rerank={"window": 5, "query_text": "q"})
    assert on == {"size": 3, "ext": {"crossrank": {"window": 5, "query_text": "q"}}}
    assert "ext" not in body or body["ext"] == {"other": {"x": 1}}  # input untouched
    pinned = ProxySearch("http://p", "opensearch", model="m")
    assert pinned.request_body({}, rerank={"window": 5})["ext"]["crossrank"] == {
        "model": "m",
        "window": 5,
    }
    assert pinned.request_body({}) == {"ext": {"crossrank": {"model": "m"}}}
    assert pinned.rerank_config.model == "m"
    search.close()
    pinned.close()


# --------------------------------------------------------------------------- output


class FakeProxy:
    """Answers like the proxy: engine order with reranking off, reversed otherwise."""

    def __init__(self) -> None:
        self.bodies: list[tuple[dict[str, Any], Any]] = []

    def search(self, *, index: str, body: dict[str, Any], rerank: Any = None) -> dict[str, Any]:
        self.bodies.append((body, rerank))
        hits = [{"_id": str(i), "_source": {"title": f"doc.{i}"}} for i in range(3)]
        if rerank is False:
            return {"hits": {"hits": hits}}
        ranked = [{**h, "_rerank": {"engine_rank": int(h["_id"])}} for h in reversed(hits)]
        info = {"reranked": 3, "scoring_ms": 12.3, "truncated": 0}
        return {"hits": {"hits": ranked}, "_rerank": info}


def test_side_by_side_lines() -> None:
    fake = FakeProxy()
    lines = demo.side_by_side(fake, "find things", {"2"}, size=3)
    assert [r for _, r in fake.bodies] == [False, None]
    assert fake.bodies[0][0]["size"] == 3
    assert lines[0] == "  'find things'  (reranked 3 hits in 12 ms, 0 truncated)"
    assert lines[2].split() == ["1.", "doc.0", "|", "doc.2", "*", "(was", "#3)"]
    assert lines[4].split() == ["3.", "doc.2", "*", "|", "doc.0", "(was", "#1)"]


def test_verdict_says_plainly_which_won() -> None:
    def summary(bm25: float, reranked: float, fused: float = 0.5) -> dict[str, dict[str, float]]:
        return {
            "bm25": {"ndcg@10": bm25},
            "reranked": {"ndcg@10": reranked},
            "fused": {"ndcg@10": fused},
        }

    alone = demo.Serving(["--model", "m"], "reranked", False)
    assert demo.verdict(summary(0.6, 0.4), alone).startswith(
        "Reranking (reranked) is WORSE than BM25"
    )
    assert demo.verdict(summary(0.4, 0.6), alone).startswith("Reranking (reranked) beats BM25")
    assert "(+0.2000)" in demo.verdict(summary(0.4, 0.6), alone)
    assert demo.verdict(summary(0.5, 0.5), alone).startswith("Reranking (reranked) and BM25 tie")
    ensemble = demo.Serving([], "cross-encoder + bi-encoder + BM25", True)
    verdict = demo.verdict(summary(0.6, 0.1, fused=0.7), ensemble)  # the fused run is served
    assert verdict.startswith("Reranking (cross-encoder + bi-encoder + BM25) beats BM25")


def test_serving_is_the_offline_default_for_a_model_trained_here() -> None:
    trained = demo.ModelChoice("/m/ce", "trained here (cached)", "")
    served = demo.serving(trained, "/base")
    assert served.options == ["--member", "ce=/m/ce", "--member", "bi=/base,kind=bi-encoder"]
    assert served.fused and served.run == "fused"
    untrained = demo.ModelChoice("/m/u", "MiniLM-L6, UNTRAINED head", "")
    assert demo.serving(untrained, "/base").options == ["--member", "bi=/base,kind=bi-encoder"]
    given = demo.serving(demo.ModelChoice("x", "--model", ""), "/base")
    assert (given.options, given.fused) == (["--model", "x"], False)
