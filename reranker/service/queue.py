"""The pair queue: admission (429 when full), and batches packed by a token budget.

Every row (one document or passage of one request) carries its request's :class:`Reply`,
so one batch mixes rows of many requests. A reply whose future is cancelled (the client
went away) has its rows skipped when batches are formed. The queue lives on the event
loop and has one owner, the :class:`~.batcher.Batcher`.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from crossrank.reranker.errors import OverloadedError
from crossrank.reranker.local.batching import pack as batches
from crossrank.reranker.local.encoding import EncodedPairs, Ids
from crossrank.reranker.scoring import ScoreRequest, ScoreResult

__all__ = ["PairQueue", "Reply", "Row", "pack"]


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
    """Bounded FIFO of rows; ``take`` packs the next batch from a window at its head."""

    def __init__(self, max_pairs: int, budget: int, retry_after: float = 1.0) -> None:
        self.max_pairs = max_pairs
        self.budget = budget
        self.retry_after = retry_after
        self.pending = 0  # admitted rows not yet scored (queued or in a batch)
        self._rows: deque[Row] = deque()
        self._tokens = 0
        self._changed = asyncio.Event()

    def __len__(self) -> int:
        return len(self._rows)

    def reserve(self, pairs: int) -> None:
        """Admit ``pairs`` more (before tokenizing), or raise :class:`OverloadedError`.

        A request larger than the whole queue is still admitted when the queue is empty.
        """
        if self.pending and self.pending + pairs > self.max_pairs:
            raise OverloadedError(
                f"the queue is full ({self.pending} pairs pending, limit {self.max_pairs})",
                retry_after=self.retry_after,
            )
        self.pending += pairs

    def release(self, pairs: int) -> None:
        """Give back pairs reserved or admitted and now scored or dropped."""
        self.pending = max(0, self.pending - pairs)

    def put(self, reply: Reply, reserved: int) -> None:
        """Enqueue the rows of ``reply`` (``reserved`` pairs were admitted for it)."""
        enc, now = reply.encoded, time.monotonic()
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
        return batch, dropped
