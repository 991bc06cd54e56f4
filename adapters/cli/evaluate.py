"""``crossrank eval``: BM25 against reranked (and fused) on a BEIR-format collection.

Indexes the corpus into a real engine (or reuses the index), runs each query once through
the reranking client with ``size = window`` — the response carries both orders, the
cross-encoder's in the hits and the engine's in ``_rerank.engine_rank`` — and scores the
runs with ranx: nDCG@10, MRR@10 and Recall@window. Writes a per-query table (JSON and CSV)
and a PNG of the per-query nDCG@10 difference, and prints a summary.

With ``--proxy-url`` the searches go through a running ``crossrank proxy`` (its model, its
scorer) with the engine's official client; the engine URL is still used to index. The
proxy's response carries the same ``_rerank`` keys, so both orders come from it the same way.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from crossrank.adapters.connect import client_for, detect_kind
from crossrank.adapters.evaluation import (
    ProxySearch,
    evaluate,
    format_summary,
    index_collection,
    load_beir,
    pick_analyzer,
    write_outputs,
)
from crossrank.reranker.config import RerankConfig

__all__ = ["main", "parse_args", "parser"]


def parser() -> argparse.ArgumentParser:
    """The command line of ``crossrank eval``."""
    parser = argparse.ArgumentParser(prog="crossrank eval", description=__doc__)
    parser.add_argument(
        "dataset", type=Path, help="BEIR folder (corpus.jsonl, queries.jsonl, qrels/)"
    )
    parser.add_argument("--engine-url", required=True, help="Elasticsearch/OpenSearch URL")
    parser.add_argument(
        "--proxy-url",
        help="search through this running crossrank proxy (its model and scorer);"
        " the engine URL is still used to index",
    )
    parser.add_argument("--index", help="index name (default: the folder's name)")
    parser.add_argument("--reuse-index", action="store_true", help="keep an existing index")
    parser.add_argument("--analyzer", default="auto", help="auto (english if available), ...")
    parser.add_argument("--split", default="test")
    parser.add_argument(
        "--model", help="cross-encoder path or hub name (with --proxy-url: one the proxy serves)"
    )
    parser.add_argument("--scorer-url", action="append", default=[], help="remote scorer(s)")
    parser.add_argument("--window", type=int, default=100)
    parser.add_argument("--max-length", type=int, default=None)
    parser.add_argument("--max-queries", type=int, default=None)
    parser.add_argument("--out", type=Path, default=Path("eval-out"))
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The parsed command line; the scorer options conflict with ``--proxy-url``."""
    p = parser()
    args = p.parse_args(argv)
    if args.proxy_url:
        if args.scorer_url:
            p.error("--scorer-url and --proxy-url conflict: the proxy has its own scorer")
        if args.max_length is not None:
            p.error("--max-length and --proxy-url conflict: set it on the proxy")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``crossrank eval``."""
    args = parse_args(argv)

    collection = load_beir(args.dataset, args.split)
    if args.max_queries:
        keep = list(collection.queries)[: args.max_queries]
        collection.queries = {q: collection.queries[q] for q in keep}
        collection.qrels = {q: collection.qrels[q] for q in keep}
    settings: dict[str, Any] = {
        "fields": ("title", "text"),
        "window": args.window,
        "max_length": args.max_length,
    }
    if args.model:
        settings["model"] = args.model
    if args.scorer_url:
        settings["scorer_urls"] = tuple(args.scorer_url)
    kind = detect_kind(args.engine_url)
    client = client_for(args.engine_url, kind, rerank=RerankConfig(**settings))
    index = args.index or args.dataset.name.lower()
    analyzer = pick_analyzer(client, args.analyzer)
    added = index_collection(client, index, collection, reuse=args.reuse_index, analyzer=analyzer)
    print(
        f"index {index!r}: {f'{added} documents indexed' if added else 'reused'}"
        f" (analyzer {analyzer})"
    )
    searcher: Any = client
    if args.proxy_url:
        searcher = ProxySearch(args.proxy_url, kind, model=args.model)
        print(f"searching through the proxy at {searcher.url}")
    try:
        result = evaluate(searcher, index, collection, window=args.window)
    finally:
        if searcher is not client:
            searcher.close()
    paths = write_outputs(result, args.out)
    print(format_summary(result))
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
