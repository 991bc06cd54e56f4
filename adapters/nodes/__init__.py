"""Real Elasticsearch/OpenSearch nodes for tests and demos, without Docker.

The engines come from the "integ-test" zips on Maven Central (fetched with ``mvn``
and cached), are unpacked into a private temporary directory and started on free loopback
ports as single-node clusters, or as one real N-node cluster (:class:`EngineCluster`: own
HTTP and transport ports per node; ``kill`` SIGKILLs one).  As root, the install is handed
to ``nobody:nogroup`` and the node runs as that user, since neither engine runs as root.

CLI::

    python -m crossrank.adapters.nodes fetch elasticsearch:8.19.21 opensearch:2.19.6
    python -m crossrank.adapters.nodes run opensearch:3.6.0   # prints the URL, Ctrl-C stops
    python -m crossrank.adapters.nodes run opensearch:2.19.6 --nodes 3   # a 3-node cluster
"""

from __future__ import annotations

from crossrank.adapters.nodes.artifacts import (
    DEFAULT_CACHE_DIR,
    DEFAULT_MODULES,
    EngineKind,
    EngineSpec,
    EngineStartError,
    fetch,
    fetch_module,
    find_java,
    java_major,
)
from crossrank.adapters.nodes.cluster import EngineCluster
from crossrank.adapters.nodes.config import ClusterPlan
from crossrank.adapters.nodes.runner import EngineNode, start_all, start_nodes

__all__ = [
    "DEFAULT_CACHE_DIR",
    "DEFAULT_MODULES",
    "ClusterPlan",
    "EngineCluster",
    "EngineKind",
    "EngineNode",
    "EngineSpec",
    "EngineStartError",
    "fetch",
    "fetch_module",
    "find_java",
    "java_major",
    "start_all",
    "start_nodes",
]
