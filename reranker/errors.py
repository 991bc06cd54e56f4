"""Exceptions raised by crossrank.

Tree::

    CrossrankError
    ├── QueryTextError (ValueError)   no query text in the request and none given
    ├── ScorerError                   the scorer could not produce scores
    │   └── ModelLoadError            the model or tokenizer could not be loaded
    ├── RerankOptionsError (ValueError)  bad per-call rerank options
    └── ServiceError                  the scorer service refuses a request
        ├── InvalidRequestError (ValueError)  malformed or empty input
        ├── UnauthorizedError         missing or wrong bearer token
        ├── PayloadTooLargeError      body or document count over the limits
        ├── OverloadedError           the queue is full; retry after ``retry_after`` s
        └── ClientDisconnectedError   the client went away; its work was dropped

Errors from foreign libraries are chained (``raise ... from exc``).
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
