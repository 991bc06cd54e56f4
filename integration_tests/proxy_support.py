"""A real ``crossrank proxy`` subprocess for the proxy tests, and a scorer that misbehaves.

:func:`faulty_scorer` is the test-only scorer factory (``--scorer-factory``): it scores by
word overlap, fails on queries containing ``FAIL`` and stalls on ``SLOW``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from crossrank.adapters.processes import CrossrankProcess
from crossrank.reranker import RerankConfig, ScoreRequest, ScoreResult

REPO = Path(__file__).resolve().parent.parent


class FaultyScorer:
    """Word overlap; raises on ``FAIL`` queries, sleeps 3 s on ``SLOW`` queries."""

    name = "faulty"

    def score(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        if any("FAIL" in r.query for r in requests):
            raise ConnectionError("scorer unreachable (on purpose)")
        out = []
        for r in requests:
            words = set(r.query.lower().split())
            scores = [float(len(words & set(d.lower().split()))) for d in r.documents]
            out.append(ScoreResult(scores, model=self.name))
        return out

    async def ascore(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        if any("SLOW" in r.query for r in requests):
            await asyncio.sleep(3)
        return self.score(requests)


def faulty_scorer(config: RerankConfig) -> FaultyScorer:
    """The ``--scorer-factory`` entry point."""
    return FaultyScorer()


class ProxyProcess:
    """A running ``crossrank proxy``: its URL, process and log (JSON lines on stderr)."""

    def __init__(self, process: CrossrankProcess) -> None:
        self.process = process
        self.url = process.url
        self.log = process.log

    @property
    def proc(self) -> subprocess.Popen[bytes]:
        assert self.process.proc is not None
        return self.process.proc

    def logs(self) -> str:
        return self.process.logs()

    def stop(self, timeout: float = 30.0) -> bool:
        """SIGTERM, then SIGKILL; True when it shut down gracefully (uvicorn re-raises the
        signal once shutdown is complete, so the exit status is -SIGTERM)."""
        status = self.process.stop(timeout=timeout)
        graceful = "Application shutdown complete." in self.logs()
        return graceful and status in (0, -signal.SIGTERM)


def start_proxy(upstream: str, *args: str, startup_timeout: float = 180.0) -> ProxyProcess:
    """Start ``crossrank proxy`` on a free port and wait for its health endpoint (this
    repository on its ``PYTHONPATH``, for ``--scorer-factory`` of :func:`faulty_scorer`).
    Its latency budget and a remote scorer's deadline are 10 min unless ``args`` set them: a
    test's reranking must not depend on this machine's speed (the defaults are 1 s)."""
    path = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    generous = ["--latency-budget-ms", "600000", "--rerank-json", '{"scorer_timeout": 600}']
    argv = ["--upstream", upstream, *generous, *args]
    process = CrossrankProcess("proxy", argv, env={"PYTHONPATH": path}, cwd=REPO)
    return ProxyProcess(process.start(startup_timeout))


def official(engine: Any, url: str, **kwargs: Any) -> Any:
    """The engine's official client (not the wrapper) pointed at ``url``."""
    if engine.is_es:
        from elasticsearch import Elasticsearch

        return Elasticsearch(url, request_timeout=60, **kwargs)
    from opensearchpy import OpenSearch

    return OpenSearch(hosts=[url], timeout=60, **kwargs)
