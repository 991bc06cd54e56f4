"""Which requests the proxy reranks, answers itself, or forwards: pure path matching.

The request target is checked first: only origin-form targets (``/path``, printable ASCII,
no ``.``/``..`` segments) are accepted; absolute-form (``http://host/x``), authority-form,
``*`` and anything else is a 400, so no target can ever name another host.

Paths are matched on their percent-decoded segments, as the engines read them, by the router
and the token guard alike (one reading: ``/%5Fcrossrank/health`` is ``/_crossrank/health``).

Reranked: ``GET|POST /_search``, ``/{indices}/_search``, ``/_msearch``, ``/{indices}/_msearch``
(``indices`` is an index, alias, pattern or comma list; ``_all`` included). Everything else,
``/_search/template``, ``/_search/scroll`` and ``/_msearch/template`` included, is forwarded
untouched. The proxy's own endpoints live under ``/_crossrank/``: index names cannot start
with ``_``, so that prefix can never clash with an index, and nothing under it is forwarded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal
from urllib.parse import unquote

from crossrank.adapters.proxy.errors import BadRequest

__all__ = ["OWN_PREFIX", "PROBES", "Route", "check_target", "match_route"]

OWN_PREFIX = "/_crossrank/"
#: Own endpoints answered without the proxy token (GET/HEAD only).
PROBES = frozenset({"health", "ready"})

Kind = Literal["search", "msearch", "own", "forward"]

# Printable ASCII without space, '#' and '\'; percent-escapes carry everything else.
_TARGET = re.compile(r"/[!$&'()*+,\-./0-9:;=?@A-Z\[\]^_`a-z{|}~%]*")


@dataclass(frozen=True)
class Route:
    """What to do with a request; ``indices`` from the path (empty: all), ``name`` for own."""

    kind: Kind
    indices: tuple[str, ...] = ()
    name: str = ""


_ENDPOINTS: dict[str, Kind] = {"_search": "search", "_msearch": "msearch"}


def check_target(raw_path: str) -> str:
    """The request target's path, if it is a safe origin-form path; else 400."""
    if not _TARGET.fullmatch(raw_path) or raw_path.startswith("//"):
        raise BadRequest(
            f"invalid request target [{raw_path[:200]}]: expected an absolute path such as "
            "[/index/_search]"
        )
    if any(unquote(seg) in (".", "..") for seg in raw_path.split("/")):
        raise BadRequest(f"invalid request target [{raw_path[:200]}]: dot segments")
    return raw_path


def match_route(method: str, raw_path: str) -> Route:
    """Classify a request by method and (still percent-encoded) path; 400 for bad targets."""
    check_target(raw_path)
    decoded = unquote(raw_path)
    if decoded.startswith(OWN_PREFIX) or decoded == OWN_PREFIX.rstrip("/"):
        return Route("own", name=decoded[len(OWN_PREFIX) :].strip("/"))
    if method not in ("GET", "POST"):
        return Route("forward")
    parts = [unquote(p) for p in raw_path.split("/")]
    if not 2 <= len(parts) <= 3 or any(p == "" for p in parts[1:]):
        return Route("forward")
    kind = _ENDPOINTS.get(parts[-1])
    if kind is None:
        return Route("forward")
    if len(parts) == 2:
        return Route(kind)
    target = parts[1]
    if target.startswith("_") and target != "_all":
        return Route("forward")
    return Route(kind, tuple(i.strip() for i in target.split(",") if i.strip()))
