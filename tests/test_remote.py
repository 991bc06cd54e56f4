"""The remote scorer: formats, the pure retry/breaker flow, and its sync and async shells."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from crossrank.reranker import RerankConfig, ScoreRequest, ScorerError
from crossrank.reranker.remote import (
    Answer,
    Balancer,
    RemoteScorer,
    Send,
    Sleep,
    call_flow,
    plan,
)
from crossrank.reranker.scoring import make_scorer

REQS = [ScoreRequest("q1", ["a", "b", "c"]), ScoreRequest("q2", []), ScoreRequest("q3", ["d"])]


def cfg(**kw: Any) -> RerankConfig:
    return RerankConfig(scorer_urls=("http://s1", "http://s2"), **kw)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def ok(body: Any) -> Answer:
    return Answer(200, None, json.dumps(body).encode())


CROSSRANK_OK = ok({"model": "m", "results": [{"scores": [1.0, 3.0, 2.0]}, {"scores": [0.0]}]})


def drive(flow: Any, outcomes: list[Any], clock: Clock) -> tuple[list[Any], Any]:
    """Run a flow against scripted outcomes; return the steps and the result."""
    steps, it = [], iter(outcomes)
    try:
        step = next(flow)
        while True:
            steps.append(step)
            if isinstance(step, Sleep):
                clock.now += step.seconds
                step = flow.send(None)
            else:
                step = flow.send(next(it))
    except StopIteration as stop:
        return steps, stop.value


def flow_for(balancer: Balancer, clock: Clock, retries: int = 2, deadline: float = 10.0) -> Any:
    (call,) = plan(cfg(), REQS)
    return call_flow(call, balancer, deadline=deadline, retries=retries, clock=clock)


# ---------------------------------------------------------------------- formats


def test_crossrank_plan_one_call_and_sigmoid_like_local() -> None:
    (call,) = plan(cfg(model="m", sigmoid=True), REQS)
    assert call.path == "/rerank" and call.indexes == (0, 2)
    assert call.body["model"] == "m" and [r["query"] for r in call.body["requests"]] == ["q1", "q3"]
    results = call.decode(json.loads(CROSSRANK_OK.content))
    assert results[0].scores[0] == pytest.approx(0.7310586)
    (plain,) = plan(cfg(), REQS)
    assert "model" not in plain.body  # the service's default model


@pytest.mark.parametrize("fmt", ["tei", "cohere", "jina"])
def test_per_query_formats_map_to_document_order(fmt: str) -> None:
    calls = plan(cfg(scorer_format=fmt, sigmoid=True), REQS)
    assert [c.indexes for c in calls] == [(0,), (2,)]
    if fmt == "tei":
        assert calls[0].path == "/rerank" and calls[0].body["raw_scores"] is True
        answer: Any = [
            {"index": 1, "score": 3.0},
            {"index": 2, "score": 2.0},
            {"index": 0, "score": 0.0},
        ]
        assert calls[0].decode(answer)[0].scores == pytest.approx([0.5, 0.9525741, 0.8807970])
    else:
        assert calls[0].path == "/v1/rerank" and calls[0].body["top_n"] == 3
        items = [
            {"index": 1, "relevance_score": 0.9},
            {"index": 2, "relevance_score": 0.5},
            {"index": 0, "relevance_score": 0.1},
        ]
        # already 0..1: sigmoid is never applied twice
        assert calls[0].decode({"results": items})[0].scores == [0.1, 0.9, 0.5]
        with pytest.raises(ValueError):
            calls[0].decode({"results": items[:2]})


# ---------------------------------------------------------------------- flow and breaker


def test_retry_after_is_respected_and_urls_alternate() -> None:
    clock, b = Clock(), Balancer(["http://s1", "http://s2"])
    busy = Answer(429, "2", b'{"error": {"reason": "full"}}')
    steps, result = drive(flow_for(b, clock), [busy, CROSSRANK_OK], clock)
    assert [type(s).__name__ for s in steps] == ["Send", "Sleep", "Send"]
    assert steps[1].seconds == 2.0
    assert [s.url for s in steps if isinstance(s, Send)] == ["http://s1/rerank", "http://s2/rerank"]
    assert steps[2].timeout == pytest.approx(8.0)  # what is left of the deadline
    assert result[0].scores == [1.0, 3.0, 2.0]


def test_retry_after_beyond_deadline_fails_at_once() -> None:
    clock, b = Clock(), Balancer(["http://s1"])
    with pytest.raises(ScorerError, match="deadline") as info:
        drive(flow_for(b, clock, deadline=1.0), [Answer(503, "5", b"")], clock)
    assert "503" in str(info.value.__cause__)


def test_connection_errors_retry_then_give_up_chained() -> None:
    clock, b = Clock(), Balancer(["http://s1"], threshold=10)
    refused = [httpx.ConnectError("refused")] * 3
    with pytest.raises(ScorerError, match="3 attempts") as info:
        drive(flow_for(b, clock), refused, clock)
    assert isinstance(info.value.__cause__, httpx.ConnectError)


def test_read_timeout_and_garbage_and_client_errors_do_not_retry() -> None:
    clock = Clock()
    for outcome, words in [
        (httpx.ReadTimeout("slow"), "deadline"),
        (Answer(200, None, b"<html>"), "unreadable"),
        (ok({"results": [{"scores": [1.0]}]}), "unreadable"),
        (ok({"results": [{"scores": [1.0, "NaN", 2]}, {"scores": [0]}]}), "unreadable"),
        (Answer(400, None, b'{"error": {"reason": "bad query"}}'), "bad query"),
    ]:
        with pytest.raises(ScorerError, match=words):
            drive(flow_for(Balancer(["http://s1"]), clock), [outcome], clock)


def test_breaker_opens_skips_and_recovers_half_open() -> None:
    clock, b = Clock(), Balancer(["http://s1", "http://s2"], threshold=2, cooldown=5.0)
    for _ in range(2):
        b.failure(0, clock())
    assert b.state(0, clock()) == "open"
    assert [b.acquire(clock()) for _ in range(3)] == [1, 1, 1]  # s1 skipped
    b.failure(1, 0.0), b.failure(1, 0.0)
    with pytest.raises(ScorerError, match="circuit is open"):
        drive(flow_for(b, clock), [], clock)
    clock.now = 5.0
    assert b.state(0, clock()) == "half-open"
    first = b.acquire(clock())
    second = b.acquire(clock())  # s1's one trial call is out; s2 takes the next
    assert {first, second} == {0, 1} and b.acquire(clock()) is None
    b.failure(0, clock())  # the trial failed: open again for a cool-down
    assert b.state(0, clock()) == "open"
    clock.now = 10.0
    assert b.acquire(clock()) in (0, 1)
    b.success(0), b.success(1)
    assert b.state(0, clock()) == b.state(1, clock()) == "closed"


# ---------------------------------------------------------------------- shells


def handler_scripted(script: list[Any], seen: list[httpx.Request]) -> Any:
    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        item = script.pop(0) if len(script) > 1 else script[0]
        if isinstance(item, Exception):
            raise item
        return item

    return handle


def crossrank_response() -> httpx.Response:
    return httpx.Response(200, json=json.loads(CROSSRANK_OK.content))


async def test_sync_and_async_shells_agree() -> None:
    for run_async in (False, True):
        seen: list[httpx.Request] = []
        script = [
            httpx.ConnectError("down"),
            httpx.Response(429, headers={"Retry-After": "0"}),
            crossrank_response(),
        ]
        transport = httpx.MockTransport(handler_scripted(script, seen))
        scorer = RemoteScorer(cfg(scorer_api_key="k", scorer_retries=3), transport=transport)
        results = await scorer.ascore(REQS) if run_async else scorer.score(REQS)
        assert [r.scores for r in results] == [[1.0, 3.0, 2.0], [], [0.0]]
        assert [r.model for r in results] == ["m", "remote", "m"]
        assert len(seen) == 3 and seen[-1].headers["authorization"] == "Bearer k"
        await scorer.aclose()


async def test_async_deadline_on_a_slow_scorer() -> None:
    async def slow(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(5)
        return crossrank_response()

    scorer = RemoteScorer(cfg(scorer_timeout=0.3), transport=httpx.MockTransport(slow))
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(ScorerError, match="deadline"):
        await scorer.ascore(REQS)
    assert loop.time() - started < 1.5
    await scorer.aclose()


def test_make_scorer_picks_remote() -> None:
    scorer = make_scorer(cfg())
    assert isinstance(scorer, RemoteScorer) and scorer.name == "remote"
    assert scorer.score([ScoreRequest("q", [])])[0].scores == []  # nothing sent
