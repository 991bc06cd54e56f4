"""A real N-node cluster on loopback: the same nodes as :class:`EngineNode`, each on its own
HTTP and transport ports, discovering each other through the transport ports, started
concurrently; green with every node in it before :meth:`EngineCluster.start` returns.

    with EngineCluster("opensearch:2.19.6", nodes=3) as cluster:
        client = OpenSearch(hosts=cluster.urls, max_retries=3, retry_on_timeout=True)
        cluster.kill(1)            # SIGKILL, as a crash: the client's node pool fails over
        cluster.start_node(1)      # back from its data, on the same ports; green again
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from crossrank.adapters.nodes.artifacts import EngineSpec, EngineStartError
from crossrank.adapters.nodes.config import ClusterPlan
from crossrank.adapters.nodes.runner import EngineNode, start_nodes
from crossrank.adapters.processes import free_port
from crossrank.reranker.errors import ConfigurationError

__all__ = ["EngineCluster"]


class EngineCluster:
    """``nodes`` Elasticsearch/OpenSearch nodes of ``spec`` forming one cluster on loopback.

    Every node is master (cluster-manager) eligible and listed as an initial one, so the
    cluster keeps a master while a majority lives. ``heap`` is each node's JVM heap (small by
    default: several clusters' JVMs share a test machine); ``name`` is the cluster name
    (default: unique); the other options are :class:`EngineNode`'s. Use as a context manager,
    or call :meth:`start` and :meth:`stop`.
    """

    def __init__(
        self,
        spec: EngineSpec | str,
        nodes: int = 3,
        *,
        heap: str = "384m",
        name: str | None = None,
        java_home: Path | str | None = None,
        cache_dir: Path | str | None = None,
        startup_timeout: float = 300.0,
        settings: dict[str, str] | None = None,
        modules: Sequence[str] | None = None,
    ) -> None:
        if nodes < 1:
            raise ConfigurationError(f"a cluster needs at least one node, not {nodes}")
        self.spec = EngineSpec.parse(spec) if isinstance(spec, str) else spec
        self.plan = ClusterPlan.of(tuple(free_port() for _ in range(nodes)), name=name)
        self.startup_timeout = startup_timeout
        self.startup_seconds: float | None = None
        self.nodes: list[EngineNode] = [
            EngineNode(
                self.spec,
                heap=heap,
                java_home=java_home,
                cache_dir=cache_dir,
                startup_timeout=startup_timeout,
                settings=settings,
                modules=modules,
                cluster=self.plan,
                member=i,
            )
            for i in range(nodes)
        ]

    def __repr__(self) -> str:
        return f"EngineCluster({str(self.spec)!r}, {self.plan.name}, live={self.live})"

    @property
    def name(self) -> str:
        """The cluster name."""
        return self.plan.name

    @property
    def urls(self) -> list[str]:
        """Every node's base URL, in node order (a killed node's too: it comes back there)."""
        return [node.url for node in self.nodes]

    @property
    def live(self) -> list[int]:
        """The indexes of the nodes whose process is running."""
        return [i for i, node in enumerate(self.nodes) if node.running]

    @property
    def url(self) -> str:
        """The URL of the first live node."""
        live = self.live
        if not live:
            raise EngineStartError(f"no node of the {self.spec} cluster is running")
        return self.nodes[live[0]].url

    def __enter__(self) -> EngineCluster:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> EngineCluster:
        """Start every node concurrently and wait until the cluster is green with all of
        them; on any failure every node is stopped and the first error raised."""
        began = time.monotonic()
        start_nodes(self.nodes, concurrent=True)
        try:
            self.wait_green()
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - began
        return self

    def wait_green(self, timeout: float | None = None) -> dict[str, Any]:
        """Wait until the cluster is green with every live node in it (asked of the first
        live node); the health answer."""
        expected = len(self.live)
        seen: dict[str, Any] = {}

        def green(health: Any) -> bool:
            seen.update(health if isinstance(health, dict) else {})
            return bool(seen.get("status") == "green" and seen.get("number_of_nodes") == expected)

        node = self.nodes[self.live[0]] if self.live else None
        if node is None:
            raise EngineStartError(f"no node of the {self.spec} cluster is running")
        node.wait_health(
            f"wait_for_status=green&wait_for_nodes={expected}",
            green,
            self.startup_timeout if timeout is None else timeout,
        )
        return seen

    def kill(self, index: int) -> None:
        """SIGKILL node ``index`` (no shutdown: its connections reset, the cluster sees a
        node vanish); its data and ports are kept for :meth:`start_node`."""
        self.nodes[index].kill()

    def start_node(self, index: int) -> None:
        """Start node ``index`` again (after :meth:`kill`) from its data, on the same ports,
        and wait until the cluster is green with it."""
        self.nodes[index].start()
        self.wait_green()

    def stop(self) -> None:
        """Stop every node and remove their files."""
        for node in self.nodes:
            node.stop()
