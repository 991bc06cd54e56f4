"""Pair encoding with a document token cache, and truncation that is never silent.

Documents are tokenized once (without special tokens) and their ids kept in a bounded LRU
cache keyed by tokenizer and content hash; per request only the query is tokenized, and the
pair inputs are assembled from the tokenizer's own pair template. The result equals the
tokenizer's own ``tokenizer(query, doc, truncation="only_second")`` encoding.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

__all__ = ["EncodedPairs", "PairEncoder", "PairTemplate"]

Ids = npt.NDArray[np.int64]


@dataclass(frozen=True)
class PairTemplate:
    """Special tokens around the two sequences, probed from the tokenizer's post-processor."""

    prefix: Ids
    prefix_types: Ids
    middle: Ids
    middle_types: Ids
    suffix: Ids
    suffix_types: Ids
    query_type: int
    doc_type: int

    @property
    def num_special(self) -> int:
        return len(self.prefix) + len(self.middle) + len(self.suffix)

    @classmethod
    def probe(cls, backend: Any) -> PairTemplate:
        """Read the pair template off a ``tokenizers.Tokenizer`` by encoding a probe pair."""
        pair = backend.encode("a", "b", add_special_tokens=True)
        segments: list[list[tuple[int, int]]] = [[], [], []]
        types = {0: 0, 1: 0}
        slot = 0
        for token, type_id, seq in zip(pair.ids, pair.type_ids, pair.sequence_ids):
            if seq is None:
                segments[slot].append((token, type_id))
            else:
                types[seq] = type_id
                slot = seq + 1

        def arrays(seg: list[tuple[int, int]]) -> tuple[Ids, Ids]:
            ids = np.array([t for t, _ in seg], dtype=np.int64)
            return ids, np.array([k for _, k in seg], dtype=np.int64)

        (p, pt), (m, mt), (s, st) = (arrays(seg) for seg in segments)
        return cls(p, pt, m, mt, s, st, types[0], types[1])

    def assemble(self, query: Ids, doc: Ids) -> tuple[Ids, Ids]:
        """Input ids and token type ids of ``[prefix] query [middle] doc [suffix]``."""
        ids = np.concatenate((self.prefix, query, self.middle, doc, self.suffix))
        types = np.concatenate(
            (
                self.prefix_types,
                np.full(len(query), self.query_type, dtype=np.int64),
                self.middle_types,
                np.full(len(doc), self.doc_type, dtype=np.int64),
                self.suffix_types,
            )
        )
        return ids, types


@dataclass
class EncodedPairs:
    """Model inputs for a set of requests: one row per (document or passage)."""

    input_ids: list[Ids]
    token_type_ids: list[Ids]
    owner: list[tuple[int, int]]  # (request index, document index) per row
    truncated: list[int]  # per request
    split: list[int]  # per request
    query_truncated: list[bool]  # per request


class PairEncoder:
    """Encodes (query, document) pairs for one tokenizer within the model's token budget."""

    def __init__(
        self,
        tokenizer: Any,
        *,
        max_length: int,
        max_query_tokens: int = 64,
        long_documents: Literal["truncate", "passages"] = "truncate",
        passage_overlap: int = 32,
        max_passages: int = 8,
        cache_size: int = 50_000,
    ) -> None:
        backend = getattr(tokenizer, "backend_tokenizer", None) or getattr(
            tokenizer, "_tokenizer", None
        )
        if backend is None:
            raise TypeError("PairEncoder needs a fast (Rust `tokenizers`) tokenizer")
        # A private copy, so the transformers wrapper's truncation/padding state never leaks in.
        self._backend = type(backend).from_str(backend.to_str())
        self._backend.no_truncation()
        self._backend.no_padding()
        self.template = PairTemplate.probe(self._backend)
        self.max_length = max_length
        self.max_query_tokens = min(max_query_tokens, max_length - self.template.num_special - 1)
        if self.max_query_tokens < 1:
            raise ValueError(f"max_length {max_length} leaves no room for the query")
        self.long_documents = long_documents
        self.passage_overlap = passage_overlap
        self.max_passages = max_passages
        self.cache_size = cache_size
        self._cache: OrderedDict[bytes, Ids] = OrderedDict()
        self._lock = threading.Lock()
        self._key = hashlib.sha1(self._backend.to_str().encode()).digest()
        self.cache_hits = 0
        self.cache_misses = 0

    def _key_of(self, text: str) -> bytes:
        return hashlib.blake2b(text.encode(), key=self._key[:16], digest_size=16).digest()

    def document_ids(self, documents: Sequence[str]) -> list[Ids]:
        """Token ids of each document (no special tokens), from the cache where possible."""
        keys = [self._key_of(d) for d in documents]
        out: list[Ids | None] = [None] * len(documents)
        todo: dict[bytes, list[int]] = {}
        with self._lock:
            for i, key in enumerate(keys):
                hit = self._cache.get(key)
                if hit is not None:
                    self._cache.move_to_end(key)
                    out[i] = hit
                    self.cache_hits += 1
                else:
                    todo.setdefault(key, []).append(i)
            self.cache_misses += len(todo)
        if todo:
            firsts = [positions[0] for positions in todo.values()]
            encodings = self._backend.encode_batch(
                [documents[i] for i in firsts], add_special_tokens=False
            )
            with self._lock:
                for (key, positions), enc in zip(todo.items(), encodings):
                    ids = np.asarray(enc.ids, dtype=np.int64)
                    for i in positions:
                        out[i] = ids
                    if self.cache_size:
                        self._cache[key] = ids
                while len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
        return [o for o in out if o is not None]

    def query_ids(self, query: str) -> tuple[Ids, bool]:
        """Token ids of the query, capped at ``max_query_tokens``; and whether it was cut."""
        ids = self._backend.encode(query, add_special_tokens=False).ids
        cut = len(ids) > self.max_query_tokens
        return np.asarray(ids[: self.max_query_tokens], dtype=np.int64), cut

    def _windows(self, doc: Ids, budget: int) -> tuple[list[Ids], bool]:
        """The pieces of ``doc`` to score, and whether any content was dropped."""
        if len(doc) <= budget:
            return [doc], False
        if self.long_documents == "truncate":
            return [doc[:budget]], True
        step = max(1, budget - self.passage_overlap)
        pieces: list[Ids] = []
        start = 0
        while len(pieces) < self.max_passages:
            pieces.append(doc[start : start + budget])
            if start + budget >= len(doc):
                return pieces, False
            start += step
        return pieces, True

    def encode(self, queries: Sequence[str], documents: Sequence[Sequence[str]]) -> EncodedPairs:
        """Encode each query with its documents."""
        flat = [d for docs in documents for d in docs]
        doc_ids = iter(self.document_ids(flat))
        enc = EncodedPairs([], [], [], [], [], [])
        for r, (query, docs) in enumerate(zip(queries, documents)):
            q_ids, q_cut = self.query_ids(query)
            budget = self.max_length - self.template.num_special - len(q_ids)
            truncated = split = 0
            for d in range(len(docs)):
                pieces, dropped = self._windows(next(doc_ids), budget)
                truncated += dropped
                split += len(pieces) > 1
                for piece in pieces:
                    ids, types = self.template.assemble(q_ids, piece)
                    enc.input_ids.append(ids)
                    enc.token_type_ids.append(types)
                    enc.owner.append((r, d))
            enc.truncated.append(truncated)
            enc.split.append(split)
            enc.query_truncated.append(q_cut)
        return enc
