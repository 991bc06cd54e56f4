"""Loading a scorer without ever holding a search hostage.

A :class:`ScorerLoader` loads one scorer in a background thread, once. Callers wait for it
at most ``wait`` seconds (the load goes on after they give up); a failed load is remembered,
reported once in the log, and tried again only after a growing back-off, so a model that
cannot be loaded (an unreachable hub, a wrong path) costs each search nothing. The sync
wrappers, the async wrappers and the proxy all load through it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import Literal

from crossrank.reranker.errors import ModelLoadError
from crossrank.reranker.scoring import Scorer

__all__ = ["LoadState", "ScorerLoader"]

log = logging.getLogger("crossrank.loading")

LoadState = Literal["idle", "loading", "ready", "failed"]


class ScorerLoader:
    """One scorer, loaded in the background; failures retried after ``backoff`` s, doubling
    up to ``max_backoff``. ``clock`` is injectable for tests."""

    def __init__(
        self,
        factory: Callable[[], Scorer],
        *,
        name: str,
        backoff: float = 30.0,
        max_backoff: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.factory, self.name = factory, name
        self.backoff, self.max_backoff, self.clock = backoff, max_backoff, clock
        self._lock = threading.Lock()
        self._scorer: Scorer | None = None
        self._loading = False
        self._error: BaseException | None = None
        self._failures = 0
        self._retry_at = 0.0
        self._done = threading.Event()
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []

    # ------------------------------------------------------------------ state

    @property
    def state(self) -> LoadState:
        """``idle`` (never tried), ``loading``, ``ready`` or ``failed``."""
        with self._lock:
            if self._scorer is not None:
                return "ready"
            if self._loading:
                return "loading"
            return "failed" if self._error is not None else "idle"

    @property
    def error(self) -> BaseException | None:
        """The last load failure (for logs and operators, not for search clients)."""
        return self._error

    def _begin(self) -> Scorer | threading.Event:
        """The scorer, or the event of the load in progress (started here if due)."""
        with self._lock:
            if self._scorer is not None:
                return self._scorer
            if not self._loading:
                if self._error is not None and self.clock() < self._retry_at:
                    left = self._retry_at - self.clock()
                    raise ModelLoadError(
                        f"scorer {self.name!r} failed to load; next try in {left:.0f} s: "
                        f"{self._error}"
                    ) from self._error
                self._loading = True
                self._done = threading.Event()
                thread = threading.Thread(
                    target=self._load, args=(self._done,), name="crossrank-load", daemon=True
                )
                thread.start()
            return self._done

    def _load(self, done: threading.Event) -> None:
        try:
            scorer = self.factory()
        except BaseException as exc:  # remembered, reported once, retried after a back-off
            with self._lock:
                self._failures += 1
                delay = min(self.max_backoff, self.backoff * 2 ** (self._failures - 1))
                self._retry_at = self.clock() + delay
                self._error, self._loading = exc, False
            log.error("cannot load scorer %r (next try in %.0f s): %s", self.name, delay, exc)
        else:
            with self._lock:
                self._scorer, self._error, self._failures = scorer, None, 0
                self._loading = False
        finally:
            done.set()
            with self._lock:
                waiters, self._waiters = self._waiters, []
            for loop, future in waiters:
                try:
                    loop.call_soon_threadsafe(_resolve, future)
                except RuntimeError:  # that loop is closed
                    pass

    def _result(self) -> Scorer:
        with self._lock:
            if self._scorer is not None:
                return self._scorer
            if self._loading:
                raise ModelLoadError(f"scorer {self.name!r} is still loading")
            error = self._error
        raise ModelLoadError(f"scorer {self.name!r} failed to load: {error}") from error

    # ------------------------------------------------------------------ callers

    def get(self, wait: float | None = None) -> Scorer:
        """The scorer, waiting at most ``wait`` s (None: until the load ends).

        Raises :class:`ModelLoadError` when it failed, waits for its retry, or still loads.
        """
        got = self._begin()
        if isinstance(got, threading.Event):
            got.wait(wait)
            return self._result()
        return got

    async def aget(self, wait: float | None = None) -> Scorer:
        """Async :meth:`get`: waits without blocking the event loop or holding a thread."""
        got = self._begin()
        if not isinstance(got, threading.Event):
            return got
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        with self._lock:
            if self._loading:
                self._waiters.append((asyncio.get_running_loop(), future))
            else:
                future.set_result(None)
        try:
            await asyncio.wait_for(asyncio.shield(future), wait)
        except asyncio.TimeoutError:
            pass
        return self._result()

    def start(self) -> None:
        """Start loading now if no load is running or due later (for preloading)."""
        try:
            self._begin()
        except ModelLoadError:
            pass


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
