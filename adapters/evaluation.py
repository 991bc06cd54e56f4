"""Evaluating reranking on a BEIR collection: index it, run every query through a reranking
client (or the proxy), score BM25, reranked and fused runs with ranx, report latency."""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crossrank.adapters.connect import Kind
from crossrank.adapters.core.plan import fuse_scores
from crossrank.reranker.config import FusionConfig, RerankConfig
from crossrank.reranker.errors import EngineRequestError, ScorerError

__all__ = [
    "METRICS",
    "Collection",
    "EvalResult",
    "ProxySearch",
    "evaluate",
    "format_summary",
    "index_collection",
    "load_beir",
    "pick_analyzer",
    "write_outputs",
]


METRICS = ("ndcg@10", "mrr@10")


@dataclass
class Collection:
    """A BEIR-format collection: corpus, queries and graded judgments."""

    corpus: dict[str, dict[str, str]]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]


def _jsonl(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                yield json.loads(line)


def load_beir(folder: Path | str, split: str = "test") -> Collection:
    """Read ``corpus.jsonl``, ``queries.jsonl`` and ``qrels/<split>.tsv``; keeps judged queries."""
    folder = Path(folder)
    corpus = {
        str(d["_id"]): {"title": d.get("title") or "", "text": d.get("text") or ""}
        for d in _jsonl(folder / "corpus.jsonl")
    }
    qrels: dict[str, dict[str, int]] = {}
    with (folder / "qrels" / f"{split}.tsv").open(encoding="utf-8") as handle:
        for row in csv.DictReader(handle, delimiter="\t"):
            if int(row["score"]) > 0:
                qrels.setdefault(row["query-id"], {})[row["corpus-id"]] = int(row["score"])
    queries = {
        str(q["_id"]): q["text"] for q in _jsonl(folder / "queries.jsonl") if str(q["_id"]) in qrels
    }
    return Collection(corpus, queries, {q: qrels[q] for q in queries})


def index_collection(
    client: Any, index: str, collection: Collection, *, reuse: bool, analyzer: str = "standard"
) -> int:
    """Create ``index`` and bulk-load the corpus (skipped when ``reuse`` and it exists)."""
    if client.indices.exists(index=index):
        if reuse:
            return 0
        client.indices.delete(index=index)
    text = {"type": "text", "analyzer": analyzer}
    client.indices.create(
        index=index,
        body={
            "settings": {"number_of_shards": 1, "number_of_replicas": 0},
            "mappings": {"properties": {"title": text, "text": text}},
        },
    )
    from tqdm import tqdm

    ids = list(collection.corpus)
    with tqdm(total=len(ids), desc="indexing", unit="doc") as bar:
        for start in range(0, len(ids), 500):
            lines: list[dict[str, Any]] = []
            for doc_id in ids[start : start + 500]:
                lines += [{"index": {"_index": index, "_id": doc_id}}, collection.corpus[doc_id]]
            resp = client.bulk(body=lines)
            if resp.get("errors"):
                raise EngineRequestError(f"bulk indexing failed: {json.dumps(resp)[:500]}")
            bar.update(len(lines) // 2)
    client.indices.refresh(index=index)
    return len(ids)


def pick_analyzer(client: Any, wanted: str = "auto") -> str:
    """``wanted``, or for ``auto`` the ``english`` analyzer where the engine has it (strong
    BM25: stemming and stopwords), else ``standard``."""
    if wanted != "auto":
        return wanted
    try:
        client.indices.analyze(body={"analyzer": "english", "text": "flows"})
    except Exception:
        return "standard"
    return "english"


class ProxySearch:
    """Searches through a ``crossrank proxy`` with the engine's official client.

    To :func:`evaluate` it looks like the reranking wrappers (``search(index=, body=,
    rerank=)`` and ``rerank_config``): a call's rerank options travel in the body as
    ``ext.crossrank`` (``rerank=False`` sends ``"crossrank": false``: engine order), and the
    proxy answers with the wrapper's ``_rerank`` keys. ``model`` asks the proxy for that
    model on every call (the proxy must serve it). ``rerank_config`` only feeds the
    evaluation's own fusion; the proxy's settings decide the scoring.
    """

    def __init__(
        self,
        url: str,
        kind: Kind,
        *,
        model: str | None = None,
        config: RerankConfig | None = None,
        timeout: float = 120.0,
    ) -> None:
        self.url = url.rstrip("/")
        self.model = model
        self.rerank_config = config or RerankConfig(**({"model": model} if model else {}))
        self.client: Any
        if kind == "opensearch":
            from opensearchpy import OpenSearch

            self.client = OpenSearch(hosts=[self.url], timeout=timeout)
        else:
            from elasticsearch import Elasticsearch

            self.client = Elasticsearch(self.url, request_timeout=timeout)

    def request_body(
        self, body: Mapping[str, Any], rerank: Mapping[str, Any] | bool | None = None
    ) -> dict[str, Any]:
        """``body`` with the call's rerank options under ``ext.crossrank``."""
        out = dict(body)
        control: dict[str, Any] | bool
        if rerank is False:
            control = False
        else:
            control = {**({"model": self.model} if self.model else {})}
            if isinstance(rerank, Mapping):
                control.update(rerank)
            if not control:
                return out
        out["ext"] = {**dict(out.get("ext") or {}), "crossrank": control}
        return out

    def search(
        self, *, index: str, body: Mapping[str, Any], rerank: Mapping[str, Any] | bool | None = None
    ) -> Any:
        """One ``_search`` through the proxy."""
        return self.client.search(index=index, body=self.request_body(body, rerank))

    def close(self) -> None:
        self.client.close()


@dataclass
class EvalResult:
    """Runs, per-query metrics and stage latencies of one evaluation."""

    runs: dict[str, dict[str, dict[str, float]]]
    per_query: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    summary: dict[str, dict[str, float]] = field(default_factory=dict)
    latency_ms: dict[str, dict[str, float]] = field(default_factory=dict)


def _percentiles(values: list[float]) -> dict[str, float]:
    import numpy as np

    return {"p50": float(np.percentile(values, 50)), "p95": float(np.percentile(values, 95))}


def evaluate(
    client: Any,
    index: str,
    collection: Collection,
    *,
    window: int = 100,
    fusion: FusionConfig | None = None,
    progress: bool = True,
) -> EvalResult:
    """Run every query, build the BM25 / reranked / fused runs and score them with ranx."""
    from tqdm import tqdm

    config = client.rerank_config
    fusion = fusion or FusionConfig(method="weighted", weight=0.5)
    runs: dict[str, dict[str, dict[str, float]]] = {"bm25": {}, "reranked": {}, "fused": {}}
    stages: dict[str, list[float]] = {"engine": [], "scoring": [], "total": []}
    items = list(collection.queries.items())
    for qid, text in tqdm(items, desc="queries", unit="q", disable=not progress):
        body = {
            "query": {"multi_match": {"query": text, "fields": ["title", "text"]}},
            "size": window,
            "_source": False,
        }
        start = time.perf_counter()
        resp = client.search(
            index=index,
            body=body,
            rerank={"window": window, "query_text": text, "source": "_source"},
        )
        total = (time.perf_counter() - start) * 1000
        data = getattr(resp, "body", resp)
        hits = data["hits"]["hits"]
        info = data.get("_rerank", {})
        if info.get("fallback"):
            raise ScorerError(
                f"query {qid}: reranking fell back to engine order ({info.get('error')}); "
                "eval needs every query reranked: give scoring more time (the proxy's "
                "--latency-budget-ms, a remote scorer's scorer_timeout) or a faster scorer"
            )
        stages["scoring"].append(float(info.get("scoring_ms", 0.0)))
        stages["total"].append(total)
        stages["engine"].append(total - stages["scoring"][-1])
        by_engine = sorted(hits, key=lambda h: h["_rerank"]["engine_rank"])
        engine_scores = [float(h["_rerank"]["engine_score"] or 0.0) for h in by_engine]
        ce_scores = [float(h["_rerank"]["score"]) for h in by_engine]
        fused = fuse_scores(config.model_copy(update={"fusion": fusion}), ce_scores, engine_scores)
        runs["bm25"][qid] = {h["_id"]: s for h, s in zip(by_engine, engine_scores)}
        runs["reranked"][qid] = {h["_id"]: s for h, s in zip(by_engine, ce_scores)}
        runs["fused"][qid] = {h["_id"]: s for h, s in zip(by_engine, fused)}
    result = _scored(runs, collection, [*METRICS, f"recall@{window}"])
    result.latency_ms = {stage: _percentiles(values) for stage, values in stages.items() if values}
    return result


def _scored(
    runs: dict[str, dict[str, dict[str, float]]], collection: Collection, metrics: list[str]
) -> EvalResult:
    """Per-query and mean metrics of each run, with ranx."""
    from ranx import Qrels, Run
    from ranx import evaluate as ranx_evaluate

    qrels = Qrels({q: collection.qrels[q] for q in collection.queries})
    result = EvalResult(runs)
    for name, run in runs.items():
        # ranx needs every judged query in the run; a query with no hits scores zero.
        for qid in collection.queries:
            run.setdefault(qid, {})
        per_query = ranx_evaluate(qrels, Run(run, name=name), metrics, return_mean=False)
        result.per_query[name] = {
            metric: dict(zip(collection.queries, map(float, values)))
            for metric, values in per_query.items()
        }
        result.summary[name] = {
            m: float(sum(v.values()) / len(v)) for m, v in result.per_query[name].items()
        }
    return result


def write_outputs(result: EvalResult, out: Path) -> list[Path]:
    """Per-query JSON and CSV, the summary JSON, and the per-query nDCG@10 difference PNG."""
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for qid in result.per_query["bm25"]["ndcg@10"]:
        row: dict[str, Any] = {"query_id": qid}
        for run, metrics in result.per_query.items():
            for metric, values in metrics.items():
                row[f"{run}_{metric}"] = round(values[qid], 6)
        rows.append(row)
    paths = [
        out / "per_query.json",
        out / "per_query.csv",
        out / "summary.json",
        out / "ndcg_diff.png",
    ]
    paths[0].write_text(json.dumps(rows, indent=1))
    with paths[1].open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    paths[2].write_text(
        json.dumps({"summary": result.summary, "latency_ms": result.latency_ms}, indent=1)
    )
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    diffs = sorted(r["reranked_ndcg@10"] - r["bm25_ndcg@10"] for r in rows)
    fig, ax = plt.subplots(figsize=(8, 3.5))
    ax.bar(range(len(diffs)), diffs, color=["#c0392b" if d < 0 else "#27ae60" for d in diffs])
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xlabel("queries (sorted)")
    ax.set_ylabel("nDCG@10: reranked − BM25")
    ax.set_title(f"per-query nDCG@10 difference (mean {sum(diffs) / len(diffs):+.3f})")
    fig.tight_layout()
    fig.savefig(paths[3], dpi=100)
    plt.close(fig)
    return paths


def format_summary(result: EvalResult) -> str:
    """A readable table: one row per run, one column per metric; then stage latencies."""
    metrics = list(next(iter(result.summary.values())))
    lines = [f"{'run':10}" + "".join(f"{m:>12}" for m in metrics)]
    for run, values in result.summary.items():
        lines.append(f"{run:10}" + "".join(f"{values[m]:12.4f}" for m in metrics))
    lines.append("")
    lines.append(
        "latency ms  "
        + "  ".join(
            f"{stage} p50 {v['p50']:.1f} p95 {v['p95']:.1f}"
            for stage, v in result.latency_ms.items()
        )
    )
    return "\n".join(lines)
