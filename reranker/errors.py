"""Exceptions raised by crossrank.

Tree::

    CrossrankError
    ├── QueryTextError (ValueError)   no query text in the request and none given
    ├── ScorerError                   the scorer could not produce scores
    │   └── ModelLoadError            the model or tokenizer could not be loaded
    └── RerankOptionsError (ValueError)  bad per-call rerank options

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
