"""The pair queue: admission (429 when full or too slow), and batches packed by a token budget.

Every row (one document or passage of one request) carries its request's :class:`Reply`,
so one batch mixes rows of many requests. A reply whose future is cancelled (the client
went away) has its rows skipped when batches are formed. The queue lives on the event
loop and has one owner, the :class:`~.batcher.Batcher`.

Admission: a request is refused at once (:class:`OverloadedError`, 429) when the pending
pairs and its own exceed ``max_pairs``, or when the queue's *expected wait* exceeds the
request's deadline (what its client sent in ``x-crossrank-deadline-ms``, read into
:data:`REQUEST_DEADLINE` by the HTTP layer) or the queue's ``max_queue_wait``. The expected
wait is how long rows wait in the queue now, measured: the larger of a recent average (EWMA)
of the wait of each batch's oldest row when the batch is taken, and the age of the oldest row
still queued (which grows while nothing is taken). A request to an empty queue (nothing
pending) is always admitted, so the average recovers once the backlog is gone.
"""

from __future__ import annotations

import asyncio
import contextvars
import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from crossrank.reranker.errors import OverloadedError
from crossrank.reranker.local.batching import pack as batches
from crossrank.reranker.local.encoding import EncodedPairs, Ids
from crossrank.reranker.scoring import ScoreRequest, ScoreResult

__all__ = ["REQUEST_DEADLINE", "PairQueue", "Reply", "Row", "pack", "parse_deadline"]

#: seconds the client of the request being handled still waits (None: it did not say)
REQUEST_DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "crossrank_request_deadline", default=None
)


def parse_deadline(value: str | None) -> float | None:
    """The ``x-crossrank-deadline-ms`` header in seconds; None when absent or not a positive
    finite number (a malformed header is ignored, not refused)."""
    if value is None:
        return None
    try:
        ms = float(value)
    except ValueError:
        return None
    return ms / 1000 if math.isfinite(ms) and ms > 0 else None


@dataclass(eq=False)
class Reply:
    """One HTTP request's pending scores; resolved when its last row is scored."""

    requests: Sequence[ScoreRequest]
    encoded: EncodedPairs
    future: asyncio.Future[list[ScoreResult]]
    collect: Callable[[EncodedPairs, Sequence[ScoreRequest], np.ndarray], list[ScoreResult]]
    scores: np.ndarray = field(init=False)
    remaining: int = field(init=False)

    def __post_init__(self) -> None:
        self.scores = np.zeros(len(self.encoded.input_ids), dtype=np.float32)
        self.remaining = len(self.encoded.input_ids)

    @property
    def dropped(self) -> bool:
        """The reply is no longer awaited (cancelled, or already failed)."""
        return self.future.done()

    def deliver(self, row: int, score: float) -> None:
        """Record one row's score; resolve the future after the last one."""
        if self.future.done():
            return
        self.scores[row] = score
        self.remaining -= 1
        if self.remaining == 0:
            try:
                self.future.set_result(self.collect(self.encoded, self.requests, self.scores))
            except Exception as exc:  # non-finite scores: an error for this request only
                self.future.set_exception(exc)

    def fail(self, exc: BaseException) -> None:
        """Fail the reply (if still awaited)."""
        if not self.future.done():
            self.future.set_exception(exc)


@dataclass(eq=False)
class Row:
    """One model input row and where its score goes."""

    reply: Reply
    index: int
    input_ids: Ids
    token_type_ids: Ids
    enqueued: float

    def __len__(self) -> int:
        return len(self.input_ids)


def pack(window: Sequence[Row], budget: int) -> tuple[list[Row], list[Row]]:
    """Split ``window`` into its first batch by the local scorer's rule
    (:func:`~crossrank.reranker.local.batching.pack`) and the rest, in its original order."""
    if not window:
        return [], []
    first = batches([len(row) for row in window], budget)[0]
    chosen = set(first)
    return [window[i] for i in first], [row for i, row in enumerate(window) if i not in chosen]


class PairQueue:
    """Bounded FIFO of rows; ``take`` packs the next batch from a window at its head.

    ``max_queue_wait`` (seconds, None: no limit) refuses requests the queue is not expected
    to serve in that time, whatever their deadline; ``alpha`` weighs each new queue-wait
    sample; ``clock`` is the monotonic clock (tests inject their own).
    """

    def __init__(
        self,
        max_pairs: int,
        budget: int,
        retry_after: float = 1.0,
        *,
        max_queue_wait: float | None = None,
        alpha: float = 0.3,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_pairs = max_pairs
        self.budget = budget
        self.retry_after = retry_after
        self.max_queue_wait = max_queue_wait
        self.alpha = alpha
        self.pending = 0  # admitted rows not yet scored (queued or in a batch)
        #: recent wait of the oldest row of each batch taken, seconds (None: none taken yet)
        self.queue_wait: float | None = None
        self._clock = clock
        self._rows: deque[Row] = deque()
        self._tokens = 0
        self._changed = asyncio.Event()

    def __len__(self) -> int:
        return len(self._rows)

    def expected_wait(self) -> float:
        """Seconds a row queued now is expected to wait before its batch is taken (0 when
        nothing is pending)."""
        if not self.pending:
            return 0.0
        head = self._clock() - self._rows[0].enqueued if self._rows else 0.0
        return max(self.queue_wait or 0.0, head)

    def reserve(self, pairs: int, deadline: float | None = None) -> None:
        """Admit ``pairs`` more (before tokenizing), or raise :class:`OverloadedError`.

        ``deadline``: seconds the client waits (default: :data:`REQUEST_DEADLINE`). A request
        larger than the whole queue, or slower than its deadline, is still admitted when the
        queue is empty.
        """
        if self.pending:
            if self.pending + pairs > self.max_pairs:
                raise OverloadedError(
                    f"the queue is full ({self.pending} pairs pending, limit {self.max_pairs})",
                    retry_after=self.retry_after,
                )
            if deadline is None:
                deadline = REQUEST_DEADLINE.get()
            limits = [x for x in (deadline, self.max_queue_wait) if x is not None]
            expected = self.expected_wait() if limits else 0.0
            if limits and expected > min(limits):
                raise OverloadedError(
                    f"rows wait {expected * 1000:.0f} ms in the queue ({self.pending} pairs "
                    f"pending), over the request's {min(limits) * 1000:.0f} ms",
                    retry_after=self.retry_after,
                )
        self.pending += pairs

    def release(self, pairs: int) -> None:
        """Give back pairs reserved or admitted and now scored or dropped."""
        self.pending = max(0, self.pending - pairs)

    def put(self, reply: Reply, reserved: int) -> None:
        """Enqueue the rows of ``reply`` (``reserved`` pairs were admitted for it)."""
        enc, now = reply.encoded, self._clock()
        self.pending += len(enc.input_ids) - reserved  # passages can add rows
        for i, (ids, types) in enumerate(zip(enc.input_ids, enc.token_type_ids)):
            self._rows.append(Row(reply, i, ids, types, now))
            self._tokens += len(ids)
        self._changed.set()

    async def wait(self, timeout: float | None = None) -> None:
        """Until rows are added (or ``timeout`` passes)."""
        self._changed.clear()
        try:
            await asyncio.wait_for(self._changed.wait(), timeout)
        except asyncio.TimeoutError:
            pass

    @property
    def full_batch(self) -> bool:
        """Enough queued tokens for a full batch."""
        return self._tokens >= self.budget

    def take(self) -> tuple[list[Row], int]:
        """The next batch from a window at the head (cancelled rows skipped), and how many
        rows were dropped because their client went away."""
        window: list[Row] = []
        tokens = dropped = 0
        while self._rows and tokens < 4 * self.budget:
            row = self._rows.popleft()
            self._tokens -= len(row)
            if row.reply.dropped:
                dropped += 1
                continue
            window.append(row)
            tokens += len(row)
        self.release(dropped)
        if not window:
            return [], dropped
        batch, rest = pack(window, self.budget)
        for row in reversed(rest):
            self._rows.appendleft(row)
            self._tokens += len(row)
        waited = max(0.0, self._clock() - min(row.enqueued for row in batch))
        old = self.queue_wait
        self.queue_wait = waited if old is None else old + self.alpha * (waited - old)
        return batch, dropped
