"""Response filtering the proxy applies itself when it had to ask the engine for more.

:func:`filter_path` follows the engines' ``filter_path`` parameter: comma-separated dotted
paths, ``*`` within a name, ``**`` across levels, arrays transparent, ``-path`` exclusions
(applied first, then the inclusions); objects left empty by an inclusion are dropped.
:class:`SourceFilter` (``_source`` filtering) lives in the core, ``crossrank.adapters.core.source``,
and is re-exported here. Pure functions over JSON values.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from crossrank.adapters.core.source import DROP, SourceFilter, matches, parse_source

__all__ = ["SourceFilter", "filter_path", "parse_source"]


Paths = list[tuple[str, ...]]


def _step(paths: Paths, key: str) -> tuple[bool, Paths]:
    """Whether ``key`` completes a path, and the remaining paths below ``key``."""
    full, rest = False, []
    for path in paths:
        if not path:
            continue
        head = path[0]
        if head == "**":
            if len(path) == 1:
                full = True
                continue
            rest.append(path)  # ** absorbs this level
            sub_full, sub_rest = _step([path[1:]], key)  # ** matches no level
            full, rest = full or sub_full, rest + sub_rest
        elif matches(head, key):
            if len(path) == 1:
                full = True
            else:
                rest.append(path[1:])
    return full, rest


def _include(value: Any, paths: Paths) -> Any:
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            full, rest = _step(paths, key)
            if full:
                out[key] = item
            elif rest:
                sub = _include(item, rest)
                if sub is not DROP:
                    out[key] = sub
        return out if out else DROP
    if isinstance(value, list):
        items = [x for x in (_include(v, paths) for v in value) if x is not DROP]
        return items if items else DROP
    return DROP


def _exclude(value: Any, paths: Paths) -> Any:
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            full, rest = _step(paths, key)
            if not full:
                out[key] = _exclude(item, rest) if rest else item
        return out
    if isinstance(value, list):
        return [_exclude(v, paths) for v in value]
    return value


def filter_path(body: Any, expression: str) -> Any:
    """``body`` filtered as the engine would with ``?filter_path=expression``."""
    includes: Paths = []
    excludes: Paths = []
    for raw in expression.split(","):
        raw = raw.strip()
        if not raw:
            continue
        target = excludes if raw.startswith("-") else includes
        target.append(tuple(raw.lstrip("-").split(".")))
    if excludes:
        body = _exclude(body, excludes)
    if includes:
        body = _include(body, includes)
        if body is DROP:
            return {}
    return body
