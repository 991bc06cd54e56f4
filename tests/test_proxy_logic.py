"""Pure proxy logic: routing, per-request control, filter_path, _source filtering, settings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from crossrank.adapters.core.filtering import SourceFilter, filter_path, parse_source
from crossrank.adapters.proxy.control import ConfigResolver, extract_control, resolve_path
from crossrank.adapters.proxy.errors import BadRequest, error_for
from crossrank.adapters.proxy.routing import Route, match_route
from crossrank.adapters.proxy.settings import IndexRule, ProxySettings, load_rules
from crossrank.reranker import RerankConfig

# --------------------------------------------------------------------------- routing


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("GET", "/_search", Route("search")),
        ("POST", "/adi/_search", Route("search", ("adi",))),
        ("POST", "/logs-*,adi/_search", Route("search", ("logs-*", "adi"))),
        ("POST", "/logs-%2A%2Cadi/_search", Route("search", ("logs-*", "adi"))),
        ("GET", "/_all/_search", Route("search", ("_all",))),
        ("POST", "/_msearch", Route("msearch")),
        ("POST", "/adi/_msearch", Route("msearch", ("adi",))),
        ("POST", "/_search/template", Route("forward")),
        ("POST", "/_search/scroll", Route("forward")),
        ("POST", "/adi/_msearch/template", Route("forward")),
        ("POST", "/_cat/_search", Route("forward")),
        ("PUT", "/adi/_search", Route("forward")),
        ("DELETE", "/adi", Route("forward")),
        ("POST", "/adi/_doc", Route("forward")),
        ("GET", "/_crossrank/health", Route("own", name="health")),
        ("GET", "/_crossrank/metrics", Route("own", name="metrics")),
    ],
)
def test_match_route(method: str, path: str, expected: Route) -> None:
    assert match_route(method, path) == expected


# --------------------------------------------------------------------------- control


def test_crossrank_ext_is_stripped_and_read() -> None:
    body = {"query": {"match": {"t": "x"}}, "ext": {"crossrank": {"window": 5, "budget_ms": 50}}}
    control = extract_control(body, {})
    assert control.body == {"query": {"match": {"t": "x"}}}
    assert control.options == {"window": 5}
    assert control.budget_ms == 50.0
    assert "ext" in body  # input untouched


def test_crossrank_off_switch_keeps_other_ext() -> None:
    control = extract_control({"ext": {"crossrank": False, "other": {"a": 1}}}, {})
    assert control.options == {"enabled": False}
    assert control.body == {"ext": {"other": {"a": 1}}}


def test_opensearch_query_text_and_path() -> None:
    body = {"query": {"match": {"t": {"query": "where"}}}}
    shaped = {**body, "ext": {"rerank": {"query_context": {"query_text": "heat"}}}}
    assert extract_control(shaped, {}).options == {"query_text": "heat"}
    path = {"query_context": {"query_text_path": "query.match.t.query"}}
    control = extract_control({**body, "ext": {"rerank": path}}, {})
    assert control.options == {"query_text": "where"}
    assert control.body == body


@pytest.mark.parametrize(
    "context",
    [
        {"query_text": "a", "query_text_path": "query"},
        {},
        {"query_text_path": "query.nope"},
        {"query_text_path": "x" * 1001},
        {"query_text_path": "query"},  # an object, not text
    ],
)
def test_opensearch_query_context_errors(context: dict[str, str]) -> None:
    body = {"query": {"match_all": {}}, "ext": {"rerank": {"query_context": context}}}
    with pytest.raises(BadRequest):
        extract_control(body, {})


def test_resolve_path_indices() -> None:
    assert resolve_path({"a": [{"b": "x"}]}, "$.a[0].b") == "x"
    assert resolve_path({"a": [{"b": "x"}]}, "a.0.b") == "x"


def _reranker(**extra: object) -> dict[str, object]:
    spec = {
        "retriever": {"standard": {"query": {"match": {"text": "heat"}}}},
        "field": "text",
        "inference_text": "heat flow",
        **extra,
    }
    return {"retriever": {"text_similarity_reranker": spec}}


def test_text_similarity_reranker_becomes_plain_search() -> None:
    control = extract_control({**_reranker(rank_window_size=20, min_score=0.5), "size": 5}, {})
    assert control.body == {"query": {"match": {"text": "heat"}}, "size": 5, "from": 0}
    assert control.options == {
        "window": 20,
        "fields": ("text",),
        "template": None,
        "query_text": "heat flow",
        "min_score": 0.5,
    }
    assert control.drop_params == ("size", "from")


def test_text_similarity_reranker_pages_stop_at_the_window() -> None:
    control = extract_control(
        {**_reranker(rank_window_size=10), "from": 8, "size": 5}, {"size": "5"}
    )
    assert control.body["size"] == 2 and control.body["from"] == 8
    control = extract_control({**_reranker(rank_window_size=10), "from": 12, "size": 5}, {})
    assert control.body["size"] == 0


def test_text_similarity_reranker_filter_and_errors() -> None:
    inner = {"standard": {"query": {"match": {"t": "x"}}, "filter": {"term": {"k": 1}}}}
    body = _reranker()
    body["retriever"]["text_similarity_reranker"]["retriever"] = inner  # type: ignore[index]
    query = extract_control(body, {}).body["query"]
    assert query == {"bool": {"must": [{"match": {"t": "x"}}], "filter": {"term": {"k": 1}}}}
    with pytest.raises(BadRequest, match=r"rank_window_size: 10\] be greater than or equal to"):
        extract_control({**_reranker(), "size": 20}, {})
    with pytest.raises(BadRequest, match=r"missing required field \[field\]"):
        spec = {"retriever": {"standard": {}}, "inference_text": "x"}
        extract_control({"retriever": {"text_similarity_reranker": spec}}, {})
    with pytest.raises(BadRequest, match="cannot specify"):
        extract_control({**_reranker(), "query": {"match_all": {}}}, {})


def test_other_retrievers_are_left_to_the_engine() -> None:
    body = {"retriever": {"standard": {"query": {"match_all": {}}}}}
    control = extract_control(body, {})
    assert control.body == body and control.options == {"enabled": False}


def test_resolver_rules_models_and_unknown_options() -> None:
    base = RerankConfig(model="m0", fields=("title",))
    settings = ProxySettings(
        upstream="http://x",
        rerank=base,
        rules=(IndexRule(pattern="logs-*", rerank={"fields": ["message"], "model": "m1"}),),
    )
    resolver = ConfigResolver(base, settings.rule_configs(), settings.allowed_models())
    assert resolver.resolve(["logs-a", "logs-b"], {}).fields == ("message",)
    assert resolver.resolve(["logs-a", "other"], {}).fields == ("title",)
    assert resolver.resolve(["adi"], {"model": "m1"}).model == "m1"
    cfg = resolver.resolve(["adi"], {"template": "{title}", "window": 7})
    assert cfg.template == "{title}" and cfg.window == 7
    with pytest.raises(BadRequest, match="not served"):
        resolver.resolve(["adi"], {"model": "evil/model"})
    with pytest.raises(BadRequest, match="invalid rerank options"):
        resolver.resolve(["adi"], {"no_such_option": 1})


# --------------------------------------------------------------------------- filter_path

DOC = {
    "took": 3,
    "hits": {
        "total": {"value": 2},
        "max_score": 1.0,
        "hits": [
            {"_id": "1", "_score": 1.0, "_source": {"title": "a", "meta": {"len": 1}}},
            {"_id": "2", "_score": 0.5, "_source": {"title": "b"}},
        ],
    },
    "aggregations": {"by": {"buckets": []}},
}


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("took", {"took": 3}),
        ("hits.hits._id", {"hits": {"hits": [{"_id": "1"}, {"_id": "2"}]}}),
        ("hits.hits._id,took", {"took": 3, "hits": {"hits": [{"_id": "1"}, {"_id": "2"}]}}),
        ("hits.*.value", {"hits": {"total": {"value": 2}}}),
        ("**.len", {"hits": {"hits": [{"_source": {"meta": {"len": 1}}}]}}),
        ("nothing", {}),
        ("aggregations", {"aggregations": {"by": {"buckets": []}}}),
        ("-hits", {"took": 3, "aggregations": {"by": {"buckets": []}}}),
        (
            "-hits.hits._source,hits.hits",
            {"hits": {"hits": [{"_id": "1", "_score": 1.0}, {"_id": "2", "_score": 0.5}]}},
        ),
    ],
)
def test_filter_path(expression: str, expected: object) -> None:
    assert filter_path(json.loads(json.dumps(DOC)), expression) == expected


# --------------------------------------------------------------------------- _source


def test_parse_source_url_wins() -> None:
    assert parse_source(None, {}) is None
    assert parse_source(True, {}) is None
    assert parse_source(False, {}) == SourceFilter(fetch=False)
    assert parse_source(["a", "b"], {}) == SourceFilter(True, ("a", "b"))
    assert parse_source({"includes": "a", "excludes": ["b"]}, {}) == SourceFilter(
        True, ("a",), ("b",)
    )
    assert parse_source(["a"], {"_source": "false"}) == SourceFilter(fetch=False)
    url = {"_source_includes": "t*", "_source_excludes": "meta"}
    assert parse_source(False, url) == SourceFilter(True, ("t*",), ("meta",))


def test_source_filter_semantics() -> None:
    src = {"title": "t", "text": "x", "meta": {"len": 1, "words": ["a"]}, "tags": ["k"]}
    assert SourceFilter(True, ("title",)).source(src) == {"title": "t"}
    assert SourceFilter(True, ("meta.len",)).source(src) == {"meta": {"len": 1}}
    assert SourceFilter(True, ("meta",)).source(src) == {"meta": {"len": 1, "words": ["a"]}}
    assert SourceFilter(True, ("t*",)).source(src) == {"title": "t", "text": "x", "tags": ["k"]}
    assert SourceFilter(True, ("*.len",)).source(src) == {"meta": {"len": 1}}
    assert SourceFilter(True, (), ("meta", "text")).source(src) == {"title": "t", "tags": ["k"]}
    assert SourceFilter(True, ("missing",)).source(src) == {}
    hits = [{"_id": "1", "_source": dict(src)}]
    SourceFilter(fetch=False).apply(hits)
    assert hits == [{"_id": "1"}]


# --------------------------------------------------------------------------- settings


@pytest.mark.parametrize("suffix", [".json", ".yaml", ".toml"])
def test_load_rules_formats(tmp_path: Path, suffix: str) -> None:
    texts = {
        ".json": '{"indices": [{"pattern": "logs-*", "rerank": {"window": 5}}]}',
        ".yaml": "indices:\n  - pattern: logs-*\n    rerank:\n      window: 5\n",
        ".toml": '[[indices]]\npattern = "logs-*"\n[indices.rerank]\nwindow = 5\n',
    }
    path = tmp_path / f"defaults{suffix}"
    path.write_text(texts[suffix])
    assert load_rules(path) == (IndexRule(pattern="logs-*", rerank={"window": 5}),)


def test_settings_validation() -> None:
    with pytest.raises(ValueError):
        ProxySettings(upstream="localhost:9200")
    settings = ProxySettings(upstream="http://h:9200/", token="s3cret")
    assert settings.upstream == ("http://h:9200",)
    with pytest.raises(ValueError):  # one scheme for all nodes
        ProxySettings(upstream=["http://h:9200", "https://h2:9200"])
    with pytest.raises(ValueError):
        ProxySettings(upstream=[])
    assert "s3cret" not in repr(settings)
    bad = ProxySettings(upstream="http://h", rules=(IndexRule(pattern="x", rerank={"window": 0}),))
    with pytest.raises(ValueError, match="bad rerank defaults"):
        bad.rule_configs()


def test_error_body_shape() -> None:
    status, body = error_for(BadRequest("nope", kind="parse_exception"))
    assert status == 400
    assert json.loads(body) == {
        "error": {
            "root_cause": [{"type": "parse_exception", "reason": "nope"}],
            "type": "parse_exception",
            "reason": "nope",
        },
        "status": 400,
    }
