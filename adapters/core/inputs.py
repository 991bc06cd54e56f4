"""Turn a search hit into the document text, and a search request into the query text.

Pure functions over the engine's JSON: no I/O, no model. Missing or non-text values are
skipped and counted, never fatal.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

from crossrank.reranker.config import RerankConfig
from crossrank.reranker.errors import QueryTextError
from crossrank.reranker.jsonio import scrub

__all__ = ["DocumentText", "document_text", "extract_query_text", "query_text_for"]

_HIGHLIGHT_TAG = re.compile(r"</?em>")
_PLACEHOLDER = re.compile(r"\{([^{}]+)\}")
_FIELD_PREFIX = re.compile(r"(?<![\w\\])[\w.*]+:(?!//)")

# Queries whose text sits under {"field": "text"} or {"field": {"query": "text"}}.
_FIELD_QUERIES = ("match", "match_phrase", "match_phrase_prefix", "match_bool_prefix")
# Queries whose text sits under {"query": "text"}.
_TEXT_QUERIES = ("multi_match", "query_string", "simple_query_string", "combined_fields")


class DocumentText:
    """The document side of one pair, and how many configured fields it lacked."""

    __slots__ = ("missing", "text")

    def __init__(self, text: str, missing: int) -> None:
        self.text = text
        self.missing = missing


def _walk(value: Any, parts: list[str]) -> Iterator[Any]:
    """Yield the values at a dotted path, descending into arrays."""
    if isinstance(value, list):
        for item in value:
            yield from _walk(item, parts)
        return
    if not parts:
        yield value
        return
    if not isinstance(value, Mapping):
        return
    # A flattened key such as {"a.b": ...} wins over nesting, as in the engines' _source.
    for cut in range(len(parts), 0, -1):
        key = ".".join(parts[:cut])
        if key in value:
            yield from _walk(value[key], parts[cut:])
            return


def _strings(values: Iterator[Any]) -> list[str]:
    return [v for v in values if isinstance(v, str) and v.strip()]


def _field_values(hit: Mapping[str, Any], field: str, source: str) -> list[str]:
    if source == "_source":
        document = hit.get("_source") or {}
        if "." not in field and isinstance(document, dict):  # the common case, without a walk
            value = document.get(field)
            if isinstance(value, str):
                return [value] if value.strip() else []
            if not isinstance(value, list):
                return []
        return _strings(_walk(document, field.split(".")))
    container = hit.get(source) or {}
    if not isinstance(container, Mapping):
        return []
    values = container.get(field)
    if values is None:
        return []
    texts = _strings(iter(values if isinstance(values, list) else [values]))
    if source == "highlight":
        texts = [_HIGHLIGHT_TAG.sub("", t) for t in texts]
    return texts


def document_text(hit: Mapping[str, Any], config: RerankConfig) -> DocumentText:
    """Build the document text of ``hit`` from the configured fields or template."""
    if config.template is None:
        parts = [" ".join(_field_values(hit, field, config.source)) for field in config.fields]
        text = config.field_separator.join(p for p in parts if p)
        return DocumentText(scrub(text), parts.count(""))
    missing = 0

    def lookup(field: str) -> str:
        nonlocal missing
        values = _field_values(hit, field, config.source)
        if not values:
            missing += 1
        return " ".join(values)

    template = config.template.replace("{{", "\0").replace("}}", "\1")
    text = _PLACEHOLDER.sub(lambda m: lookup(m.group(1).strip()), template)
    text = text.replace("\0", "{").replace("\1", "}").strip()
    return DocumentText(scrub(text), missing)


def _texts_in(query: Any) -> Iterator[str]:
    if not isinstance(query, Mapping):
        return
    for kind, spec in query.items():
        if kind in _FIELD_QUERIES and isinstance(spec, Mapping):
            for field_spec in spec.values():
                text = field_spec.get("query") if isinstance(field_spec, Mapping) else field_spec
                if isinstance(text, str):
                    yield text
        elif kind in _TEXT_QUERIES and isinstance(spec, Mapping):
            text = spec.get("query")
            if isinstance(text, str):
                yield _FIELD_PREFIX.sub("", text) if kind == "query_string" else text
        elif kind == "bool" and isinstance(spec, Mapping):
            for clause in ("must", "should"):
                sub = spec.get(clause)
                for item in sub if isinstance(sub, list) else [sub]:
                    yield from _texts_in(item)
        elif kind in ("function_score", "script_score", "nested", "has_child", "has_parent"):
            if isinstance(spec, Mapping):
                yield from _texts_in(spec.get("query"))
        elif kind == "boosting" and isinstance(spec, Mapping):
            yield from _texts_in(spec.get("positive"))
        elif kind == "dis_max" and isinstance(spec, Mapping):
            for item in spec.get("queries") or []:
                yield from _texts_in(item)


def _check_length(length: int, limit: int | None) -> None:
    if limit is not None and length > limit:
        raise QueryTextError(
            f"the query text is {length} characters long, more than the limit of [{limit}] "
            "(max_query_chars)"
        )


def extract_query_text(query: Any, max_chars: int | None = None) -> str | None:
    """Find the user's text in a query DSL object; ``None`` when there is none.

    Reads match, match_phrase(_prefix), match_bool_prefix, multi_match, combined_fields,
    query_string, simple_query_string, and these inside bool (must/should), dis_max,
    boosting (positive), function_score, script_score and nested. Texts longer than
    ``max_chars`` in all raise :class:`QueryTextError` before any work is done on them.
    """
    texts = list(_texts_in(query))
    _check_length(sum(len(t) for t in texts), max_chars)
    seen: list[str] = []
    for text in texts:
        text = " ".join(text.split())
        if text and text not in seen:
            seen.append(text)
    return " ".join(seen) or None


def query_text_for(body: Mapping[str, Any], q: str | None, config: RerankConfig) -> str:
    """The query text for a search: explicit option, then ``q=``, then the query DSL.

    Longer than ``config.max_query_chars``: :class:`QueryTextError` (the proxy's 400).
    Lone surrogates (valid JSON escapes, not encodable text) become U+FFFD.
    """
    limit = config.max_query_chars
    if config.query_text:
        _check_length(len(config.query_text), limit)
        return scrub(config.query_text)
    if q:
        _check_length(len(q), limit)
        text = " ".join(_FIELD_PREFIX.sub("", q).split())
        if text:
            return scrub(text)
    found = extract_query_text(body.get("query"), limit)
    if found is None:
        raise QueryTextError(
            "no query text found to rerank with: the query has no match, multi_match, "
            "match_phrase, query_string, simple_query_string or combined_fields clause "
            "(alone or inside bool must/should); pass the text as rerank query_text"
        )
    return scrub(found)
