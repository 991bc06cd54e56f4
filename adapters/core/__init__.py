"""Reranking a search, engine-neutral and without I/O: the data path of every front-end.

In the order data flows: :mod:`.plan` decides whether and how to rerank a request (window,
``from``/``size``, what ``_source`` scoring needs); :mod:`.inputs` turns the engine's hits
into document texts and the request into the query text; :mod:`.flow` drives one search or
``_msearch`` as a generator of I/O steps (engine call, scoring) run by a sync or an async
shell; :mod:`.plan` again rewrites the response (order, fusion, paging) and
:mod:`.source` / :mod:`.filtering` apply the caller's ``_source`` and ``filter_path``.
The client wrappers and the proxy use these names and only move bytes.
"""

from __future__ import annotations

from crossrank.adapters.core.filtering import filter_path
from crossrank.adapters.core.flow import (
    PASSTHROUGH,
    EngineCall,
    Flow,
    ScoreCall,
    msearch_flow,
    parse_msearch,
    run_async,
    run_sync,
    search_flow,
)
from crossrank.adapters.core.inputs import (
    DocumentText,
    document_text,
    extract_query_text,
    query_text_for,
)
from crossrank.adapters.core.plan import (
    DEFAULT_SIZE,
    RERANK_KEY,
    SearchPlan,
    count_param,
    error_item,
    fallback_response,
    finish_search,
    fuse_scores,
    page_of,
    plan_search,
)

__all__ = [
    "DEFAULT_SIZE",
    "PASSTHROUGH",
    "RERANK_KEY",
    "DocumentText",
    "EngineCall",
    "Flow",
    "ScoreCall",
    "SearchPlan",
    "count_param",
    "document_text",
    "error_item",
    "extract_query_text",
    "fallback_response",
    "filter_path",
    "finish_search",
    "fuse_scores",
    "msearch_flow",
    "page_of",
    "parse_msearch",
    "plan_search",
    "query_text_for",
    "run_async",
    "run_sync",
    "search_flow",
]
