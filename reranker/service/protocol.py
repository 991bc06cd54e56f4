"""Validation of every endpoint's requests, how each renders its results, and the one
error → status table.

The shapes of the formats (crossrank, TEI, Cohere/Jina/vLLM) and the rule of raw versus
sigmoid scores are :mod:`crossrank.reranker.wire`'s, shared with the remote client (a body of
the wrong shape is a 400 from there); this module adds the service's own rules. A body
becomes a :class:`Job`: the model asked for, the :class:`ScoreRequest` list (with any
``max_tokens_per_doc`` / ``max_tokens_per_query`` caps, applied by the encoder), how to
render the results, and an optional check of the encoded pairs.

Documents are truncated to the model's length (reported, never an error) unless a TEI body
says ``"truncate": false``: then a text that does not fit the model with the query, or a
query over ``max_query_tokens``, is **413** after tokenizing and before any scoring (TEI
answers 413 too: its validation error, ``inputs must have less than N tokens``). Too many
documents is **413**, like an oversized body. A query longer than ``max_query_chars``
characters, and text that is not valid Unicode (a lone surrogate such as ``"\\ud800"``, legal
in a JSON escape), are **400**, found here before anything is tokenized; the limits come in one
:class:`Limits`. Errors have one body shape for every endpoint:
``{"error": {"type", "reason"}, "status"}``; a 500 tells only :func:`public_reason` (the full
text goes to the log).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from crossrank.reranker import wire
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
from crossrank.reranker.local.encoding import EncodedPairs
from crossrank.reranker.scoring import ScoreRequest, ScoreResult
from crossrank.reranker.service.settings import ServeSettings
from crossrank.reranker.wire import sigmoid

__all__ = [
    "Job",
    "Limits",
    "error_response",
    "parse_cohere",
    "parse_rerank",
    "refuse_truncation",
    "sigmoid",
]

Render = Callable[[list[ScoreResult], str], Any]
#: a check of the encoded pairs, before they are queued; gets the model's ``info()``
Check = Callable[[EncodedPairs, Mapping[str, Any]], None]


@dataclass
class Job:
    """A validated request: the model asked for (None: default), its pairs, its renderer,
    and a check of its encoded pairs (None: none)."""

    model: str | None
    requests: list[ScoreRequest]
    render: Render
    check: Check | None = None


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


def _check_limits(
    request: wire.CrossrankRequest | wire.TeiRequest | wire.CohereRequest,
    requests: list[ScoreRequest],
    limits: Limits,
) -> None:
    for i, r in enumerate(requests):
        if len(r.query) > limits.max_query_chars:
            raise InvalidRequestError(
                f"'{request.query_field(i)}' has {len(r.query)} characters, over the limit of "
                f"{limits.max_query_chars} (max_query_chars)"
            )
    total = sum(len(r.documents) for r in requests)
    if total > limits.max_documents:
        raise PayloadTooLargeError(
            f"{total} documents in one request exceed the limit of {limits.max_documents} "
            "(max_documents); split the request"
        )


def refuse_truncation(encoded: EncodedPairs, model: Mapping[str, Any]) -> None:
    """TEI's ``"truncate": false``: 413 if any content had to be cut to fit the model
    (``model`` is the backend's ``info()``: ``max_length``, ``max_query_tokens``)."""
    if any(encoded.query_truncated):
        raise PayloadTooLargeError(
            f"the query is longer than {model['max_query_tokens']} tokens (max_query_tokens) "
            "and 'truncate' is false; send truncate=true or a shorter query"
        )
    cut = sum(encoded.truncated)
    if cut:
        texts = len(encoded.doc_flags)  # every text, those found in the score cache too
        raise PayloadTooLargeError(
            f"{cut} of the {texts} texts do not fit in the model's {model['max_length']} tokens "
            "together with the query, and 'truncate' is false; send truncate=true or shorter "
            "texts"
        )


# ---------------------------------------------------------------------- formats


def _crossrank(request: wire.CrossrankRequest, limits: Limits) -> Job:
    requests = list(request.requests)
    _check_limits(request, requests, limits)

    def render(results: list[ScoreResult], model: str) -> Any:
        return wire.CrossrankResponse(model, tuple(results)).to_json()

    return Job(request.model, requests, render)


def _tei(request: wire.TeiRequest, limits: Limits) -> Job:
    _check_limits(request, [request.request], limits)
    texts = request.texts if request.return_text else None

    def render(results: list[ScoreResult], model: str) -> Any:
        scores = wire.to_wire(results[0].scores, request.squashed)
        return wire.TeiResponse(tuple(scores), texts).to_json()

    check = refuse_truncation if request.truncate is False else None
    return Job(request.model, [request.request], render, check)


def parse_rerank(body: Any, limits: Limits) -> Job:
    """``POST /rerank``: TEI's body when it has ``texts``, else crossrank's."""
    request = wire.read_rerank(body)
    if isinstance(request, wire.TeiRequest):
        return _tei(request, limits)
    return _crossrank(request, limits)


def parse_cohere(body: Any, limits: Limits, version: int = 2) -> Job:
    """``POST /v1/rerank`` and ``/v2/rerank`` (Cohere's, Jina's and vLLM's shape)."""
    request = wire.CohereRequest.from_json(body)
    _check_limits(request, [request.request], limits)
    docs = request.documents if request.return_documents else None

    def render(results: list[ScoreResult], model: str) -> Any:
        scores = wire.to_wire(results[0].scores, request.squashed)
        return wire.CohereResponse(model, tuple(scores), docs, request.top_n, version).to_json()

    return Job(request.model, [request.request], render)


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
