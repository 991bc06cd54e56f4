"""Remote scorer: pairs scored over HTTP by ``crossrank serve``, TEI, Cohere or Jina.

The decisions (which URL, retry or not, how long to wait, circuit breaker) are written once,
as a generator flow (:func:`call_flow`) that yields :class:`Send` and :class:`Sleep` steps and
receives what happened; the sync and async shells of :class:`RemoteScorer` only perform
them. Formats map to :class:`ScoreResult` scores in document order:

- ``crossrank``: ``POST /rerank``, every query in one call; raw scores (``sigmoid`` as local).
- ``tei``: ``POST /rerank`` per query with ``raw_scores=true`` (``sigmoid`` as local).
- ``cohere`` / ``jina``: ``POST /v1/rerank`` per query; scores already in 0..1, kept as is.

Every failure raises :class:`ScorerError`, chained to the original.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import threading
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from crossrank.reranker.config import RerankConfig
from crossrank.reranker.errors import ScorerError
from crossrank.reranker.scoring import ScoreRequest, ScoreResult

__all__ = ["Answer", "Balancer", "Call", "RemoteScorer", "Send", "Sleep", "call_flow", "plan"]

RETRY_STATUSES = frozenset({429, 502, 503, 504})
Decode = Callable[[Any], list[ScoreResult]]


# ---------------------------------------------------------------------- formats (pure)


@dataclass(frozen=True)
class Call:
    """One HTTP call: which requests it covers, what to send, how to read the answer."""

    indexes: tuple[int, ...]
    path: str
    body: dict[str, Any]
    decode: Decode


def _finite(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"not a finite score: {value!r}")
    return float(value)


def _logistic(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


def _by_index(items: Any, n: int, key: str) -> list[float]:
    if not isinstance(items, list):
        raise ValueError("results must be a list")
    scores: list[float | None] = [None] * n
    for item in items:
        scores[int(item["index"])] = _finite(item[key])
    if any(s is None for s in scores):
        raise ValueError(f"{n} documents sent, {len(items)} scores received")
    return [s for s in scores if s is not None]


def plan(config: RerankConfig, requests: Sequence[ScoreRequest]) -> list[Call]:
    """The calls that score ``requests`` in ``config.scorer_format`` (empty ones skipped)."""
    fmt, name = config.scorer_format, _name(config)
    todo = [i for i, r in enumerate(requests) if r.documents]
    squash = _logistic if config.sigmoid and fmt in ("crossrank", "tei") else float
    if fmt == "crossrank":
        if not todo:
            return []
        sizes = [len(requests[i].documents) for i in todo]
        body: dict[str, Any] = {
            "requests": [
                {"query": requests[i].query, "documents": list(requests[i].documents)} for i in todo
            ]
        }
        if "model" in config.model_fields_set:
            body["model"] = config.model

        def decode_crossrank(data: Any) -> list[ScoreResult]:
            results, model = data["results"], str(data.get("model", name))
            if len(results) != len(sizes):
                raise ValueError(f"{len(sizes)} requests sent, {len(results)} results received")
            out = []
            for n, r in zip(sizes, results):
                scores = [squash(_finite(s)) for s in r["scores"]]
                if len(scores) != n:
                    raise ValueError(f"{n} documents sent, {len(scores)} scores received")
                split, qcut = int(r.get("split", 0)), bool(r.get("query_truncated", False))
                out.append(ScoreResult(scores, int(r.get("truncated", 0)), split, qcut, model))
            return out

        return [Call(tuple(todo), "/rerank", body, decode_crossrank)]
    calls = []
    for i in todo:
        docs = list(requests[i].documents)
        if fmt == "tei":
            path, key = "/rerank", "score"
            body = {"query": requests[i].query, "texts": docs, "raw_scores": True, "truncate": True}
        else:  # cohere, jina
            path, key = "/v1/rerank", "relevance_score"
            body = {"model": config.model, "query": requests[i].query, "documents": docs}
            body.update(top_n=len(docs), return_documents=False)

        def decode_one(data: Any, n: int = len(docs), key: str = key) -> list[ScoreResult]:
            items = data if isinstance(data, list) else data["results"]
            return [ScoreResult([squash(s) for s in _by_index(items, n, key)], model=name)]

        calls.append(Call((i,), path, body, decode_one))
    return calls


def _name(config: RerankConfig) -> str:
    return config.model if "model" in config.model_fields_set else "remote"


# ---------------------------------------------------------------------- balancing (pure)


class Balancer:
    """Round-robin over URLs with a circuit breaker each.

    A circuit opens after ``threshold`` consecutive failures; after ``cooldown`` seconds one
    trial call is let through (half-open): success closes it, failure opens it again.
    """

    def __init__(self, urls: Sequence[str], threshold: int = 3, cooldown: float = 5.0) -> None:
        self.urls = [u.rstrip("/") for u in urls]
        self.threshold = threshold
        self.cooldown = cooldown
        self.failures = [0] * len(urls)
        self.opened: list[float | None] = [None] * len(urls)
        self.probing = [False] * len(urls)
        self._next = 0
        self._lock = threading.Lock()

    def state(self, i: int, now: float) -> str:
        """``closed``, ``open`` or ``half-open``."""
        opened = self.opened[i]
        if opened is None:
            return "closed"
        return "half-open" if now >= opened + self.cooldown else "open"

    def acquire(self, now: float) -> int | None:
        """The next usable URL's index (round-robin), or None when every circuit is open."""
        with self._lock:
            n = len(self.urls)
            for k in range(n):
                i = (self._next + k) % n
                state = self.state(i, now)
                if state == "closed" or (state == "half-open" and not self.probing[i]):
                    self.probing[i] = state == "half-open"
                    self._next = (i + 1) % n
                    return i
            return None

    def success(self, i: int) -> None:
        """The URL answered (even with a client error): close its circuit."""
        with self._lock:
            self.failures[i], self.opened[i], self.probing[i] = 0, None, False

    def failure(self, i: int, now: float) -> None:
        """The URL failed (no answer, 5xx, garbage)."""
        with self._lock:
            self.failures[i] += 1
            if self.probing[i] or self.failures[i] >= self.threshold:
                self.opened[i] = now
            self.probing[i] = False


# ---------------------------------------------------------------------- the flow (pure)


@dataclass(frozen=True)
class Send:
    """POST ``body`` to ``url`` within ``timeout`` seconds; reply with an Answer or error."""

    url: str
    body: dict[str, Any]
    timeout: float


@dataclass(frozen=True)
class Sleep:
    """Wait ``seconds`` before the next attempt."""

    seconds: float


@dataclass(frozen=True)
class Answer:
    """What came back: status, the Retry-After header, the body."""

    status: int
    retry_after: str | None
    content: bytes


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def _reason(answer: Answer) -> str:
    try:
        return str(json.loads(answer.content)["error"]["reason"])
    except Exception:
        return answer.content[:200].decode(errors="replace")


def call_flow(
    call: Call,
    balancer: Balancer,
    *,
    deadline: float,
    retries: int,
    clock: Callable[[], float] = time.monotonic,
    rng: random.Random | None = None,
    backoff: float = 0.05,
) -> Generator[Send | Sleep, Answer | Exception | None, list[ScoreResult]]:
    """Every decision of one call: URL choice, retries with jitter, Retry-After, deadline,
    circuit breaking. Drive it with :class:`Send` → Answer/exception, :class:`Sleep` → None."""
    rng = rng or random.Random()
    last: BaseException | None = None
    for attempt in range(retries + 1):
        left = deadline - clock()
        if left <= 0:
            raise ScorerError("the scorer deadline passed") from last
        i = balancer.acquire(clock())
        if i is None:
            raise ScorerError("every scorer URL's circuit is open") from last
        url = balancer.urls[i] + call.path
        outcome = yield Send(url, call.body, left)
        wait = backoff * 2**attempt * rng.uniform(0.5, 1.5)
        if isinstance(outcome, Exception):
            balancer.failure(i, clock())
            if isinstance(outcome, httpx.TimeoutException) and not isinstance(
                outcome, httpx.ConnectTimeout
            ):
                raise ScorerError(f"{url}: no answer within the deadline") from outcome
            last = outcome
        elif outcome is None:
            raise ScorerError("the flow expected an answer")
        elif outcome.status == 200:
            try:
                results = call.decode(json.loads(outcome.content))
            except (ValueError, KeyError, TypeError, IndexError) as exc:
                balancer.failure(i, clock())
                raise ScorerError(f"{url}: unreadable answer: {exc}") from exc
            balancer.success(i)
            return results
        elif outcome.status in RETRY_STATUSES:
            if outcome.status == 429:
                balancer.success(i)  # alive, only busy
            else:
                balancer.failure(i, clock())
            wait = _retry_after(outcome.retry_after) or wait
            last = ScorerError(f"{url}: HTTP {outcome.status}: {_reason(outcome)}")
        else:
            if outcome.status >= 500:
                balancer.failure(i, clock())
            else:
                balancer.success(i)
            raise ScorerError(f"{url}: HTTP {outcome.status}: {_reason(outcome)}")
        if attempt == retries:
            break
        if clock() + wait >= deadline:
            raise ScorerError(f"retrying in {wait:.2f}s would pass the deadline") from last
        yield Sleep(wait)
    raise ScorerError(f"gave up after {retries + 1} attempts") from last


# ---------------------------------------------------------------------- the shells (I/O)


class RemoteScorer:
    """A :class:`~crossrank.reranker.Scorer` that calls one or more scorer services.

    One pooled ``httpx.Client`` and one ``httpx.AsyncClient`` per scorer (created on first
    use). Connection errors, 429, 502, 503 and 504 are retried (``scorer_retries``) with
    jittered backoff or the server's Retry-After, within ``scorer_timeout`` in all; URLs are
    balanced round-robin, skipping open circuits (``breaker_threshold`` consecutive
    failures, ``breaker_cooldown`` seconds). ``transport`` replaces the network (tests).
    """

    def __init__(
        self,
        config: RerankConfig,
        *,
        breaker_threshold: int = 3,
        breaker_cooldown: float = 5.0,
        transport: Any = None,
    ) -> None:
        if not config.scorer_urls:
            raise ValueError("RemoteScorer needs config.scorer_urls")
        self.config = config
        self.balancer = Balancer(config.scorer_urls, breaker_threshold, breaker_cooldown)
        self._transport = transport
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

    def _flows(
        self, requests: Sequence[ScoreRequest]
    ) -> list[tuple[Call, Generator[Send | Sleep, Answer | Exception | None, list[ScoreResult]]]]:
        deadline = time.monotonic() + self.config.scorer_timeout
        retries = self.config.scorer_retries
        return [
            (c, call_flow(c, self.balancer, deadline=deadline, retries=retries))
            for c in plan(self.config, requests)
        ]

    def _assemble(
        self, requests: Sequence[ScoreRequest], done: list[tuple[Call, list[ScoreResult]]]
    ) -> list[ScoreResult]:
        out = [ScoreResult([], model=self.name) for _ in requests]
        for call, results in done:
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
        try:
            r = self._sync_client().post(
                step.url, json=step.body, timeout=self._timeout(step.timeout)
            )
        except httpx.HTTPError as exc:
            return exc
        return Answer(r.status_code, r.headers.get("retry-after"), r.content)

    def score(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        """Score over HTTP, blocking."""
        done = []
        for call, flow in self._flows(requests):
            try:
                step = next(flow)
                while True:
                    if isinstance(step, Sleep):
                        time.sleep(step.seconds)
                        step = flow.send(None)
                    else:
                        step = flow.send(self._send(step))
            except StopIteration as stop:
                done.append((call, stop.value))
        return self._assemble(requests, done)

    # async

    def _async_client(self) -> httpx.AsyncClient:
        if self._aclient is None:
            self._aclient = httpx.AsyncClient(transport=self._transport, headers=self._headers)
        return self._aclient

    async def _asend(self, step: Send) -> Answer | Exception:
        client = self._async_client()
        try:
            post = client.post(step.url, json=step.body, timeout=self._timeout(step.timeout))
            r = await asyncio.wait_for(post, step.timeout)
        except asyncio.TimeoutError:
            return httpx.ReadTimeout(f"no answer within {step.timeout:.2f}s")
        except httpx.HTTPError as exc:
            return exc
        return Answer(r.status_code, r.headers.get("retry-after"), r.content)

    async def _arun(
        self, flow: Generator[Send | Sleep, Answer | Exception | None, list[ScoreResult]]
    ) -> list[ScoreResult]:
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

    async def ascore(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        """Score over HTTP without blocking the event loop (calls run concurrently)."""
        flows = self._flows(requests)
        results = await asyncio.gather(*(self._arun(flow) for _, flow in flows))
        return self._assemble(requests, [(c, r) for (c, _), r in zip(flows, results)])

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
        return min(self.config.scorer_timeout, 2 * self.config.scorer_connect_timeout)

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
