"""Real Elasticsearch/OpenSearch nodes for the integration tests.

``CROSSRANK_ENGINES`` lists the engines (``kind:version``, comma-separated); they are
started once per session, concurrently, and the ADI corpus (``CROSSRANK_DATASETS``,
default ``<repo>/../shared/datasets``) is indexed into ``adi`` on each.  An engine that
cannot start, or an Elasticsearch client whose major differs from an ES engine's, is
an error: these tests never skip.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from crossrank.adapters.nodes import EngineNode, EngineSpec, start_all

from .helpers import body_of

REPO = Path(__file__).resolve().parent.parent
INDEX = "adi"
WINDOW = 20

UNICODE_ID = "unicode-1"
UNICODE_TITLE = "Über naïve café – 日本語のテキスト 🚀"
UNICODE_TEXT = (
    "Ünïcödé retrieval of naïve documents: 日本語のテキスト検索 and emoji 🚀🔍 in a café."
)
NO_TEXT_ID = "no-text-1"
NO_TEXT_TITLE = "orphaned catalogue record without abstract"

_timings: dict[str, float] = {}


def _client_major() -> int:
    import elasticsearch

    version: str = getattr(elasticsearch, "__versionstr__")  # noqa: B009 (not re-exported)
    return int(version.split(".")[0])


def _default_engines() -> str:
    es = {8: "elasticsearch:8.19.21", 9: "elasticsearch:9.3.2"}.get(_client_major())
    return ",".join(s for s in (es, "opensearch:2.19.6") if s)


def engine_specs() -> list[EngineSpec]:
    """The engines of this run, from ``CROSSRANK_ENGINES``."""
    specs: list[EngineSpec] = EngineSpec.parse_list(
        os.environ.get("CROSSRANK_ENGINES") or _default_engines()
    )
    if not specs:
        raise pytest.UsageError("CROSSRANK_ENGINES names no engine")
    return specs


#: The engines that also get a real 3-node cluster (``test_cluster.py``), by kind and major:
#: pass 1 (Elasticsearch 9, OpenSearch 2 and 3) runs an ES 9 and an OpenSearch 2 cluster,
#: pass 2 (Elasticsearch 8) none, and does not collect that module at all.
CLUSTER_MAJORS: dict[str, int] = {"elasticsearch": 9, "opensearch": 2}


def cluster_specs() -> list[EngineSpec]:
    """The engines of this run that get a cluster (:data:`CLUSTER_MAJORS`)."""
    return [s for s in engine_specs() if CLUSTER_MAJORS.get(s.kind) == s.major]


def pytest_ignore_collect(collection_path: Path) -> bool | None:
    """``test_cluster.py`` is not collected in a run without an engine that gets a cluster
    (nothing there applies to it; nothing is skipped either)."""
    if collection_path.name == "test_cluster.py" and not cluster_specs():
        return True
    return None


def dataset_dir() -> Path:
    """The ADI dataset directory (BEIR layout)."""
    root = Path(os.environ.get("CROSSRANK_DATASETS") or REPO.parent / "shared" / "datasets")
    return root / "adi"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test here runs against an engine of this run (the ``engine`` fixture, or an
    ``EngineSpec`` parameter of its own, as the demo's): a test needing none would run in
    each integration pass alike, so it belongs in ``tests/``."""
    engine_less = []
    for item in items:
        item.add_marker(pytest.mark.engine)
        callspec = getattr(item, "callspec", None)
        params = callspec.params.values() if callspec is not None else ()
        if not any(isinstance(value, EngineSpec) for value in params):
            engine_less.append(item.nodeid)
    if engine_less:
        raise pytest.UsageError(
            f"integration tests without an engine (move them to tests/): {engine_less}"
        )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "engine" in metafunc.fixturenames:
        # A module may narrow the run's engines with a module-level ENGINE_SPECS list.
        narrowed = getattr(metafunc.module, "ENGINE_SPECS", None)
        specs = engine_specs() if narrowed is None else list(narrowed)
        metafunc.parametrize("engine", specs, ids=[str(s) for s in specs], indirect=True)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _timings:
        terminalreporter.write_sep("-", "crossrank engine timings")
        for name, seconds in _timings.items():
            terminalreporter.write_line(f"{name}: {seconds:.1f}s")


# --------------------------------------------------------------------------- data


def load_documents() -> list[dict[str, Any]]:
    """The ADI corpus as indexed, plus the edge-case documents."""
    corpus = dataset_dir() / "corpus.jsonl"
    if not corpus.is_file():
        raise FileNotFoundError(f"ADI corpus not found at {corpus} (set CROSSRANK_DATASETS)")
    docs: list[dict[str, Any]] = []
    with corpus.open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                row = json.loads(line)
                docs.append(make_doc(row["_id"], row.get("title", ""), row.get("text")))
    docs.append(make_doc(UNICODE_ID, UNICODE_TITLE, UNICODE_TEXT))
    docs.append(make_doc(NO_TEXT_ID, NO_TEXT_TITLE, None))
    return docs


def make_doc(doc_id: str, title: str, text: str | None) -> dict[str, Any]:
    """One indexed document: ``doc_id``, ``title``, ``text``, ``tags`` and ``meta``."""
    doc: dict[str, Any] = {
        "doc_id": doc_id,
        "title": title,
        "tags": [(title[:1] or "_").lower()],
        "meta": {"len": len((text or "").split()), "words": title.split()[:3]},
    }
    if text is not None:
        doc["text"] = text
    return doc


MAPPINGS: dict[str, Any] = {
    "properties": {
        "doc_id": {"type": "keyword"},
        "title": {"type": "text"},
        "text": {"type": "text"},
        "tags": {"type": "keyword"},
        "meta": {
            "properties": {"len": {"type": "integer"}, "words": {"type": "keyword"}},
        },
    }
}
SETTINGS: dict[str, Any] = {"number_of_shards": 1, "number_of_replicas": 0}


def queries() -> list[str]:
    """The ADI queries' texts, in file order."""
    path = dataset_dir() / "queries.jsonl"
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line)["text"] for line in fh if line.strip()]


# --------------------------------------------------------------------------- engines


@dataclass
class Engine:
    """One running engine with ADI indexed, a raw client, and wrapper factories."""

    spec: EngineSpec
    url: str
    raw: Any
    node: EngineNode
    _clients: list[Any] = field(default_factory=list)

    @property
    def is_es(self) -> bool:
        return bool(self.spec.kind == "elasticsearch")

    def client(self, rerank: Any = None, scorer: Any = None, **kwargs: Any) -> Any:
        """A sync wrapper client (closed at session end)."""
        if self.is_es:
            from crossrank.adapters.elasticsearch import Elasticsearch

            client: Any = Elasticsearch(self.url, rerank=rerank, scorer=scorer, **kwargs)
        else:
            from crossrank.adapters.opensearch import OpenSearch

            client = OpenSearch(hosts=[self.url], rerank=rerank, scorer=scorer, **kwargs)
        self._clients.append(client)
        return client

    def async_client(self, rerank: Any = None, scorer: Any = None, **kwargs: Any) -> Any:
        """An async wrapper client; the caller must ``await client.close()``."""
        if self.is_es:
            from crossrank.adapters.elasticsearch import AsyncElasticsearch

            return AsyncElasticsearch(self.url, rerank=rerank, scorer=scorer, **kwargs)
        from crossrank.adapters.opensearch import AsyncOpenSearch

        return AsyncOpenSearch(hosts=[self.url], rerank=rerank, scorer=scorer, **kwargs)

    def raw_search(self, body: dict[str, Any]) -> dict[str, Any]:
        """Search with the official client (body style), as a dict."""
        return body_of(self.raw.search(index=INDEX, body=body))

    def msearch(self, client: Any, searches: list[dict[str, Any]]) -> Any:
        """msearch in the client's own style (``searches=`` for ES, ``body=`` for OpenSearch)."""
        if self.is_es:
            return client.msearch(searches=searches)
        return client.msearch(body=searches)

    def close(self) -> None:
        for client in self._clients:
            client.close()
        self.raw.close()


def _raw_client(spec: EngineSpec, url: str) -> Any:
    if spec.kind == "elasticsearch":
        from elasticsearch import Elasticsearch

        return Elasticsearch(url, request_timeout=60)
    from opensearchpy import OpenSearch

    return OpenSearch(hosts=[url], timeout=60)


def index_adi(spec: EngineSpec, raw: Any, settings: dict[str, Any] | None = None) -> int:
    """Create ``adi`` (index ``settings``, default :data:`SETTINGS`) and bulk-index the
    documents; returns the document count."""
    docs = load_documents()
    settings = SETTINGS if settings is None else settings
    if raw.indices.exists(index=INDEX):
        raw.indices.delete(index=INDEX)
    if spec.kind == "elasticsearch":
        raw.indices.create(index=INDEX, settings=settings, mappings=MAPPINGS)
    else:
        raw.indices.create(index=INDEX, body={"settings": settings, "mappings": MAPPINGS})
    ops: list[dict[str, Any]] = []
    for doc in docs:
        ops += [{"index": {"_index": INDEX, "_id": doc["doc_id"]}}, doc]
    resp = body_of(raw.bulk(body=ops, refresh="wait_for"))
    if resp.get("errors"):
        bad = [i for i in resp["items"] if i["index"].get("error")][:3]
        raise RuntimeError(f"bulk indexing into {spec} failed: {bad}")
    raw.indices.refresh(index=INDEX)
    count = int(body_of(raw.count(index=INDEX))["count"])
    if count != len(docs):
        raise RuntimeError(f"{spec}: indexed {count} documents, expected {len(docs)}")
    return count


@pytest.fixture(scope="session")
def engine_nodes() -> Iterator[dict[EngineSpec, EngineNode]]:
    """All engines of the run, started concurrently; fails (never skips) on any error."""
    specs = engine_specs()
    client_major = _client_major()
    for spec in specs:
        if spec.kind == "elasticsearch" and spec.major != client_major:
            raise RuntimeError(
                f"elasticsearch-py {client_major}.x cannot talk to {spec}: install "
                f"elasticsearch-py {spec.major}.x for it (the Makefile runs ES 8 in a second pass "
                "with the .venv-es8 overlay on PYTHONPATH)"
            )
    began = time.monotonic()
    concurrent = os.environ.get("CROSSRANK_SEQUENTIAL_START", "") in ("", "0")
    nodes = start_all(specs, concurrent=concurrent)
    _timings["start all engines (wall)"] = time.monotonic() - began
    for node in nodes:
        _timings[f"start {node.spec}"] = node.startup_seconds or 0.0
    try:
        yield {node.spec: node for node in nodes}
    finally:
        for node in nodes:
            node.stop()


@pytest.fixture(scope="session")
def engine(
    request: pytest.FixtureRequest, engine_nodes: dict[EngineSpec, EngineNode]
) -> Iterator[Engine]:
    """One running engine (parametrized over ``CROSSRANK_ENGINES``) with ADI indexed."""
    spec: EngineSpec = request.param
    node = engine_nodes[spec]
    raw = _raw_client(spec, node.url)
    began = time.monotonic()
    index_adi(spec, raw)
    _timings[f"index adi into {spec}"] = time.monotonic() - began
    eng = Engine(spec=spec, url=node.url, raw=raw, node=node)
    try:
        yield eng
    finally:
        eng.close()


# --------------------------------------------------------------------------- reranking


@pytest.fixture(scope="session")
def rerank_cfg(tiny_model_dir: Path) -> Any:
    """The base config: tiny model, ``title`` + ``text``, window 20, float32 on CPU."""
    from crossrank.reranker import RerankConfig

    return RerankConfig(
        model=str(tiny_model_dir),
        fields=["title", "text"],
        window=WINDOW,
        device="cpu",
        dtype="float32",
    )


@pytest.fixture(scope="session")
def scorer(rerank_cfg: Any) -> Any:
    """The scorer the wrapper clients share."""
    from crossrank.reranker import LocalScorer

    return LocalScorer(rerank_cfg)


@pytest.fixture(scope="session")
def verifier(rerank_cfg: Any) -> Any:
    """A second, cache-less scorer used to re-score hits independently of the wrappers."""
    from crossrank.reranker import LocalScorer

    return LocalScorer(rerank_cfg.model_copy(update={"cache_size": 0}))


@pytest.fixture(scope="session")
def client(engine: Engine, rerank_cfg: Any, scorer: Any) -> Any:
    """The sync wrapper client of ``engine`` with the base config."""
    return engine.client(rerank=rerank_cfg, scorer=scorer)
