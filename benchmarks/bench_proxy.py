"""Benchmark the search proxy's own cost against direct engine calls, in one run.

One real engine (``crossrank.adapters.nodes``) with a BEIR corpus indexed (cranfield by
default: title + text), and two ``crossrank proxy`` subprocesses in front of it:

- ``off``: ``--disable`` (reranking off): the same ``size: 10`` search sent directly and through
  the proxy;
- ``on``: reranking on with a zero-cost scorer (``benchmarks/zero_scorer.py``: no model, so what
  is measured is the proxy's work on the hits), window 100, ``size: 10``, against a direct
  ``size: 100`` search (the candidates the proxy must fetch anyway).

Requests are interleaved (direct, off, on-direct, on) over keep-alive connections, one client
each, after a warm-up. Reported per mode: p50/p99 in ms of each side, the ratio and the added ms.
``--profile OUT`` then runs the proxy in this process (uvicorn in a thread under cProfile, same
settings) for the same requests and writes the top functions by cumulative and own time.

    python benchmarks/bench_proxy.py [--engine opensearch:2.19.6] [--rounds 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(BENCH))

from crossrank.adapters.nodes import EngineNode  # noqa: E402
from crossrank.adapters.processes import CrossrankProcess, free_port  # noqa: E402

INDEX = "bench"
WINDOW = 100


def _load(root: Path) -> tuple[list[dict[str, Any]], list[str]]:
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
        for start in range(0, len(docs), 500):
            lines = []
            for doc in docs[start : start + 500]:
                lines.append(json.dumps({"index": {"_index": INDEX, "_id": doc["_id"]}}))
                lines.append(
                    json.dumps({"title": doc.get("title", ""), "text": doc.get("text", "")})
                )
            headers = {"content-type": "application/x-ndjson"}
            resp = client.post("/_bulk", content="\n".join(lines) + "\n", headers=headers)
            resp.raise_for_status()
        client.post(f"/{INDEX}/_refresh").raise_for_status()


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _body(query: str, size: int) -> dict[str, Any]:
    return {"query": {"multi_match": {"query": query, "fields": ["title", "text"]}}, "size": size}


def _proxy_args(url: str, mode: str) -> list[str]:
    common = ["--upstream", url, "--log-level", "warning"]
    if mode == "off":
        return [*common, "--disable"]
    return [*common, "--scorer-factory", "zero_scorer:factory", "--window", str(WINDOW)]


#: (label, client, size): the sends of one round, interleaved.
Plan = list[tuple[str, httpx.Client, int]]


def _send_all(plan: Plan, queries: list[str], rounds: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {label: [] for label, _, _ in plan}
    for warm in queries[:20]:
        for _, client, size in plan:
            client.post(f"/{INDEX}/_search", json=_body(warm, size)).raise_for_status()
    for _ in range(rounds):
        for query in queries:
            for label, client, size in plan:
                body = _body(query, size)
                start = time.perf_counter()
                resp = client.post(f"/{INDEX}/_search", json=body)
                times[label].append((time.perf_counter() - start) * 1000)
                resp.raise_for_status()
    return times


def _summary(times: dict[str, list[float]]) -> dict[str, Any]:
    out: dict[str, Any] = {"requests_each": len(next(iter(times.values())))}
    for label, values in times.items():
        out[label] = {
            "p50_ms": round(_percentile(values, 0.5), 3),
            "p99_ms": round(_percentile(values, 0.99), 3),
            "mean_ms": round(statistics.fmean(values), 3),
        }
    for mode, direct in (("off", "direct_size10"), ("on", "direct_size100")):
        for q in ("p50", "p99"):
            d, p = out[direct][f"{q}_ms"], out[f"proxy_{mode}"][f"{q}_ms"]
            out[f"{mode}_{q}_ratio"] = round(p / d, 3)
            out[f"{mode}_{q}_added_ms"] = round(p - d, 3)
    return out


def _profile(url: str, queries: list[str], rounds: int, out: Path) -> None:
    """Run the reranking-on proxy in this process under cProfile for the same requests."""
    import uvicorn

    from crossrank.adapters.cli.proxy import build_settings, parser, server_config
    from crossrank.adapters.proxy.app import create_app

    sections = []
    for mode in ("off", "on"):
        port = free_port()
        args = parser().parse_args([*_proxy_args(url, mode), "--port", str(port)])
        settings = build_settings(args)
        config = server_config(create_app(settings), settings, log_level="warning")
        server = uvicorn.Server(config)
        profiler = cProfile.Profile()

        def serve(server: uvicorn.Server = server, profiler: cProfile.Profile = profiler) -> None:
            profiler.enable()
            server.run()
            profiler.disable()

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.05)
        size = 10
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            _send_all([(mode, client, size)], queries, rounds)
        server.should_exit = True
        thread.join(30)
        for order in ("cumulative", "tottime"):
            text = io.StringIO()
            pstats.Stats(profiler, stream=text).sort_stats(order).print_stats(30)
            sections.append(f"## proxy {mode}, by {order}\n{text.getvalue()}")
    out.write_text("\n".join(sections))


def run(engine: str, rounds: int, corpus: Path, profile: Path | None) -> dict[str, Any]:
    docs, queries = _load(corpus)
    env = {"PYTHONPATH": os.pathsep.join([str(BENCH), os.environ.get("PYTHONPATH", "")])}
    with EngineNode(engine) as node:
        _index(node.url, docs)
        off = CrossrankProcess("proxy", _proxy_args(node.url, "off"), env=env).start(180.0)
        on = CrossrankProcess("proxy", _proxy_args(node.url, "on"), env=env).start(180.0)
        try:
            with (
                httpx.Client(base_url=node.url, timeout=60) as direct,
                httpx.Client(base_url=off.url, timeout=60) as proxy_off,
                httpx.Client(base_url=on.url, timeout=60) as proxy_on,
            ):
                plan: Plan = [
                    ("direct_size10", direct, 10),
                    ("proxy_off", proxy_off, 10),
                    ("direct_size100", direct, WINDOW),
                    ("proxy_on", proxy_on, 10),
                ]
                times = _send_all(plan, queries, rounds)
        finally:
            off.stop()
            on.stop()
        if profile is not None:
            _profile(node.url, queries, 1, profile)
    return {"engine": engine, "corpus": corpus.name, "window": WINDOW, **_summary(times)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--engine", default="opensearch:2.19.6")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--corpus", type=Path, default=REPO.parent / "shared" / "datasets" / "cranfield"
    )
    parser.add_argument("--json", type=Path, help="write the results here too")
    parser.add_argument("--profile", type=Path, help="write a cProfile of the proxy here")
    args = parser.parse_args()
    result = run(args.engine, args.rounds, args.corpus, args.profile)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
