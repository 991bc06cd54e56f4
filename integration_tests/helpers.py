"""Assertion helpers shared by the integration tests."""

from __future__ import annotations

import asyncio
import copy
import itertools
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pytest

from crossrank.reranker import ScoreRequest

#: Keys the wrappers must add (the implementation may add more to ``_rerank``).
RESPONSE_RERANK_KEYS = {
    "model",
    "window",
    "reranked",
    "truncated",
    "split",
    "missing_fields",
    "scoring_ms",
    "query_text",
}
HIT_RERANK_KEYS = {"engine_score", "engine_rank", "score"}


def approx(expected: Any) -> Any:
    """``pytest.approx`` with the tolerance for cross-encoder scores (batching, padding)."""
    return pytest.approx(expected, rel=1e-4, abs=1e-4)


def body_of(resp: Any) -> dict[str, Any]:
    """The plain dict of a client response (ObjectApiResponse or dict)."""
    body = getattr(resp, "body", resp)
    assert isinstance(body, dict), type(resp)
    return body


def hits(resp: Any) -> list[dict[str, Any]]:
    return list(body_of(resp)["hits"]["hits"])


def ids(resp: Any) -> list[str]:
    return [h["_id"] for h in hits(resp)]


def scores(resp: Any) -> list[float]:
    return [h["_score"] for h in hits(resp)]


def without_took(resp: Any) -> dict[str, Any]:
    body = copy.deepcopy(body_of(resp))
    body.pop("took", None)
    return body


def without_documented(resp: Any) -> dict[str, Any]:
    """The response less the wrapper's documented additions (``_rerank``) and ``took``."""
    body = without_took(resp)
    body.pop("_rerank", None)
    for hit in body.get("hits", {}).get("hits", []):
        hit.pop("_rerank", None)
    return body


def shape(value: Any) -> Any:
    """The key structure of a JSON value: dicts become {key: shape}, lists [shapes]."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(v) for v in value]
    return type(value).__name__ if isinstance(value, (dict, list, str, bool)) else "scalar"


def doc_text(hit: dict[str, Any], fields: Sequence[str] = ("title", "text")) -> str:
    source = hit["_source"]
    return "\n".join(source[f] for f in fields if isinstance(source.get(f), str) and source[f])


def rescore(
    verifier: Any,
    query: str,
    hit_list: list[dict[str, Any]],
    fields: Sequence[str] = ("title", "text"),
) -> list[float]:
    """Cross-encoder scores of ``hit_list`` computed independently of the wrapper."""
    [result] = verifier.score([ScoreRequest(query, [doc_text(h, fields) for h in hit_list])])
    return list(result.scores)


def assert_passthrough(resp: Any, raw: Any) -> None:
    """The wrapper's response is the engine's, untouched apart from ``took``."""
    assert type(resp) is type(raw)
    body = body_of(resp)
    assert "_rerank" not in body
    assert all("_rerank" not in h for h in body.get("hits", {}).get("hits", []))
    assert without_took(resp) == without_took(raw)


def assert_reranked(
    resp: Any,
    *,
    query_text: str,
    window: int,
    reranked: int,
    verifier: Any,
    fields: Sequence[str] = ("title", "text"),
) -> None:
    """Hits are in descending cross-encoder order with correct scores and metadata."""
    body = body_of(resp)
    meta = body["_rerank"]
    assert set(meta) >= RESPONSE_RERANK_KEYS, set(meta)
    assert meta["window"] == window
    assert meta["reranked"] == reranked
    assert meta["query_text"] == query_text
    assert isinstance(meta["model"], str) and meta["model"]
    assert meta["scoring_ms"] >= 0
    for key in ("truncated", "split", "missing_fields"):
        assert isinstance(meta[key], int) and meta[key] >= 0
    hit_list = hits(resp)
    ranked = [h for h in hit_list if "_rerank" in h]
    assert ranked == hit_list[: len(ranked)], "reranked hits must come first"
    got = [h["_score"] for h in ranked]
    assert got == sorted(got, reverse=True)
    for h in ranked:
        assert set(h["_rerank"]) == HIT_RERANK_KEYS
        assert h["_rerank"]["score"] == h["_score"]
        assert isinstance(h["_rerank"]["engine_rank"], int)
    if ranked:
        assert body["hits"]["max_score"] == approx(max(got))
        assert got == approx(rescore(verifier, query_text, ranked, fields))


# --------------------------------------------------------------------------- load


@dataclass
class LoadResult:
    """What :func:`run_load` / :func:`arun_load` saw: searches that returned, searches that
    raised (their errors, as text), the wall time, and how many searches had completed when
    ``action`` ran (None: it never ran)."""

    ok: int
    failed: int
    errors: list[str]
    seconds: float
    action_after: int | None = None

    def __iter__(self) -> Iterator[Any]:  # ok, failed, errors = run_load(...)
        return iter((self.ok, self.failed, self.errors))

    def __str__(self) -> str:
        rate = (self.ok + self.failed) / self.seconds if self.seconds else 0.0
        text = f"{self.ok} ok, {self.failed} failed in {self.seconds:.1f}s ({rate:.0f}/s)"
        if self.action_after is not None:
            text += f", action after {self.action_after} searches"
        return text


def run_load(
    search_fn: Callable[[int], Any],
    n: int,
    concurrency: int,
    *,
    action: Callable[[], Any] | None = None,
    after: int = 0,
) -> LoadResult:
    """Call ``search_fn(i)`` for i in 0..n-1 from ``concurrency`` threads; any exception it
    raises (a client error, or a check of the response that failed) is a failed search.

    ``action`` (e.g. killing a node) runs once, in the thread that completes the
    ``after``-th search, while the other threads' searches are in flight: the point where it
    happens is fixed by the count, not by the machine's speed.
    """
    lock = threading.Lock()
    counter = itertools.count()
    ok = failed = done = 0
    errors: list[str] = []
    ran: list[int] = []

    def worker() -> None:
        nonlocal ok, failed, done
        while True:
            with lock:
                i = next(counter)
            if i >= n:
                return
            try:
                search_fn(i)
                error = None
            except Exception as err:
                error = f"search {i}: {err!r}"
            with lock:
                done += 1
                ok, failed = (ok + 1, failed) if error is None else (ok, failed + 1)
                if error is not None:
                    errors.append(error)
                fire = action is not None and not ran and done >= after
                if fire:
                    ran.append(done)
            if fire:
                assert action is not None
                try:
                    action()
                except BaseException as err:  # raised in the caller, after the load
                    broken.append(err)

    broken: list[BaseException] = []
    began = time.monotonic()
    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if broken:
        raise broken[0]
    return LoadResult(ok, failed, errors, time.monotonic() - began, ran[0] if ran else None)


async def arun_load(
    search_fn: Callable[[int], Awaitable[Any]],
    n: int,
    concurrency: int,
    *,
    action: Callable[[], Any] | None = None,
    after: int = 0,
) -> LoadResult:
    """:func:`run_load` with ``concurrency`` asyncio tasks awaiting ``search_fn(i)``;
    ``action`` is a plain callable, run on the event loop (keep it short)."""
    counter = itertools.count()
    ok = failed = done = 0
    errors: list[str] = []
    ran: list[int] = []

    async def worker() -> None:
        nonlocal ok, failed, done
        while (i := next(counter)) < n:
            try:
                await search_fn(i)
                ok += 1
            except Exception as err:
                failed += 1
                errors.append(f"search {i}: {err!r}")
            done += 1
            if action is not None and not ran and done >= after:
                ran.append(done)
                action()

    began = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return LoadResult(ok, failed, errors, time.monotonic() - began, ran[0] if ran else None)
