"""Real 3-node clusters: an Elasticsearch 9 and an OpenSearch 2 cluster (conftest's
``CLUSTER_MAJORS``), each in the integration pass whose engines include it (pass 1; pass 2,
Elasticsearch 8 only, does not collect this module). Each cluster starts once per module.

**What is compared with the single node, and why.** ADI goes into the cluster with 3
primaries and 1 replica, into the single node (the ``engine`` fixture) with 1 shard. With the
default ``query_then_fetch`` every shard scores BM25 with its own term statistics, so the
cluster's BM25 scores, and so which documents make the reranked window, differ from the single
node's: not comparable. The cluster searches here use ``search_type=dfs_query_then_fetch``,
which gathers every shard's statistics first: BM25 scores equal the single node's, the window
holds the same documents (these queries have no BM25 tie at the window's edge: checked), and
the reranked order and scores, which depend only on that set, must be the same. BM25 ties may
still come back in another order across shards (broken by shard, then document), so the
engines' ranks are not compared, their scores are. ``crossrank eval`` creates its own index
(1 shard, 0 replicas, its settings) on the cluster as on the node: BM25 is the same there
without DFS, and the run goes through a node of the cluster.

**Failover.** The wrappers are given all three node URLs, in node order, with the options a
user would set for a cluster (:data:`FAILOVER`): ``max_retries=3`` and
``retry_on_timeout=True`` (the official clients' node pools retry a connection error on the
next node and put the failed node on a growing timeout; ``retry_on_timeout`` covers a node
that hangs instead of dying). That alone is not enough for whole answers: a node killed while
a search's *fetch* phase waits on it makes the coordinating node answer 200 with the hits of
the other shards only (``_shards.failed: 1``, ``node_disconnected_exception``; the engines do
not retry a fetch on another copy): 2 searches of each engine's load did so when measured
here (ES 9.3.2 and OpenSearch 2.19.6, 8 threads, one node killed). So the searches also ask
for ``allow_partial_search_results=false`` (the engine then answers 500
``search_phase_execution_exception`` instead) and the clients retry 500 besides 502, 503 and
504 (``retry_on_status``; a search is a read, safe to repeat on another node). A node other
than the first URL is SIGKILLed after a fixed number of the 500 searches of the load (8
threads, or 8 tasks), with searches in flight: every search must come back whole.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from crossrank.adapters.cli.evaluate import main as eval_main
from crossrank.adapters.nodes import EngineCluster, EngineSpec

from .conftest import (
    CLUSTER_MAJORS,
    INDEX,
    WINDOW,
    _timings,
    cluster_specs,
    dataset_dir,
    index_adi,
    queries,
)
from .helpers import LoadResult, arun_load, body_of, hits, ids, run_load, scores
from .proxy_support import ProxyProcess, start_proxy

SPECS = cluster_specs()
if not SPECS:  # conftest does not collect this module then; named explicitly, it is an error
    raise pytest.UsageError(
        f"test_cluster.py needs one of these engines in CROSSRANK_ENGINES: {CLUSTER_MAJORS}"
    )
#: conftest parametrizes ``engine`` (and so ``cluster``) with these engines only.
ENGINE_SPECS = SPECS

NODES = 3
CLUSTER_SETTINGS = {"number_of_shards": 3, "number_of_replicas": 1}
DFS = "dfs_query_then_fetch"
#: What a user sets for a cluster (see the module docstring), and asks of each search.
FAILOVER: dict[str, Any] = {
    "max_retries": 3,
    "retry_on_timeout": True,
    "retry_on_status": (500, 502, 503, 504),
}
WHOLE = {"allow_partial_search_results": False}
LOAD_SEARCHES, LOAD_CONCURRENCY, KILL_AFTER = 500, 8, 100
COMPARED = 8  # ADI queries compared with the single node


@dataclass
class Cluster:
    """A running cluster of the ``engine``'s spec with ADI indexed (3 primaries, 1 replica),
    a raw client over every node, and wrapper factories like ``Engine``'s. ``engines`` is the
    :class:`EngineCluster`: ``engines.urls`` (e.g. a proxy's upstreams), ``engines.kill(i)``
    (SIGKILL node ``i``; with :func:`~.helpers.run_load`'s ``action``, mid-load)."""

    spec: EngineSpec
    engines: EngineCluster
    raw: Any

    @property
    def is_es(self) -> bool:
        return bool(self.spec.kind == "elasticsearch")

    def client(self, rerank: Any = None, scorer: Any = None, **kwargs: Any) -> Any:
        """A sync wrapper over every node's URL with :data:`FAILOVER`; the caller closes it."""
        options = {**FAILOVER, **kwargs}
        if self.is_es:
            from crossrank.adapters.elasticsearch import Elasticsearch

            return Elasticsearch(self.engines.urls, rerank=rerank, scorer=scorer, **options)
        from crossrank.adapters.opensearch import OpenSearch

        return OpenSearch(hosts=self.engines.urls, rerank=rerank, scorer=scorer, **options)

    def async_client(self, rerank: Any = None, scorer: Any = None, **kwargs: Any) -> Any:
        """An async wrapper over every node's URL with :data:`FAILOVER`; the caller closes
        it with :meth:`close_async`."""
        options = {**FAILOVER, **kwargs}
        if self.is_es:
            from crossrank.adapters.elasticsearch import AsyncElasticsearch

            return AsyncElasticsearch(self.engines.urls, rerank=rerank, scorer=scorer, **options)
        from crossrank.adapters.opensearch import AsyncOpenSearch

        return AsyncOpenSearch(hosts=self.engines.urls, rerank=rerank, scorer=scorer, **options)

    async def close_async(self, client: Any) -> None:
        """``await client.close()``, and for opensearch-py also the connections its pool
        still holds as dead: its ``close()`` closes only the live ones, which leaves the
        aiohttp session of a killed node's connection unclosed."""
        await client.close()
        if not self.is_es:
            for connection in client.transport.connection_pool.orig_connections:
                await connection.close()  # a no-op for those already closed


def _raw_client(spec: EngineSpec, urls: list[str]) -> Any:
    if spec.kind == "elasticsearch":
        from elasticsearch import Elasticsearch

        return Elasticsearch(urls, request_timeout=60, **FAILOVER)
    from opensearchpy import OpenSearch

    return OpenSearch(hosts=urls, timeout=60, **FAILOVER)


@pytest.fixture(scope="module")
def cluster(engine: Any) -> Iterator[Cluster]:
    """A 3-node cluster of ``engine``'s spec with ADI indexed, started once per module (and
    spec); tests that kill a node use :func:`whole_cluster`, which brings it back."""
    spec: EngineSpec = engine.spec
    with EngineCluster(spec, nodes=NODES) as engines:
        _timings[f"start {NODES}-node {spec} cluster"] = engines.startup_seconds or 0.0
        raw = _raw_client(spec, engines.urls)
        began = time.monotonic()
        index_adi(spec, raw, CLUSTER_SETTINGS)
        engines.wait_green()  # the replicas too
        _timings[f"index adi into the {spec} cluster"] = time.monotonic() - began
        try:
            yield Cluster(spec, engines, raw)
        finally:
            raw.close()


@pytest.fixture
def whole_cluster(cluster: Cluster) -> Cluster:
    """The cluster with every node running: a node killed by an earlier test is started
    again from its data, on its ports, and the cluster is green with all of them."""
    for index in range(NODES):
        if index not in cluster.engines.live:
            began = time.monotonic()
            cluster.engines.start_node(index)
            _timings[f"restart node {index} of the {cluster.spec} cluster"] = (
                time.monotonic() - began
            )
    return cluster


def compared_queries() -> list[str]:
    return queries()[:COMPARED]


def body(text: str, size: int = WINDOW) -> dict[str, Any]:
    return {"query": {"multi_match": {"query": text, "fields": ["title", "text"]}}, "size": size}


# --------------------------------------------------------------------------- layout


def test_adi_is_spread_over_the_three_nodes(cluster: Cluster) -> None:
    health = body_of(cluster.raw.cluster.health(index=INDEX))
    assert (health["status"], health["number_of_nodes"]) == ("green", NODES)
    assert (health["active_primary_shards"], health["active_shards"]) == (3, 6)
    rows = body_of(cluster.raw.search(index=INDEX, body={"size": 0}))["_shards"]
    assert rows["total"] == 3
    shards = cluster.raw.cat.shards(index=INDEX, format="json")
    shards = getattr(shards, "body", shards)
    assert len(shards) == 6 and {s["state"] for s in shards} == {"STARTED"}
    by_node: dict[str, list[str]] = {}
    for s in shards:
        by_node.setdefault(s["node"], []).append(s["shard"])
    assert sorted(by_node) == sorted(cluster.engines.plan.node_names)
    for held in by_node.values():
        assert len(held) == len(set(held)) == 2  # never a primary and its replica together


# --------------------------------------------------------------------------- same results


def _recording(cluster: Cluster) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Client options that record every raw engine answer the client receives."""
    seen: list[dict[str, Any]] = []
    if cluster.is_es:
        from elastic_transport import Urllib3HttpNode

        class Node(Urllib3HttpNode):
            def perform_request(self, *args: Any, **kwargs: Any) -> Any:
                resp = super().perform_request(*args, **kwargs)
                seen.append(json.loads(resp.body))
                return resp

        return {"node_class": Node}, seen
    from opensearchpy import Urllib3HttpConnection

    class Connection(Urllib3HttpConnection):
        def perform_request(self, *args: Any, **kwargs: Any) -> Any:
            status, headers, data = super().perform_request(*args, **kwargs)
            seen.append(json.loads(data))
            return status, headers, data

    return {"connection_class": Connection}, seen


def _assert_same_ranking(got: Any, want: Any) -> None:
    """The cluster's reranked answer equals the single node's (see the module docstring)."""
    assert ids(got) == ids(want)
    assert scores(got) == pytest.approx(scores(want), abs=1e-5)
    engine_scores = [[h["_rerank"]["engine_score"] for h in hits(r)] for r in (got, want)]
    assert engine_scores[0] == pytest.approx(engine_scores[1], abs=1e-5)
    got_meta, want_meta = body_of(got)["_rerank"], body_of(want)["_rerank"]
    for key in ("window", "reranked", "query_text", "truncated", "missing_fields"):
        assert got_meta[key] == want_meta[key], key
    assert body_of(got)["hits"]["total"] == body_of(want)["hits"]["total"]


def _assert_no_tie_at_the_window_edge(engine: Any, text: str) -> None:
    raw = engine.raw_search(body(text, WINDOW + 1))["hits"]["hits"]
    if len(raw) > WINDOW:
        assert raw[WINDOW - 1]["_score"] > raw[WINDOW]["_score"], f"tie at the edge: {text!r}"


def test_sync_wrapper_matches_the_single_node(
    engine: Any, client: Any, cluster: Cluster, rerank_cfg: Any, scorer: Any
) -> None:
    options, seen = _recording(cluster)
    wrapper = cluster.client(rerank=rerank_cfg, scorer=scorer, **options)
    try:
        for text in compared_queries():
            _assert_no_tie_at_the_window_edge(engine, text)
            want = client.search(index=INDEX, body=body(text))
            del seen[:]
            got = wrapper.search(index=INDEX, body=body(text), search_type=DFS)
            _assert_same_ranking(got, want)
            # _shards and took are the engine's own, as it answered the one search.
            [engine_answer] = seen
            assert body_of(got)["_shards"] == engine_answer["_shards"]
            assert engine_answer["_shards"]["total"] == 3
            assert engine_answer["_shards"]["successful"] == 3
            assert body_of(got)["took"] == engine_answer["took"]
            assert body_of(want)["_shards"]["total"] == 1
    finally:
        wrapper.close()


async def test_async_wrapper_matches_the_single_node(
    engine: Any, client: Any, cluster: Cluster, rerank_cfg: Any, scorer: Any
) -> None:
    wrapper = cluster.async_client(rerank=rerank_cfg, scorer=scorer)
    try:
        for text in compared_queries():
            want = client.search(index=INDEX, body=body(text))
            got = await wrapper.search(index=INDEX, body=body(text), search_type=DFS)
            _assert_same_ranking(got, want)
            assert body_of(got)["_shards"]["total"] == 3
            assert isinstance(body_of(got)["took"], int)
    finally:
        await cluster.close_async(wrapper)


def test_eval_matches_the_single_node(
    engine: Any, cluster: Cluster, tiny_model_dir: Path, tmp_path: Path
) -> None:
    outputs = {}
    for where, url in (("node", engine.url), ("cluster", cluster.engines.urls[1])):
        out = tmp_path / where
        argv = [
            str(dataset_dir()), "--engine-url", url, "--index", "adi_cluster_eval",
            "--max-queries", "8", "--window", str(WINDOW), "--model", str(tiny_model_dir),
            "--out", str(out),
        ]  # fmt: skip
        assert eval_main(argv) == 0
        summary = json.loads((out / "summary.json").read_text())["summary"]
        outputs[where] = (summary, json.loads((out / "per_query.json").read_text()))
    (node_summary, node_rows), (cluster_summary, cluster_rows) = outputs["node"], outputs["cluster"]
    assert node_summary["bm25"] == cluster_summary["bm25"]
    for run in ("reranked", "fused"):
        assert cluster_summary[run] == pytest.approx(node_summary[run], abs=1e-5)
    assert len(cluster_rows) == len(node_rows) == 8
    for got, want in zip(cluster_rows, node_rows):
        assert set(got) == set(want)
        for key, value in want.items():
            assert got[key] == (
                pytest.approx(value, abs=1e-5) if isinstance(value, float) else value
            )


# --------------------------------------------------------------------------- a node killed


def _load_queries(engine: Any) -> tuple[list[str], dict[str, int]]:
    """Every ADI query, and how many documents each matches (from the single node)."""
    texts = queries()
    totals = {}
    for text in texts:
        answer = engine.raw_search({**body(text, 0), "track_total_hits": True})
        totals[text] = int(answer["hits"]["total"]["value"])
    return texts, totals


def _check(resp: Any, total: int) -> None:
    """A search that came back whole: every shard answered, all its matches counted, its
    window reranked (not a fallback)."""
    answer = body_of(resp)
    shards = answer["_shards"]
    if shards["failed"] or shards["successful"] != shards["total"] or shards["total"] != 3:
        raise AssertionError(f"partial answer: _shards {shards}")
    if answer["hits"]["total"]["value"] != total:
        raise AssertionError(f"{answer['hits']['total']} matches, expected {total}")
    if answer["_rerank"].get("fallback") or len(answer["hits"]["hits"]) != min(10, total):
        raise AssertionError(f"not reranked whole: {answer['_rerank']}")


def _failovers(caplog: pytest.LogCaptureFixture, url: str) -> int:
    """How many times the client's node pool put the node at ``url`` on a timeout."""
    address = url.removeprefix("http://")
    return sum(
        1 for r in caplog.records if "failed for" in r.getMessage() and address in r.getMessage()
    )


def _report(cluster: Cluster, what: str, victim: int, result: LoadResult, failovers: int) -> None:
    line = (
        f"{cluster.spec} cluster, {what} load of {LOAD_SEARCHES} searches x {LOAD_CONCURRENCY},"
        f" node {victim} SIGKILLed: {result}; the client failed over {failovers}x"
    )
    print(line)
    _timings[line] = result.seconds
    for error in result.errors[:10]:
        print("  ", error)


def test_node_killed_under_sync_load(
    engine: Any,
    whole_cluster: Cluster,
    rerank_cfg: Any,
    scorer: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    cluster, victim = whole_cluster, 1  # not the first URL the client is given
    texts, totals = _load_queries(engine)
    wrapper = cluster.client(rerank=rerank_cfg, scorer=scorer)
    caplog.set_level(logging.WARNING)

    def search(i: int) -> None:
        text = texts[i % len(texts)]
        _check(wrapper.search(index=INDEX, body=body(text, 10), **WHOLE), totals[text])

    try:
        result = run_load(
            search,
            LOAD_SEARCHES,
            LOAD_CONCURRENCY,
            action=lambda: cluster.engines.kill(victim),
            after=KILL_AFTER,
        )
    finally:
        wrapper.close()
    failovers = _failovers(caplog, cluster.engines.urls[victim])
    _report(cluster, "sync", victim, result, failovers)
    assert result.action_after == KILL_AFTER and cluster.engines.live == [0, 2]
    assert (result.ok, result.failed) == (LOAD_SEARCHES, 0), result.errors[:10]
    assert failovers >= 1, "the client never tried the killed node: nothing was tested"


async def test_node_killed_under_async_load(
    engine: Any,
    whole_cluster: Cluster,
    rerank_cfg: Any,
    scorer: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    cluster, victim = whole_cluster, 2
    texts, totals = _load_queries(engine)
    wrapper = cluster.async_client(rerank=rerank_cfg, scorer=scorer)
    caplog.set_level(logging.WARNING)

    async def search(i: int) -> None:
        text = texts[i % len(texts)]
        _check(await wrapper.search(index=INDEX, body=body(text, 10), **WHOLE), totals[text])

    try:
        result = await arun_load(
            search,
            LOAD_SEARCHES,
            LOAD_CONCURRENCY,
            action=lambda: cluster.engines.kill(victim),
            after=KILL_AFTER,
        )
    finally:
        await cluster.close_async(wrapper)
    failovers = _failovers(caplog, cluster.engines.urls[victim])
    _report(cluster, "async", victim, result, failovers)
    assert result.action_after == KILL_AFTER and cluster.engines.live == [0, 1]
    assert (result.ok, result.failed) == (LOAD_SEARCHES, 0), result.errors[:10]
    assert failovers >= 1, "the client never tried the killed node: nothing was tested"


# --------------------------------------------------------------------------- the proxy


def _cluster_proxy(cluster: Cluster, rerank_cfg: Any) -> ProxyProcess:
    """``crossrank proxy`` over the cluster's three nodes (``--upstream`` repeated), set up as
    the wrappers' clients are (:data:`FAILOVER`), the wrappers' tiny model in its own process."""
    first, *others = cluster.engines.urls
    more = [word for url in others for word in ("--upstream", url)]
    retry = [
        word
        for status in FAILOVER["retry_on_status"]
        for word in ("--retry-on-status", str(status))
    ]
    return start_proxy(
        first, *more, *retry, "--max-retries", str(FAILOVER["max_retries"]),
        "--model", str(rerank_cfg.model), "--fields", "title,text",
        "--window", str(WINDOW), "--device", "cpu", "--dtype", "float32",
    )  # fmt: skip


def test_proxy_matches_the_single_node(
    engine: Any, client: Any, whole_cluster: Cluster, rerank_cfg: Any
) -> None:
    proxy = _cluster_proxy(whole_cluster, rerank_cfg)
    try:
        with httpx.Client(base_url=proxy.url, timeout=120) as http:
            ready = http.get("/_crossrank/ready").json()
            assert len(ready["nodes"]["live"]) == NODES and ready["nodes"]["dead"] == []
            for text in compared_queries():
                want = client.search(index=INDEX, body=body(text))
                resp = http.post(f"/{INDEX}/_search", params={"search_type": DFS}, json=body(text))
                assert resp.status_code == 200, resp.text[:500]
                got = resp.json()
                _assert_same_ranking(got, want)
                assert got["_shards"]["total"] == got["_shards"]["successful"] == 3
                assert isinstance(got["took"], int)
    finally:
        proxy.stop()


def test_node_killed_under_proxy_load(engine: Any, whole_cluster: Cluster, rerank_cfg: Any) -> None:
    cluster, victim = whole_cluster, 1  # not the first --upstream
    texts, totals = _load_queries(engine)
    proxy = _cluster_proxy(cluster, rerank_cfg)
    victim_label = cluster.engines.urls[victim].removeprefix("http://")
    try:
        limits = httpx.Limits(max_connections=LOAD_CONCURRENCY)
        with httpx.Client(base_url=proxy.url, timeout=120, limits=limits) as http:

            def search(i: int) -> None:
                text = texts[i % len(texts)]
                params = {k: str(v).lower() for k, v in WHOLE.items()}
                resp = http.post(f"/{INDEX}/_search", params=params, json=body(text, 10))
                if resp.status_code != 200:
                    raise AssertionError(f"{resp.status_code}: {resp.text[:300]}")
                _check(resp.json(), totals[text])

            result = run_load(
                search,
                LOAD_SEARCHES,
                LOAD_CONCURRENCY,
                action=lambda: cluster.engines.kill(victim),
                after=KILL_AFTER,
            )
            ready = http.get("/_crossrank/ready").json()
            metrics = http.get("/_crossrank/metrics").text
    finally:
        proxy.stop()
    failures = sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("crossrank_proxy_upstream_failures_total{") and victim_label in line
    )
    _report(cluster, "proxy", victim, result, int(failures))
    assert result.action_after == KILL_AFTER and victim not in cluster.engines.live
    assert (result.ok, result.failed) == (LOAD_SEARCHES, 0), result.errors[:10]
    assert failures >= 1, "the proxy never tried the killed node: nothing was tested"
    assert victim_label in ready["nodes"]["dead"]
    assert len(ready["nodes"]["live"]) == NODES - 1
