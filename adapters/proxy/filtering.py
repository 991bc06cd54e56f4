"""Response filtering the proxy applies itself when it had to ask the engine for more.

:func:`filter_path` follows the engines' ``filter_path`` parameter: comma-separated dotted
paths, ``*`` within a name, ``**`` across levels, arrays transparent, ``-path`` exclusions
(applied first, then the inclusions); objects left empty by an inclusion are dropped.
:class:`SourceFilter` follows ``_source`` filtering (``false``, includes, excludes with
wildcards matching whole dotted paths). Pure functions over JSON values.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

__all__ = ["SourceFilter", "filter_path", "parse_source"]

_DROP = object()


@lru_cache(maxsize=512)
def _glob(pattern: str) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(part) for part in pattern.split("*")), re.DOTALL)


def _matches(pattern: str, name: str) -> bool:
    return _glob(pattern).fullmatch(name) is not None


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
        elif _matches(head, key):
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
                if sub is not _DROP:
                    out[key] = sub
        return out if out else _DROP
    if isinstance(value, list):
        items = [x for x in (_include(v, paths) for v in value) if x is not _DROP]
        return items if items else _DROP
    return _DROP


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
        if body is _DROP:
            return {}
    return body


def _as_list(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(v.strip() for v in value.split(",") if v.strip())
    return tuple(str(v) for v in value)


@dataclass(frozen=True)
class SourceFilter:
    """The client's ``_source`` request: fetch it at all, and which paths."""

    fetch: bool = True
    includes: tuple[str, ...] = ()
    excludes: tuple[str, ...] = ()

    def _filter(self, value: Any, prefix: str, included: bool) -> Any:
        if isinstance(value, Mapping):
            out = {}
            for key, item in value.items():
                path = f"{prefix}{key}"
                if any(_matches(p, path) for p in self.excludes):
                    continue
                inc = included or any(_matches(p, path) for p in self.includes)
                sub = self._filter(item, path + ".", inc)
                if sub is not _DROP:
                    out[key] = sub
            return out if (out or included) else _DROP
        if isinstance(value, list):
            kept = (self._filter(v, prefix, included) for v in value)
            items = [x for x in kept if x is not _DROP]
            return items if (items or included) else _DROP
        return value if included else _DROP

    def source(self, source: Mapping[str, Any]) -> dict[str, Any]:
        """The filtered ``_source`` of one hit."""
        out = self._filter(source, "", not self.includes)
        return out if isinstance(out, dict) else {}

    def apply(self, hits: list[Any]) -> None:
        """Filter the ``_source`` of each hit in place (remove it when not fetched)."""
        for hit in hits:
            if not isinstance(hit, dict) or "_source" not in hit:
                continue
            if not self.fetch:
                del hit["_source"]
            elif isinstance(hit["_source"], Mapping):
                hit["_source"] = self.source(hit["_source"])


def parse_source(body_value: Any, params: Mapping[str, str]) -> SourceFilter | None:
    """The client's source filter from the body's ``_source`` and the URL parameters.

    URL parameters (``_source``, ``_source_includes``, ``_source_excludes``) win over the
    body, as in the engines. ``None`` when the client asked for nothing special.
    """
    url = {k: params[k] for k in ("_source", "_source_includes", "_source_excludes") if k in params}
    if url:
        flag = url.get("_source")
        if flag is not None and flag.lower() in ("false", "0", "no", "off"):
            return SourceFilter(fetch=False)
        includes = () if flag is None or flag.lower() in ("true", "") else _as_list(flag)
        includes += _as_list(url.get("_source_includes"))
        return SourceFilter(True, includes, _as_list(url.get("_source_excludes")))
    if body_value is None or body_value is True:
        return None
    if body_value is False:
        return SourceFilter(fetch=False)
    if isinstance(body_value, (str, list)):
        return SourceFilter(True, _as_list(body_value))
    if isinstance(body_value, Mapping):
        includes = _as_list(body_value.get("includes", body_value.get("include")))
        excludes = _as_list(body_value.get("excludes", body_value.get("exclude")))
        return SourceFilter(True, includes, excludes)
    return None
