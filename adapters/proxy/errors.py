"""The proxy's own errors, and their engine-style JSON.

The classes sit in crossrank's one exception tree, drawn in :mod:`crossrank.reranker.errors`
(:class:`ProxyError` under the root). What a client is answered, by :func:`error_for`:

==========================================  ======  ==========================================
exception                                   status  engine error type, reason
==========================================  ======  ==========================================
ProxyError and its subclasses               own     its own (BadRequest 400, Unauthorized 401,
                                                    BodyTooLarge 413, UpstreamError 502/504)
QueryTextError, RerankOptionsError          400     illegal_argument_exception
MalformedInputError                         400     parse_exception (bad JSON, too deep)
ScorerError (``on_scorer_error="raise"``)   503     crossrank_scorer_exception, reason from
                                                    errors.public_reason (no URLs, paths)
anything else                               500     crossrank_proxy_exception, "internal error"
==========================================  ======  ==========================================

Upstream responses, errors included, are never turned into these: they pass through as sent.
A 500 says only "internal error": exception texts may hold internal URLs, paths or data, so
they go to the log (by the caller, type and place only), never to the client.
"""

from __future__ import annotations

from typing import Any

from crossrank.reranker.errors import (
    CrossrankError,
    MalformedInputError,
    QueryTextError,
    RerankOptionsError,
    ScorerError,
    public_reason,
)
from crossrank.reranker.jsonio import dumps

__all__ = [
    "BadRequest",
    "BodyTooLarge",
    "ProxyError",
    "Unauthorized",
    "UpstreamError",
    "error_body",
    "error_for",
]


class ProxyError(CrossrankError):  # type: ignore[misc,unused-ignore]
    """An error the proxy answers itself, with an HTTP status and an engine error type."""

    status = 500
    kind = "exception"

    def __init__(self, reason: str, *, kind: str | None = None, status: int | None = None):
        super().__init__(reason)
        self.reason = reason
        if kind is not None:
            self.kind = kind
        if status is not None:
            self.status = status


class BadRequest(ProxyError):
    status = 400
    kind = "illegal_argument_exception"


class BodyTooLarge(ProxyError):
    status = 413
    kind = "content_too_long_exception"


class Unauthorized(ProxyError):
    status = 401
    kind = "security_exception"


class UpstreamError(ProxyError):
    status = 502
    kind = "crossrank_upstream_exception"


def error_body(status: int, kind: str, reason: str, **extra: Any) -> dict[str, Any]:
    """``{"error": {"root_cause": [...], "type", "reason", ...}, "status"}``."""
    cause = {"type": kind, "reason": reason}
    return {"error": {"root_cause": [cause], **cause, **extra}, "status": status}


def error_for(exc: BaseException) -> tuple[int, bytes]:
    """Status and JSON body for an exception raised while handling a request."""
    reason = str(exc) or type(exc).__name__
    if isinstance(exc, ProxyError):
        status, kind = exc.status, exc.kind
    elif isinstance(exc, (QueryTextError, RerankOptionsError)):
        status, kind = 400, "illegal_argument_exception"
    elif isinstance(exc, MalformedInputError):
        status, kind = 400, "parse_exception"
    elif isinstance(exc, ScorerError):
        status, kind, reason = 503, "crossrank_scorer_exception", public_reason(exc)
    else:
        status, kind, reason = 500, "crossrank_proxy_exception", "internal error"
    return status, dumps(error_body(status, kind, reason))
