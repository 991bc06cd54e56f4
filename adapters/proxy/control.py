"""Per-request rerank control, read from a search body and stripped before the engine.

Three shapes, all removed from the body the engine sees:

- ``"ext": {"crossrank": {...}}``: crossrank's own options (any :class:`RerankConfig` option
  that may change per call, ``model`` among the allowed models, ``budget_ms``);
  ``"ext": {"crossrank": false}`` switches reranking off.
- ``"ext": {"rerank": {"query_context": {"query_text": ...}}}`` or ``"query_text_path"``
  (a dotted path into the request body): OpenSearch's ``rerank`` processor request shape.
- ``"retriever": {"text_similarity_reranker": {...}}`` over a ``standard`` retriever:
  Elasticsearch's reranking retriever, emulated on any engine.

Any other retriever is sent as is and not reranked. Pure functions; errors are BadRequest.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from crossrank.adapters.core.plan import count_param, page_of
from crossrank.adapters.proxy.errors import BadRequest
from crossrank.adapters.proxy.settings import IndexRule
from crossrank.reranker.config import RerankConfig
from crossrank.reranker.errors import RerankOptionsError

__all__ = ["ConfigResolver", "Control", "extract_control", "resolve_path"]

_MAX_PATH = 1000
_RERANKER = "text_similarity_reranker"
_STANDARD_KEYS = ("search_after", "terminate_after", "sort", "min_score", "collapse")
_DEFAULT_RANK_WINDOW = 10


@dataclass
class Control:
    """The body to send, the options the client gave, and what the URL must lose."""

    body: dict[str, Any]
    options: dict[str, Any] = field(default_factory=dict)
    budget_ms: float | None = None
    drop_params: tuple[str, ...] = ()
    changed: bool = False


def resolve_path(body: Any, path: str) -> Any:
    """The value at a dotted path (``$.`` prefix and ``[n]`` / numeric indices allowed)."""
    path = path[2:] if path.startswith("$.") else path
    value = body
    for part in path.replace("[", ".").replace("]", "").split("."):
        if part == "":
            continue
        if isinstance(value, Mapping) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            raise BadRequest(f"[query_text_path] [{path}] does not point to a value in the request")
    return value


def _query_context(body: Mapping[str, Any], spec: Any) -> str:
    ctx = spec.get("query_context") if isinstance(spec, Mapping) else None
    if not isinstance(ctx, Mapping):
        raise BadRequest("[rerank] requires an object [query_context]")
    text, path = ctx.get("query_text"), ctx.get("query_text_path")
    if (text is None) == (path is None):
        raise BadRequest("[query_context] needs exactly one of [query_text] or [query_text_path]")
    if path is not None:
        if not isinstance(path, str) or len(path) > _MAX_PATH:
            raise BadRequest(f"[query_text_path] must be a string of at most {_MAX_PATH} chars")
        text = resolve_path(body, path)
    if not isinstance(text, str) or not text.strip():
        raise BadRequest("[query_context] query text must be a non-empty string")
    return text


def _crossrank_options(spec: Any) -> tuple[dict[str, Any], float | None]:
    if spec is False:
        return {"enabled": False}, None
    if spec is True or spec is None:
        return {}, None
    if not isinstance(spec, Mapping):
        raise BadRequest("[ext.crossrank] must be an object or a boolean")
    options = dict(spec)
    budget = options.pop("budget_ms", None)
    if budget is not None and (not isinstance(budget, (int, float)) or budget <= 0):
        raise BadRequest("[ext.crossrank.budget_ms] must be a positive number")
    return options, None if budget is None else float(budget)


def _reranker_retriever(
    body: dict[str, Any], spec: Any, params: Mapping[str, str]
) -> tuple[dict[str, Any], tuple[str, ...]]:
    """Rewrite a ``text_similarity_reranker`` search into a plain one; returns options."""
    if not isinstance(spec, Mapping):
        raise BadRequest(f"[{_RERANKER}] must be an object", kind="x_content_parse_exception")
    for name in ("retriever", "field", "inference_text"):
        if name not in spec:
            raise BadRequest(
                f"[{_RERANKER}] missing required field [{name}]", kind="x_content_parse_exception"
            )
    if "query" in body:
        raise BadRequest("cannot specify [retriever] and [query]")
    inner = spec["retriever"]
    standard = inner.get("standard") if isinstance(inner, Mapping) and len(inner) == 1 else None
    if not isinstance(standard, Mapping):
        raise BadRequest(f"crossrank emulates [{_RERANKER}] over a [standard] retriever only")
    window = count_param(spec.get("rank_window_size", _DEFAULT_RANK_WINDOW), "rank_window_size")
    offset, size = page_of(body, params)
    if window < 1:
        raise BadRequest("[rank_window_size] must be greater than 0")
    if size > window:
        raise BadRequest(
            f"Validation Failed: 1: [{_RERANKER}] requires [rank_window_size: {window}] "
            f"be greater than or equal to [size: {size}];",
            kind="action_request_validation_exception",
        )
    if not isinstance(spec["field"], str) or not isinstance(spec["inference_text"], str):
        raise BadRequest(f"[{_RERANKER}] [field] and [inference_text] must be strings")
    del body["retriever"]
    query = standard.get("query", {"match_all": {}})
    if "filter" in standard:
        query = {"bool": {"must": [query], "filter": standard["filter"]}}
    body["query"] = query
    for key in _STANDARD_KEYS:
        if key in standard:
            body[key] = standard[key]
    # As in Elasticsearch, only the reranked window is ever returned.
    body["size"], body["from"] = max(0, min(size, window - offset)), offset
    options: dict[str, Any] = {
        "window": window,
        "fields": (spec["field"],),
        "template": None,
        "query_text": spec["inference_text"],
    }
    if spec.get("min_score") is not None:
        options["min_score"] = spec["min_score"]
    return options, ("size", "from")


def extract_control(body: Mapping[str, Any] | None, params: Mapping[str, str]) -> Control:
    """Read and strip the rerank control of one search body (the input is not modified)."""
    if body is None:
        return Control({})
    if not isinstance(body, Mapping):
        raise BadRequest("request body must be a JSON object", kind="parse_exception")
    out = copy.deepcopy(dict(body))
    control = Control(out)
    ext = out.get("ext")
    if isinstance(ext, Mapping) and ("crossrank" in ext or "rerank" in ext):
        ext = dict(ext)
        options, control.budget_ms = _crossrank_options(ext.pop("crossrank", None))
        if "rerank" in ext:
            options.setdefault("query_text", _query_context(body, ext.pop("rerank")))
        if ext:
            out["ext"] = ext
        else:
            del out["ext"]
        control.options.update(options)
        control.changed = True
    retriever = out.get("retriever")
    if isinstance(retriever, Mapping) and _RERANKER in retriever and len(retriever) == 1:
        options, control.drop_params = _reranker_retriever(out, retriever[_RERANKER], params)
        control.options = {**options, **control.options}
        control.changed = True
    elif retriever is not None:
        control.options["enabled"] = False  # another retriever: the engine's own business
    return control


class ConfigResolver:
    """The config of one search: defaults, then the index rule, then the request's options."""

    def __init__(
        self,
        base: RerankConfig,
        rules: Sequence[tuple[IndexRule, RerankConfig]] = (),
        models: frozenset[str] = frozenset(),
    ) -> None:
        self.base, self.rules, self.models = base, list(rules), models | {base.model}

    def for_indices(self, indices: Sequence[str]) -> RerankConfig:
        """The defaults of the first rule matching every index; the base config otherwise."""
        for rule, config in self.rules:
            if rule.matches(indices):
                return config
        return self.base

    def resolve(self, indices: Sequence[str], options: Mapping[str, Any]) -> RerankConfig:
        """Apply the request's options; ``model`` must be an allowed model (else 400)."""
        config = self.for_indices(indices)
        options = dict(options)
        model = options.pop("model", None)
        if model is not None and model != config.model:
            if model not in self.models:
                raise BadRequest(f"model [{model}] is not served by this proxy")
            config = config.model_copy(update={"model": model})
        if "fields" in options and "template" not in options:
            options["template"] = None
        try:
            return config.with_options(options or None)
        except RerankOptionsError as exc:
            raise BadRequest(str(exc)) from exc
