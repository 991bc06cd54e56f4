"""Which scorer URL, whether to retry, how long to wait: the remote client's decisions, pure.

:func:`call_flow` is a generator that yields :class:`Send` and :class:`Sleep` steps and receives
what happened; the sync and async shells of :class:`~crossrank.reranker.remote.RemoteScorer`
only perform them. :class:`Balancer` is the round-robin with a circuit breaker per URL."""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx

from crossrank.reranker.errors import ScorerError
from crossrank.reranker.scoring import ScoreResult

if TYPE_CHECKING:
    from crossrank.reranker.remote import Call

__all__ = ["RETRY_STATUSES", "Answer", "Balancer", "Send", "Sleep", "call_flow"]


RETRY_STATUSES = frozenset({429, 502, 503, 504})


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
