"""A node's configuration, computed without I/O: its ``-E`` settings, alone or as a member of
a cluster (:class:`ClusterPlan`), and its environment. The runner only applies them."""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from crossrank.adapters.nodes.artifacts import EngineSpec
from crossrank.reranker.errors import ConfigurationError

__all__ = ["LOOPBACK", "ClusterPlan", "node_env", "node_settings"]

LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class ClusterPlan:
    """Who is in a cluster on loopback: its name, and each member's node name and transport
    port. Every member seeds discovery with all the transport ports, and all of them are the
    initial master (cluster-manager) nodes, so any majority of them forms the cluster."""

    name: str
    node_names: tuple[str, ...]
    transport_ports: tuple[int, ...]

    def __post_init__(self) -> None:
        if not self.node_names or len(self.node_names) != len(self.transport_ports):
            raise ConfigurationError("a cluster needs one transport port per node, at least one")
        if len(set(self.node_names)) != len(self.node_names):
            raise ConfigurationError(f"duplicate node names in {self.node_names}")
        if len(set(self.transport_ports)) != len(self.transport_ports):
            raise ConfigurationError(f"duplicate transport ports in {self.transport_ports}")

    @classmethod
    def of(cls, transport_ports: tuple[int, ...], *, name: str | None = None) -> ClusterPlan:
        """A plan for one node per port, named ``<name>-0``, ``<name>-1``, ...; the default
        name is unique (``crossrank-<random hex>``), so that clusters started side by side on
        one machine can never join each other."""
        name = name or f"crossrank-{secrets.token_hex(4)}"
        names = tuple(f"{name}-{i}" for i in range(len(transport_ports)))
        return cls(name, names, tuple(transport_ports))

    @property
    def size(self) -> int:
        """The number of nodes."""
        return len(self.node_names)

    @property
    def seed_hosts(self) -> str:
        """``discovery.seed_hosts``: every member's transport address."""
        return ",".join(f"{LOOPBACK}:{port}" for port in self.transport_ports)

    def member_settings(self, spec: EngineSpec, member: int) -> dict[str, str]:
        """The discovery settings of node ``member`` (0-based)."""
        if not 0 <= member < self.size:
            raise ConfigurationError(f"no node {member} in a cluster of {self.size}")
        # OpenSearch 2 renamed master to cluster-manager (the old name is deprecated there).
        bootstrap = (
            "cluster.initial_cluster_manager_nodes"
            if spec.kind == "opensearch" and spec.major >= 2
            else "cluster.initial_master_nodes"
        )
        return {
            "cluster.name": self.name,
            "node.name": self.node_names[member],
            "transport.port": str(self.transport_ports[member]),
            "discovery.seed_hosts": self.seed_hosts,
            bootstrap: ",".join(self.node_names),
        }


def node_settings(
    spec: EngineSpec,
    *,
    http_port: int,
    transport_port: int,
    data: Path,
    logs: Path,
    cluster: ClusterPlan | None = None,
    member: int = 0,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The ``-E`` settings of a node on loopback: a single-node cluster, or member ``member``
    of ``cluster`` (whose plan then fixes the transport port). Security is off on
    Elasticsearch (the OpenSearch integ-test zips have no security plugin); the disk
    watermarks are off so a full test disk does not block allocation. ``extra`` wins."""
    settings = {
        "http.port": str(http_port),
        "transport.port": str(transport_port),
        "network.host": LOOPBACK,
        "path.data": str(data),
        "path.logs": str(logs),
        "cluster.routing.allocation.disk.threshold_enabled": "false",
    }
    if cluster is None:
        settings["discovery.type"] = "single-node"
    else:
        settings.update(cluster.member_settings(spec, member))
    if spec.kind == "elasticsearch":
        settings["xpack.security.enabled"] = "false"
    settings.update(extra or {})
    return settings


def node_env(
    spec: EngineSpec,
    *,
    java: Path,
    heap: str,
    tmp: Path,
    home: Path,
    base: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The node's environment: ``base`` (default this process's) with the engine's Java,
    heap (``-Xms`` = ``-Xmx``) and temporary directory, ``HOME`` set to ``home``, and any
    inherited config path removed (the node uses its own unpacked config)."""
    prefix = spec.env_prefix
    env = dict(os.environ if base is None else base)
    env.update(
        {
            f"{prefix}_JAVA_HOME": str(java),
            "JAVA_HOME": str(java),
            f"{prefix}_JAVA_OPTS": f"-Xms{heap} -Xmx{heap}",
            f"{prefix}_TMPDIR": str(tmp),
            "TMPDIR": str(tmp),
            "HOME": str(home),
        }
    )
    env.pop("ES_PATH_CONF" if prefix == "ES" else "OPENSEARCH_PATH_CONF", None)
    return env
