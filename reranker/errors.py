"""Exceptions raised by crossrank: the one tree, drawn here only.

Tree (the module of the classes defined elsewhere in brackets)::

    CrossrankError
    ├── ConfigurationError (ValueError)  a setting or argument that cannot work: a bad engine
    │                                    spec or scorer factory, an empty key file, limits that
    │                                    leave no room for the query ...
    ├── QueryTextError (ValueError)   no query text in the request and none given
    ├── RerankOptionsError (ValueError)  bad per-call rerank options
    ├── MalformedInputError (ValueError) a body that is not JSON, or nested too deep
    ├── ScorerError                   the scorer could not produce scores
    │   ├── ModelLoadError            the model or tokenizer could not be loaded (or is
    │   │   │                         still loading, or waits to be retried)
    │   │   └── UnsupportedModelError (TypeError)  a model or tokenizer crossrank cannot
    │   │                             use (e.g. a slow, non-Rust tokenizer)
    │   ├── ScorerTimeoutError        scoring exceeded its latency budget
    │   └── ScorerOverloadedError     the scorer is too busy to answer within the budget
    │                                 left: the call was shed (not sent, or refused with a
    │                                 429 by the service) instead of waiting
    ├── ServiceError                  the scorer service refuses a request
    │   ├── InvalidRequestError (ValueError)  malformed or empty input
    │   ├── UnauthorizedError         missing or wrong bearer token
    │   ├── PayloadTooLargeError      body or document count over the limits
    │   ├── OverloadedError           the queue is full; retry after ``retry_after`` s
    │   └── ClientDisconnectedError   the client went away; its work was dropped
    ├── TrainingError (ValueError)    training cannot run on the groups given (none, or
    │                                 teacher scores missing)
    ├── EngineRequestError (RuntimeError)  the engine refused a request crossrank made for
    │                                 the user (e.g. bulk indexing in ``crossrank eval``)
    ├── ProxyError                    [adapters.proxy.errors] the search proxy answers itself,
    │   │                             with a status and an engine error type of its own
    │   ├── BadRequest                400
    │   ├── BodyTooLarge              413
    │   ├── Unauthorized              401
    │   └── UpstreamError             502 (504 on timeouts)
    └── ProcessStartError (RuntimeError)  [adapters.processes] a child process (``crossrank
        │                             serve``/``proxy``, an engine node) did not start, exited,
        │                             or did not answer healthy in time
        └── EngineStartError          [adapters.nodes] an engine node could not be fetched,
                                      started, or did not become healthy

A class that also derives from a builtin (in brackets) can be caught as that builtin too.
Errors from foreign libraries are chained (``raise ... from exc``). Their texts may hold
internal URLs and paths: :func:`public_reason` is what a search client is told instead.
"""

from __future__ import annotations


class CrossrankError(Exception):
    """Root of every exception crossrank raises."""


class ConfigurationError(CrossrankError, ValueError):
    """A setting or argument that cannot work (its text says which, and why)."""


class QueryTextError(CrossrankError, ValueError):
    """No query text could be extracted from the request, and none was given."""


class RerankOptionsError(CrossrankError, ValueError):
    """Per-call rerank options that do not validate."""


class ScorerError(CrossrankError):
    """The scorer failed to score a request."""


class ModelLoadError(ScorerError):
    """The model or its tokenizer could not be loaded."""


class UnsupportedModelError(ModelLoadError, TypeError):
    """A model or tokenizer that crossrank cannot use, e.g. a slow (non-Rust) tokenizer."""


class ScorerTimeoutError(ScorerError):
    """Scoring (model loading included) exceeded the latency budget (its text names the
    budget only, and is shown to search clients)."""


class ScorerOverloadedError(ScorerError):
    """The scorer is too busy to answer within the latency budget that is left: the call was
    shed at once (not sent, or refused by the service with a 429) instead of waiting."""


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


class EngineRequestError(CrossrankError, RuntimeError):
    """The engine refused a request crossrank made on the user's behalf (bulk indexing)."""


class TrainingError(CrossrankError, ValueError):
    """Training cannot run on the groups given: none, or teacher scores missing."""


def public_reason(exc: BaseException) -> str:
    """What a search client may be told about a scoring failure: no URLs, paths or hosts.

    The full text (``str(exc)``) belongs in the logs of whoever runs the scorer.
    """
    if isinstance(exc, ScorerTimeoutError):
        return str(exc) or "scoring exceeded its latency budget"
    if isinstance(exc, ModelLoadError):
        return "the reranking model is not available"
    if isinstance(exc, ScorerOverloadedError):
        return "the scorer is overloaded"
    return "the scorer failed"
