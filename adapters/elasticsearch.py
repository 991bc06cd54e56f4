"""Drop-in reranking wrappers of ``elasticsearch.Elasticsearch`` and ``AsyncElasticsearch``.

Constructed like the originals, plus ``rerank=`` (a :class:`RerankConfig` or dict) and
``scorer=`` (any :class:`Scorer`; default: a local cross-encoder of ``rerank.model``).
Every method passes through unchanged except ``search`` and ``msearch``, which take an extra
``rerank=`` per call (``False`` to switch off, or a dict of options) and rerank.
"""

from __future__ import annotations

from typing import Any

from elastic_transport import ObjectApiResponse
from elasticsearch import AsyncElasticsearch as _AsyncElasticsearch
from elasticsearch import Elasticsearch as _Elasticsearch

from crossrank.adapters._client import AsyncReranking, EngineCalls, RerankingClient, SyncReranking

__all__ = ["AsyncElasticsearch", "Elasticsearch"]

# Keyword arguments that elasticsearch-py sends in the search body (8.x and 9.x clients).
_BODY_FIELDS = frozenset(
    {
        "aggregations",
        "aggs",
        "collapse",
        "docvalue_fields",
        "explain",
        "ext",
        "fields",
        "from_",
        "highlight",
        "indices_boost",
        "knn",
        "min_score",
        "pit",
        "post_filter",
        "profile",
        "query",
        "rank",
        "rescore",
        "retriever",
        "runtime_mappings",
        "script_fields",
        "search_after",
        "seq_no_primary_term",
        "size",
        "slice",
        "sort",
        "source",
        "_source",
        "stats",
        "stored_fields",
        "suggest",
        "terminate_after",
        "timeout",
        "track_scores",
        "track_total_hits",
        "version",
    }
)
_BODY_ALIASES = {"from_": "from", "source": "_source"}
# URL parameters reranking reads, by elasticsearch-py keyword and engine name.
_URL_NAMES = {
    "q": "q",
    "scroll": "scroll",
    "source_includes": "_source_includes",
    "_source_includes": "_source_includes",
    "source_excludes": "_source_excludes",
    "_source_excludes": "_source_excludes",
}


def _split_search(kwargs: dict[str, Any]) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    rest = dict(kwargs)
    body = dict(rest.pop("body", None) or {})
    for name in list(rest):
        if name in _BODY_FIELDS and rest[name] is not None:
            body[_BODY_ALIASES.get(name, name)] = rest.pop(name)
    params = {_URL_NAMES[k]: v for k, v in rest.items() if k in _URL_NAMES and v is not None}
    return body, params, rest


def _split_msearch(kwargs: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    rest = dict(kwargs)
    body = rest.pop("searches", None)
    if body is None:
        body = rest.pop("body", None)
    return body, rest


class _Calls(EngineCalls):
    url_names = _URL_NAMES

    def body_of(self, response: Any) -> Any:
        return response.body

    def wrap(self, body: dict[str, Any], response: Any) -> Any:
        return ObjectApiResponse(body=body, meta=response.meta)


class _Reranking(RerankingClient):
    _calls = _Calls
    _split_search = staticmethod(_split_search)
    _split_msearch = staticmethod(_split_msearch)

    def _copy_rerank(self, client: Any) -> Any:
        client._rerank = self._rerank
        return client


class Elasticsearch(_Reranking, SyncReranking, _Elasticsearch):
    """``elasticsearch.Elasticsearch`` whose ``search``/``msearch`` rerank the top hits."""

    def options(self, **kwargs: Any) -> Any:
        return self._copy_rerank(super().options(**kwargs))


class AsyncElasticsearch(_Reranking, AsyncReranking, _AsyncElasticsearch):
    """``elasticsearch.AsyncElasticsearch`` whose ``search``/``msearch`` rerank the top hits."""

    def options(self, **kwargs: Any) -> Any:
        return self._copy_rerank(super().options(**kwargs))
