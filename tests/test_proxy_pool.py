"""The proxy's upstream nodes: failover, dead nodes, retries by kind, sniffing, readiness.

Several in-memory upstream nodes (one httpx MockTransport that dispatches on the host); a
node "down" refuses connections (``httpx.ConnectError``) or drops them after the request was
sent (``httpx.RemoteProtocolError``). The real thing, a node killed under load in a 3-node
cluster, is in ``integration_tests/test_cluster.py``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from elastic_transport import NodeConfig

from crossrank.adapters.proxy import ProxySettings, create_app
from crossrank.adapters.proxy.pool import UpstreamPool, sniffed_nodes
from crossrank.reranker import RerankConfig

from .fakes import OverlapScorer

SEARCH = {"query": {"match": {"text": "doc"}}}
NODES = ["http://n1:9200", "http://n2:9200", "http://n3:9200"]
CONFIG = RerankConfig(model="fake", fields=("text",), window=5)


class Cluster:
    """Three nodes answering searches; ``down[host]`` makes one fail in the given way."""

    def __init__(self) -> None:
        self.down: dict[str, type[httpx.HTTPError]] = {}
        self.seen: list[tuple[str, str, str]] = []  # (host, method, path) that reached a node
        self.nodes_info: dict[str, Any] = {}

    def __call__(self, request: httpx.Request) -> httpx.Response:
        host = request.url.host
        failure = self.down.get(host)
        if failure is httpx.ConnectError:
            raise httpx.ConnectError("connection refused", request=request)
        self.seen.append((host, request.method, request.url.path))
        if failure is not None:
            raise failure("server disconnected", request=request)
        if request.url.path == "/_nodes/_all/http":
            return _respond(self.nodes_info)
        if request.url.path.endswith("/_search"):
            hits = [
                {"_index": "i", "_id": str(n), "_score": 1.0, "_source": {"text": f"doc {n}"}}
                for n in range(3)
            ]
            body = {"took": 1, "hits": {"total": {"value": 3, "relation": "eq"}, "hits": hits}}
            return _respond(body)
        return _respond({"node": host, "path": request.url.path})


def _respond(body: Any, status: int = 200) -> httpx.Response:
    """A streamed answer, as a real transport's (a ``json=`` one counts as already read)."""
    data = json.dumps(body).encode()
    headers = {"content-type": "application/json", "content-length": str(len(data))}
    return httpx.Response(status, headers=headers, stream=_Stream(data))


class _Stream(httpx.AsyncByteStream):
    def __init__(self, data: bytes) -> None:
        self.data = data

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self.data


def _client(cluster: Cluster, **settings: Any) -> httpx.AsyncClient:
    settings = {"upstream": NODES, "rerank": CONFIG, **settings}
    app = create_app(
        ProxySettings(**settings),
        transport=httpx.MockTransport(cluster),
        scorer_factory=lambda config: OverlapScorer(),
    )
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://proxy")


def _search_hosts(cluster: Cluster) -> list[str]:
    return [host for host, _, path in cluster.seen if path.endswith("/_search")]


async def test_round_robin_over_live_nodes() -> None:
    cluster = Cluster()
    async with _client(cluster) as client:
        for _ in range(6):
            resp = await client.post("/i/_search", json={"query": {"match": {"text": "doc"}}})
            assert resp.status_code == 200
    assert sorted(set(_search_hosts(cluster))) == ["n1", "n2", "n3"]
    assert _search_hosts(cluster)[:3] != _search_hosts(cluster)[3:4] * 3


@pytest.mark.parametrize("rerank", [True, False])
async def test_a_refused_node_is_skipped_and_marked_dead(rerank: bool) -> None:
    cluster = Cluster()
    cluster.down["n2"] = httpx.ConnectError
    extra = {} if rerank else {"rerank": CONFIG.model_copy(update={"enabled": False})}
    async with _client(cluster, **extra) as client:
        for _ in range(9):
            resp = await client.post("/i/_search", json={"query": {"match": {"text": "doc"}}})
            assert resp.status_code == 200, resp.text
        ready = (await client.get("/_crossrank/ready")).json()
        metrics = (await client.get("/_crossrank/metrics")).text
    assert "n2" not in _search_hosts(cluster)
    assert ready["nodes"] == {"live": ["n1:9200", "n3:9200"], "dead": ["n2:9200"]}
    # dead for its back-off: tried once, not once per search
    assert 'crossrank_proxy_upstream_failures_total{error="ConnectError",node="n2:9200"} 1.0' in (
        metrics
    )


async def test_a_search_whose_connection_broke_is_retried_on_another_node() -> None:
    cluster = Cluster()
    cluster.down["n1"] = httpx.RemoteProtocolError
    async with _client(cluster) as client:
        for _ in range(3):
            resp = await client.post("/i/_search", json={"query": {"match": {"text": "doc"}}})
            assert resp.status_code == 200, resp.text
    assert ("n1", "POST", "/i/_search") in cluster.seen  # it was sent there, then elsewhere


async def test_a_write_is_retried_only_when_nothing_was_sent() -> None:
    cluster = Cluster()
    cluster.down["n1"] = httpx.RemoteProtocolError
    async with _client(cluster) as client:
        resp = await client.post("/i/_doc", json={"text": "new"})
        assert resp.status_code == 502
        assert resp.json()["error"]["type"] == "crossrank_upstream_exception"
        assert cluster.seen == [("n1", "POST", "/i/_doc")]  # not sent twice
        cluster.down["n2"] = httpx.ConnectError  # refused: nothing sent, so n3 gets it
        cluster.down.pop("n1")
        cluster.seen.clear()
        resp = await client.post("/i/_doc", json={"text": "new"})
        assert resp.status_code == 200
        assert [host for host, _, _ in cluster.seen] == ["n3"]


async def test_every_node_down_is_one_502_with_the_engines_error_shape() -> None:
    cluster = Cluster()
    cluster.down.update(dict.fromkeys(["n1", "n2", "n3"], httpx.ConnectError))
    async with _client(cluster, rerank=CONFIG.model_copy(update={"enabled": False})) as client:
        resp = await client.post("/i/_search", json=SEARCH)
        ready = await client.get("/_crossrank/ready")
    assert resp.status_code == 502
    assert resp.json()["status"] == 502 and "n1" not in resp.text
    assert ready.status_code == 503 and ready.json()["nodes"]["live"] == []


async def test_a_dead_node_comes_back_after_its_backoff() -> None:
    cluster = Cluster()
    cluster.down["n2"] = httpx.ConnectError
    settings = {"dead_backoff": 0.001, "max_dead_backoff": 0.001}
    async with _client(cluster, **settings) as client:
        await client.post("/i/_search", json=SEARCH)
        await client.post("/i/_search", json=SEARCH)
        cluster.down.clear()
        for _ in range(6):
            assert (await client.post("/i/_search", json=SEARCH)).status_code == 200
        ready = (await client.get("/_crossrank/ready")).json()
    assert "n2" in _search_hosts(cluster)
    assert ready["nodes"]["dead"] == []


NODES_INFO = {
    "nodes": {
        "a": {"roles": ["data", "ingest"], "http": {"publish_address": "127.0.0.1:9201"}},
        "b": {"roles": ["master"], "http": {"publish_address": "127.0.0.1:9202"}},
        "c": {"roles": ["data"], "http": {"publish_address": "node-c/10.0.0.3:9203"}},
        "d": {"roles": ["data"], "http": {"publish_address": "[::1]:9204"}},
        "e": {"roles": ["data"]},
        "f": "not an object",
    }
}


def test_sniffed_nodes_reads_publish_addresses_as_the_official_clients_do() -> None:
    like = NodeConfig("https", "seed", 9200, path_prefix="/es")
    found = sniffed_nodes(NODES_INFO, like)
    assert [(n.scheme, n.host, n.port, n.path_prefix) for n in found] == [
        ("https", "127.0.0.1", 9201, "/es"),
        ("https", "node-c", 9203, "/es"),
        ("https", "::1", 9204, "/es"),
    ]
    assert sniffed_nodes({"nodes": []}, like) == [] and sniffed_nodes("x", like) == []


def test_pool_update_adds_and_removes_sniffed_nodes_but_keeps_the_seeds() -> None:
    pool = UpstreamPool(["http://seed:9200"], backoff=1.0, max_backoff=30.0)
    like = pool.seeds[0]
    assert pool.update([like.replace(host="a"), like.replace(host="b")]) == ["a:9200", "b:9200"]
    assert [n.label for n in pool.nodes()] == ["seed:9200", "a:9200", "b:9200"]
    pool.update([like.replace(host="b")])
    assert [n.label for n in pool.nodes()] == ["seed:9200", "b:9200"]


async def test_sniff_on_node_failure_adds_the_clusters_other_nodes() -> None:
    cluster = Cluster()
    cluster.nodes_info = {
        "nodes": {
            n: {"roles": ["data"], "http": {"publish_address": f"{n}:9200"}} for n in ("n1", "n4")
        }
    }
    cluster.down["n1"] = httpx.ConnectError
    settings = {"upstream": ["http://n1:9200"], "sniff_on_node_failure": True}
    async with _client(cluster, **settings) as client:
        first = await client.post("/i/_search", json=SEARCH)
        assert first.status_code == 502  # one node only, and it is down
        cluster.down.clear()
        upstream = _upstream(client)
        assert upstream._sniffing is not None
        # the background sniff, started by the failure, ran before or after n1 came back
        added = await upstream._sniffing + await upstream.sniff()
        assert added == ["n4:9200"]
        ready = (await client.get("/_crossrank/ready")).json()
    assert sorted(ready["nodes"]["live"] + ready["nodes"]["dead"]) == ["n1:9200", "n4:9200"]


def _upstream(client: httpx.AsyncClient) -> Any:
    app: Any = client._transport.app  # type: ignore[attr-defined]
    while not hasattr(app, "upstream"):
        app = app.app
    return app.upstream


def test_one_url_or_several_and_credentials_moved_out_of_each() -> None:
    settings = ProxySettings(upstream=["http://u:p@n1:9200", "http://n2:9200/"])
    assert settings.upstream == ("http://n1:9200", "http://n2:9200")
    assert settings.upstream_auth is not None and "u:p@" not in json.dumps(settings.upstream)


async def test_a_search_answered_with_a_retry_status_goes_to_the_next_node() -> None:
    cluster = Cluster()
    statuses = {"n1": 503}
    real = cluster.__call__

    def answer(request: httpx.Request) -> httpx.Response:
        status = statuses.get(request.url.host)
        if status is not None and request.url.path.endswith(("/_search", "/_doc")):
            cluster.seen.append((request.url.host, request.method, request.url.path))
            return _respond({"error": "unavailable", "status": status}, status)
        return real(request)

    app = create_app(
        ProxySettings(upstream=NODES, rerank=CONFIG),
        transport=httpx.MockTransport(answer),
        scorer_factory=lambda config: OverlapScorer(),
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://proxy") as client:
        resp = await client.post("/i/_search", json=SEARCH)
        assert resp.status_code == 200 and _search_hosts(cluster) == ["n1", "n2"]
        statuses.update(dict.fromkeys(["n1", "n2", "n3"], 503))
        cluster.seen.clear()
        resp = await client.post("/i/_doc", json={"text": "x"})  # a write: its answer, once
        assert resp.status_code == 503 and len(cluster.seen) == 1
        cluster.seen.clear()
        resp = await client.post("/i/_search", json=SEARCH)  # every node tried, the last answer
        assert resp.status_code == 503 and resp.json()["status"] == 503
        assert sorted(_search_hosts(cluster)) == ["n1", "n2", "n3"]
