"""A real ``crossrank proxy`` subprocess for the proxy tests, and a scorer that misbehaves.

:func:`faulty_scorer` is the test-only scorer factory (``--scorer-factory``): it scores by
word overlap, fails on queries containing ``FAIL`` and stalls on ``SLOW``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crossrank.reranker import RerankConfig, ScoreRequest, ScoreResult

from .helpers import free_port, wait_healthy

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


@dataclass
class ProxyProcess:
    """A running proxy: its URL, process and log file (JSON lines on stderr)."""

    url: str
    proc: subprocess.Popen[bytes]
    log: Path

    def logs(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, timeout: float = 30.0) -> bool:
        """SIGTERM, then SIGKILL; True when it shut down gracefully.

        uvicorn re-raises the signal once shutdown is complete, so the exit status is -SIGTERM.
        """
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        graceful = "Application shutdown complete." in self.logs()
        return graceful and self.proc.returncode in (0, -signal.SIGTERM)


def start_proxy(upstream: str, *args: str, startup_timeout: float = 180.0) -> ProxyProcess:
    """Start ``crossrank proxy`` on a free port and wait for its health endpoint."""
    port = free_port()
    log = Path(tempfile.mkstemp(prefix="crossrank-proxy-", suffix=".log")[1])
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    cmd = [sys.executable, "-m", "crossrank.adapters.cli", "proxy", "--upstream", upstream]
    cmd += ["--port", str(port), *args]
    with log.open("wb") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=REPO, env=env)
    proxy = ProxyProcess(f"http://127.0.0.1:{port}", proc, log)
    try:
        wait_healthy(proc, f"{proxy.url}/_crossrank/health", startup_timeout, proxy.logs)
    except (RuntimeError, TimeoutError):
        proxy.stop()
        raise
    return proxy


def official(engine: Any, url: str, **kwargs: Any) -> Any:
    """The engine's official client (not the wrapper) pointed at ``url``."""
    if engine.is_es:
        from elasticsearch import Elasticsearch

        return Elasticsearch(url, request_timeout=60, **kwargs)
    from opensearchpy import OpenSearch

    return OpenSearch(hosts=[url], timeout=60, **kwargs)
