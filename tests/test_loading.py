"""Loading a scorer never holds a search past its budget; a failed load is remembered.

Issue 10, item 13: offline, a hub model name made every search wait 46-49 s (the load was
tried again on each, through the hub client's retries). No sleeps here: loads block on
events the tests release, and the back-off runs on an injected clock.
"""

from __future__ import annotations

import asyncio
import logging
import threading

import pytest

from crossrank.adapters._client import RerankState
from crossrank.adapters.core.flow import run_async, run_sync, search_flow
from crossrank.reranker import ModelLoadError, RerankConfig
from crossrank.reranker.loader import ScorerLoader

from .fakes import OverlapScorer
from .test_flow import Engine

Q = {"query": {"match": {"text": "heat flow"}}, "size": 3}


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Factory:
    """Counts load attempts; fails while ``fail`` is set; blocks until ``gate`` is set."""

    def __init__(self, fail: bool = False, gate: threading.Event | None = None) -> None:
        self.calls, self.fail, self.gate = 0, fail, gate

    def __call__(self) -> OverlapScorer:
        self.calls += 1
        if self.gate is not None:
            assert self.gate.wait(30)
        if self.fail:
            raise OSError("hub unreachable at https://internal.example/models/ce")
        return OverlapScorer()


def test_failed_load_is_remembered_and_retried_after_backoff(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock, factory = Clock(), Factory(fail=True)
    loader = ScorerLoader(factory, name="ce", backoff=30, max_backoff=100, clock=clock)
    with caplog.at_level(logging.ERROR, logger="crossrank.loading"):
        for _ in range(5):
            with pytest.raises(ModelLoadError):
                loader.get(5)
    assert factory.calls == 1 and loader.state == "failed"
    assert len([r for r in caplog.records if "cannot load" in r.message]) == 1  # reported once
    clock.now += 29
    with pytest.raises(ModelLoadError, match="next try in"):
        loader.get(5)
    assert factory.calls == 1
    clock.now += 2  # past the first back-off: one more try, then 60 s
    with pytest.raises(ModelLoadError):
        loader.get(5)
    assert factory.calls == 2
    clock.now += 59
    with pytest.raises(ModelLoadError):
        loader.get(5)
    assert factory.calls == 2
    factory.fail = False
    clock.now += 2
    assert isinstance(loader.get(5), OverlapScorer)
    assert factory.calls == 3 and loader.state == "ready"


def test_search_does_not_wait_past_load_timeout_then_reranks_once_loaded() -> None:
    gate = threading.Event()
    factory = Factory(gate=gate)
    state = RerankState(RerankConfig(fields=("text",), load_timeout=0), None)
    state.loader = ScorerLoader(factory, name="ce")
    engine = Engine()
    out = run_sync(search_flow(Q, {}, state.config), engine, state)  # load started, not awaited
    assert out["_rerank"] == {
        "fallback": True,
        "error": "the reranking model is not available",
        "window": state.config.window,
    }
    assert state.loader.state == "loading"
    gate.set()
    state.loader.get(None)
    out = run_sync(search_flow(Q, {}, state.config), engine, state)
    assert "fallback" not in out["_rerank"] and out["_rerank"]["reranked"] > 0
    assert factory.calls == 1


async def test_async_search_waits_on_the_loop_without_blocking_it() -> None:
    gate = threading.Event()
    state = RerankState(RerankConfig(fields=("text",), load_timeout=30), None)
    state.loader = ScorerLoader(Factory(gate=gate), name="ce")

    async def engine(call: object) -> object:
        return Engine()(call)  # type: ignore[arg-type]

    search = asyncio.ensure_future(run_async(search_flow(Q, {}, state.config), engine, state))
    ticks = 0
    while state.loader.state != "loading" or ticks < 3:  # the loop keeps running meanwhile
        await asyncio.sleep(0)
        ticks += 1
    assert not search.done()
    gate.set()
    out = await asyncio.wait_for(search, 30)
    assert out["_rerank"]["reranked"] > 0


def test_wrapper_with_unloadable_hub_model_falls_back_and_tries_once() -> None:
    """The README's example offline: a hub name that cannot be fetched."""
    factory = Factory(fail=True)
    state = RerankState(RerankConfig(fields=("text",)), None)
    state.loader = ScorerLoader(factory, name="cross-encoder/ms-marco-MiniLM-L6-v2")
    engine = Engine()
    for _ in range(3):
        out = run_sync(search_flow(Q, {}, state.config), engine, state)
        assert out["_rerank"]["fallback"] is True
        assert "internal.example" not in str(out)  # the error text is not a client's business
    assert factory.calls == 1
