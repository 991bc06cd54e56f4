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
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from crossrank.adapters.cli import (
    SettingOption,
    add_setting_options,
    comma_list,
    ensemble_option,
    given_settings,
)
from crossrank.adapters.proxy.metrics import JsonFormatter
from crossrank.adapters.proxy.settings import ProxySettings, load_rules
from crossrank.reranker.config import RerankConfig
from crossrank.reranker.errors import ConfigurationError, CrossrankError

if TYPE_CHECKING:
    import uvicorn

__all__ = ["NOT_OPTIONS", "PROXY_OPTIONS", "RERANK_OPTIONS", "build_settings", "main", "parser"]


#: ``ProxySettings`` fields that are options of their own, by argument group.
PROXY_OPTIONS: dict[str, tuple[SettingOption, ...]] = {
    "": (SettingOption("upstream", repeat=True), SettingOption("host"), SettingOption("port")),
    "upstream nodes": (
        SettingOption("max_retries"),
        SettingOption("retry_on_status", repeat=True),
        SettingOption("dead_backoff"),
        SettingOption("max_dead_backoff"),
        SettingOption("sniff_on_start"),
        SettingOption("sniff_on_node_failure"),
        SettingOption("sniff_interval"),
    ),
    "TLS to the upstream": (
        SettingOption("verify", "do not verify the upstream's certificate", flag="--no-verify"),
        SettingOption("ca_file"),
        SettingOption("client_cert"),
        SettingOption("client_key"),
    ),
    "limits": (
        SettingOption("connect_timeout"),
        SettingOption("upstream_timeout"),
        SettingOption("max_body_bytes"),
        SettingOption("latency_budget_ms"),
        SettingOption("max_json_depth"),
        SettingOption("check_forward_bytes"),
    ),
    "proxy token": (SettingOption("token_header"),),
    "reranking": (
        SettingOption("models", "a model requests may pick", flag="--allow-model", repeat=True),
        SettingOption("scorer_factory"),
        SettingOption("preload", "load the models on first use", flag="--no-preload"),
    ),
}

#: ``RerankConfig`` fields that are options of their own (any field: ``--rerank-json``).
RERANK_OPTIONS = (
    SettingOption("model", "cross-encoder: hub name or path"),
    SettingOption("fields", "comma-separated fields or dotted paths", parse=comma_list),
    SettingOption("template", "document text, e.g. '{title}: {text}' (instead of --fields)"),
    SettingOption("window", "engine hits reranked per search"),
    SettingOption("min_score", "reranked hits scoring below this are dropped"),
    SettingOption("device", "auto (cuda, then mps, then cpu), cpu, cuda, cuda:1, ..."),
    SettingOption("dtype", "the weights' dtype (auto: picked for the device)"),
    SettingOption("scorer_urls", "a remote scorer's URL", flag="--scorer-url", repeat=True),
    ensemble_option("the members' normalised scores are combined"),
    SettingOption("on_scorer_error", "when scoring fails: engine order (flagged), or an error"),
    SettingOption("enabled", "rerank only when a request asks", flag="--disable"),
)

#: Fields that are not options of their own, and where they come from (``rerank.*``:
#: ``RerankConfig``'s).
NOT_OPTIONS: dict[str, str] = {
    "upstream_auth": "a secret: $CROSSRANK_UPSTREAM_AUTH (or credentials in --upstream)",
    "token": "a secret: --token-file or $CROSSRANK_PROXY_TOKEN",
    "rules": "--defaults FILE (.json, .yaml, .toml)",
    "rerank": "its common fields are options (RERANK_OPTIONS), any field: --rerank-json",
    "rerank.scorer_api_key": "a secret: --scorer-api-key-file or $CROSSRANK_SCORER_API_KEY",
    **{
        f"rerank.{name}": "--rerank-json"
        for name in sorted(RerankConfig.model_fields)
        if name not in {o.field for o in RERANK_OPTIONS} | {"scorer_api_key"}
    },
}


def parser() -> argparse.ArgumentParser:
    """The command-line options."""
    # no abbreviations: ``--scorer-api-key KEY`` must not pass for ``--scorer-api-key-file``
    p = argparse.ArgumentParser(
        prog="crossrank proxy", description=__doc__.split("\n")[0], allow_abbrev=False
    )
    groups = {title: p.add_argument_group(title) if title else p for title in PROXY_OPTIONS}
    for title, options in PROXY_OPTIONS.items():
        add_setting_options(groups[title], ProxySettings, options)
    groups["proxy token"].add_argument(
        "--token-file", help="file holding the token ($CROSSRANK_PROXY_TOKEN too)"
    )
    rr = groups["reranking"]
    add_setting_options(rr, RerankConfig, RERANK_OPTIONS)
    rr.add_argument(
        "--scorer-api-key-file", help="file holding the scorer API key ($CROSSRANK_SCORER_API_KEY)"
    )
    rr.add_argument("--rerank-json", help="more RerankConfig options as a JSON object")
    rr.add_argument("--defaults", help="per-index defaults file (.json, .yaml, .toml)")
    p.add_argument("--log-level", default="info")
    p.add_argument("--graceful-timeout", type=float, default=10.0)
    return p


def _secret(path: str | None, variable: str) -> str | None:
    """The secret in the file ``path`` (stripped), else in ``$variable``; None: neither."""
    if path:
        return Path(path).read_text(encoding="utf-8").strip()
    return os.environ.get(variable) or None


def build_settings(args: argparse.Namespace) -> ProxySettings:
    """ProxySettings from parsed arguments and the environment; an option not given keeps
    the settings' default."""
    rerank: dict[str, Any] = json.loads(args.rerank_json) if args.rerank_json else {}
    if not isinstance(rerank, dict):
        raise ConfigurationError("--rerank-json must be a JSON object")
    if "scorer_api_key" in rerank:
        raise ConfigurationError(
            "--rerank-json must not hold scorer_api_key (process listings show it): "
            "use $CROSSRANK_SCORER_API_KEY or --scorer-api-key-file"
        )
    api_key = _secret(args.scorer_api_key_file, "CROSSRANK_SCORER_API_KEY")
    if api_key:
        rerank["scorer_api_key"] = api_key
    rerank.update(given_settings(args, RERANK_OPTIONS))
    options = [o for group in PROXY_OPTIONS.values() for o in group]
    return ProxySettings(
        upstream_auth=os.environ.get("CROSSRANK_UPSTREAM_AUTH") or None,
        token=_secret(args.token_file, "CROSSRANK_PROXY_TOKEN"),
        rerank=RerankConfig.model_validate(rerank),
        rules=load_rules(args.defaults) if args.defaults else (),
        **given_settings(args, options),
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


def server_config(
    app: Any, settings: ProxySettings, log_level: str = "info", graceful_timeout: float = 10.0
) -> uvicorn.Config:
    """The proxy's uvicorn settings (the CLI's and the benchmarks' in-process runs)."""
    import uvicorn

    from crossrank.adapters.proxy.server import ProxyHttpProtocol

    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        lifespan="on",
        # httptools' C parser, the request target kept as sent (see proxy.server)
        http=ProxyHttpProtocol,
        log_config=_logging(log_level),
        access_log=False,
        timeout_graceful_shutdown=math.ceil(graceful_timeout),
        server_header=False,
        date_header=False,
        proxy_headers=False,  # the proxy never reads the client's address
    )


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
    except (CrossrankError, ValueError) as exc:  # a bad scorer factory or index defaults
        print(f"crossrank proxy: {exc}", file=sys.stderr)
        return 2
    config = server_config(app, settings, args.log_level, args.graceful_timeout)
    server = uvicorn.Server(config)
    server.run()
    return 0 if server.started else 1
