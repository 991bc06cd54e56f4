"""The async wrapper clients: same semantics as the sync ones."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from crossrank.reranker import QueryTextError

from .conftest import INDEX
from .conftest import WINDOW as W
from .helpers import approx, assert_passthrough, assert_reranked, body_of, ids, scores
from .test_wrappers import QUERY, Q


@pytest.fixture
async def aclient(engine: Any, rerank_cfg: Any, scorer: Any) -> AsyncIterator[Any]:
    client = engine.async_client(rerank=rerank_cfg, scorer=scorer)
    try:
        yield client
    finally:
        await client.close()


async def test_async_matches_sync(engine: Any, client: Any, aclient: Any, verifier: Any) -> None:
    body = {"query": QUERY, "size": 10, "from": 5}
    got = await aclient.search(index=INDEX, body=body)
    want = client.search(index=INDEX, body=body)
    assert type(got) is type(want)
    assert ids(got) == ids(want)
    assert scores(got) == approx(scores(want))
    assert_reranked(got, query_text=Q, window=W, reranked=W, verifier=verifier)


async def test_async_keyword_style(engine: Any, client: Any, aclient: Any) -> None:
    if engine.is_es:
        got = await aclient.search(index=INDEX, query=QUERY, size=7, rerank={"window": 12})
    else:
        got = await aclient.search(
            index=INDEX, body={"query": QUERY}, size=7, rerank={"window": 12}
        )
    want = client.search(index=INDEX, body={"query": QUERY, "size": 7}, rerank={"window": 12})
    assert ids(got) == ids(want)
    assert body_of(got)["_rerank"]["window"] == 12


async def test_async_passthrough(engine: Any, aclient: Any) -> None:
    for body in (
        {"query": QUERY, "size": 0, "aggs": {"t": {"terms": {"field": "tags"}}}},
        {"query": QUERY, "size": 5, "sort": [{"doc_id": "desc"}]},
        {"query": QUERY, "size": 5, "from": W},
    ):
        got = await aclient.search(index=INDEX, body=body)
        assert_passthrough(got, engine.raw.search(index=INDEX, body=body))
    body = {"query": QUERY, "size": 5}
    got = await aclient.search(index=INDEX, body=body, rerank=False)
    assert_passthrough(got, engine.raw.search(index=INDEX, body=body))


async def test_async_query_text_error(aclient: Any) -> None:
    with pytest.raises(QueryTextError):
        await aclient.search(index=INDEX, body={"query": {"match_all": {}}, "size": 3})


async def test_async_msearch(engine: Any, client: Any, aclient: Any, verifier: Any) -> None:
    searches: list[dict[str, Any]] = [
        {"index": INDEX},
        {"query": QUERY, "size": 5},
        {"index": INDEX},
        {"query": QUERY, "size": 0},
    ]
    if engine.is_es:
        resp = await aclient.msearch(searches=searches)
    else:
        resp = await aclient.msearch(body=searches)
    items = body_of(resp)["responses"]
    raw_items = body_of(engine.msearch(engine.raw, searches))["responses"]
    assert ids(items[0]) == ids(client.search(index=INDEX, body={"query": QUERY, "size": 5}))
    assert_reranked(items[0], query_text=Q, window=W, reranked=W, verifier=verifier)
    assert_passthrough(items[1], raw_items[1])
