"""The wrappers fetch what scoring needs and return only the ``_source`` the caller asked for."""

from __future__ import annotations

from typing import Any

from .conftest import INDEX
from .helpers import body_of, ids

QUERY = {"match": {"text": "information retrieval systems for documents and indexing"}}


def test_source_filtering_does_not_starve_scoring(engine: Any, client: Any) -> None:
    full = body_of(client.search(index=INDEX, body={"query": QUERY, "size": 10}))
    variants: list[dict[str, Any]] = [
        {"body": {"query": QUERY, "size": 10, "_source": ["title"]}},
        {"body": {"query": QUERY, "size": 10, "_source": False}},
        {"body": {"query": QUERY, "size": 10, "_source": {"excludes": ["text"]}}},
    ]
    # URL-parameter style: opensearch-py sends _source_includes as a URL parameter,
    # elasticsearch-py as source_includes.
    url_kw = "source_includes" if engine.is_es else "_source_includes"
    variants.append({"body": {"query": QUERY, "size": 10}, url_kw: ["title"]})
    for kwargs in variants:
        resp = body_of(client.search(index=INDEX, **kwargs))
        assert ids(resp) == ids(full), kwargs
        assert resp["_rerank"]["missing_fields"] == 0
        for hit in resp["hits"]["hits"]:
            source = hit.get("_source")
            if kwargs["body"].get("_source") is False:
                assert source is None
            else:
                assert source is not None and "text" not in source
    # The same filtering as the engine applies itself, hit for hit.
    raw = engine.raw_search({"query": QUERY, "size": 10, "_source": ["title"]})
    titles = {h["_id"]: h["_source"] for h in raw["hits"]["hits"]}
    filtered = body_of(
        client.search(index=INDEX, body={"query": QUERY, "size": 10, "_source": ["title"]})
    )
    for hit in filtered["hits"]["hits"]:
        if hit["_id"] in titles:
            assert hit["_source"] == titles[hit["_id"]]
