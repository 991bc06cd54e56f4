"""``crossrank serve``: run the batching scorer service with uvicorn.

The bearer token is read from ``$CROSSRANK_API_KEY`` or ``--api-key-file`` (never a flag, so
it stays out of process listings).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from pydantic import ValidationError

from crossrank.reranker.config import RerankConfig
from crossrank.reranker.errors import CrossrankError
from crossrank.reranker.service.settings import ServeSettings

__all__ = ["main", "parse_args", "parser"]


def parser() -> argparse.ArgumentParser:
    """The argument parser of ``crossrank serve``."""
    # no abbreviations: the removed ``--api-key`` must not pass for ``--api-key-file``
    p = argparse.ArgumentParser(prog="crossrank serve", description=__doc__, allow_abbrev=False)
    p.add_argument(
        "--model",
        action="append",
        required=True,
        metavar="[NAME=]PATH",
        help="a cross-encoder (hub name or path); repeatable, the first is the default",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    p.add_argument("--max-length", type=int, default=None)
    p.add_argument("--max-query-tokens", type=int, default=64)
    p.add_argument(
        "--max-query-chars",
        type=int,
        default=RerankConfig.model_fields["max_query_chars"].default,
        help="longest query accepted, in characters; longer ones get 400 (default: %(default)s)",
    )
    p.add_argument("--long-documents", default="truncate", choices=["truncate", "passages"])
    p.add_argument("--batch-tokens", type=int, default=16_384)
    p.add_argument("--max-wait-ms", type=float, default=5.0)
    p.add_argument("--max-queue-pairs", type=int, default=32_768)
    p.add_argument("--max-documents", type=int, default=10_000)
    p.add_argument("--max-body-bytes", type=int, default=16 * 1024 * 1024)
    p.add_argument(
        "--api-key-file",
        metavar="PATH",
        help="file holding the bearer token of the scoring endpoints (or $CROSSRANK_API_KEY)",
    )
    p.add_argument("--log-level", default="info")
    return p


def _api_key(path: str | None) -> str | None:
    """The key in ``path`` (whitespace stripped), else ``$CROSSRANK_API_KEY``; None: open."""
    if path is None:
        return os.environ.get("CROSSRANK_API_KEY", "").strip() or None
    key = Path(path).read_text(encoding="utf-8").strip()
    if not key:
        raise ValueError(f"--api-key-file {path!r} is empty")
    return key


def parse_args(argv: Sequence[str]) -> ServeSettings:
    """The :class:`ServeSettings` of a ``crossrank serve`` command line.

    Raises ``ValidationError`` for bad values, ``OSError``/``ValueError`` for an unreadable
    or empty ``--api-key-file``.
    """
    args = parser().parse_args(list(argv))
    models: dict[str, str] = {}
    for spec in args.model:
        name, sep, path = spec.partition("=")
        models[name if sep else spec] = path if sep else spec
    rerank = RerankConfig(
        device=args.device,
        dtype=args.dtype,
        max_length=args.max_length,
        max_query_tokens=args.max_query_tokens,
        max_query_chars=args.max_query_chars,
        long_documents=args.long_documents,
        batch_tokens=args.batch_tokens,
    )
    return ServeSettings(
        host=args.host,
        port=args.port,
        models=models,
        rerank=rerank,
        batch_tokens=args.batch_tokens,
        max_wait_ms=args.max_wait_ms,
        max_queue_pairs=args.max_queue_pairs,
        max_documents=args.max_documents,
        max_body_bytes=args.max_body_bytes,
        api_key=_api_key(args.api_key_file),
    )


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def main(argv: Sequence[str]) -> int:
    """Run the service until SIGINT/SIGTERM (in-flight work is drained first)."""
    try:
        settings = parse_args(argv)
    except (ValidationError, OSError, ValueError) as exc:
        print(f"crossrank serve: {exc}", file=sys.stderr)
        return 2
    import uvicorn

    from crossrank.reranker.service.app import create_app

    level = getattr(logging, str(parser().parse_known_args(argv)[0].log_level).upper(), 20)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        app = create_app(settings)
    except CrossrankError as exc:  # a model that cannot be loaded: one line, no traceback
        print(f"crossrank serve: {_one_line(exc)}", file=sys.stderr)
        return 1
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level=logging.getLevelName(level).lower(),
        timeout_graceful_shutdown=30,
        access_log=False,
    )
    return 0
