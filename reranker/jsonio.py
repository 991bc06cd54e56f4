"""JSON in and out, for everything a client or an engine sends: one parser, one serialiser.

- :func:`loads` parses bytes or text from outside: invalid JSON, invalid UTF-8 and nesting
  deeper than ``max_depth`` raise :class:`~crossrank.reranker.errors.MalformedInputError`
  (the caller answers 400), never ``RecursionError``.
- :func:`dumps` serialises a body the way the engines write it (UTF-8, non-ASCII as is); a
  lone surrogate — valid in a JSON escape, and so in an engine's stored ``_source``, but not
  encodable as UTF-8 — is written back as the ``\\uXXXX`` escape it came in as.
- Both use ``orjson`` where it is installed (the ``server`` extra), for what it reads exactly
  as :mod:`json` does: engine answers (``max_depth=None``) and bodies without lone
  surrogates or integers beyond 64 bits; everything else goes through :mod:`json`. A client's
  body is always parsed by :mod:`json` (``orjson`` reads an integer beyond 64 bits as a float).
- :func:`scrub` makes text safe for a tokenizer or a UTF-8 wire: lone surrogates become
  U+FFFD.
"""

from __future__ import annotations

import json
import re
from typing import Any

from crossrank.reranker.errors import MalformedInputError

orjson: Any
try:
    import orjson
except ImportError:  # pragma: no cover - orjson comes with the server extra
    orjson = None

__all__ = ["MAX_DEPTH", "depth_exceeds", "dumps", "dumps_lines", "loads", "scrub", "surely_within"]

#: Default nesting limit of request bodies. Query DSL rarely passes 20 levels; Python's
#: own parser gives up near 1000, and engines have crashed on bool queries 450 deep.
MAX_DEPTH = 100

_SURROGATE = re.compile("[\ud800-\udfff]")


def depth_exceeds(value: Any, limit: int) -> bool:
    """True when ``value`` nests objects/arrays more than ``limit`` deep (no recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item
        if depth > limit:
            return True
        stack.extend((c, depth + 1) for c in children if isinstance(c, (dict, list)))
    return False


def surely_within(data: bytes, limit: int) -> bool:
    """True when JSON ``data`` cannot nest deeper than ``limit``: it holds no more brackets
    than that in all (brackets inside strings only raise the count). No parse, C speed."""
    return data.count(b"{") + data.count(b"[") <= limit


def loads(
    data: bytes | str, *, max_depth: int | None = MAX_DEPTH, what: str = "request body"
) -> Any:
    """Parse JSON from outside; bad input raises ``MalformedInputError`` with a clear reason.

    ``max_depth=None``: no depth walk (for trusted answers, e.g. the engine's, on the hot
    path); Python's own limit still ends in ``MalformedInputError``, never ``RecursionError``.
    """
    if max_depth is None and orjson is not None:
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            pass  # lone surrogates, NaN, deep nesting: json decides, with its own message
    try:
        value = json.loads(data)
    except RecursionError:
        raise MalformedInputError(
            f"failed to parse {what}: nesting depth exceeds the maximum allowed [{max_depth}]"
        ) from None
    except UnicodeDecodeError as exc:
        raise MalformedInputError(f"failed to parse {what}: invalid UTF-8 ({exc.reason})") from None
    except ValueError as exc:
        raise MalformedInputError(f"failed to parse {what}: {exc}") from None
    if (
        max_depth is not None
        and isinstance(value, (dict, list))
        and depth_exceeds(value, max_depth)
    ):
        raise MalformedInputError(
            f"failed to parse {what}: nesting depth exceeds the maximum allowed [{max_depth}]"
        )
    return value


def dumps(value: Any, *, pretty: bool = False) -> bytes:
    """UTF-8 JSON bytes; lone surrogates written as ``\\uXXXX`` escapes."""
    if orjson is not None:
        try:
            data: bytes = orjson.dumps(value, option=orjson.OPT_INDENT_2 if pretty else 0)
            return data
        except TypeError:
            pass  # a lone surrogate, an integer beyond 64 bits, a type orjson does not know
    if pretty:
        text = json.dumps(value, ensure_ascii=False, indent=2)
    else:
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    # Outside strings json.dumps writes ASCII only, so a surrogate is always inside a string,
    # where Python's backslash escape of it is exactly the JSON escape.
    return text.encode("utf-8", "backslashreplace")


def dumps_lines(lines: list[Any]) -> bytes:
    """NDJSON (``_msearch``, ``_bulk``): one compact JSON value per line."""
    return b"".join(dumps(line) + b"\n" for line in lines)


def scrub(text: str) -> str:
    """``text`` with lone surrogates replaced by U+FFFD (unchanged text is returned as is)."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return _SURROGATE.sub("\ufffd", text)
    return text
