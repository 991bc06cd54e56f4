"""A hung scorer (SIGSTOP) with the default latency budgets: searches through the wrappers
answer in engine order, flagged, and none waits much longer than the budget.

The bound is the budget plus a generous slack (the engine's own time, a loaded machine): this
checks that no search waits for the scorer (it would wait forever), not how fast anything is.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from crossrank.reranker import RerankConfig

from .conftest import INDEX
from .helpers import body_of, ids
from .scorer_process import ScorerProcess

QUERY = {"match": {"text": "information retrieval systems for documents and indexing"}}
WINDOW = 15
#: what a search may take beyond the scorer's budget: the engine's time on a loaded machine
SLACK_S = 3.0


@pytest.fixture
def hung(tiny_model_dir: Path) -> Iterator[ScorerProcess]:
    """A scorer service that answered once, then stopped (SIGSTOP) until the test ends."""
    proc = ScorerProcess(["--model", str(tiny_model_dir), "--dtype", "float32"]).start()
    assert proc.proc is not None
    os.kill(proc.proc.pid, signal.SIGSTOP)
    try:
        yield proc
    finally:
        os.kill(proc.proc.pid, signal.SIGCONT)
        proc.stop()


def _config(url: str) -> RerankConfig:
    # the defaults under test: scorer_timeout, scorer_connect_timeout, scorer_retries
    return RerankConfig(scorer_urls=(url,), fields=("title", "text"), window=WINDOW)


def test_a_hung_scorer_costs_each_search_at_most_the_budget(
    engine: Any, hung: ScorerProcess
) -> None:
    config = _config(hung.url)
    budget = config.scorer_timeout
    client = engine.client(rerank=config)
    raw = engine.raw_search({"query": QUERY, "size": WINDOW})
    expected = [h["_id"] for h in raw["hits"]["hits"]]

    def one(_: int) -> tuple[float, dict[str, Any]]:
        started = time.monotonic()
        out = body_of(client.search(index=INDEX, body={"query": QUERY, "size": WINDOW}))
        return time.monotonic() - started, out

    with ThreadPoolExecutor(4) as pool:  # concurrent searches, then more once the circuit opened
        results = list(pool.map(one, range(12)))  # a search that raised would raise here
    for took, out in results:
        assert out["_rerank"]["fallback"] is True and ids(out) == expected
        assert took < budget + SLACK_S, (took, out["_rerank"])


async def test_a_hung_scorer_costs_each_async_search_at_most_the_budget(
    engine: Any, hung: ScorerProcess
) -> None:
    config = _config(hung.url)
    client = engine.async_client(rerank=config)
    try:
        for _ in range(3):
            started = time.monotonic()
            out = body_of(await client.search(index=INDEX, body={"query": QUERY, "size": WINDOW}))
            took = time.monotonic() - started
            assert out["_rerank"]["fallback"] is True
            assert took < config.scorer_timeout + SLACK_S, took
    finally:
        await client.close()
