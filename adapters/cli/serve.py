"""``crossrank serve``: run the batching scorer service with uvicorn.

The options set the service's settings (ServeSettings) and the RerankConfig fields every
model is loaded with; their defaults are those models'. The bearer token is read from
``$CROSSRANK_API_KEY`` or ``--api-key-file`` (never a flag, so it stays out of process
listings).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from pydantic import ValidationError

from crossrank.adapters.cli import SettingOption, add_setting_options, given_settings
from crossrank.reranker.config import SCORER_FIELDS, RerankConfig
from crossrank.reranker.errors import ConfigurationError, CrossrankError
from crossrank.reranker.service.settings import ServeSettings

__all__ = ["MODEL_OPTIONS", "NOT_OPTIONS", "SERVICE_OPTIONS", "main", "parse_args", "parser"]

#: ``ServeSettings`` fields that are options of their own.
SERVICE_OPTIONS = tuple(
    SettingOption(name)
    for name in (
        "host",
        "port",
        "batch_tokens",
        "max_wait_ms",
        "max_queue_pairs",
        "max_documents",
        "max_body_bytes",
        "retry_after",
        "max_queue_wait_ms",
        "threads",
    )
)

#: ``RerankConfig`` fields every served model is loaded with.
MODEL_OPTIONS = (
    SettingOption("device", "auto (cuda, then mps, then cpu), cpu, cuda, cuda:1, ..."),
    SettingOption("dtype", "the weights' dtype (auto: picked for the device)"),
    SettingOption("max_length", "tokens per pair (default: the model's own)"),
    SettingOption("max_query_tokens", "query tokens per pair at most"),
    SettingOption("max_query_chars", "longest query accepted, in characters; longer ones get 400"),
    SettingOption("long_documents", "documents over max_length: cut, or scored by passages"),
    SettingOption("passage_overlap", "tokens shared by neighbouring passages"),
    SettingOption("max_passages", "passages scored per document at most"),
    SettingOption("cache_size", "documents whose tokens are cached"),
    SettingOption("cache_bytes", "bytes the token cache holds at most"),
    SettingOption("score_cache_bytes", "bytes the score cache (all models) holds; 0: off"),
)

_SEARCH_SIDE = "how hits become pairs and are ordered: the client's (proxy, wrappers)"
#: Fields that are not options of their own, and why (``rerank.*``: ``RerankConfig``'s).
NOT_OPTIONS: dict[str, str] = {
    "models": "--model [NAME=]PATH, repeatable",
    "api_key": "a secret: --api-key-file or $CROSSRANK_API_KEY, never a flag",
    "rerank": "its model fields are options (MODEL_OPTIONS), the rest listed here",
    "rerank.model": "each model's own, from --model",
    "rerank.sigmoid": "the service returns raw scores (clients apply sigmoid)",
    "rerank.batch_tokens": "--batch-tokens, the service's budget, applies to every model",
    "rerank.load_timeout": "the service loads its models before it listens",
    "rerank.kind": "read from each model's own files (cross-encoder or bi-encoder)",
    "rerank.ensemble": "clients combine the service's models (ensemble members with scorer_urls)",
    "rerank.calibration": "each model's calibration.json, saved beside it by crossrank calibrate",
    **{
        f"rerank.{name}": "the remote scorer's client settings: the service is the scorer"
        for name in sorted(SCORER_FIELDS)
        if name.startswith("scorer_")
    },
    **{
        f"rerank.{name}": _SEARCH_SIDE
        for name in sorted(set(RerankConfig.model_fields) - SCORER_FIELDS)
    },
}


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
    add_setting_options(p, ServeSettings, SERVICE_OPTIONS)
    add_setting_options(
        p.add_argument_group("every model (RerankConfig)"), RerankConfig, MODEL_OPTIONS
    )
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
        raise ConfigurationError(f"--api-key-file {path!r} is empty")
    return key


def parse_args(argv: Sequence[str]) -> ServeSettings:
    """The :class:`ServeSettings` of a ``crossrank serve`` command line.

    Raises ``ValidationError`` for bad values, ``OSError`` for an unreadable
    ``--api-key-file``, :class:`ConfigurationError` for an empty one.
    """
    args = parser().parse_args(list(argv))
    models: dict[str, str] = {}
    for spec in args.model:
        name, sep, path = spec.partition("=")
        models[name if sep else spec] = path if sep else spec
    return ServeSettings(
        models=models,
        rerank=RerankConfig(**given_settings(args, MODEL_OPTIONS)),
        api_key=_api_key(args.api_key_file),
        **given_settings(args, SERVICE_OPTIONS),
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
    if settings.threads is not None:
        import torch

        torch.set_num_threads(settings.threads)
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
