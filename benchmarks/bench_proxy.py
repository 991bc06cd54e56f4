"""Benchmark the search proxy's overhead against direct engine calls, reranking off.

One real engine (``crossrank.adapters.nodes``) with the ADI corpus indexed, one
``crossrank proxy --disable`` subprocess in front of it; the same ADI queries are sent
directly and through the proxy, interleaved, over keep-alive HTTP connections (one client
each). Reported: p50/p99 latency in ms of each, their ratio, and the added ms.

    python benchmarks/bench_proxy.py [--engine opensearch:2.19.6] [--rounds 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from crossrank.adapters.nodes import EngineNode  # noqa: E402
from crossrank.adapters.processes import CrossrankProcess  # noqa: E402

INDEX = "adi"


def _load(datasets: Path) -> tuple[list[dict[str, Any]], list[str]]:
    root = datasets / "adi"
    with (root / "corpus.jsonl").open(encoding="utf-8") as fh:
        docs = [json.loads(line) for line in fh if line.strip()]
    with (root / "queries.jsonl").open(encoding="utf-8") as fh:
        queries = [json.loads(line)["text"] for line in fh if line.strip()]
    return docs, queries


def _index(url: str, docs: list[dict[str, Any]]) -> None:
    with httpx.Client(base_url=url, timeout=120) as client:
        client.delete(f"/{INDEX}")
        settings = {"settings": {"number_of_shards": 1, "number_of_replicas": 0}}
        client.put(f"/{INDEX}", json=settings).raise_for_status()
        lines = []
        for doc in docs:
            lines.append(json.dumps({"index": {"_index": INDEX, "_id": doc["_id"]}}))
            lines.append(json.dumps({"title": doc.get("title", ""), "text": doc.get("text", "")}))
        body = "\n".join(lines) + "\n"
        headers = {"content-type": "application/x-ndjson"}
        resp = client.post("/_bulk?refresh=true", content=body, headers=headers)
        resp.raise_for_status()


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def run(engine: str, rounds: int, datasets: Path, size: int) -> dict[str, Any]:
    docs, queries = _load(datasets)
    with EngineNode(engine) as node:
        _index(node.url, docs)
        args = ["--upstream", node.url, "--disable", "--log-level", "warning"]
        proxy = CrossrankProcess("proxy", args).start(180.0)
        try:
            times: dict[str, list[float]] = {"direct": [], "proxy": []}
            with (
                httpx.Client(base_url=node.url, timeout=60) as direct,
                httpx.Client(base_url=proxy.url, timeout=60) as proxied,
            ):
                clients = {"direct": direct, "proxy": proxied}
                for warm in queries[:10]:  # warm caches and connections
                    for client in clients.values():
                        body = {"query": {"match": {"text": warm}}, "size": size}
                        client.post(f"/{INDEX}/_search", json=body).raise_for_status()
                for _ in range(rounds):
                    for query in queries:
                        body = {"query": {"match": {"text": query}}, "size": size}
                        for name, client in clients.items():
                            start = time.perf_counter()
                            resp = client.post(f"/{INDEX}/_search", json=body)
                            times[name].append((time.perf_counter() - start) * 1000)
                            resp.raise_for_status()
        finally:
            proxy.stop()
    out: dict[str, Any] = {"engine": engine, "requests_each": len(times["direct"]), "size": size}
    for name, values in times.items():
        out[name] = {
            "p50_ms": round(_percentile(values, 0.5), 3),
            "p99_ms": round(_percentile(values, 0.99), 3),
            "mean_ms": round(statistics.fmean(values), 3),
        }
    for q in ("p50", "p99"):
        d, p = out["direct"][f"{q}_ms"], out["proxy"][f"{q}_ms"]
        out[f"{q}_ratio"] = round(p / d, 3)
        out[f"{q}_added_ms"] = round(p - d, 3)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--engine", default="opensearch:2.19.6")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--size", type=int, default=10)
    parser.add_argument("--datasets", type=Path, default=REPO.parent / "shared" / "datasets")
    parser.add_argument("--json", type=Path, help="write the results here too")
    args = parser.parse_args()
    result = run(args.engine, args.rounds, args.datasets, args.size)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
