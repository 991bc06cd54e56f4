"""The proxy's own errors, and their engine-style JSON.

Tree (the root is crossrank's)::

    CrossrankError
    ├── QueryTextError, RerankOptionsError   → 400 illegal_argument_exception
    ├── ScorerError                          → 503 (only with on_scorer_error="raise")
    └── ProxyError                           status and engine error type of its own
        ├── BadRequest         400  parse_exception, illegal_argument_exception, ...
        ├── BodyTooLarge       413  content_too_long_exception
        ├── Unauthorized       401  security_exception
        └── UpstreamError      502  connect failures; 504 on timeouts

Upstream responses, errors included, are never turned into these: they pass through as sent.
"""

from __future__ import annotations

import json
from typing import Any

from crossrank.reranker.errors import (
    CrossrankError,
    QueryTextError,
    RerankOptionsError,
    ScorerError,
)

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
    if isinstance(exc, ProxyError):
        status, kind = exc.status, exc.kind
    elif isinstance(exc, (QueryTextError, RerankOptionsError)):
        status, kind = 400, "illegal_argument_exception"
    elif isinstance(exc, ScorerError):
        status, kind = 503, "crossrank_scorer_exception"
    else:
        status, kind = 500, "crossrank_proxy_exception"
    body = error_body(status, kind, str(exc) or type(exc).__name__)
    return status, json.dumps(body).encode()
