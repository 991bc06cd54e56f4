"""The upstream nodes: which one a request goes to, which are dead, and what sniffing found.

The node-pool logic is elastic-transport's :class:`~elastic_transport.NodePool`, the one the
official Elasticsearch clients run: round robin over the live nodes; a failed node is dead for
``backoff * 2 ** (failures - 1)`` seconds (at most ``max_backoff``), then tried again, and
live again after one answer; with no live node, a dead one is tried anyway. It is reused
rather than written a second time, so the proxy fails over as the wrappers' clients do. This
module adds what a proxy needs on top, without I/O: each node's base URL, the live/dead view
``/_crossrank/ready`` reports, and the nodes a ``_nodes/_all/http`` answer names (sniffing).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import httpx
from elastic_transport import BaseNode, NodeConfig, NodePool, RoundRobinSelector

__all__ = ["UpstreamNode", "UpstreamPool", "node_config", "sniffed_nodes"]

# The pool logs every death and resurrection as plain text; the proxy logs its own JSON lines.
logging.getLogger("elastic_transport.node_pool").setLevel(logging.ERROR)


def node_config(url: str) -> NodeConfig:
    """The node of an upstream URL (``http://host:port/prefix``)."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return NodeConfig(parts.scheme, parts.hostname or "", port, path_prefix=parts.path)


#: Request URLs remembered per node (bounded: a full cache starts over).
URL_CACHE = 1024


class UpstreamNode(BaseNode):
    """One upstream node: its base URL. Requests are sent by the proxy's own HTTP client."""

    def __init__(self, config: NodeConfig) -> None:
        super().__init__(config)
        host = f"[{config.host}]" if ":" in config.host else config.host
        self.url = httpx.URL(f"{config.scheme}://{host}:{config.port}")
        self.prefix = config.path_prefix.rstrip("/").encode("latin-1")
        self.label = f"{host}:{config.port}"
        self._urls: dict[bytes, httpx.URL] = {}

    def url_for(self, target: bytes) -> httpx.URL:
        """``target`` (a checked origin-form path and query) on this node: built from parts,
        so the host is the node's whatever the target holds. Remembered for the last
        :data:`URL_CACHE` targets (searches repeat theirs; building one costs ~25 us)."""
        url = self._urls.get(target)
        if url is None:
            url = self.url.copy_with(raw_path=self.prefix + target)
            if len(self._urls) >= URL_CACHE:
                self._urls.clear()
            self._urls[target] = url
        return url

    def perform_request(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("the proxy sends requests itself (see forward.Upstream)")


class UpstreamPool:
    """The seed nodes, and those sniffing adds, in an elastic-transport node pool."""

    def __init__(self, urls: Sequence[str], *, backoff: float, max_backoff: float) -> None:
        self.seeds = [node_config(url) for url in urls]
        self._pool = NodePool(
            self.seeds,
            UpstreamNode,
            dead_node_backoff_factor=backoff,
            max_dead_node_backoff=max_backoff,
            node_selector_class=RoundRobinSelector,
            randomize_nodes=False,
        )
        self._dead_since: dict[NodeConfig, float] = {}
        self._members = set(self.seeds)

    def get(self) -> UpstreamNode:
        """The next node to send to (a dead one only when none is live)."""
        node = self._pool.get()
        assert isinstance(node, UpstreamNode)
        return node

    def mark_dead(self, node: UpstreamNode) -> None:
        self._pool.mark_dead(node)
        self._dead_since.setdefault(node.config, time.monotonic())

    def mark_live(self, node: UpstreamNode) -> None:
        if self._dead_since.pop(node.config, None) is not None:
            self._pool.mark_live(node)

    @property
    def size(self) -> int:
        """How many nodes the pool holds (seeds and sniffed), live or dead."""
        return len(self._members)

    def nodes(self) -> list[UpstreamNode]:
        """Every node in the pool (seeds first), live or dead."""
        found = [n for n in self._pool.all() if n.config in self._members]
        return sorted(
            (n for n in found if isinstance(n, UpstreamNode)),
            key=lambda n: (n.config not in self.seeds, n.label),
        )

    def status(self) -> dict[str, list[str]]:
        """The nodes by state, for ``/_crossrank/ready``: dead until a request succeeds."""
        live = [n.label for n in self.nodes() if n.config not in self._dead_since]
        dead = [n.label for n in self.nodes() if n.config in self._dead_since]
        return {"live": live, "dead": dead}

    def update(self, found: Iterable[NodeConfig]) -> list[str]:
        """Make the pool the seeds plus ``found`` (a sniff's answer); the labels added."""
        found = set(found)
        added = []
        for config in found - self._members:
            self._pool.add(config)
            added.append(config)
        for config in self._members - found - set(self.seeds):
            self._pool.remove(config)
            self._dead_since.pop(config, None)
        self._members = set(self.seeds) | found
        return sorted(f"{c.host}:{c.port}" for c in added)


def sniffed_nodes(answer: Any, like: NodeConfig) -> list[NodeConfig]:
    """The HTTP nodes of a ``GET _nodes/_all/http`` answer, with ``like``'s scheme and path
    prefix; master-only nodes are left out (as the official clients' sniffing does)."""
    nodes = answer.get("nodes") if isinstance(answer, Mapping) else None
    if not isinstance(nodes, Mapping):
        return []
    out = []
    for info in nodes.values():
        if not isinstance(info, Mapping):
            continue
        roles = info.get("roles")
        if roles in (["master"], ["cluster_manager"]):
            continue
        http = info.get("http")
        address = http.get("publish_address") if isinstance(http, Mapping) else None
        if not isinstance(address, str) or ":" not in address:
            continue
        host, _, port = address.rpartition(":")
        if "/" in host:  # "hostname/ip:port" when http.publish_host is set
            host = host.split("/", 1)[0]
        host = host.strip("[]")
        if not port.isdigit() or not host:
            continue
        out.append(like.replace(host=host, port=int(port)))
    return out
