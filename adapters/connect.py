"""Open a reranking client for an engine URL, Elasticsearch or OpenSearch, told apart by the
engine's own product header."""

from __future__ import annotations

import urllib.request
from typing import Any, Literal

__all__ = ["client_for", "detect_kind"]

Kind = Literal["elasticsearch", "opensearch"]


def detect_kind(url: str, timeout: float = 10.0) -> Kind:
    """``elasticsearch`` when the engine answers with ``X-Elastic-Product``, else ``opensearch``."""
    request = urllib.request.Request(url.rstrip("/") + "/_cluster/health", method="GET")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        product = response.headers.get("X-Elastic-Product")
    return "elasticsearch" if product == "Elasticsearch" else "opensearch"


def client_for(url: str, kind: Kind | None = None, **kwargs: Any) -> Any:
    """A sync reranking client (``rerank=``, ``scorer=`` and client options in ``kwargs``)."""
    if (kind or detect_kind(url)) == "opensearch":
        from crossrank.adapters.opensearch import OpenSearch

        return OpenSearch(hosts=[url], **kwargs)
    from crossrank.adapters.elasticsearch import Elasticsearch

    return Elasticsearch(url, **kwargs)
