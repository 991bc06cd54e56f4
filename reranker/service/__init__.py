"""The batching scorer service (``crossrank serve``).

Modules in the order data flows: :mod:`.app` (HTTP: routes, auth, limits, disconnects) →
:mod:`.protocol` (validation, response shapes, the error → status table) → :mod:`.queue`
(admission, token-budget packing) → :mod:`.batcher` (batches, prefetch, worker thread) →
:mod:`.backend` (LocalScorer's encoder and forward). :mod:`.settings`, :mod:`.metrics` and
:mod:`.cli` stand beside them. Needs the ``server`` and ``torch`` extras.
"""

from __future__ import annotations

from crossrank.reranker.service.app import create_app, load_backends
from crossrank.reranker.service.settings import ServeSettings

__all__ = ["ServeSettings", "create_app", "load_backends"]
