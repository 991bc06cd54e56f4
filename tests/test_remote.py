"""The remote scorer: formats, the pure retry/breaker flow, and its sync and async shells."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
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
from crossrank.reranker.scoring import ScoreResult, make_scorer
from crossrank.reranker.service.protocol import Limits, parse_cohere, parse_rerank
from crossrank.reranker.wire import sigmoid as sigmoid_of

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


def test_requests_send_their_token_caps() -> None:
    capped = [
        ScoreRequest("q1", ["a", "b"], max_tokens_per_doc=7),
        ScoreRequest("q2", ["c"], max_tokens_per_query=3, max_tokens_per_doc=9),
        ScoreRequest("q3", ["d"]),
    ]
    (call,) = plan(cfg(), capped)
    assert call.body["requests"] == [
        {"query": "q1", "documents": ["a", "b"], "max_tokens_per_doc": 7},
        {"query": "q2", "documents": ["c"], "max_tokens_per_query": 3, "max_tokens_per_doc": 9},
        {"query": "q3", "documents": ["d"]},
    ]
    for fmt in ("cohere", "jina"):
        bodies = [c.body for c in plan(cfg(scorer_format=fmt), capped)]
        assert [b.get("max_tokens_per_doc") for b in bodies] == [7, 9, None]
        assert [b.get("max_tokens_per_query") for b in bodies] == [None, 3, None]
        assert "max_tokens_per_doc" not in bodies[2]  # only sent when a request has a cap
    assert [c.body["truncate"] for c in plan(cfg(scorer_format="tei"), REQS)] == [True, True]
    with pytest.raises(ScorerError, match="tei format has no max_tokens_per_doc"):
        plan(cfg(scorer_format="tei"), capped)


def fields(r: ScoreRequest) -> tuple[Any, ...]:
    return r.query, list(r.documents), r.max_tokens_per_query, r.max_tokens_per_doc


@pytest.mark.parametrize("fmt", ["crossrank", "tei", "cohere"])
@pytest.mark.parametrize("sigmoid", [False, True])
def test_client_and_service_share_every_wire_shape(fmt: str, sigmoid: bool) -> None:
    """What plan() sends, the service reads back as the same requests; what the service
    renders, the client reads back as scores equal to a local scorer's (sigmoid or not)."""
    capped = [
        ScoreRequest("q1", ["a", "b", "c"], max_tokens_per_doc=7),
        ScoreRequest("q3", ["d"], max_tokens_per_query=2),
    ]
    requests = capped if fmt != "tei" else REQS
    raw = {0: [1.0, -3.0, 2.5], 1: [0.0], 2: [0.25]}  # by request index
    limits = Limits(max_documents=100, max_query_chars=100)
    read = {"crossrank": parse_rerank, "tei": parse_rerank, "cohere": parse_cohere}[fmt]
    for call in plan(cfg(scorer_format=fmt, sigmoid=sigmoid), requests):
        job = read(json.loads(json.dumps(call.body)), limits)
        assert [fields(r) for r in job.requests] == [fields(requests[i]) for i in call.indexes]
        served = [ScoreResult(raw[i], truncated=i, model="m") for i in call.indexes]
        answer = json.loads(json.dumps(job.render(served, "m")))
        for i, got in zip(call.indexes, call.decode(answer)):
            local = [sigmoid_of(x) for x in raw[i]] if sigmoid else raw[i]
            if fmt == "cohere":  # 0..1 on the wire, whatever the client's setting
                local = [sigmoid_of(x) for x in raw[i]]
            assert got.scores == pytest.approx(local)
            assert got.truncated == (i if fmt == "crossrank" else 0)


def test_answers_that_do_not_fit_the_request_are_unreadable() -> None:
    (tei, _) = plan(cfg(scorer_format="tei"), REQS)
    for bad in (
        [{"index": 0, "score": 1.0}, {"index": 0, "score": 1.0}, {"index": 1, "score": 1.0}],
        [{"index": -1, "score": 1.0}, {"index": 0, "score": 1.0}, {"index": 1, "score": 1.0}],
        [{"index": 0, "score": 1.0}, {"index": 1, "score": 1.0}, {"index": 3, "score": 1.0}],
        [{"index": 0, "score": True}, {"index": 1, "score": 1.0}, {"index": 2, "score": 1.0}],
        {"results": []},
    ):
        with pytest.raises((ValueError, KeyError, TypeError)):
            tei.decode(bad)
    (crossrank,) = plan(cfg(), REQS)
    for bad in ({"results": [{"scores": [1, 2, 3]}, "x"]}, {"results": [{"scores": "abc"}] * 2}):
        with pytest.raises((ValueError, KeyError, TypeError)):
            crossrank.decode(bad)


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


# A stalled server holds its answer (before the headers, or half-way through the body) until
# the test lets it go, long after the deadline: "returned while the server still stalled" is
# an ordering, true on any machine. The time bounds only catch a shell that waits for the
# server (STALL seconds) and leave generous room for a slow machine.
STALL = 60.0
DEADLINE = 0.5


class Stall:
    """A server that stalls every call (before the headers, or mid-body) until released."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.release = threading.Event()
        self.arelease = asyncio.Event()
        self.calls = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        if self.where == "headers":
            self.release.wait(STALL)
            return crossrank_response()
        return httpx.Response(200, content=self._body())

    def _body(self) -> Iterator[bytes]:
        yield b'{"model": "m", "results": ['
        self.release.wait(STALL)
        yield b"]}"

    async def handle_async(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        if self.where == "headers":
            await asyncio.wait_for(self.arelease.wait(), STALL)
            return crossrank_response()
        return httpx.Response(200, content=self._abody())

    async def _abody(self) -> AsyncIterator[bytes]:
        yield b'{"model": "m", "results": ['
        await asyncio.wait_for(self.arelease.wait(), STALL)
        yield b"]}"


@pytest.mark.parametrize("where", ["headers", "body"])
@pytest.mark.parametrize("run_async", [False, True])
async def test_both_shells_return_by_the_deadline_when_the_server_stalls(
    where: str, run_async: bool
) -> None:
    stall = Stall(where)
    handler = stall.handle_async if run_async else stall
    scorer = RemoteScorer(cfg(scorer_timeout=DEADLINE), transport=httpx.MockTransport(handler))
    started = time.monotonic()
    with pytest.raises(ScorerError, match="deadline"):
        await scorer.ascore(REQS) if run_async else scorer.score(REQS)
    took = time.monotonic() - started
    assert not stall.release.is_set() and not stall.arelease.is_set()  # still stalled
    assert stall.calls == 1  # a stall is no connection error: not retried
    assert DEADLINE * 0.9 <= took < STALL / 2
    stall.release.set()
    await scorer.aclose()


def test_sync_deadline_is_the_injected_clock() -> None:
    now = [100.0]

    def handle(request: httpx.Request) -> httpx.Response:
        now[0] += 20  # the server took 20 s by this clock: past the 10 s deadline
        return httpx.Response(503, headers={"Retry-After": "0"})

    transport = httpx.MockTransport(handle)
    scorer = RemoteScorer(cfg(scorer_retries=5), transport=transport, clock=lambda: now[0])
    with pytest.raises(ScorerError, match="deadline"):
        scorer.score(REQS)
    assert now[0] == 120.0  # one call, no retry after the deadline


async def test_both_shells_run_the_calls_of_a_request_at_once() -> None:
    many = [ScoreRequest(f"q{i}", ["a", "b"]) for i in range(5)]  # tei: one call per query
    answer = [{"index": 0, "score": 1.0}, {"index": 1, "score": 0.0}]
    both_in = threading.Barrier(len(many), timeout=STALL)

    def handle(request: httpx.Request) -> httpx.Response:
        both_in.wait()  # breaks unless every call is in flight together
        return httpx.Response(200, json=answer)

    arrived: list[str] = []
    all_in = asyncio.Event()

    async def ahandle(request: httpx.Request) -> httpx.Response:
        arrived.append(json.loads(request.content)["query"])
        if len(arrived) == len(many):
            all_in.set()
        await asyncio.wait_for(all_in.wait(), STALL)
        return httpx.Response(200, json=answer)

    config = cfg(scorer_format="tei", scorer_timeout=STALL * 2)
    sync = RemoteScorer(config, transport=httpx.MockTransport(handle))
    assert [r.scores for r in sync.score(many)] == [[1.0, 0.0]] * 5
    asyn = RemoteScorer(config, transport=httpx.MockTransport(ahandle))
    assert [r.scores for r in await asyn.ascore(many)] == [[1.0, 0.0]] * 5
    assert sorted(arrived) == [f"q{i}" for i in range(5)]
    await sync.aclose()
    await asyn.aclose()


async def test_both_shells_raise_the_first_failure_of_a_request() -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        if body["query"] == "q3":
            return httpx.Response(400, json={"error": {"reason": "bad q3"}})
        return httpx.Response(200, json=[{"index": i, "score": 1.0} for i in range(3)])

    scorer = RemoteScorer(cfg(scorer_format="tei"), transport=httpx.MockTransport(handle))
    for run_async in (False, True):
        with pytest.raises(ScorerError, match="bad q3"):
            await scorer.ascore(REQS) if run_async else scorer.score(REQS)
    await scorer.aclose()


def test_make_scorer_picks_remote() -> None:
    scorer = make_scorer(cfg())
    assert isinstance(scorer, RemoteScorer) and scorer.name == "remote"
    assert scorer.score([ScoreRequest("q", [])])[0].scores == []  # nothing sent
