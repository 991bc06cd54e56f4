"""Which scorer URL, whether to retry, how long to wait, whether to send at all: the remote
client's decisions, pure.

:func:`call_flow` is a generator that yields :class:`Send` and :class:`Sleep` steps and receives
what happened; the sync and async shells of :class:`~crossrank.reranker.remote.RemoteScorer`
only perform them. :class:`Balancer` is the round-robin with a circuit breaker per URL, and the
load shedding per URL:

**Shedding.** For each URL the balancer counts the calls in flight there and keeps their recent
latency (EWMA over answered calls; a call with no answer by its deadline took longer than it
waited and counts as twice that). A call is expected to take that recent latency; when that
exceeds what is left of its deadline and a call is already in flight there, it is not sent:
:class:`ScorerOverloadedError` at once, and the search answers in engine order (flagged)
without waiting. A URL with nothing in flight always takes the call (a probe), so an estimate
left high by a stall or an overload recovers from the next answers. A 429 refusal (the
service's own shedding, see :mod:`crossrank.reranker.service.queue`) says nothing about
latency, is not retried past the deadline, and also ends in :class:`ScorerOverloadedError`.

**Breaking.** Connection errors, 5xx, unreadable answers and calls with no answer by their
deadline (a read timeout, or the call abandoned at its deadline) are failures; a circuit opens
after ``threshold`` in a row. A call abandoned before its deadline (a caller's smaller budget)
is no failure, unless it was a half-open circuit's trial call.
"""

from __future__ import annotations

import json
import math
import random
import threading
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx

from crossrank.reranker.errors import ScorerError, ScorerOverloadedError
from crossrank.reranker.scoring import ScoreResult

if TYPE_CHECKING:
    from crossrank.reranker.remote import Call

__all__ = ["RETRY_STATUSES", "Answer", "Balancer", "Send", "Sleep", "Slot", "call_flow"]


RETRY_STATUSES = frozenset({429, 502, 503, 504})
#: a call abandoned this close to its deadline (seconds) had no answer by the deadline
DEADLINE_SLACK = 0.01
#: a call with no answer by its deadline took longer than it waited: it counts this many times
TIMEOUT_WEIGHT = 2.0


@dataclass(frozen=True)
class Slot:
    """A call admitted to URL ``index`` at ``started``; ``probe``: a half-open circuit's
    trial call."""

    index: int
    started: float
    probe: bool = False


class Balancer:
    """Round-robin over URLs with a circuit breaker and a latency estimate each.

    A circuit opens after ``threshold`` consecutive failures; after ``cooldown`` seconds one
    trial call is let through (half-open): success closes it, failure opens it again.
    ``alpha`` weighs each new latency sample (EWMA); see the module docstring for the
    shedding rule.
    """

    def __init__(
        self,
        urls: Sequence[str],
        threshold: int = 3,
        cooldown: float = 5.0,
        alpha: float = 0.3,
    ) -> None:
        self.urls = [u.rstrip("/") for u in urls]
        self.threshold = threshold
        self.cooldown = cooldown
        self.alpha = alpha
        self.failures = [0] * len(urls)
        self.opened: list[float | None] = [None] * len(urls)
        self.probing = [False] * len(urls)
        #: calls in flight per URL
        self.in_flight = [0] * len(urls)
        #: recent latency per URL, seconds (None: nothing measured yet)
        self.latency: list[float | None] = [None] * len(urls)
        self._next = 0
        self._lock = threading.Lock()

    def state(self, i: int, now: float) -> str:
        """``closed``, ``open`` or ``half-open``."""
        opened = self.opened[i]
        if opened is None:
            return "closed"
        return "half-open" if now >= opened + self.cooldown else "open"

    def expected_wait(self, i: int) -> float:
        """Seconds a call sent to URL ``i`` now is expected to take: its recent latency; 0
        when nothing is in flight there (the call is a probe) or nothing was measured yet."""
        latency = self.latency[i]
        return latency if self.in_flight[i] and latency is not None else 0.0

    def admit(self, now: float, left: float = math.inf) -> Slot | None:
        """A slot on the next usable URL (round-robin) whose expected wait fits in ``left``
        seconds, counted in flight there until :meth:`release`; None when every circuit is
        open. Raises :class:`ScorerOverloadedError` when URLs are usable but none is expected
        to answer in time."""
        with self._lock:
            n = len(self.urls)
            shed = math.inf
            for k in range(n):
                i = (self._next + k) % n
                state = self.state(i, now)
                if not (state == "closed" or (state == "half-open" and not self.probing[i])):
                    continue
                expected = self.expected_wait(i)
                if expected > left:
                    shed = min(shed, expected)
                    continue
                self.probing[i] = probe = state == "half-open"
                self._next = (i + 1) % n
                self.in_flight[i] += 1
                return Slot(i, now, probe)
            if shed < math.inf:
                raise ScorerOverloadedError(
                    f"the scorer is overloaded: {shed * 1000:.0f} ms expected, "
                    f"{left * 1000:.0f} ms left of the deadline; not sent"
                )
            return None

    def acquire(self, now: float) -> int | None:
        """The next usable URL's index (round-robin), or None when every circuit is open."""
        slot = self.admit(now)
        return None if slot is None else slot.index

    def release(self, slot: Slot, latency: float | None = None) -> None:
        """The call of ``slot`` is over; ``latency``: the sample it gives of the URL's latency
        in seconds (None: it says nothing about it)."""
        with self._lock:
            i = slot.index
            self.in_flight[i] = max(0, self.in_flight[i] - 1)
            if latency is not None:
                old = self.latency[i]
                self.latency[i] = latency if old is None else old + self.alpha * (latency - old)

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


def _latency(outcome: Answer | Exception, waited: float) -> float | None:
    """The latency sample of a call that waited ``waited`` s for ``outcome``: an answer's
    time (a 429 refusal says nothing), or, with no answer by the deadline (a read timeout),
    more than it waited; nothing for a connection that failed."""
    if isinstance(outcome, Answer):
        return None if outcome.status == 429 else waited
    if isinstance(outcome, httpx.TimeoutException) and not isinstance(
        outcome, httpx.ConnectTimeout
    ):
        return TIMEOUT_WEIGHT * waited
    return None


def _give_up(message: str, last: BaseException | None) -> ScorerError:
    """The final error: overloaded when the last attempt was refused as busy (429)."""
    kind = ScorerOverloadedError if isinstance(last, ScorerOverloadedError) else ScorerError
    return kind(message)


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
    """Every decision of one call: URL choice, shedding, retries with jitter, Retry-After,
    deadline, circuit breaking. Drive it with :class:`Send` → Answer/exception,
    :class:`Sleep` → None; close it if it is abandoned (its call is then counted as having
    waited until then)."""
    rng = rng or random.Random()
    last: BaseException | None = None
    for attempt in range(retries + 1):
        now = clock()
        left = deadline - now
        if left <= 0:
            raise ScorerError("the scorer deadline passed") from last
        try:
            slot = balancer.admit(now, left)
        except ScorerOverloadedError as exc:
            raise exc from last
        if slot is None:
            raise ScorerError("every scorer URL's circuit is open") from last
        i = slot.index
        url = balancer.urls[i] + call.path
        try:
            outcome = yield Send(url, call.body, left)
        except GeneratorExit:  # abandoned by the shell: at the deadline, or a caller's budget
            now = clock()
            timed_out = now >= deadline - DEADLINE_SLACK
            balancer.release(slot, TIMEOUT_WEIGHT * (now - slot.started) if timed_out else None)
            if timed_out or slot.probe:
                balancer.failure(i, now)
            raise
        if outcome is not None:
            balancer.release(slot, _latency(outcome, clock() - slot.started))
        else:
            balancer.release(slot)
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
            reason = f"{url}: HTTP {outcome.status}: {_reason(outcome)}"
            if outcome.status == 429:
                balancer.success(i)  # alive, only busy
                last = ScorerOverloadedError(reason)
            else:
                balancer.failure(i, clock())
                last = ScorerError(reason)
            wait = _retry_after(outcome.retry_after) or wait
        else:
            if outcome.status >= 500:
                balancer.failure(i, clock())
            else:
                balancer.success(i)
            raise ScorerError(f"{url}: HTTP {outcome.status}: {_reason(outcome)}")
        if attempt == retries:
            break
        if clock() + wait >= deadline:
            raise _give_up(f"retrying in {wait:.2f}s would pass the deadline", last) from last
        yield Sleep(wait)
    raise _give_up(f"gave up after {retries + 1} attempts", last) from last
