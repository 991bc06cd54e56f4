"""The batcher: owns a model's queue, forms batches, runs them one at a time off the loop.

While one batch runs in the worker thread, the next is formed and padded (prefetched).
A batch is formed when the queue holds a full token budget or ``max_wait`` has passed since
the first waiting row; rows of disconnected clients are skipped then.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from concurrent.futures import Executor

from crossrank.reranker.errors import ScorerError
from crossrank.reranker.local import PaddedBatch
from crossrank.reranker.scoring import ScoreRequest, ScoreResult
from crossrank.reranker.service.backend import ModelBackend
from crossrank.reranker.service.metrics import ServiceMetrics
from crossrank.reranker.service.protocol import Check
from crossrank.reranker.service.queue import PairQueue, Reply, Row

__all__ = ["Batcher"]

log = logging.getLogger(__name__)


class Batcher:
    """Scores requests for one model by batching their pairs with other requests' pairs."""

    def __init__(
        self,
        backend: ModelBackend,
        metrics: ServiceMetrics,
        executor: Executor,
        *,
        max_pairs: int,
        batch_tokens: int,
        max_wait: float,
        retry_after: float = 1.0,
        max_queue_wait: float | None = None,
    ) -> None:
        self.backend = backend
        self.metrics = metrics
        self.executor = executor
        self.max_wait = max_wait
        self.queue = PairQueue(max_pairs, batch_tokens, retry_after, max_queue_wait=max_queue_wait)
        self._task: asyncio.Task[None] | None = None
        self._running: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ requests

    async def score(
        self, requests: Sequence[ScoreRequest], check: Check | None = None
    ) -> list[ScoreResult]:
        """Admit, tokenize, enqueue and await the scores of ``requests``.

        Raises ``OverloadedError`` when the queue is full, and whatever ``check`` raises
        about the encoded pairs (before they are queued). Cancelling the caller drops the
        request's pairs.
        """
        name, queue = self.backend.name, self.queue
        reserved = sum(len(r.documents) for r in requests)
        queue.reserve(reserved)
        self._gauge()
        started = time.monotonic()
        try:
            encoded = await asyncio.to_thread(self.backend.encode, requests)
            if check is not None:
                check(encoded, self.backend.info())
        except BaseException as exc:
            queue.release(reserved)
            self._gauge()
            if isinstance(exc, asyncio.CancelledError):  # the client went away meanwhile
                self.metrics.pairs_dropped.labels(name).inc(reserved)
            raise
        self.metrics.stage_seconds.labels("tokenize").observe(time.monotonic() - started)
        future: asyncio.Future[list[ScoreResult]] = asyncio.get_running_loop().create_future()
        reply = Reply(requests, encoded, future, self.backend.collect)
        if not encoded.input_ids:
            queue.release(reserved)
            return self.backend.collect(encoded, requests, reply.scores)
        queue.put(reply, reserved)
        self._gauge()
        try:
            return await future
        except asyncio.CancelledError:
            future.cancel()
            log.debug("%s: client gone, %d pairs dropped", name, len(encoded.input_ids))
            raise

    # ------------------------------------------------------------------ loop

    def start(self) -> None:
        """Start the batching loop on the running event loop."""
        self._task = asyncio.create_task(self._loop(), name=f"batcher-{self.backend.name}")

    async def drain(self, timeout: float = 30.0) -> None:
        """Finish the admitted work (up to ``timeout`` s), then stop the loop."""
        deadline = time.monotonic() + timeout
        while self.queue.pending and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        for task in (self._task, self._running):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    async def _next_batch(self) -> list[Row]:
        queue = self.queue
        while True:
            while not len(queue):
                await queue.wait()
            deadline = time.monotonic() + self.max_wait
            while not queue.full_batch and (left := deadline - time.monotonic()) > 0:
                await queue.wait(left)
            rows, dropped = queue.take()
            if dropped:
                self.metrics.pairs_dropped.labels(self.backend.name).inc(dropped)
                self._gauge()
            if rows:
                return rows

    async def _loop(self) -> None:
        while True:
            rows = await self._next_batch()
            now = time.monotonic()
            self.metrics.stage_seconds.labels("queue_wait").observe(
                now - min(r.enqueued for r in rows)
            )
            try:
                padded = self.backend.pad(rows)  # prepared while the previous batch runs
            except Exception as exc:  # never let one bad batch stop the loop
                self._fail(rows, exc)
                self.queue.release(len(rows))
                continue
            if self._running is not None:
                await asyncio.gather(self._running, return_exceptions=True)
            self._running = asyncio.create_task(self._execute(rows, padded))

    async def _execute(self, rows: list[Row], padded: PaddedBatch) -> None:
        name, metrics = self.backend.name, self.metrics
        try:
            live = [r for r in rows if not r.reply.dropped]
            if not live:  # every client of a prefetched batch went away
                metrics.pairs_dropped.labels(name).inc(len(rows))
                return
            started = time.monotonic()
            loop = asyncio.get_running_loop()
            try:
                scores = await loop.run_in_executor(self.executor, self.backend.forward, padded)
            except Exception as exc:
                self._fail(rows, exc)
                return
            metrics.stage_seconds.labels("forward").observe(time.monotonic() - started)
            metrics.forward_passes.labels(name).inc()
            metrics.pairs_scored.labels(name).inc(len(rows))
            metrics.batch_pairs.labels(name).observe(len(rows))
            metrics.batch_tokens.labels(name).observe(padded.input_ids.size)
            for row, value in zip(rows, scores.tolist()):
                row.reply.deliver(row.index, value)
        finally:
            self.queue.release(len(rows))
            self._gauge()

    def _fail(self, rows: Sequence[Row], exc: Exception) -> None:
        log.exception("%s: batch of %d rows failed", self.backend.name, len(rows))
        error = ScorerError(f"model {self.backend.name!r} failed: {exc}")
        error.__cause__ = exc
        for row in rows:
            row.reply.fail(error)

    def _gauge(self) -> None:
        self.metrics.queue_pairs.labels(self.backend.name).set(self.queue.pending)
