"""A transparent Elasticsearch/OpenSearch endpoint that reranks ``_search`` and ``_msearch``.

Modules, in the order a request flows: :mod:`.settings` (ProxySettings), :mod:`.routing`
(what is reranked), :mod:`.control` (per-request options, stripped), :mod:`.search` (the
async shell over the core flows), :mod:`.filtering` (filter_path, _source), :mod:`.forward`
(upstream bytes), :mod:`.scorers`, :mod:`.metrics`, :mod:`.errors`, :mod:`.app` (ASGI and
the middleware stack), :mod:`.cli`.
"""

from __future__ import annotations

from crossrank.adapters.proxy.app import create_app
from crossrank.adapters.proxy.settings import IndexRule, ProxySettings, load_rules

__all__ = ["IndexRule", "ProxySettings", "create_app", "load_rules"]
