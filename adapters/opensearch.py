"""Drop-in reranking wrappers of ``opensearchpy.OpenSearch`` and ``AsyncOpenSearch``.

Constructed like the originals, plus ``rerank=`` (a :class:`RerankConfig` or dict) and
``scorer=`` (any :class:`Scorer`; default: a local cross-encoder of ``rerank.model``).
Every method passes through unchanged except ``search`` and ``msearch``, which take an extra
``rerank=`` per call (``False`` to switch off, or a dict of options) and rerank.
``size``, ``from_``, ``q`` and ``sort`` keyword arguments are URL parameters, as in
opensearch-py. Arguments are accepted exactly as the installed opensearch-py accepts them:
``body``/``index`` positionally where its ``search`` takes them so (opensearch-py 2), body
fields only inside ``body`` (``query=`` is a ``TypeError`` there, as in opensearch-py).
"""

from __future__ import annotations

from typing import Any

from opensearchpy import AsyncOpenSearch as _AsyncOpenSearch
from opensearchpy import OpenSearch as _OpenSearch

from crossrank.adapters._client import AsyncReranking, EngineCalls, RerankingClient, SyncReranking

__all__ = ["AsyncOpenSearch", "OpenSearch"]

# Body fields opensearch-py takes only inside ``body``: as keywords they are its TypeError.
_BODY_KWARGS = frozenset(
    {
        "query",
        "aggs",
        "aggregations",
        "highlight",
        "post_filter",
        "suggest",
        "collapse",
        "rescore",
        "search_after",
        "pit",
        "ext",
        "min_score",
        "fields",
        "script_fields",
        "runtime_mappings",
        "indices_boost",
        "knn",
    }
)
# URL parameters reranking reads, by opensearch-py keyword and engine name.
_URL_PARAMS = {
    "size": "size",
    "from_": "from",
    "from": "from",
    "q": "q",
    "sort": "sort",
    "scroll": "scroll",
    "_source": "_source",
    "_source_includes": "_source_includes",
    "_source_excludes": "_source_excludes",
}


def _split_search(kwargs: dict[str, Any]) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    rest = dict(kwargs)
    for name in rest:
        if name in _BODY_KWARGS:  # refused before any planning, as opensearch-py refuses it
            raise TypeError(f"search() got an unexpected keyword argument '{name}'")
    body = dict(rest.pop("body", None) or {})
    given = dict(rest.get("params") or {})
    params = {_URL_PARAMS[k]: v for k, v in {**given, **rest}.items() if k in _URL_PARAMS}
    return body, params, rest


def _split_msearch(kwargs: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    rest = dict(kwargs)
    return rest.pop("body", None), rest


class _Calls(EngineCalls):
    url_names = _URL_PARAMS


class _Reranking(RerankingClient):
    _calls = _Calls
    _split_search = staticmethod(_split_search)
    _split_msearch = staticmethod(_split_msearch)


class OpenSearch(_Reranking, SyncReranking, _OpenSearch):
    """``opensearchpy.OpenSearch`` whose ``search``/``msearch`` rerank the top hits."""


class AsyncOpenSearch(_Reranking, AsyncReranking, _AsyncOpenSearch):
    """``opensearchpy.AsyncOpenSearch`` whose ``search``/``msearch`` rerank the top hits."""
