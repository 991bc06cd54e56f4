"""The score cache: keys that change with everything that decides a score, identical results
with and without it, only misses tokenized and scored, a byte bound, thread safety, and its
counters in the proxy's metrics."""

from __future__ import annotations

import threading
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from crossrank.adapters.proxy.metrics import ProxyMetrics
from crossrank.adapters.proxy.scorers import Scorers
from crossrank.reranker import LocalScorer, RerankConfig, ScoreRequest
from crossrank.reranker.errors import ScorerError
from crossrank.reranker.local.scorer import CachedPairs
from crossrank.reranker.score_cache import (
    ENTRY_BYTES,
    CacheEntry,
    CacheStats,
    KeyMaker,
    ScoreCache,
)
from crossrank.reranker.scoring import ScoreResult

QUERY = "boundary layer flow"
DOCS = [
    "the boundary layer over a flat plate in supersonic flow",
    "heat transfer to a cylinder",
    "flow " * 700,  # truncated at 512 tokens
    "",
]


def scorer(path: Path, **kw: Any) -> LocalScorer:
    cache = kw.pop("score_cache", None)
    return LocalScorer(RerankConfig(model=str(path), dtype="float32", **kw), score_cache=cache)


def key(i: int) -> bytes:
    return i.to_bytes(16, "big")


# ---------------------------------------------------------------------- the cache alone


def test_lru_bounded_in_bytes() -> None:
    cache = ScoreCache(3 * ENTRY_BYTES + ENTRY_BYTES // 2)  # room for 3 entries
    cache.put((key(i), CacheEntry(float(i))) for i in range(3))
    assert cache.get([key(0)]) == [CacheEntry(0.0)]  # 0 is now the most recent
    cache.put([(key(3), CacheEntry(3.0, truncated=True, split=True, query_truncated=True))])
    assert cache.get([key(1)]) == [None]  # the least recently used went
    assert cache.get([key(0), key(2), key(3)]) == [
        CacheEntry(0.0),
        CacheEntry(2.0),
        CacheEntry(3.0, True, True, True),
    ]
    assert cache.stats() == CacheStats(hits=4, misses=1, entries=3, bytes=3 * ENTRY_BYTES)
    assert cache.nbytes <= cache.max_bytes
    off = ScoreCache(0)
    off.put([(key(1), CacheEntry(1.0))])
    assert len(off) == 0 and off.get([key(1)]) == [None]
    with pytest.raises(ValueError):
        ScoreCache(-1)


def test_scores_are_kept_exactly() -> None:
    cache = ScoreCache(10 * ENTRY_BYTES)
    values = [0.1, -1e-300, 3.4028234663852886e38, float(np.float32(0.123456789))]
    cache.put((key(i), CacheEntry(v)) for i, v in enumerate(values))
    assert [e.score for e in cache.get([key(i) for i in range(4)]) if e] == values


def test_entry_bytes_is_what_an_entry_costs() -> None:
    """The byte count tracks the memory the entries really take (within 30 %)."""
    n = 20_000
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        cache = ScoreCache(n * ENTRY_BYTES)
        cache.put((key(i), CacheEntry(i * 0.5, bool(i % 2))) for i in range(n))
        used = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(cache) == n and cache.nbytes == n * ENTRY_BYTES
    assert 0.7 < used / cache.nbytes < 1.3, (used / n, ENTRY_BYTES)


def test_thread_safe_under_concurrent_gets_and_puts() -> None:
    cache = ScoreCache(500 * ENTRY_BYTES)
    errors: list[BaseException] = []

    def work(seed: int) -> None:
        rng = np.random.default_rng(seed)
        try:
            for _ in range(300):
                ids = rng.integers(0, 2_000, 20).tolist()
                cache.put((key(i), CacheEntry(float(i))) for i in ids[:10])
                for i, entry in zip(ids, cache.get([key(i) for i in ids])):
                    assert entry is None or entry.score == float(i)
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(seed,)) for seed in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    stats = cache.stats()
    assert stats.hits + stats.misses == 8 * 300 * 20
    assert stats.entries == len(cache._data) <= 500 and stats.bytes <= cache.max_bytes


def test_every_part_of_the_key_counts() -> None:
    identity = {"model": "m", "load_id": "a", "max_length": 512, "sigmoid": False}
    maker = KeyMaker(identity)
    (base,) = maker.keys("q", ["d"])
    assert maker.keys("q", ["d"]) == [base] == KeyMaker(dict(identity)).keys("q", ["d"])
    others = [
        KeyMaker({**identity, "load_id": "b"}).keys("q", ["d"]),
        KeyMaker({**identity, "max_length": 256}).keys("q", ["d"]),
        KeyMaker({**identity, "sigmoid": True}).keys("q", ["d"]),
        maker.keys("q", ["d"], max_tokens_per_query=4),
        maker.keys("q", ["d"], max_tokens_per_doc=4),
        maker.keys("q", ["d"], max_tokens_per_query=4, max_tokens_per_doc=4),
        maker.keys("q2", ["d"]),
        maker.keys("q", ["d2"]),
        maker.keys("qd", [""]),  # the query's end is not a document's start
        maker.keys("", ["qd"]),
    ]
    flat = [base] + [k for ks in others for k in ks]
    assert len(set(flat)) == len(flat) and all(len(k) == 16 for k in flat)
    # a lone surrogate is hashed as itself: distinct from U+FFFD, never an encoding error
    assert maker.keys("q", ["\ud800"]) != maker.keys("q", ["\ufffd"])


# ---------------------------------------------------------------------- the local scorer


def assert_identical(got: list[ScoreResult], want: list[ScoreResult]) -> None:
    assert [vars(r) for r in got] == [vars(r) for r in want]


def test_results_with_and_without_the_cache_are_identical(tiny_model_dir: Path) -> None:
    plain = scorer(tiny_model_dir, score_cache_bytes=0)
    cached = scorer(tiny_model_dir)
    assert plain.score_cache is None and cached.score_cache is not None
    requests = [
        ScoreRequest(QUERY, DOCS),
        ScoreRequest("flow " * 100, DOCS[:2]),  # query cut to max_query_tokens
        ScoreRequest(QUERY, DOCS, max_tokens_per_query=2, max_tokens_per_doc=5),
        ScoreRequest("no documents", []),
    ]
    want = plain.score(requests)
    assert [(r.truncated, r.query_truncated) for r in want] == [
        (1, False),
        (0, True),
        (2, True),  # 3 query tokens cut to 2; "heat transfer to a cylinder" and "" fit in 5
        (0, False),
    ]
    cold = cached.score(requests)
    assert cached.cache_stats() == CacheStats(0, 10, 10, 10 * ENTRY_BYTES)
    warm = cached.score(requests)
    assert cached.cache_stats().hits == 10
    assert_identical(cold, want)
    assert_identical(warm, want)
    # a request found whole keeps its query_truncated flag too
    (alone,) = cached.score([ScoreRequest("flow " * 100, DOCS[:2])])
    assert_identical([alone], want[1:2])


def test_passage_flags_are_kept(tiny_model_dir: Path) -> None:
    options = {"long_documents": "passages", "max_length": 64, "passage_overlap": 8}
    long_doc = " ".join(f"token{i} flow" for i in range(60))
    huge = "flow " * 2_000  # more than max_passages windows: split and truncated
    requests = [ScoreRequest(QUERY, [long_doc, "short", huge])]
    want = scorer(tiny_model_dir, score_cache_bytes=0, **options).score(requests)
    assert (want[0].split, want[0].truncated) == (2, 1)
    cached = scorer(tiny_model_dir, **options)
    cached.score(requests)
    assert_identical(cached.score(requests), want)
    assert cached.cache_stats().hits == 3


def test_a_cached_request_costs_no_tokenization_and_no_model_call(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = scorer(tiny_model_dir)
    requests = [ScoreRequest(QUERY, DOCS), ScoreRequest("heat", DOCS[:2])]
    want = s.score(requests)

    def refuse(*args: Any, **kw: Any) -> Any:
        raise AssertionError("tokenized or scored a cached pair")

    for name in ("encode", "query_ids", "document_ids"):
        monkeypatch.setattr(s.encoder, name, refuse)
    monkeypatch.setattr(s, "forward", refuse)
    enc = s.encode_misses(requests)
    assert isinstance(enc, CachedPairs) and enc.input_ids == [] and len(enc.cached) == 6
    assert_identical(s.score(requests), want)


async def test_ascore_uses_the_cache(tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = scorer(tiny_model_dir)
    want = await s.ascore([ScoreRequest(QUERY, DOCS)])
    monkeypatch.setattr(s, "forward", lambda batch: pytest.fail("the model ran"))
    assert_identical(await s.ascore([ScoreRequest(QUERY, DOCS)]), want)


def rows_scored(s: LocalScorer, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the rows every later forward pass of ``s`` gets, in a list."""
    rows: list[int] = []
    forward = s.forward

    def counting(batch: Any) -> Any:
        rows.append(len(batch.input_ids))
        return forward(batch)

    monkeypatch.setattr(s, "forward", counting)
    return rows


def test_only_misses_are_scored(tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = scorer(tiny_model_dir)
    plain = scorer(tiny_model_dir, score_cache_bytes=0)
    s.score([ScoreRequest(QUERY, DOCS)])
    rows = rows_scored(s, monkeypatch)
    changed = [DOCS[0], DOCS[1] + " and a wall", DOCS[2], DOCS[3]]  # one document edited
    (got,) = s.score([ScoreRequest(QUERY, changed)])
    assert sum(rows) == 1 and s.cache_stats()[:2] == (3, 5)
    (want,) = plain.score([ScoreRequest(QUERY, changed)])
    assert got.scores[1] == pytest.approx(want.scores[1], abs=1e-5)  # the new text's score
    assert got.scores[1] != s.score([ScoreRequest(QUERY, DOCS)])[0].scores[1]
    assert (got.truncated, got.split, got.query_truncated) == (1, 0, False)


def test_a_pair_asked_for_twice_in_one_call_is_scored_once(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = scorer(tiny_model_dir)
    rows = rows_scored(s, monkeypatch)
    requests = [ScoreRequest(QUERY, [DOCS[0], DOCS[2], DOCS[0]]), ScoreRequest(QUERY, DOCS[2:3])]
    got = s.score(requests)
    assert sum(rows) == 2 and len(s.score_cache or ()) == 2
    assert got[0].scores[0] == got[0].scores[2] and got[1].scores == [got[0].scores[1]]
    assert (got[0].truncated, got[1].truncated) == (1, 1)
    want = scorer(tiny_model_dir, score_cache_bytes=0).score(requests)
    for a, b in zip(got, want):
        assert a.scores == pytest.approx(b.scores, abs=1e-5)
        assert (a.truncated, a.split, a.query_truncated) == (
            b.truncated,
            b.split,
            b.query_truncated,
        )


def test_another_model_instance_or_setting_misses(tiny_model_dir: Path) -> None:
    shared = ScoreCache(1024 * ENTRY_BYTES)
    first = scorer(tiny_model_dir, score_cache=shared)
    first.score([ScoreRequest(QUERY, DOCS[:2])])
    first.score([ScoreRequest(QUERY, DOCS[:2])])
    assert shared.stats()[:3] == (2, 2, 2)
    # the same path loaded again: a new instance, its own entries
    scorer(tiny_model_dir, score_cache=shared).score([ScoreRequest(QUERY, DOCS[:2])])
    assert shared.stats()[:3] == (2, 4, 4)
    # other settings that change a score
    scorer(tiny_model_dir, score_cache=shared, max_length=16).score([ScoreRequest(QUERY, DOCS[:2])])
    assert shared.stats()[:3] == (2, 6, 6)
    # a request's own caps are part of the key
    first.score([ScoreRequest(QUERY, DOCS[:2], max_tokens_per_doc=3)])
    first.score([ScoreRequest(QUERY, DOCS[:2], max_tokens_per_query=3)])
    assert shared.stats()[:3] == (2, 10, 10)
    first.score([ScoreRequest(QUERY, DOCS[:2], max_tokens_per_doc=3)])
    assert shared.stats()[:3] == (4, 10, 10)


def test_non_finite_scores_are_never_cached(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = scorer(tiny_model_dir)
    with monkeypatch.context() as m:
        m.setattr(s, "forward", lambda batch: np.full(len(batch.input_ids), np.nan))
        with pytest.raises(ScorerError, match="non-finite"):
            s.score([ScoreRequest(QUERY, DOCS[:2])])
    assert len(s.score_cache or ()) == 0
    (result,) = s.score([ScoreRequest(QUERY, DOCS[:2])])
    assert all(np.isfinite(result.scores)) and s.cache_stats().hits == 0


def test_the_byte_bound_comes_from_the_config(tiny_model_dir: Path) -> None:
    s = scorer(tiny_model_dir, score_cache_bytes=2 * ENTRY_BYTES)
    s.score([ScoreRequest(QUERY, DOCS)])
    assert s.cache_stats().entries == 2 and s.cache_stats().bytes <= 2 * ENTRY_BYTES
    assert RerankConfig().score_cache_bytes == 64 * 1024 * 1024
    assert scorer(tiny_model_dir, score_cache_bytes=0).cache_stats() == CacheStats()


# ---------------------------------------------------------------------- proxy metrics


class _CachingScorer:
    """A scorer that keeps a score cache (a real one), as the local scorer does."""

    def __init__(self, cache: ScoreCache) -> None:
        self.score_cache = cache

    @property
    def name(self) -> str:
        return "fake"

    def score(self, requests: Any) -> list[ScoreResult]:
        return [ScoreResult([0.0] * len(r.documents)) for r in requests]

    async def ascore(self, requests: Any) -> list[ScoreResult]:
        return self.score(requests)


async def test_proxy_metrics_show_score_cache_hits_and_misses() -> None:
    shared, own = ScoreCache(10 * ENTRY_BYTES), ScoreCache(10 * ENTRY_BYTES)
    caches = iter([shared, shared, own])
    scorers = Scorers(lambda config: _CachingScorer(next(caches)))
    for model in ("a", "b", "c"):
        await scorers.get(RerankConfig(model=model), wait=30)
    shared.put([(key(1), CacheEntry(1.0))])
    shared.get([key(1), key(1), key(2)])
    own.get([key(1)])
    assert scorers.score_cache_counts() == (2, 2)  # the shared cache counted once
    text = ProxyMetrics(scorers.cache_hits, scorers.score_cache_counts).render().decode()
    assert "crossrank_proxy_score_cache_hits_total 2.0" in text
    assert "crossrank_proxy_score_cache_misses_total 2.0" in text
    assert "crossrank_proxy_score_cache_hits_total 0.0" in ProxyMetrics().render().decode()
