from __future__ import annotations

import pytest

from crossrank.adapters.core import document_text, extract_query_text
from crossrank.adapters.core.inputs import query_text_for
from crossrank.reranker import QueryTextError, RerankConfig

HIT = {
    "_source": {
        "title": "Flow over plates",
        "body": "Boundary layers.",
        "meta": {"tags": ["aero", "heat"], "year": 1960, "authors": [{"name": "A"}, {"name": "B"}]},
        "a.b": "flat key",
        "empty": "  ",
    },
    "fields": {"title.raw": ["Flow over plates"], "n": [3]},
    "highlight": {"body": ["<em>Boundary</em> layers", "more <em>text</em>"]},
}


def cfg(**kw: object) -> RerankConfig:
    return RerankConfig(model="m", **kw)  # type: ignore[arg-type]


def test_fields_and_dotted_paths_join_arrays() -> None:
    doc = document_text(HIT, cfg(fields=("title", "meta.tags", "meta.authors.name", "a.b")))
    assert doc.text == "Flow over plates\naero heat\nA B\nflat key"
    assert doc.missing == 0


def test_missing_and_non_text_fields_are_counted_not_fatal() -> None:
    doc = document_text(HIT, cfg(fields=("title", "nope", "meta.year", "empty")))
    assert doc.text == "Flow over plates"
    assert doc.missing == 3


def test_template() -> None:
    doc = document_text(HIT, cfg(template="{title}: {body} {{x}} {nope}"))
    assert doc.text == "Flow over plates: Boundary layers. {x}"
    assert doc.missing == 1


def test_fields_and_highlight_sources() -> None:
    assert document_text(HIT, cfg(source="fields", fields=("title.raw", "n"))).text == (
        "Flow over plates"
    )
    hl = document_text(HIT, cfg(source="highlight", fields=("body",)))
    assert hl.text == "Boundary layers more text"


@pytest.mark.parametrize(
    ("query", "text"),
    [
        ({"match": {"title": "flow plates"}}, "flow plates"),
        ({"match": {"title": {"query": "flow", "operator": "and"}}}, "flow"),
        ({"match_phrase": {"title": "boundary layer"}}, "boundary layer"),
        ({"multi_match": {"query": "heat", "fields": ["a", "b"]}}, "heat"),
        ({"query_string": {"query": "title:heat AND transfer"}}, "heat AND transfer"),
        ({"simple_query_string": {"query": "heat +flux"}}, "heat +flux"),
        (
            {"bool": {"must": [{"match": {"t": "a b"}}], "should": {"match": {"x": "c"}},
                      "filter": [{"match": {"f": "no"}}], "must_not": [{"match": {"t": "z"}}]}},
            "a b c",
        ),
        ({"function_score": {"query": {"match": {"t": "inner"}}}}, "inner"),
        ({"dis_max": {"queries": [{"match": {"t": "one"}}, {"match": {"u": "one"}}]}}, "one"),
        ({"match_all": {}}, None),
        ({"term": {"tag": "x"}}, None),
        (None, None),
    ],
)
def test_extract_query_text(query: object, text: str | None) -> None:
    assert extract_query_text(query) == text


def test_query_text_precedence_and_clear_error() -> None:
    body = {"query": {"match": {"t": "from dsl"}}}
    assert query_text_for(body, None, cfg()) == "from dsl"
    assert query_text_for(body, "title:from q", cfg()) == "from q"
    assert query_text_for(body, "x", cfg(query_text="explicit")) == "explicit"
    with pytest.raises(QueryTextError, match="query_text"):
        query_text_for({"query": {"match_all": {}}}, None, cfg())
