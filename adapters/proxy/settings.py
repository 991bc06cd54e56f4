"""Proxy settings: the upstream, listening, TLS, limits, and the rerank side.

The rerank side is one :class:`RerankConfig` (shared with the wrappers and the scorer),
plus optional defaults per index pattern read from a JSON, YAML or TOML file::

    {"indices": [{"pattern": "logs-*", "rerank": {"fields": ["message"], "window": 50}},
                 {"pattern": "docs", "rerank": {"model": "/models/ce", "template": "{title}"}}]}

Rules are tried in order; the first whose pattern matches every index of a request wins.
"""

from __future__ import annotations

import base64
import fnmatch
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from crossrank.reranker.config import SCORER_FIELDS, RerankConfig
from crossrank.reranker.errors import CrossrankError, RerankOptionsError
from crossrank.reranker.jsonio import MAX_DEPTH

__all__ = ["IndexRule", "ProxySettings", "load_rules", "scorer_key"]


class IndexRule(BaseModel):
    """Rerank defaults for the indices matching ``pattern`` (``*`` wildcards, comma lists)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    pattern: str
    rerank: dict[str, Any] = Field(default_factory=dict)

    def matches(self, indices: Sequence[str]) -> bool:
        """True when every index name (or pattern) of the request matches this rule."""
        pats = [p.strip() for p in self.pattern.split(",") if p.strip()]
        names = [i for i in indices if i and not i.startswith("-")]
        return bool(names) and all(any(fnmatch.fnmatchcase(n, p) for p in pats) for n in names)


class ProxySettings(BaseModel):
    """Everything the proxy needs; built by the CLI from flags, or in code."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    upstream: tuple[str, ...] = Field(
        min_length=1,
        description="an engine node's URL, e.g. http://localhost:9200; repeat it for the other "
        "nodes of a cluster (credentials in it, http://user:pw@host, move to upstream_auth)",
    )
    #: ``Authorization`` sent upstream when the client sends none (a client's own wins)
    upstream_auth: str | None = Field(None, repr=False)
    host: str = Field("127.0.0.1", description="address to listen on")
    port: int = Field(9299, ge=0, le=65535, description="port to listen on")
    # TLS to the upstream
    verify: bool = Field(True, description="verify the upstream's certificate")
    ca_file: str | None = Field(None, description="CA bundle (PEM) that verifies the upstream")
    client_cert: str | None = Field(None, description="client certificate (PEM) for the upstream")
    client_key: str | None = Field(None, description="the client certificate's key (PEM)")
    # the node pool (elastic-transport's NodePool): failover, dead-node back-off, sniffing
    max_retries: int = Field(
        3, ge=0, description="other nodes a request may try after a node failed to answer"
    )
    retry_on_status: tuple[int, ...] = Field(
        (429, 502, 503, 504),
        description="statuses on which a search is sent to the next node (the official "
        "clients' default)",
    )
    dead_backoff: float = Field(
        1.0, gt=0, description="seconds a failed node rests, doubled per failure in a row"
    )
    max_dead_backoff: float = Field(30.0, gt=0, description="the longest rest of a failed node")
    sniff_on_start: bool = Field(
        False, description="add the cluster's HTTP nodes (_nodes/_all/http) at start-up"
    )
    sniff_on_node_failure: bool = Field(
        False, description="sniff again when a node fails (at most once per sniff interval)"
    )
    sniff_interval: float = Field(10.0, ge=0, description="seconds between two sniffs at least")
    # timeouts (seconds) on every upstream call
    connect_timeout: float = Field(5.0, gt=0, description="seconds to connect to the upstream")
    upstream_timeout: float = Field(60.0, gt=0, description="seconds an upstream call may take")
    # limits
    max_body_bytes: int = Field(
        100 * 1024 * 1024, ge=1, description="request body size; beyond it: 413"
    )
    max_json_depth: int = Field(
        MAX_DEPTH,
        ge=1,
        le=900,
        description="JSON nesting depth accepted in search bodies, and in forwarded JSON bodies "
        "up to check_forward_bytes long (engines crash on deep bool queries); deeper: 400",
    )
    check_forward_bytes: int = Field(
        1024 * 1024, ge=0, description="forwarded JSON bodies up to this size are depth-checked"
    )
    latency_budget_ms: float | None = Field(
        1000.0,
        gt=0,
        description="milliseconds a search waits for its scores (model loading included); "
        "slower scoring falls back (engine order, flagged)",
    )
    # optional proxy-level token, checked and stripped
    token: str | None = Field(None, repr=False)
    token_header: str = Field("x-crossrank-token", description="the header of the proxy token")
    # rerank side
    rerank: RerankConfig = Field(default_factory=RerankConfig)
    rules: tuple[IndexRule, ...] = ()
    models: tuple[str, ...] = Field(
        (),
        description="extra models a request may ask for (ext.crossrank.model); "
        "the rules' models are allowed too",
    )
    scorer_factory: str | None = Field(
        None,
        description="module:callable taking a RerankConfig and returning a Scorer "
        "(default: make_scorer)",
    )
    preload: bool = Field(True, description="load the models at start-up")

    @model_validator(mode="before")
    @classmethod
    def _credentials(cls, data: Any) -> Any:
        """One URL or several; ``user:password@`` moved out of each (it would reach logs)."""
        if not isinstance(data, dict) or "upstream" not in data:
            return data
        urls = data["upstream"]
        urls = [urls] if isinstance(urls, str) else urls
        if not isinstance(urls, (list, tuple)) or not all(isinstance(u, str) for u in urls):
            return data
        auth, clean = data.get("upstream_auth"), []
        for url in urls:
            parts = urlsplit(url)
            if parts.username is None and parts.password is None:
                clean.append(url)
                continue
            netloc = parts.netloc.rpartition("@")[2]
            userinfo = f"{unquote(parts.username or '')}:{unquote(parts.password or '')}"
            auth = auth or "Basic " + base64.b64encode(userinfo.encode()).decode()
            clean.append(urlunsplit(parts._replace(netloc=netloc)))
        return {**data, "upstream": tuple(clean), "upstream_auth": auth}

    @field_validator("upstream")
    @classmethod
    def _url(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        out = []
        for url in value:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError("upstream must be an http:// or https:// URL with a host")
            if parts.query or parts.fragment:
                raise ValueError("upstream must not have a query or a fragment")
            out.append(url.rstrip("/"))
        if len({urlsplit(u).scheme for u in out}) > 1:
            raise ValueError("the upstream nodes must all use http:// or all https://")
        return tuple(dict.fromkeys(out))

    @field_validator("token_header")
    @classmethod
    def _lower(cls, value: str) -> str:
        return value.lower()

    def rule_configs(self) -> list[tuple[IndexRule, RerankConfig]]:
        """Each rule with its full config (scorer fields included), validated."""
        out = []
        for rule in self.rules:
            try:
                cfg = RerankConfig.model_validate({**self.rerank.model_dump(), **rule.rerank})
            except ValidationError as exc:
                msg = f"bad rerank defaults for {rule.pattern!r}: {exc}"
                raise RerankOptionsError(msg) from exc
            out.append((rule, cfg))
        return out

    def allowed_models(self) -> frozenset[str]:
        """Models a request may select: the default, the rules' and ``models``."""
        rule_models = {str(r.rerank["model"]) for r in self.rules if "model" in r.rerank}
        return frozenset({self.rerank.model, *self.models, *rule_models})


def load_rules(path: str | Path) -> tuple[IndexRule, ...]:
    """Index rules from a ``.json``, ``.yaml``/``.yml`` or ``.toml`` file."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    suffix = path.suffix.lower()
    data: Any
    try:
        if suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        elif suffix == ".toml":
            try:
                import tomllib
            except ModuleNotFoundError:  # Python 3.10
                import tomli as tomllib
            data = tomllib.loads(text)
        else:
            data = json.loads(text)
    except Exception as exc:
        raise CrossrankError(f"cannot read defaults file {path}: {exc}") from exc
    items = data.get("indices", []) if isinstance(data, dict) else data
    if not isinstance(items, list):
        raise CrossrankError(f"{path}: expected a list under 'indices'")
    try:
        return tuple(IndexRule.model_validate(item) for item in items)
    except ValidationError as exc:
        raise CrossrankError(f"{path}: {exc}") from exc


def scorer_key(config: RerankConfig) -> tuple[tuple[str, Any], ...]:
    """What identifies a scorer: the config's scorer fields."""
    return tuple((name, getattr(config, name)) for name in sorted(SCORER_FIELDS))
