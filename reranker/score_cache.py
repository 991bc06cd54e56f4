"""The score cache: (model instance, scoring settings, caps, query, document) → score.

Search traffic repeats (head queries, paging, refreshes); a cached pair costs a hash and a
dictionary look-up instead of tokenization and a forward pass. The local scorer keeps one
(:class:`~crossrank.reranker.local.LocalScorer`), and the scorer service shares one between
all its models and clients.

**Keys** are 16-byte BLAKE2b digests of everything that decides a score, so that a changed
document, query, model or setting can never return an old score: the model's *identity*
(its name, an id unique to each loaded instance — two loads of the same path never share
entries — its device, dtype, head and every setting that changes a score: ``max_length``,
``max_query_tokens``, ``long_documents``, ``passage_overlap``, ``max_passages``,
``sigmoid``), the request's own caps (``max_tokens_per_query``, ``max_tokens_per_doc``),
the query text (length-prefixed) and the document text. Texts are hashed as given (a lone
surrogate is hashed as itself, ``surrogatepass``), so distinct texts never share a key.

**Entries** keep what :class:`~crossrank.reranker.scoring.ScoreResult` reports per
document — the score, and whether the document was truncated or split and the query
truncated — so results with and without the cache are identical. A score is kept as the
float the model produced (8 bytes), never rounded.

**Bounded in bytes**, least recently used evicted first. Every entry has the same size (a
16-byte key, a 9-byte value), so the byte count is entries × :data:`ENTRY_BYTES`, which
includes the container's own per-entry cost (measured with ``tracemalloc``: 170-200 bytes
per entry in all). A plain :class:`~collections.OrderedDict` under a lock rather than
``cachetools.LRUCache(getsizeof=...)``: with fixed-size entries the size function would be
a constant, cachetools is not thread-safe either (a lock is needed anyway), the document
token cache (:mod:`crossrank.reranker.local.encoding`) already uses the same pattern, and
the core package gains no dependency. Thread-safe: the service looks up from encoding
threads and stores from the event loop.
"""

from __future__ import annotations

import hashlib
import json
import struct
import sys
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

__all__ = [
    "ENTRY_BYTES",
    "CacheEntry",
    "CacheStats",
    "KeyMaker",
    "ScoreCache",
]

_VALUE = struct.Struct("<dB")  # score, flags
_CAPS = struct.Struct("<qqQ")  # max_tokens_per_query, max_tokens_per_doc (-1: none), query bytes
_TRUNCATED, _SPLIT, _QUERY_TRUNCATED = 1, 2, 4
_KEY_SIZE = 16
#: Bytes one entry costs: its key and value objects and the container's slot for them.
ENTRY_BYTES = sys.getsizeof(bytes(_KEY_SIZE)) + sys.getsizeof(bytes(_VALUE.size)) + 96


class CacheEntry(NamedTuple):
    """What one cached document reports: its score and its truncation flags."""

    score: float
    truncated: bool = False
    split: bool = False
    query_truncated: bool = False


class CacheStats(NamedTuple):
    """Counters of a score cache: look-ups found and not found, entries held, their bytes."""

    hits: int = 0
    misses: int = 0
    entries: int = 0
    bytes: int = 0


def _pack(entry: CacheEntry) -> bytes:
    flags = (
        _TRUNCATED * entry.truncated
        | _SPLIT * entry.split
        | _QUERY_TRUNCATED * entry.query_truncated
    )
    return _VALUE.pack(entry.score, flags)


def _unpack(value: bytes) -> CacheEntry:
    score, flags = _VALUE.unpack(value)
    return CacheEntry(
        score, bool(flags & _TRUNCATED), bool(flags & _SPLIT), bool(flags & _QUERY_TRUNCATED)
    )


def _text(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


class KeyMaker:
    """Cache keys of one model instance: its identity hashed once, then per request the caps
    and query, then per document its text."""

    def __init__(self, identity: Mapping[str, Any]) -> None:
        self.identity = dict(identity)
        self._base = hashlib.blake2b(digest_size=_KEY_SIZE, person=b"crossrank-score")
        self._base.update(json.dumps(self.identity, sort_keys=True, default=str).encode())

    def keys(
        self,
        query: str,
        documents: Sequence[str],
        max_tokens_per_query: int | None = None,
        max_tokens_per_doc: int | None = None,
    ) -> list[bytes]:
        """One key per document of the request."""
        q = _text(query)
        per_query = self._base.copy()
        per_query.update(
            _CAPS.pack(
                -1 if max_tokens_per_query is None else max_tokens_per_query,
                -1 if max_tokens_per_doc is None else max_tokens_per_doc,
                len(q),
            )
        )
        per_query.update(q)
        out = []
        for doc in documents:
            h = per_query.copy()
            h.update(_text(doc))
            out.append(h.digest())
        return out


class ScoreCache:
    """A thread-safe LRU of score entries, bounded in bytes (``max_bytes``; 0 holds none).

    ``hits`` and ``misses`` count look-ups (one per document asked for).
    """

    def __init__(self, max_bytes: int) -> None:
        if max_bytes < 0:
            raise ValueError("max_bytes must be >= 0")
        self.max_bytes = max_bytes
        self.max_entries = max_bytes // ENTRY_BYTES
        self.hits = 0
        self.misses = 0
        self._data: OrderedDict[bytes, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._data)

    @property
    def nbytes(self) -> int:
        """Bytes held (entries × :data:`ENTRY_BYTES`)."""
        return len(self._data) * ENTRY_BYTES

    def get(self, keys: Sequence[bytes]) -> list[CacheEntry | None]:
        """The entry of each key (None where missing); found keys become the most recent."""
        out: list[CacheEntry | None] = []
        with self._lock:
            data = self._data
            for key in keys:
                value = data.get(key)
                if value is None:
                    out.append(None)
                else:
                    data.move_to_end(key)
                    out.append(_unpack(value))
            found = sum(v is not None for v in out)
            self.hits += found
            self.misses += len(out) - found
        return out

    def put(self, items: Iterable[tuple[bytes, CacheEntry]]) -> None:
        """Store entries (replacing any of the same key), then evict the least recently
        used beyond the byte limit."""
        packed = [(key, _pack(entry)) for key, entry in items]
        with self._lock:
            data = self._data
            for key, value in packed:
                data[key] = value
                data.move_to_end(key)
            while len(data) > self.max_entries:
                data.popitem(last=False)

    def clear(self) -> None:
        """Drop every entry (the counters stay)."""
        with self._lock:
            self._data.clear()

    def stats(self) -> CacheStats:
        """Hits, misses, entries and bytes, read together."""
        with self._lock:
            return CacheStats(self.hits, self.misses, len(self._data), self.nbytes)
