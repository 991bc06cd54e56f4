"""Remote scorer: pairs scored over HTTP by ``crossrank serve``, TEI, Cohere or Jina.

The decisions (which URL, retry or not, how long to wait, circuit breaker) are written once,
in :mod:`crossrank.reranker.retry`, as a generator flow (:func:`call_flow`) that yields
:class:`Send` and :class:`Sleep` steps and
receives what happened; the sync and async shells of :class:`RemoteScorer` only perform
them, every call of a request at once and all within one deadline. Bodies and answers are
:mod:`crossrank.reranker.wire`'s shapes, the ones the scorer service reads and writes;
:func:`plan` maps them to :class:`ScoreResult` scores in document order:

- ``crossrank``: ``POST /rerank``, every query in one call; raw scores (``sigmoid`` as local).
- ``tei``: ``POST /rerank`` per query with ``raw_scores=true`` (``sigmoid`` as local).
- ``cohere`` / ``jina``: ``POST /v1/rerank`` per query; scores already in 0..1, kept as is.

A request's ``max_tokens_per_doc`` / ``max_tokens_per_query`` are sent on (crossrank, cohere,
jina). Every failure raises :class:`ScorerError`, chained to the original.

Calibration: with ``calibration`` (a ``crossrank calibrate`` file, fitted on this scorer's
scores as the wire carries them: raw, or Cohere's and Jina's relevance) the client applies it
itself, in any format; without it, a crossrank service's ``calibrated`` answer is kept (its
model's own ``calibration.json``). Either fills ``ScoreResult.calibrated``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Generator, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, replace
from typing import Any

import httpx

from crossrank.reranker import wire
from crossrank.reranker.calibration import Calibration, apply_calibration, read_calibration
from crossrank.reranker.config import RerankConfig
from crossrank.reranker.errors import ConfigurationError, ScorerError
from crossrank.reranker.retry import (
    Answer,
    Balancer,
    Send,
    Sleep,
    call_flow,
)
from crossrank.reranker.scoring import ScoreRequest, ScoreResult

__all__ = ["Answer", "Balancer", "Call", "RemoteScorer", "Send", "Sleep", "call_flow", "plan"]

Decode = Callable[[Any], list[ScoreResult]]


# ---------------------------------------------------------------------- formats (pure)


@dataclass(frozen=True)
class Call:
    """One HTTP call: which requests it covers, what to send, how to read the answer."""

    indexes: tuple[int, ...]
    path: str
    body: dict[str, Any]
    decode: Decode


def plan(
    config: RerankConfig,
    requests: Sequence[ScoreRequest],
    calibration: Calibration | None = None,
) -> list[Call]:
    """The calls that score ``requests`` in ``config.scorer_format`` (empty ones skipped).

    Bodies and answers are :mod:`crossrank.reranker.wire`'s shapes; scores come back as a
    local scorer with ``config.sigmoid`` gives them. Requests' token caps are sent on
    (``tei`` has no field for them: :class:`ScorerError`). ``calibration`` maps the scores
    as carried to ``calibrated`` (else a crossrank answer's own ``calibrated`` is kept).
    """
    fmt, name = config.scorer_format, _name(config)
    todo = [i for i, r in enumerate(requests) if r.documents]
    if fmt == "crossrank":
        if not todo:
            return []
        named = config.model if "model" in config.model_fields_set else None
        batch = wire.CrossrankRequest(tuple(requests[i] for i in todo), named)
        sizes = [len(requests[i].documents) for i in todo]

        def decode_crossrank(data: Any) -> list[ScoreResult]:
            results = wire.CrossrankResponse.from_json(data, sizes, name).results
            return [
                replace(
                    r,
                    scores=wire.from_wire(r.scores, batch.squashed, config.sigmoid),
                    calibrated=(
                        r.calibrated if calibration is None else calibration.apply(r.scores)
                    ),
                )
                for r in results
            ]

        return [Call(tuple(todo), batch.PATH, batch.to_json(), decode_crossrank)]
    calls = []
    for i in todo:
        one = _per_query(config, requests[i])
        answer = wire.TeiResponse if isinstance(one, wire.TeiRequest) else wire.CohereResponse

        def decode_one(
            data: Any,
            n: int = len(requests[i].documents),
            answer: type[wire.TeiResponse | wire.CohereResponse] = answer,
            squashed: bool = one.squashed,
        ) -> list[ScoreResult]:
            carried = answer.from_json(data, n).scores
            scores = wire.from_wire(carried, squashed, config.sigmoid)
            return [
                ScoreResult(scores, model=name, calibrated=apply_calibration(calibration, carried))
            ]

        calls.append(Call((i,), one.PATH, one.to_json(), decode_one))
    return calls


def _per_query(config: RerankConfig, request: ScoreRequest) -> wire.TeiRequest | wire.CohereRequest:
    docs = tuple(request.documents)
    if config.scorer_format == "tei":
        if request.max_tokens_per_doc or request.max_tokens_per_query:
            raise ScorerError(
                "the tei format has no max_tokens_per_doc/max_tokens_per_query; "
                "use the crossrank, cohere or jina format for capped requests"
            )
        return wire.TeiRequest(request.query, docs, raw_scores=True, truncate=True)
    return wire.CohereRequest(  # cohere, jina
        request.query,
        docs,
        model=config.model,
        top_n=len(docs),
        max_tokens_per_doc=request.max_tokens_per_doc,
        max_tokens_per_query=request.max_tokens_per_query,
    )


def _name(config: RerankConfig) -> str:
    return config.model if "model" in config.model_fields_set else "remote"


# ---------------------------------------------------------------------- balancing (pure)


# ---------------------------------------------------------------------- the flow (pure)


# ---------------------------------------------------------------------- the shells (I/O)

Flow = Generator[Send | Sleep, Answer | Exception | None, list[ScoreResult]]
#: what became of one call: its results, its failure, or None (no answer by the deadline)
Outcome = list[ScoreResult] | BaseException | None

#: most threads one sync ``score`` runs its calls on (``ascore`` runs them all at once)
SYNC_WORKERS = 16
#: seconds :meth:`RemoteScorer.acheck` waits for each scorer URL
CHECK_TIMEOUT = 2.0


class RemoteScorer:
    """A :class:`~crossrank.reranker.Scorer` that calls one or more scorer services.

    One pooled ``httpx.Client`` and one ``httpx.AsyncClient`` per scorer (created on first
    use). Connection errors, 429, 502, 503 and 504 are retried (``scorer_retries``) with
    jittered backoff or the server's Retry-After; URLs are balanced round-robin, skipping
    open circuits (``breaker_threshold`` consecutive failures, ``breaker_cooldown``
    seconds). A call is shed at once (``ScorerOverloadedError``) when a busy URL's recent
    latency says it would not answer in the time left
    (:mod:`crossrank.reranker.retry`). Every call tells the service how many milliseconds
    it still waits (header ``x-crossrank-deadline-ms``), so a crossrank service whose queue
    is too long refuses it at once (429) instead of queueing it. ``transport`` replaces the
    network, ``clock`` the monotonic clock (tests).

    Both shells drive the same :func:`call_flow` for every call of a request, all calls at
    once (a small thread pool per :meth:`score`, tasks in :meth:`ascore`), and both return
    by one deadline, ``scorer_timeout`` after they were called: a server that stalls, even
    half-way through its answer, costs the deadline and no more (a sync worker stuck in it
    is left to finish on its own, its answer dropped).
    """

    def __init__(
        self,
        config: RerankConfig,
        *,
        breaker_threshold: int = 3,
        breaker_cooldown: float = 5.0,
        transport: Any = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not config.scorer_urls:
            raise ConfigurationError("RemoteScorer needs config.scorer_urls")
        self.config = config
        #: the client's own calibration of the scores (``config.calibration``), or None
        self.calibration = read_calibration(config.calibration) if config.calibration else None
        self.balancer = Balancer(config.scorer_urls, breaker_threshold, breaker_cooldown)
        self._transport = transport
        self._clock = clock
        self._client: httpx.Client | None = None
        self._aclient: httpx.AsyncClient | None = None
        self._lock = threading.Lock()
        self._headers = {"Authorization": f"Bearer {config.scorer_api_key}"}
        if config.scorer_api_key is None:
            self._headers = {}

    @property
    def name(self) -> str:
        return _name(self.config)

    def _timeout(self, seconds: float) -> httpx.Timeout:
        return httpx.Timeout(seconds, connect=min(seconds, self.config.scorer_connect_timeout))

    @staticmethod
    def _deadline_header(step: Send) -> dict[str, str]:
        """How long this call's answer is still awaited, for the service's admission."""
        return {wire.DEADLINE_HEADER: str(max(1, int(step.timeout * 1000)))}

    def _flows(self, requests: Sequence[ScoreRequest]) -> tuple[float, list[tuple[Call, Flow]]]:
        """The deadline of one scoring call, and a flow per HTTP call, all sharing it."""
        deadline = self._clock() + self.config.scorer_timeout
        retries, clock = self.config.scorer_retries, self._clock
        return deadline, [
            (c, call_flow(c, self.balancer, deadline=deadline, retries=retries, clock=clock))
            for c in plan(self.config, requests, self.calibration)
        ]

    def _finish(
        self, requests: Sequence[ScoreRequest], calls: list[Call], outcomes: list[Outcome]
    ) -> list[ScoreResult]:
        """Results in request order; or the first call's failure, or the deadline's."""
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        empty: list[float] | None = [] if self.calibration is not None else None
        out = [ScoreResult([], model=self.name, calibrated=empty) for _ in requests]
        for call, results in zip(calls, outcomes):
            if not isinstance(results, list):
                raise ScorerError(
                    f"no answer within the scorer deadline ({self.config.scorer_timeout:g}s)"
                )
            for i, result in zip(call.indexes, results):
                out[i] = result
        return out

    # sync

    def _sync_client(self) -> httpx.Client:
        with self._lock:
            if self._client is None:
                self._client = httpx.Client(transport=self._transport, headers=self._headers)
            return self._client

    def _send(self, step: Send) -> Answer | Exception:
        """POST; the body is read in chunks, so a server that trickles it is cut off at the
        deadline (httpx's timeouts count per phase and per chunk, not in all)."""
        deadline = self._clock() + step.timeout
        try:
            with self._sync_client().stream(
                "POST",
                step.url,
                json=step.body,
                headers=self._deadline_header(step),
                timeout=self._timeout(step.timeout),
            ) as r:
                content = bytearray()
                for chunk in r.iter_bytes():
                    content += chunk
                    if self._clock() > deadline:
                        return httpx.ReadTimeout(f"no whole answer within {step.timeout:.2f}s")
                return Answer(r.status_code, r.headers.get("retry-after"), bytes(content))
        except httpx.HTTPError as exc:
            return exc

    def _run(self, flow: Flow) -> list[ScoreResult]:
        try:
            step = next(flow)
            while True:
                if isinstance(step, Sleep):
                    time.sleep(step.seconds)
                    step = flow.send(None)
                else:
                    step = flow.send(self._send(step))
        except StopIteration as stop:
            results: list[ScoreResult] = stop.value
            return results
        finally:
            flow.close()  # an abandoned call leaves its URL's in-flight count

    def score(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        """Score over HTTP, blocking; the calls run concurrently, in worker threads."""
        deadline, flows = self._flows(requests)
        if not flows:
            return self._finish(requests, [], [])
        pool = ThreadPoolExecutor(min(len(flows), SYNC_WORKERS), "crossrank-remote")
        try:
            futures = [pool.submit(self._run, flow) for _, flow in flows]
            done, _ = wait(futures, max(0.0, deadline - self._clock()), FIRST_EXCEPTION)
        finally:
            pool.shutdown(wait=False, cancel_futures=True)  # stalled workers are not awaited
        outcomes: list[Outcome] = [
            (f.exception() or f.result()) if f in done else None for f in futures
        ]
        return self._finish(requests, [c for c, _ in flows], outcomes)

    # async

    def _async_client(self) -> httpx.AsyncClient:
        if self._aclient is None:
            self._aclient = httpx.AsyncClient(transport=self._transport, headers=self._headers)
        return self._aclient

    async def _asend(self, step: Send) -> Answer | Exception:
        client = self._async_client()
        try:
            post = client.post(
                step.url,
                json=step.body,
                headers=self._deadline_header(step),
                timeout=self._timeout(step.timeout),
            )
            r = await asyncio.wait_for(post, step.timeout)
        except asyncio.TimeoutError:
            return httpx.ReadTimeout(f"no answer within {step.timeout:.2f}s")
        except httpx.HTTPError as exc:
            return exc
        return Answer(r.status_code, r.headers.get("retry-after"), r.content)

    async def _arun(self, flow: Flow) -> list[ScoreResult]:
        try:
            step = next(flow)
            while True:
                if isinstance(step, Sleep):
                    await asyncio.sleep(step.seconds)
                    step = flow.send(None)
                else:
                    step = flow.send(await self._asend(step))
        except StopIteration as stop:
            results: list[ScoreResult] = stop.value
            return results
        finally:
            flow.close()  # cancelled (deadline, budget): its URL's in-flight count drops

    async def ascore(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        """Score over HTTP without blocking the event loop; the calls run concurrently."""
        deadline, flows = self._flows(requests)
        if not flows:
            return self._finish(requests, [], [])
        tasks = [asyncio.ensure_future(self._arun(flow)) for _, flow in flows]
        try:
            done, _ = await asyncio.wait(
                tasks,
                timeout=max(0.0, deadline - self._clock()),
                return_when=asyncio.FIRST_EXCEPTION,
            )
        finally:
            late = [t for t in tasks if not t.done()]
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        outcomes: list[Outcome] = [
            (t.exception() or t.result()) if t in done else None for t in tasks
        ]
        return self._finish(requests, [c for c, _ in flows], outcomes)

    async def acheck(self) -> None:
        """Raise :class:`ScorerError` unless every scorer URL answers and serves the model.

        ``crossrank`` format: ``GET /info`` must list the configured model (when one is
        named); ``tei``: ``GET /health`` must answer 200; ``cohere``/``jina``: not checked.
        """
        fmt = self.config.scorer_format
        if fmt not in ("crossrank", "tei"):
            return
        client = self._async_client()
        for url in self.balancer.urls:
            path = "/info" if fmt == "crossrank" else "/health"
            try:
                r = await client.get(url + path, timeout=self._timeout(self._check_timeout))
            except httpx.HTTPError as exc:
                raise ScorerError(f"{url}{path}: {type(exc).__name__}: {exc}") from exc
            if r.status_code != 200:
                raise ScorerError(f"{url}{path}: HTTP {r.status_code}")
            if fmt == "crossrank" and "model" in self.config.model_fields_set:
                try:
                    served = {str(m["name"]) for m in r.json()["models"]}
                except (ValueError, KeyError, TypeError) as exc:
                    raise ScorerError(f"{url}/info: unreadable answer") from exc
                if self.config.model not in served:
                    raise ScorerError(
                        f"{url} does not serve model {self.config.model!r} "
                        f"(it serves {sorted(served)}): every search would fall back"
                    )

    @property
    def _check_timeout(self) -> float:
        # a readiness check is off the search path: not bound by the search budget
        return max(CHECK_TIMEOUT, self.config.scorer_connect_timeout)

    def close(self) -> None:
        """Close the sync connection pool."""
        if self._client is not None:
            self._client.close()
            self._client = None

    async def aclose(self) -> None:
        """Close both connection pools."""
        self.close()
        if self._aclient is not None:
            await self._aclient.aclose()
            self._aclient = None
