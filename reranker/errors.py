"""Exceptions raised by crossrank.

Tree::

    CrossrankError
    ├── QueryTextError (ValueError)   no query text in the request and none given
    ├── ScorerError                   the scorer could not produce scores
    │   ├── ModelLoadError            the model or tokenizer could not be loaded (or is
    │   │                             still loading, or waits to be retried)
    │   └── ScorerTimeoutError        scoring exceeded its latency budget
    ├── RerankOptionsError (ValueError)  bad per-call rerank options
    ├── MalformedInputError (ValueError) a body that is not JSON, or nested too deep
    └── ServiceError                  the scorer service refuses a request
        ├── InvalidRequestError (ValueError)  malformed or empty input
        ├── UnauthorizedError         missing or wrong bearer token
        ├── PayloadTooLargeError      body or document count over the limits
        ├── OverloadedError           the queue is full; retry after ``retry_after`` s
        └── ClientDisconnectedError   the client went away; its work was dropped

Errors from foreign libraries are chained (``raise ... from exc``). Their texts may hold
internal URLs and paths: :func:`public_reason` is what a search client is told instead.
"""

from __future__ import annotations


class CrossrankError(Exception):
    """Root of every exception crossrank raises."""


class QueryTextError(CrossrankError, ValueError):
    """No query text could be extracted from the request, and none was given."""


class RerankOptionsError(CrossrankError, ValueError):
    """Per-call rerank options that do not validate."""


class ScorerError(CrossrankError):
    """The scorer failed to score a request."""


class ModelLoadError(ScorerError):
    """The model or its tokenizer could not be loaded."""


class ScorerTimeoutError(ScorerError):
    """Scoring (model loading included) exceeded the latency budget (its text names the
    budget only, and is shown to search clients)."""


class MalformedInputError(CrossrankError, ValueError):
    """A request body that is not valid JSON (or UTF-8), or is nested too deeply."""


class ServiceError(CrossrankError):
    """The scorer service refuses a request (its HTTP status comes from one table)."""


class InvalidRequestError(ServiceError, ValueError):
    """A malformed or empty scoring request."""


class UnauthorizedError(ServiceError):
    """A missing or wrong bearer token."""


class PayloadTooLargeError(ServiceError):
    """A body or a document count over the service's limits."""


class OverloadedError(ServiceError):
    """The service's queue is full; retry after ``retry_after`` seconds."""

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ClientDisconnectedError(ServiceError):
    """The client disconnected before its scores were ready; its work was dropped."""


def public_reason(exc: BaseException) -> str:
    """What a search client may be told about a scoring failure: no URLs, paths or hosts.

    The full text (``str(exc)``) belongs in the logs of whoever runs the scorer.
    """
    if isinstance(exc, ScorerTimeoutError):
        return str(exc) or "scoring exceeded its latency budget"
    if isinstance(exc, ModelLoadError):
        return "the reranking model is not available"
    return "the scorer failed"
