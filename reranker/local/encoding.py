"""Pair encoding with a document token cache, and truncation that is never silent.

Documents are tokenized once (without special tokens) and their ids kept in an LRU cache
keyed by tokenizer and content hash, bounded in entries and in bytes; per request only the
query is tokenized, and the pair inputs are assembled from the tokenizer's own pair
template. The result equals the tokenizer's own ``tokenizer(query, doc,
truncation="only_second")`` encoding. A request may bring its own caps
(``max_tokens_per_query``, ``max_tokens_per_doc``): its query and documents are then cut to
that many tokens first, exactly as if the texts had held only those tokens, and the cache
is shared with uncapped requests.

Only the tokens that can ever be used are tokenized and kept: the first ``keep_tokens`` of a
document (the largest document budget, or ``max_passages`` windows of it, plus one token so
that "was it truncated" stays exact) and the first ``max_query_tokens + 1`` of a query. They
come from :func:`prefix_encode`, which tokenizes a prefix of the text cut just before a
space (U+0020) that follows a non-space character, doubling the prefix until it yields
enough tokens or covers the text. Such a cut cannot change the tokens before it:

- normalizers (BERT cleaning/lowercasing/accent stripping, NFC/NFKC, metaspace
  replacement) work per character or per combining sequence, and a space is a starter that
  nothing before it combines with, so the normalized prefix is a prefix of the normalized
  text; the prefix ends in a non-space character, so right-stripping does not touch it;
- pre-tokenizers split there: WordPiece's BERT pre-tokenizer and ``Whitespace`` split on
  whitespace, ``Metaspace`` starts a new piece at each space, and byte-level BPE's regex
  has no match that runs from a non-space character into whitespace (``' ?\\p{L}+'`` and
  its kin start with the optional space and stop at one; the whitespace rules start at
  whitespace), so the pieces before the cut are the same in the prefix and in the text;
- the models (WordPiece, BPE, unigram) tokenize each piece on its own, so equal pieces give
  equal tokens, and the prefix's tokens are a prefix of the text's tokens.

Tokenizers for which the argument does not hold — no pre-tokenizer, one that does not split
at a space (``Metaspace(split=False)``, ``ByteLevel(use_regex=False)``) or an added token
containing whitespace — are detected and always tokenize the whole text (a custom
``Replace`` normalizer or ``Split`` regex that spans a space is not). Text with no such
space (CJK, one long word) is tokenized whole as well. Tokenization goes through
``encode_batch``, which releases the GIL (``Tokenizer.encode`` holds it throughout).
"""

from __future__ import annotations

import hashlib
import re
import sys
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from crossrank.reranker.errors import ConfigurationError, UnsupportedModelError
from crossrank.reranker.jsonio import scrub

__all__ = ["EncodedPairs", "PairEncoder", "PairTemplate", "prefix_encode", "splits_at_spaces"]

Ids = npt.NDArray[np.int64]

#: Characters of the first prefix tried per token wanted (English averages 4-5 per token).
_CHARS_PER_TOKEN = 8
#: A space that follows a non-space character (literal first, so the search is fast).
_CUT = re.compile(r" (?<=\S )")


def _cut(text: str, chars: int) -> int:
    """The first safe cut at or after ``chars``: a space after a non-space character."""
    if chars >= len(text):
        return len(text)
    found = _CUT.search(text, max(chars, 1))
    return found.start() if found else len(text)


def splits_at_spaces(backend: Any) -> bool:
    """Whether cutting text before a space leaves the tokens before the cut as they are."""
    pre = backend.pre_tokenizer
    if pre is None:
        return False
    pieces = pre.pre_tokenize_str("ab cd")
    added = backend.get_added_tokens_decoder().values()
    spaced = any(any(c.isspace() for c in token.content) for token in added)
    return len(pieces) >= 2 and pieces[0][1][1] <= 2 and not spaced


def prefix_encode(
    backend: Any, texts: Sequence[str], limit: int, first_chars: int
) -> list[list[int]]:
    """The first ``limit`` token ids of each text (no special tokens), as tokenizing the
    whole text gives them, from prefixes of ``first_chars`` characters or more.

    A prefix is cut at :func:`_cut` (see the module notes) and doubled until it yields
    ``limit`` tokens or covers the text; pass ``sys.maxsize`` to tokenize whole texts.
    """
    out: list[list[int]] = [[] for _ in texts]
    pending = {i: max(1, first_chars) for i in range(len(texts))}
    while pending:
        cuts = {i: _cut(texts[i], chars) for i, chars in pending.items()}
        encodings = backend.encode_batch(
            [texts[i][:cut] for i, cut in cuts.items()], add_special_tokens=False
        )
        pending = {}
        for (i, cut), enc in zip(cuts.items(), encodings):
            ids = enc.ids
            if len(ids) >= limit or cut >= len(texts[i]):
                out[i] = ids[:limit]
            else:
                pending[i] = 2 * cut
    return out


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
    #: per document, in request then document order: (truncated, split)
    doc_flags: list[tuple[bool, bool]] = field(default_factory=list)


class PairEncoder:
    """Encodes (query, document) pairs for one tokenizer within the model's token budget.

    Texts are scrubbed on the way in (lone surrogates become U+FFFD), so any ``str`` works.
    The document cache holds at most ``cache_size`` documents and ``cache_bytes`` bytes of
    token ids (``cache_nbytes``), evicting the least recently used.
    """

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
        cache_bytes: int = 256 * 1024 * 1024,
    ) -> None:
        backend = getattr(tokenizer, "backend_tokenizer", None) or getattr(
            tokenizer, "_tokenizer", None
        )
        if backend is None:
            raise UnsupportedModelError("PairEncoder needs a fast (Rust `tokenizers`) tokenizer")
        # A private copy, so the transformers wrapper's truncation/padding state never leaks in.
        self._backend = type(backend).from_str(backend.to_str())
        self._backend.no_truncation()
        self._backend.no_padding()
        self._prefix_safe = splits_at_spaces(self._backend)
        self.template = PairTemplate.probe(self._backend)
        self.max_length = max_length
        self.max_query_tokens = min(max_query_tokens, max_length - self.template.num_special - 1)
        if self.max_query_tokens < 1:
            raise ConfigurationError(f"max_length {max_length} leaves no room for the query")
        self.long_documents = long_documents
        self.passage_overlap = passage_overlap
        self.max_passages = max_passages
        # An empty query leaves the largest budget; a shorter one only needs fewer tokens.
        self.keep_tokens = self._tokens_needed(max_length - self.template.num_special)
        self.cache_size = cache_size
        self.cache_bytes = cache_bytes
        self.cache_nbytes = 0
        self._cache: OrderedDict[bytes, Ids] = OrderedDict()
        self._lock = threading.Lock()
        self._key = hashlib.sha1(self._backend.to_str().encode()).digest()
        self.cache_hits = 0
        self.cache_misses = 0

    def _tokens_needed(self, budget: int) -> int:
        """Document tokens that decide :meth:`_windows` for ``budget``: all it can use, + 1."""
        if self.long_documents == "truncate":
            return budget + 1
        step = max(1, budget - self.passage_overlap)
        return (self.max_passages - 1) * step + budget + 1

    def _first_chars(self, limit: int) -> int:
        return _CHARS_PER_TOKEN * limit if self._prefix_safe else sys.maxsize

    def _key_of(self, text: str) -> bytes:
        return hashlib.blake2b(text.encode(), key=self._key[:16], digest_size=16).digest()

    def document_ids(self, documents: Sequence[str]) -> list[Ids]:
        """The first ``keep_tokens`` token ids of each document (no special tokens), from the
        cache where possible; they decide every window and truncation exactly."""
        texts = [scrub(d) for d in documents]
        keys = [self._key_of(t) for t in texts]
        out, todo = self._lookup(keys)
        if todo:
            firsts = [positions[0] for positions in todo.values()]
            encoded = prefix_encode(
                self._backend,
                [texts[i] for i in firsts],
                self.keep_tokens,
                self._first_chars(self.keep_tokens),
            )
            fresh = [np.array(ids, dtype=np.int64) for ids in encoded]
            for positions, ids in zip(todo.values(), fresh):
                for i in positions:
                    out[i] = ids
            self._store(list(todo), fresh)
        return [o for o in out if o is not None]

    def _lookup(self, keys: list[bytes]) -> tuple[list[Ids | None], dict[bytes, list[int]]]:
        """Cached ids per key (None where missing), and the positions of each missing key."""
        out: list[Ids | None] = [None] * len(keys)
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
        return out, todo

    def _store(self, keys: list[bytes], values: list[Ids]) -> None:
        """Cache ``values``, then evict the least recently used until both bounds hold."""
        with self._lock:
            for key, ids in zip(keys, values):
                old = self._cache.pop(key, None)  # another thread may have stored it too
                if old is not None:
                    self.cache_nbytes -= old.nbytes
                self._cache[key] = ids
                self.cache_nbytes += ids.nbytes
            while self._cache and (
                len(self._cache) > self.cache_size or self.cache_nbytes > self.cache_bytes
            ):
                _, old = self._cache.popitem(last=False)
                self.cache_nbytes -= old.nbytes

    def query_ids(self, query: str, max_tokens: int | None = None) -> tuple[Ids, bool]:
        """Token ids of the query, capped at ``max_query_tokens`` (and at ``max_tokens``, a
        request's own cap, when smaller); and whether it was cut.

        Only a prefix of a long query is tokenized (see :func:`prefix_encode`), with the
        GIL released; the result equals tokenizing the whole query.
        """
        cap = (
            self.max_query_tokens if max_tokens is None else min(max_tokens, self.max_query_tokens)
        )
        limit = cap + 1
        (ids,) = prefix_encode(self._backend, [scrub(query)], limit, self._first_chars(limit))
        return np.asarray(ids[:cap], dtype=np.int64), len(ids) > cap

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

    def encode(
        self,
        queries: Sequence[str],
        documents: Sequence[Sequence[str]],
        *,
        max_tokens_per_query: Sequence[int | None] | None = None,
        max_tokens_per_doc: Sequence[int | None] | None = None,
    ) -> EncodedPairs:
        """Encode each query with its documents.

        ``max_tokens_per_query[r]`` / ``max_tokens_per_doc[r]`` (None: none) are request
        ``r``'s own caps: its query, and each of its documents, are cut to that many tokens
        first (a document so cut counts as truncated). The cache is not affected: it holds
        the same tokens of a document whatever the caps.
        """
        flat = [d for docs in documents for d in docs]
        doc_ids = iter(self.document_ids(flat))
        query_caps = list(max_tokens_per_query or [None] * len(queries))
        doc_caps = list(max_tokens_per_doc or [None] * len(queries))
        if not len(query_caps) == len(doc_caps) == len(queries):
            raise ValueError("one query cap and one document cap per query")
        enc = EncodedPairs([], [], [], [], [], [])
        for r, (query, docs, q_cap, d_cap) in enumerate(
            zip(queries, documents, query_caps, doc_caps)
        ):
            q_ids, q_cut = self.query_ids(query, q_cap)
            budget = self.max_length - self.template.num_special - len(q_ids)
            truncated = split = 0
            for d in range(len(docs)):
                doc = next(doc_ids)
                # exact: the cache holds min(length, keep_tokens) tokens, so a cap under
                # keep_tokens sees the true length; over it, the windows tell as without one
                capped = d_cap is not None and len(doc) > d_cap
                pieces, dropped = self._windows(doc[:d_cap] if capped else doc, budget)
                truncated += dropped or capped
                split += len(pieces) > 1
                enc.doc_flags.append((bool(dropped or capped), len(pieces) > 1))
                for piece in pieces:
                    ids, types = self.template.assemble(q_ids, piece)
                    enc.input_ids.append(ids)
                    enc.token_type_ids.append(types)
                    enc.owner.append((r, d))
            enc.truncated.append(truncated)
            enc.split.append(split)
            enc.query_truncated.append(q_cut)
        return enc
