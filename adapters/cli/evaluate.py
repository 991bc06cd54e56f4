"""``crossrank eval``: BM25 against reranked (and fused) on a BEIR-format collection.

Indexes the corpus into a real engine (or reuses the index), runs each query once through
the reranking client with ``size = window`` — the response carries both orders, the
cross-encoder's in the hits and the engine's in ``_rerank.engine_rank`` — and scores the
runs with ranx: nDCG@10, MRR@10 and Recall@window. Writes a per-query table (JSON and CSV)
and a PNG of the per-query nDCG@10 difference, and prints a summary.

With ``--proxy-url`` the searches go through a running ``crossrank proxy`` (its model, its
scorer) with the engine's official client; the engine URL is still used to index. The
proxy's response carries the same ``_rerank`` keys, so both orders come from it the same way.

A model trained by ``crossrank train`` is evaluated as the **offline default**: an ensemble
of it (``ce``) and the base checkpoint it was trained from as a bi-encoder (``bi``, read from
the model's ``crossrank_base``), so the summary has each alone (``ce``, ``bi``), each fused
with BM25 (``ce+bm25``, ``bi+bm25``), the ensemble alone (``reranked``) and the ensemble
fused with BM25 (``fused``: the default configuration); ``--no-ensemble`` evaluates the model
alone, ``--member`` (repeatable) any ensemble.

``--qrels FILE`` replaces the folder's judgments, e.g. with ``crossrank label``'s
pseudo-qrels. When the model has a calibration (``calibration.json`` beside a local model,
or ``--calibration FILE``), its error against the human judgments is reported too — ECE and
Brier of the reranked window's scores, before (their sigmoid) and after calibration, on the
queries it was not fitted on — with a reliability diagram (``reliability.png``).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from crossrank.adapters.cli import ensemble_option
from crossrank.adapters.connect import client_for, detect_kind
from crossrank.adapters.evaluation import (
    ProxySearch,
    check_calibration,
    evaluate,
    format_calibration,
    format_summary,
    load_beir,
    measured_queries,
    plot_reliability,
    prepare_index,
    write_outputs,
)
from crossrank.reranker.calibration import Calibration, load_calibration, read_calibration
from crossrank.reranker.config import EnsembleMember, RerankConfig

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
        "--qrels", type=Path, help="judgments to score with instead of qrels/SPLIT.tsv (BEIR TSV)"
    )
    parser.add_argument(
        "--calibration",
        type=Path,
        help="calibration file to measure (default: calibration.json beside a local --model)",
    )
    parser.add_argument(
        "--model", help="cross-encoder path or hub name (with --proxy-url: one the proxy serves)"
    )
    parser.add_argument("--scorer-url", action="append", default=[], help="remote scorer(s)")
    ensemble_option("instead of --model").add_to(parser, RerankConfig)
    parser.add_argument(
        "--no-ensemble",
        action="store_true",
        help="a model trained by crossrank train alone (default: with its base as a"
        " bi-encoder, the offline default ensemble)",
    )
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
        if args.ensemble:
            p.error("--member and --proxy-url conflict: set the members on the proxy")
    if args.ensemble and (args.model or args.scorer_url):
        p.error("--member replaces --model and --scorer-url (give each member its own)")
    return args


def default_ensemble(model: str) -> tuple[EnsembleMember, ...]:
    """The offline default for a model trained by ``crossrank train``: the model (``ce``) and
    the base checkpoint it was trained from as a bi-encoder (``bi``), read from the model's
    ``crossrank_base``; empty for any other model (or a base that is not there)."""
    config = Path(model) / "config.json"
    try:
        base = json.loads(config.read_text(encoding="utf-8")).get("crossrank_base")
    except (OSError, ValueError):
        return ()
    if not isinstance(base, str) or not Path(base).is_dir():
        return ()
    return (
        EnsembleMember(name="ce", model=model),
        EnsembleMember(name="bi", model=base, kind="bi-encoder"),
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``crossrank eval``."""
    args = parse_args(argv)

    collection = load_beir(args.dataset, args.split, qrels=args.qrels)
    calibration = _calibration(args)
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
    members = tuple(args.ensemble or ())
    if not members and args.model and not (args.no_ensemble or args.scorer_url or args.proxy_url):
        members = default_ensemble(args.model)
        if members:
            print(
                f"ensemble default: ce = {args.model}, bi = its base {members[1].model} as a"
                " bi-encoder (--no-ensemble: the model alone)"
            )
    if members:
        settings["ensemble"] = members
    kind = detect_kind(args.engine_url)
    client = client_for(args.engine_url, kind, rerank=RerankConfig(**settings))
    index = args.index or args.dataset.name.lower()
    print(prepare_index(client, index, collection, reuse=args.reuse_index, analyzer=args.analyzer))
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
    if args.qrels is not None:
        print(f"judgments: {args.qrels} (not the folder's qrels/{args.split}.tsv)")
    if calibration is not None and args.qrels is None:
        kept, statement = measured_queries(list(collection.queries), calibration, args.dataset.name)
        # the calibrated model's own scores: the member "ce" of the ensemble default
        scores = result.runs["ce" if "ce" in result.runs else "reranked"]
        check = check_calibration(
            calibration, {q: scores[q] for q in kept}, collection.qrels, statement
        )
        plot = plot_reliability(check.curves, args.out / "reliability.png", args.dataset.name)
        print(format_calibration(check))
        paths.append(plot)
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


def _calibration(args: argparse.Namespace) -> Calibration | None:
    """The calibration to measure: ``--calibration``, else the one beside a local model."""
    if args.calibration is not None:
        return read_calibration(args.calibration)
    if args.model and not args.proxy_url:
        return load_calibration(args.model)
    return None


if __name__ == "__main__":
    sys.exit(main())
