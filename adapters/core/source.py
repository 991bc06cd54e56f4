"""``_source`` filtering with the engines' semantics, for when more was fetched than asked.

When the caller's ``_source`` filtering (``false``, includes/excludes with wildcards, or the
``_source*`` URL parameters) would hide the fields scoring reads, the engine is asked for the
whole ``_source`` and the caller's filter is applied to the reranked hits. Pure functions.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

__all__ = ["SOURCE_PARAMS", "SourceFilter", "matches", "parse_source"]

#: URL parameters that filter ``_source``.
SOURCE_PARAMS = ("_source", "_source_includes", "_source_excludes")
DROP = object()


@lru_cache(maxsize=512)
def _glob(pattern: str) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(part) for part in pattern.split("*")), re.DOTALL)


def matches(pattern: str, name: str) -> bool:
    return _glob(pattern).fullmatch(name) is not None


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
                if any(matches(p, path) for p in self.excludes):
                    continue
                inc = included or any(matches(p, path) for p in self.includes)
                sub = self._filter(item, path + ".", inc)
                if sub is not DROP:
                    out[key] = sub
            return out if (out or included) else DROP
        if isinstance(value, list):
            kept = (self._filter(v, prefix, included) for v in value)
            items = [x for x in kept if x is not DROP]
            return items if (items or included) else DROP
        return value if included else DROP

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
