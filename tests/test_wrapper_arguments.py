"""The wrappers accept a call's arguments exactly as the official clients do, and only so."""

from __future__ import annotations

import inspect
from typing import Any

import opensearchpy
import pytest

from crossrank.adapters._client import as_keywords
from crossrank.adapters.opensearch import OpenSearch

from .fakes import OverlapScorer


def positional(self: Any, body: Any = None, index: Any = None, params: Any = None) -> Any:
    """opensearch-py 2's shape: ``search(body=None, index=None, params=None, headers=None)``."""


def keyword_only(self: Any, *, body: Any = None, index: Any = None) -> Any:
    """opensearch-py 3's and elasticsearch-py's shape: keywords only."""


def test_positional_arguments_follow_the_official_signature() -> None:
    assert as_keywords(positional, ({"query": 1}, "adi"), {"size": 3}) == {
        "body": {"query": 1},
        "index": "adi",
        "size": 3,
    }
    assert as_keywords(keyword_only, (), {"index": "adi"}) == {"index": "adi"}
    with pytest.raises(TypeError, match="positional"):
        as_keywords(keyword_only, ({"query": 1},), {})
    with pytest.raises(TypeError, match="multiple values"):
        as_keywords(positional, ({"query": 1},), {"body": {}})
    with pytest.raises(TypeError, match="positional"):
        as_keywords(positional, (1, 2, 3, 4), {})


def test_opensearch_wrapper_refuses_what_opensearch_py_refuses() -> None:
    client = OpenSearch(hosts=["http://127.0.0.1:9"], rerank={"fields": ["text"]},
                        scorer=OverlapScorer())  # fmt: skip
    for rerank in (None, False):  # reranked or passed through: the same TypeError, no request
        with pytest.raises(TypeError, match="query"):
            client.search(index="adi", query={"match": {"text": "heat"}}, rerank=rerank)
    params = inspect.signature(opensearchpy.OpenSearch.search).parameters.values()
    if not any(p.kind is p.POSITIONAL_OR_KEYWORD and p.name == "body" for p in params):
        with pytest.raises(TypeError, match="positional"):  # opensearch-py 3: keywords only
            client.search({"query": {"match_all": {}}}, "adi")
