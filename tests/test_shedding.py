"""Latency budgets and early shedding: the default budgets, the client's per-URL load estimate
(:class:`Balancer`, :func:`call_flow`, :class:`RemoteScorer`), the service queue's admission by
deadline, and the flows answering in engine order when a call is shed. Clocks and latencies are
injected: nothing here depends on how fast the machine is."""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from crossrank.adapters.core.flow import EngineCall, run_async, run_sync, search_flow
from crossrank.adapters.proxy.settings import ProxySettings
from crossrank.reranker import RerankConfig, ScoreRequest, ScorerError
from crossrank.reranker.errors import OverloadedError, ScorerOverloadedError, public_reason
from crossrank.reranker.remote import Answer, Balancer, RemoteScorer, Send, Sleep, call_flow, plan
from crossrank.reranker.retry import Slot
from crossrank.reranker.service import ServeSettings, create_app, load_backends
from crossrank.reranker.service.queue import REQUEST_DEADLINE, PairQueue, parse_deadline
from crossrank.reranker.wire import DEADLINE_HEADER

#: async tests run on the session loop, the service fixture's
SESSION_LOOP = pytest.mark.asyncio(loop_scope="session")


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def cfg(**kw: Any) -> RerankConfig:
    return RerankConfig(scorer_urls=("http://s1", "http://s2"), **kw)


def crossrank_ok(*sizes: int) -> Answer:
    body = {"model": "m", "results": [{"scores": [0.5] * n} for n in sizes]}
    return Answer(200, None, json.dumps(body).encode())


# ---------------------------------------------------------------------- default budgets


def test_default_budgets_are_about_a_second_and_a_retry_fits() -> None:
    config = RerankConfig()
    assert config.scorer_timeout <= 1.0
    assert config.scorer_retries >= 1
    # every attempt may spend its connect timeout, plus the longest back-off between them
    # (call_flow: 0.05 s * 2**attempt * up to 1.5), and still end inside the budget
    backoff = sum(0.05 * 2**a * 1.5 for a in range(config.scorer_retries))
    attempts = config.scorer_retries + 1
    assert attempts * config.scorer_connect_timeout + backoff < config.scorer_timeout
    proxy = ProxySettings(upstream="http://localhost:9200")
    assert proxy.latency_budget_ms is not None and proxy.latency_budget_ms <= 1000
    # the remote client's deadline sits inside the proxy's budget: the client, not the proxy,
    # sees a scorer that does not answer (and counts it against the scorer's circuit)
    assert config.scorer_timeout * 1000 < proxy.latency_budget_ms


# ---------------------------------------------------------------------- the balancer


def test_a_lone_call_is_always_admitted_and_measures_the_url() -> None:
    b = Balancer(["http://s1"])
    b.latency = [5.0]  # recently very slow
    slot = b.admit(0.0, left=0.5)  # but nothing in flight: sent, as a probe
    assert slot == Slot(0, 0.0) and b.in_flight == [1]
    b.release(slot, 0.2)
    assert b.in_flight == [0] and b.latency == [pytest.approx(5.0 + 0.3 * (0.2 - 5.0))]


def test_a_busy_url_slower_than_the_time_left_is_shed_at_once() -> None:
    b = Balancer(["http://s1"])
    b.latency = [0.9]
    first = b.admit(0.0, left=1.0)  # nothing in flight
    second = b.admit(0.0, left=1.0)  # 0.9 s expected, 1 s left: sent
    assert first is not None and second is not None and b.in_flight == [2]
    with pytest.raises(ScorerOverloadedError, match="900 ms expected, 800 ms left"):
        b.admit(0.2, left=0.8)
    assert b.in_flight == [2]  # the shed call was never counted
    b.release(first)  # done; its time says nothing (e.g. refused): the estimate stays
    b.release(second)
    assert b.latency == [0.9] and b.admit(0.2, left=0.8) is not None  # idle: a probe


def test_an_overloaded_url_is_skipped_for_one_with_room() -> None:
    b = Balancer(["http://s1", "http://s2"])
    b.latency, b.in_flight = [2.0, 0.1], [3, 3]
    slots = [b.admit(0.0, left=1.0) for _ in range(3)]
    assert [s.index for s in slots if s is not None] == [1, 1, 1]


def test_open_circuits_still_answer_none_not_overloaded() -> None:
    b = Balancer(["http://s1"], threshold=1)
    b.failure(0, 0.0)
    assert b.admit(0.0, left=1.0) is None and b.acquire(0.0) is None


# ---------------------------------------------------------------------- the flow


def flow(b: Balancer, clock: Clock, *, deadline: float = 1.0, retries: int = 1) -> Any:
    (call,) = plan(cfg(), [ScoreRequest("q", ["a", "b", "c", "d"])])
    return call_flow(call, b, deadline=deadline, retries=retries, clock=clock)


def test_the_flow_sheds_before_sending() -> None:
    clock, b = Clock(), Balancer(["http://s1"])
    b.latency, b.in_flight = [1.5], [2]
    with pytest.raises(ScorerOverloadedError):
        next(flow(b, clock))
    assert b.in_flight == [2]
    assert public_reason(ScorerOverloadedError("http://internal:1 is busy")) == (
        "the scorer is overloaded"
    )


def test_answers_and_timeouts_feed_the_estimate_refusals_and_errors_do_not() -> None:
    clock, b = Clock(), Balancer(["http://s1"], threshold=10)
    f = flow(b, clock)
    step = next(f)
    assert isinstance(step, Send) and b.in_flight == [1]
    clock.now = 0.4
    with pytest.raises(StopIteration):
        f.send(crossrank_ok(4))
    assert b.in_flight == [0] and b.latency == [pytest.approx(0.4)]

    f = flow(b, clock, deadline=clock.now + 1.0)
    next(f)
    clock.now += 0.01
    step = f.send(httpx.ConnectError("refused"))  # no time measured: a retry, after a sleep
    assert isinstance(step, Sleep) and b.latency == [pytest.approx(0.4)]
    clock.now += step.seconds
    next_send = f.send(None)
    assert isinstance(next_send, Send)
    clock.now += 0.2
    with pytest.raises(ScorerOverloadedError, match="gave up"):  # a busy refusal, kept
        f.send(Answer(429, "1", b'{"error": {"reason": "the queue would take 3 s"}}'))
    assert b.in_flight == [0] and b.latency == [pytest.approx(0.4)]

    f = flow(b, clock, deadline=clock.now + 1.0)
    next(f)
    clock.now += 1.0
    with pytest.raises(ScorerError, match="no answer"):
        f.send(httpx.ReadTimeout("stalled"))  # no answer in 1 s: counts as 2 s
    assert b.latency == [pytest.approx(0.4 + 0.3 * (2.0 - 0.4))]


def test_an_abandoned_call_leaves_the_in_flight_count_and_fails_at_its_deadline() -> None:
    clock, b = Clock(), Balancer(["http://s1"], threshold=1)
    f = flow(b, clock, deadline=1.0)
    next(f)
    clock.now = 0.3
    f.close()  # a caller's smaller budget gave up on it: no failure, no measure
    assert b.in_flight == [0] and b.latency == [None]
    assert b.state(0, clock()) == "closed"
    f = flow(b, clock, deadline=1.3)
    next(f)
    clock.now = 1.3
    f.close()  # abandoned at its deadline: no answer in 1 s, a failure, counted as 2 s
    assert b.in_flight == [0] and b.state(0, clock()) == "open"
    assert b.latency == [pytest.approx(2.0)]


def test_an_abandoned_trial_call_reopens_the_circuit() -> None:
    clock, b = Clock(), Balancer(["http://s1"], threshold=1, cooldown=5.0)
    b.failure(0, 0.0)
    clock.now = 5.0
    f = flow(b, clock, deadline=6.0)
    next(f)  # the half-open circuit's one trial call
    assert b.admit(clock()) is None  # no second trial meanwhile
    clock.now = 5.1
    f.close()  # abandoned early: the trial did not answer, try again after a cool-down
    assert b.probing == [False] and b.state(0, clock()) == "open"
    clock.now = 10.2
    assert b.admit(clock()) is not None


# ---------------------------------------------------------------------- the remote scorer


def test_every_call_sends_its_deadline() -> None:
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"model": "m", "results": [{"scores": [1.0]}]})

    clock = Clock()
    scorer = RemoteScorer(
        cfg(scorer_timeout=0.75), transport=httpx.MockTransport(handle), clock=clock
    )
    scorer.score([ScoreRequest("q", ["a"])])
    assert seen[0].headers[DEADLINE_HEADER] == "750"


@SESSION_LOOP
async def test_async_calls_cancelled_at_the_deadline_release_their_urls() -> None:
    async def hang(request: httpx.Request) -> httpx.Response:
        await asyncio.Event().wait()  # a hung scorer: never answers
        raise AssertionError("unreachable")

    scorer = RemoteScorer(
        cfg(scorer_timeout=0.05, scorer_retries=0), transport=httpx.MockTransport(hang)
    )
    with pytest.raises(ScorerError):
        await scorer.ascore([ScoreRequest("q", ["a", "b"])])
    assert scorer.balancer.in_flight == [0, 0]
    assert [p is not None for p in scorer.balancer.latency].count(True) == 1
    assert scorer.balancer.failures.count(1) == 1  # no answer by the deadline: a failure
    await scorer.aclose()


class _Engine:
    DOCS = ("alpha", "beta gamma", "gamma delta alpha")

    def __call__(self, call: EngineCall) -> Any:
        hits = [
            {"_id": str(i), "_score": 10.0 - i, "_source": {"text": d}}
            for i, d in enumerate(self.DOCS)
        ]
        body = {"hits": {"total": {"value": 3, "relation": "eq"}, "max_score": 10.0}}
        return {"took": 1, **copy.deepcopy(body), "hits": {**body["hits"], "hits": hits}}

    async def a(self, call: EngineCall) -> Any:
        return self(call)


@SESSION_LOOP
async def test_a_shed_search_answers_in_engine_order_without_calling_the_scorer() -> None:
    calls: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(500)

    config = cfg(fields=("text",), window=3)
    scorer = RemoteScorer(config, transport=httpx.MockTransport(handle))
    balancer = scorer.balancer  # both URLs busy and recently slower than the budget
    balancer.latency, balancer.in_flight = [2.0, 2.0], [1, 1]
    query = {"query": {"match": {"text": "gamma"}}}
    engine = _Engine()
    outs = [
        run_sync(search_flow(query, {}, config), engine, scorer),
        await run_async(search_flow(query, {}, config), engine.a, scorer),
    ]
    for out in outs:
        assert out["_rerank"]["fallback"] is True
        assert out["_rerank"]["error"] == "the scorer is overloaded"
        assert [h["_id"] for h in out["hits"]["hits"]] == ["0", "1", "2"]
    assert calls == []
    strict = config.model_copy(update={"on_scorer_error": "raise"})
    with pytest.raises(ScorerOverloadedError):
        run_sync(search_flow(query, {}, strict), engine, scorer)


# ---------------------------------------------------------------------- the service queue


def test_parse_deadline() -> None:
    assert parse_deadline("850") == 0.85 and parse_deadline("12.5") == 0.0125
    for bad in (None, "", "soon", "-5", "0", "nan", "inf"):
        assert parse_deadline(bad) is None


def _reply(n: int) -> Any:
    from crossrank.reranker.service.queue import Reply

    class Encoded:  # what the queue reads of encoded pairs
        input_ids = [[1, 2, 3]] * n
        token_type_ids = [[0, 0, 0]] * n

    future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    return Reply([], Encoded(), future, lambda *a: [])  # type: ignore[arg-type]


@SESSION_LOOP
async def test_queue_measures_how_long_rows_wait_and_refuses_what_it_cannot_serve() -> None:
    clock = Clock()
    q = PairQueue(max_pairs=10_000, budget=6, clock=clock)
    q.reserve(100, deadline=0.001)  # an empty queue admits anything
    assert q.expected_wait() == 0.0  # nothing measured, nothing queued
    q.put(_reply(4), 100)
    clock.now = 0.5
    assert q.expected_wait() == pytest.approx(0.5)  # the oldest row has waited 0.5 s
    with pytest.raises(OverloadedError, match=r"500 ms .* over the request.s 400 ms"):
        q.reserve(10, deadline=0.4)
    q.reserve(10, deadline=0.6)
    batch, _ = q.take()  # 2 rows of 3 tokens: the budget of 6
    assert len(batch) == 2 and q.queue_wait == pytest.approx(0.5)
    clock.now = 1.5
    assert q.expected_wait() == pytest.approx(1.5)  # 2 rows still queued since 0.0
    token = REQUEST_DEADLINE.set(1.0)  # the deadline the HTTP layer read from the header
    try:
        with pytest.raises(OverloadedError) as info:
            q.reserve(1)
        assert info.value.retry_after == q.retry_after
    finally:
        REQUEST_DEADLINE.reset(token)
    q.reserve(1)  # no deadline: only the size limit applies
    q.take()
    assert q.queue_wait == pytest.approx(0.5 + 0.3 * (1.5 - 0.5))
    assert q.expected_wait() == pytest.approx(0.8)  # nothing queued: the recent average
    q.release(q.pending)  # idle again
    q.reserve(5000, deadline=0.001)  # an empty queue still admits anything
    limited = PairQueue(max_pairs=10_000, budget=6, max_queue_wait=0.2, clock=clock)
    limited.reserve(10)
    limited.put(_reply(10), 10)
    clock.now += 0.3
    with pytest.raises(OverloadedError):
        limited.reserve(1)  # 0.3 s > max_queue_wait, and the client sent no deadline


# ---------------------------------------------------------------------- the service end to end


@pytest.fixture
async def service(tiny_model_dir: Path) -> AsyncIterator[tuple[Any, httpx.AsyncClient]]:
    settings = ServeSettings(models={"tiny": str(tiny_model_dir)}, rerank=RerankConfig())
    app = create_app(settings, load_backends(settings))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://svc") as client:
            yield app, client


def _queue(app: Any) -> PairQueue:
    queue: PairQueue = app.state.batchers["tiny"].queue
    return queue


@SESSION_LOOP
async def test_the_service_answers_429_at_once_when_the_deadline_cannot_be_met(
    service: tuple[Any, httpx.AsyncClient],
) -> None:
    app, client = service
    queue = _queue(app)
    body = {"query": "q", "texts": ["a", "b"]}
    queue.pending, queue.queue_wait = 1000, 10.0  # rows wait 10 s
    try:
        late = await client.post("/rerank", json=body, headers={DEADLINE_HEADER: "500"})
        assert late.status_code == 429 and "Retry-After" in late.headers
        assert late.json()["error"]["type"] == "overloaded"
        assert "over the request's 500 ms" in late.json()["error"]["reason"]
        v1 = await client.post(
            "/v1/rerank", json={"query": "q", "documents": ["a"]}, headers={DEADLINE_HEADER: "9"}
        )
        assert v1.status_code == 429
    finally:
        queue.pending = 0
    # an empty queue admits it, and a client that sends no deadline is admitted as before
    assert (await client.post("/rerank", json=body, headers={DEADLINE_HEADER: "1"})).is_success
    assert (await client.post("/rerank", json=body)).is_success
