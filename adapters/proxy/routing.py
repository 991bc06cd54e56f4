"""Which requests the proxy reranks, answers itself, or forwards: pure path matching.

Reranked: ``GET|POST /_search``, ``/{indices}/_search``, ``/_msearch``, ``/{indices}/_msearch``
(``indices`` is an index, alias, pattern or comma list; ``_all`` included). Everything else,
``/_search/template``, ``/_search/scroll`` and ``/_msearch/template`` included, is forwarded
untouched. The proxy's own endpoints live under ``/_crossrank/``: index names cannot start
with ``_``, so that prefix can never clash with an index.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal
from urllib.parse import unquote

__all__ = ["OWN_PREFIX", "Route", "match_route"]

OWN_PREFIX = "/_crossrank/"

Kind = Literal["search", "msearch", "own", "forward"]


@dataclass(frozen=True)
class Route:
    """What to do with a request; ``indices`` from the path (empty: all), ``name`` for own."""

    kind: Kind
    indices: tuple[str, ...] = ()
    name: str = ""


_ENDPOINTS: dict[str, Kind] = {"_search": "search", "_msearch": "msearch"}


def match_route(method: str, raw_path: str) -> Route:
    """Classify a request by method and (still percent-encoded) path."""
    if raw_path.startswith(OWN_PREFIX) or raw_path == OWN_PREFIX.rstrip("/"):
        return Route("own", name=raw_path[len(OWN_PREFIX) :].strip("/"))
    if method not in ("GET", "POST"):
        return Route("forward")
    parts = raw_path.split("/")
    if parts[0] != "" or not 2 <= len(parts) <= 3 or any(p == "" for p in parts[1:]):
        return Route("forward")
    kind = _ENDPOINTS.get(parts[-1])
    if kind is None:
        return Route("forward")
    if len(parts) == 2:
        return Route(kind)
    target = unquote(parts[1])
    if target.startswith("_") and target != "_all":
        return Route("forward")
    return Route(kind, tuple(i.strip() for i in target.split(",") if i.strip()))
