"""``crossrank proxy``: run the reranking search proxy on uvicorn.

    crossrank proxy --upstream http://localhost:9200 --port 9299 \\
        --model cross-encoder/ms-marco-MiniLM-L6-v2 --fields title,body --window 100 \\
        --defaults indices.yaml --latency-budget-ms 500

Secrets never go on the command line, where process listings show them: the proxy token is
read from ``$CROSSRANK_PROXY_TOKEN`` or ``--token-file``, the remote scorer's API key from
``$CROSSRANK_SCORER_API_KEY`` or ``--scorer-api-key-file``, the upstream's credentials from
``$CROSSRANK_UPSTREAM_AUTH`` (an ``Authorization`` value). Credentials in the ``--upstream``
URL still work (moved to that header, never logged) but show in process listings.
"""

from __future__ import annotations

import argparse
import json
import logging
import logging.config
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from crossrank.adapters.proxy.metrics import JsonFormatter
from crossrank.adapters.proxy.settings import ProxySettings, load_rules
from crossrank.reranker.config import RerankConfig
from crossrank.reranker.errors import CrossrankError

__all__ = ["build_settings", "main", "parser"]


def parser() -> argparse.ArgumentParser:
    """The command-line options."""
    p = argparse.ArgumentParser(prog="crossrank proxy", description=__doc__.split("\n")[0])
    p.add_argument("--upstream", required=True, help="engine URL, e.g. http://localhost:9200")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=9299)
    tls = p.add_argument_group("TLS to the upstream")
    tls.add_argument("--no-verify", action="store_true", help="do not verify the certificate")
    tls.add_argument("--ca-file")
    tls.add_argument("--client-cert")
    tls.add_argument("--client-key")
    lim = p.add_argument_group("limits")
    lim.add_argument("--connect-timeout", type=float, default=5.0)
    lim.add_argument("--upstream-timeout", type=float, default=60.0)
    lim.add_argument("--max-body-bytes", type=int, default=100 * 1024 * 1024)
    lim.add_argument("--latency-budget-ms", type=float, help="scoring slower than this falls back")
    lim.add_argument(
        "--max-json-depth",
        type=int,
        default=ProxySettings.model_fields["max_json_depth"].default,
        help="deeper JSON bodies get a 400 (search bodies, small forwarded JSON bodies)",
    )
    sec = p.add_argument_group("proxy token")
    sec.add_argument("--token-file", help="file holding the token ($CROSSRANK_PROXY_TOKEN too)")
    sec.add_argument("--token-header", default="X-Crossrank-Token")
    rr = p.add_argument_group("reranking (RerankConfig)")
    rr.add_argument("--model")
    rr.add_argument("--allow-model", action="append", default=[], help="a model requests may pick")
    rr.add_argument("--fields", help="comma-separated fields or dotted paths")
    rr.add_argument("--template")
    rr.add_argument("--window", type=int)
    rr.add_argument("--min-score", type=float)
    rr.add_argument("--device")
    rr.add_argument("--dtype")
    rr.add_argument("--scorer-url", action="append", default=[], help="remote scorer URL")
    rr.add_argument(
        "--scorer-api-key-file", help="file holding the scorer API key ($CROSSRANK_SCORER_API_KEY)"
    )
    rr.add_argument("--on-scorer-error", choices=["fallback", "raise"])
    rr.add_argument("--rerank-json", help="more RerankConfig options as a JSON object")
    rr.add_argument("--disable", action="store_true", help="rerank only when asked")
    rr.add_argument("--defaults", help="per-index defaults file (.json, .yaml, .toml)")
    rr.add_argument("--scorer-factory", help="module:callable making the scorer")
    rr.add_argument("--no-preload", action="store_true", help="load the model on first use")
    p.add_argument("--log-level", default="info")
    p.add_argument("--graceful-timeout", type=float, default=10.0)
    return p


def build_settings(args: argparse.Namespace) -> ProxySettings:
    """ProxySettings from parsed arguments and the environment."""
    rerank: dict[str, Any] = json.loads(args.rerank_json) if args.rerank_json else {}
    if not isinstance(rerank, dict):
        raise ValueError("--rerank-json must be a JSON object")
    if "scorer_api_key" in rerank:
        raise ValueError(
            "--rerank-json must not hold scorer_api_key (process listings show it): "
            "use $CROSSRANK_SCORER_API_KEY or --scorer-api-key-file"
        )
    api_key = os.environ.get("CROSSRANK_SCORER_API_KEY") or None
    if args.scorer_api_key_file:
        api_key = Path(args.scorer_api_key_file).read_text(encoding="utf-8").strip()
    if api_key:
        rerank["scorer_api_key"] = api_key
    simple = {
        "model": args.model,
        "template": args.template,
        "window": args.window,
        "min_score": args.min_score,
        "device": args.device,
        "dtype": args.dtype,
        "on_scorer_error": args.on_scorer_error,
    }
    rerank.update({k: v for k, v in simple.items() if v is not None})
    if args.fields:
        rerank["fields"] = [f.strip() for f in args.fields.split(",") if f.strip()]
    if args.scorer_url:
        rerank["scorer_urls"] = args.scorer_url
    if args.disable:
        rerank["enabled"] = False
    token = os.environ.get("CROSSRANK_PROXY_TOKEN") or None
    if args.token_file:
        token = Path(args.token_file).read_text(encoding="utf-8").strip()
    return ProxySettings(
        upstream=args.upstream,
        host=args.host,
        port=args.port,
        verify=not args.no_verify,
        ca_file=args.ca_file,
        client_cert=args.client_cert,
        client_key=args.client_key,
        connect_timeout=args.connect_timeout,
        upstream_timeout=args.upstream_timeout,
        max_body_bytes=args.max_body_bytes,
        latency_budget_ms=args.latency_budget_ms,
        max_json_depth=args.max_json_depth,
        upstream_auth=os.environ.get("CROSSRANK_UPSTREAM_AUTH") or None,
        token=token,
        token_header=args.token_header,
        rerank=RerankConfig.model_validate(rerank),
        rules=load_rules(args.defaults) if args.defaults else (),
        models=tuple(args.allow_model),
        scorer_factory=args.scorer_factory,
        preload=not args.no_preload,
    )


def _logging(level: str) -> dict[str, Any]:
    handler = {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter}},
        "handlers": {"default": handler},
        "root": {"handlers": ["default"], "level": level.upper()},
        "loggers": {
            "uvicorn": {"level": level.upper()},
            "uvicorn.access": {"level": "WARNING"},  # the proxy logs its own access lines
            "httpx": {"level": "WARNING"},  # one line per upstream call, URLs included
            "httpcore": {"level": "WARNING"},
        },
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Run the proxy until SIGINT/SIGTERM (graceful: in-flight requests finish)."""
    args = parser().parse_args(argv)
    logging.config.dictConfig(_logging(args.log_level))
    try:
        settings = build_settings(args)
    except (ValidationError, CrossrankError, OSError, ValueError) as exc:
        print(f"crossrank proxy: {exc}", file=sys.stderr)
        return 2
    import uvicorn

    from crossrank.adapters.proxy.app import create_app

    try:
        app = create_app(settings)
    except (CrossrankError, ImportError, ValueError) as exc:
        print(f"crossrank proxy: {exc}", file=sys.stderr)
        return 2
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        lifespan="on",
        log_config=_logging(args.log_level),
        access_log=False,
        timeout_graceful_shutdown=args.graceful_timeout,
        server_header=False,
        date_header=False,
    )
    server = uvicorn.Server(config)
    server.run()
    return 0 if server.started else 1
