"""Validation and response shapes of every endpoint, and the one error → status table.

Request bodies (parsed JSON) become a :class:`Job`: the model asked for, the
:class:`ScoreRequest` list, and how to render the results. Formats:

- crossrank ``POST /rerank``: ``{"model"?, "requests": [{"query", "documents": [str]}]}``
  → ``{"model", "results": [{"scores", "truncated", "split", "query_truncated"}]}``,
  raw model scores in document order (several queries per call, for msearch).
- TEI ``POST /rerank`` (told apart by ``texts``): ``{"query", "texts", "raw_scores"?,
  "return_text"?, "truncate"?}`` → ``[{"index", "score", "text"?}]`` by score, descending;
  sigmoid unless ``raw_scores``.
- Cohere ``POST /v1/rerank`` and ``/v2/rerank`` (also Jina's shape): ``{"query",
  "documents": [str | {"text"}], "top_n"?, "return_documents"?, "max_tokens_per_doc"?,
  "model"?}`` → ``{"id", "results": [{"index", "relevance_score", "document"?}], "meta"}``,
  relevance in 0..1 (sigmoid).

Documents are always truncated to the model's length (reported, never an error), so TEI's
``truncate`` and Cohere's ``max_tokens_per_doc`` are accepted and validated, not applied.
Too many documents is **413**, like an oversized body. A query longer than ``max_query_chars``
characters, and text that is not valid Unicode (a lone surrogate such as ``"\\ud800"``, legal
in a JSON escape), are **400**, found here before anything is tokenized; the limits come in one
:class:`Limits`. Errors have one body shape for every endpoint:
``{"error": {"type", "reason"}, "status"}``; a 500 tells only :func:`public_reason` (the full
text goes to the log).
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from crossrank.reranker.errors import (
    ClientDisconnectedError,
    InvalidRequestError,
    MalformedInputError,
    OverloadedError,
    PayloadTooLargeError,
    ScorerError,
    UnauthorizedError,
    public_reason,
)
from crossrank.reranker.scoring import ScoreRequest, ScoreResult
from crossrank.reranker.service.settings import ServeSettings

__all__ = ["Job", "Limits", "error_response", "parse_cohere", "parse_rerank", "sigmoid"]

Render = Callable[[list[ScoreResult], str], Any]


@dataclass
class Job:
    """A validated request: the model asked for (None: default), its pairs, its renderer."""

    model: str | None
    requests: list[ScoreRequest]
    render: Render


@dataclass(frozen=True)
class Limits:
    """What validation enforces: documents per request (413 beyond), query length in
    characters (400 beyond)."""

    max_documents: int
    max_query_chars: int

    @classmethod
    def of(cls, settings: ServeSettings) -> Limits:
        """The limits of a service configured by ``settings``."""
        return cls(settings.max_documents, settings.rerank.max_query_chars)


def sigmoid(x: float) -> float:
    """The logistic function, without overflow."""
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


# ---------------------------------------------------------------------- field checks


def _object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise InvalidRequestError("the body must be a JSON object")
    return body


def _unicode(value: str, where: str) -> str:
    """``value``, if it is valid Unicode (no lone surrogate): a tokenizer needs UTF-8."""
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InvalidRequestError(
                f"'{where}' is not valid Unicode: lone surrogate U+{ord(value[exc.start]):04X} "
                f"at character {exc.start}"
            ) from None
    return value


def _query(value: Any, limits: Limits, where: str = "query") -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidRequestError(f"'{where}' must be a non-empty string")
    if len(value) > limits.max_query_chars:
        raise InvalidRequestError(
            f"'{where}' has {len(value)} characters, over the limit of "
            f"{limits.max_query_chars} (max_query_chars)"
        )
    return _unicode(value, where)


def _texts(value: Any, where: str, *, objects: bool = False) -> list[str]:
    if not isinstance(value, list) or not value:
        raise InvalidRequestError(f"'{where}' must be a non-empty list")
    out: list[str] = []
    for i, item in enumerate(value):
        if objects and isinstance(item, dict):
            item = item.get("text")
        if not isinstance(item, str):
            shape = "a string or {'text': string}" if objects else "a string"
            raise InvalidRequestError(f"'{where}[{i}]' must be {shape}")
        out.append(_unicode(item, f"{where}[{i}]"))
    return out


def _optional(body: dict[str, Any], key: str, kind: type, default: Any) -> Any:
    value = body.get(key, default)
    if value is None:
        return default
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise InvalidRequestError(f"'{key}' must be of type {kind.__name__}")
    if isinstance(value, int) and not isinstance(value, bool) and value < 1:
        raise InvalidRequestError(f"'{key}' must be at least 1")
    return value


def _model(body: dict[str, Any]) -> str | None:
    name: str | None = _optional(body, "model", str, None)
    return None if name is None else _unicode(name, "model")


def _check_count(requests: list[ScoreRequest], limits: Limits) -> None:
    total = sum(len(r.documents) for r in requests)
    if total > limits.max_documents:
        raise PayloadTooLargeError(
            f"{total} documents in one request exceed the limit of {limits.max_documents} "
            "(max_documents); split the request"
        )


# ---------------------------------------------------------------------- formats


def _parse_crossrank(body: dict[str, Any], limits: Limits) -> Job:
    items = body.get("requests")
    if not isinstance(items, list) or not items:
        raise InvalidRequestError("'requests' must be a non-empty list")
    requests = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise InvalidRequestError(f"'requests[{i}]' must be an object")
        query = _query(item.get("query"), limits, f"requests[{i}].query")
        requests.append(
            ScoreRequest(query, _texts(item.get("documents"), f"requests[{i}].documents"))
        )
    _check_count(requests, limits)

    def render(results: list[ScoreResult], model: str) -> Any:
        return {
            "model": model,
            "results": [
                {
                    "scores": r.scores,
                    "truncated": r.truncated,
                    "split": r.split,
                    "query_truncated": r.query_truncated,
                }
                for r in results
            ],
        }

    return Job(_model(body), requests, render)


def _parse_tei(body: dict[str, Any], limits: Limits) -> Job:
    texts = _texts(body.get("texts"), "texts")
    request = ScoreRequest(_query(body.get("query"), limits), texts)
    raw = _optional(body, "raw_scores", bool, False)
    return_text = _optional(body, "return_text", bool, False)
    _optional(body, "truncate", bool, False)
    _check_count([request], limits)

    def render(results: list[ScoreResult], model: str) -> Any:
        scores = results[0].scores if raw else [sigmoid(s) for s in results[0].scores]
        order = sorted(range(len(scores)), key=lambda i: -scores[i])
        return [
            {"index": i, "score": scores[i], **({"text": texts[i]} if return_text else {})}
            for i in order
        ]

    return Job(_model(body), [request], render)


def parse_rerank(body: Any, limits: Limits) -> Job:
    """``POST /rerank``: TEI's body when it has ``texts``, else crossrank's."""
    body = _object(body)
    if "texts" in body:
        return _parse_tei(body, limits)
    if "requests" in body:
        return _parse_crossrank(body, limits)
    raise InvalidRequestError(
        "expected {'requests': [{'query', 'documents'}]} (crossrank) or {'query', 'texts'} (TEI)"
    )


def parse_cohere(body: Any, limits: Limits, version: int = 2) -> Job:
    """``POST /v1/rerank`` and ``/v2/rerank`` (Cohere's and Jina's shape)."""
    body = _object(body)
    docs = _texts(body.get("documents"), "documents", objects=True)
    request = ScoreRequest(_query(body.get("query"), limits), docs)
    top_n = _optional(body, "top_n", int, len(docs))
    return_documents = _optional(body, "return_documents", bool, False)
    _optional(body, "max_tokens_per_doc", int, None)
    _check_count([request], limits)

    def render(results: list[ScoreResult], model: str) -> Any:
        scores = [sigmoid(s) for s in results[0].scores]
        order = sorted(range(len(scores)), key=lambda i: -scores[i])[:top_n]
        return {
            "id": str(uuid.uuid4()),
            "model": model,
            "results": [
                {
                    "index": i,
                    "relevance_score": scores[i],
                    **({"document": {"text": docs[i]}} if return_documents else {}),
                }
                for i in order
            ],
            "meta": {"api_version": {"version": str(version)}, "billed_units": {"search_units": 1}},
        }

    return Job(_model(body), [request], render)


# ---------------------------------------------------------------------- errors

#: exception → (HTTP status, error type, outcome label); the first match wins.
ERRORS: tuple[tuple[type[BaseException], int, str], ...] = (
    (InvalidRequestError, 400, "invalid_request"),
    (MalformedInputError, 400, "invalid_request"),
    (UnauthorizedError, 401, "unauthorized"),
    (PayloadTooLargeError, 413, "payload_too_large"),
    (OverloadedError, 429, "overloaded"),
    (ClientDisconnectedError, 499, "disconnected"),
    (ScorerError, 500, "scorer_error"),
)


def error_response(exc: BaseException) -> tuple[int, str, dict[str, Any], dict[str, str]]:
    """Status, outcome label, body and headers of the response for ``exc``.

    A 4xx tells the client why (texts written by this package); a 500 only the
    :func:`public_reason`, since a scorer's error text may hold model paths.
    """
    status, kind = 500, "internal_error"
    for cls, code, name in ERRORS:
        if isinstance(exc, cls):
            status, kind = code, name
            break
    reason = public_reason(exc) if status >= 500 else str(exc)
    headers: dict[str, str] = {}
    if isinstance(exc, OverloadedError):
        headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after)))
    if isinstance(exc, UnauthorizedError):
        headers["WWW-Authenticate"] = "Bearer"
    body = {"error": {"type": kind, "reason": reason}, "status": status}
    return status, kind, body, headers
