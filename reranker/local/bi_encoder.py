"""In-process bi-encoder scorer: a sentence-embedding checkpoint as a reranking signal.

The query and each document are embedded apart, and a document's score is the dot product
of the two vectors: the cosine similarity when the checkpoint normalizes its embeddings
(sentence-transformers' ``Normalize`` module), the raw dot product otherwise (as the model
was trained). Pooling is what the checkpoint's sentence-transformers files declare
(``modules.json`` → the ``Pooling`` module's ``config.json``), mean pooling over the
attention mask when it has none.

Document vectors are kept in an :class:`EmbeddingCache` keyed by content hash, so a warm
rerank of 100 hits costs one query forward pass and one matrix-vector product; only the
documents the cache misses are tokenized and embedded, all the requests of one
:meth:`~BiEncoderScorer.score` call together, longest first under the token budget. Query
vectors are not cached (see :class:`BiEncoderScorer`).

:func:`checkpoint_kind` tells a cross-encoder checkpoint from a bi-encoder one by its files;
:func:`resolve_kind` applies it to ``kind="auto"``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import struct
import sys
import threading
import uuid
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from crossrank.reranker.calibration import apply_calibration, load_calibration
from crossrank.reranker.config import RerankConfig, ScorerOptions
from crossrank.reranker.errors import ModelLoadError, ScorerError, UnsupportedModelError
from crossrank.reranker.jsonio import scrub
from crossrank.reranker.local.batching import pack, pad
from crossrank.reranker.local.encoding import (
    _CHARS_PER_TOKEN,
    Ids,
    prefix_encode,
    splits_at_spaces,
)
from crossrank.reranker.local.model import _max_length, pick_device, pick_dtype
from crossrank.reranker.score_cache import CacheStats
from crossrank.reranker.scoring import ScoreRequest, ScoreResult

__all__ = [
    "BiEncoderScorer",
    "EmbeddingCache",
    "Pooling",
    "checkpoint_kind",
    "read_pooling",
    "resolve_kind",
]

Kind = Literal["cross-encoder", "bi-encoder"]
Vector = npt.NDArray[np.float32]

#: sentence-transformers' pooling modes, in the order it concatenates them
POOLING_MODES = ("cls", "max", "mean", "mean_sqrt_len_tokens", "weightedmean", "lasttoken")
_LEGACY_KEYS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}
_ST_FILES = ("modules.json", "sentence_bert_config.json")


# ---------------------------------------------------------------------- the checkpoint's files


def _json(path: Path) -> Any:
    """The JSON in ``path``; None when there is no such file."""
    try:
        text = path.read_text(encoding="utf-8")
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise ModelLoadError(f"cannot read {path.name}: {exc}") from exc
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ModelLoadError(f"{path.name} is not valid JSON: {exc}") from exc


def checkpoint_kind(model: str) -> Kind:
    """What the checkpoint at ``model`` is, from its files.

    ``config.json`` naming a ``…ForSequenceClassification`` architecture: a cross-encoder.
    Else sentence-transformers' ``modules.json`` or ``sentence_bert_config.json``, or only
    bare encoder architectures (``BertModel``, ``XLMRobertaModel``: no head): a bi-encoder.
    Anything else, and a name that is not a local folder (a hub name): a cross-encoder.
    """
    folder = Path(model)
    if not folder.is_dir():
        return "cross-encoder"
    try:
        config = _json(folder / "config.json")
    except ModelLoadError:
        config = None
    found = config.get("architectures") if isinstance(config, dict) else None
    architectures = [str(a) for a in found] if isinstance(found, list) else []
    if any(a.endswith("ForSequenceClassification") for a in architectures):
        return "cross-encoder"
    if any((folder / name).is_file() for name in _ST_FILES):
        return "bi-encoder"
    if architectures and all(a.endswith("Model") and "For" not in a for a in architectures):
        return "bi-encoder"
    return "cross-encoder"


def resolve_kind(config: ScorerOptions) -> Kind:
    """``config.kind``, with ``auto`` read from the checkpoint (:func:`checkpoint_kind`)."""
    return checkpoint_kind(config.model) if config.kind == "auto" else config.kind


@dataclass(frozen=True)
class Pooling:
    """How token vectors become one text vector, as the checkpoint's files say.

    ``modes``: sentence-transformers' pooling modes, concatenated in this order;
    ``normalize``: L2-normalized (a ``Normalize`` module); ``max_seq_length`` and
    ``lowercase``: ``sentence_bert_config.json``'s ``max_seq_length`` and ``do_lower_case``;
    ``path``: the folder of the transformer's weights and tokenizer.
    """

    modes: tuple[str, ...] = ("mean",)
    normalize: bool = False
    max_seq_length: int | None = None
    lowercase: bool = False
    path: Path = Path()


def _pooling_modes(config: Any) -> tuple[str, ...]:
    if not isinstance(config, dict):
        return ("mean",)
    mode = config.get("pooling_mode")
    if isinstance(mode, str):
        modes: tuple[str, ...] = (mode,)
    elif isinstance(mode, list):
        modes = tuple(str(m) for m in mode)
    elif mode is not None:
        raise ModelLoadError(f"pooling_mode {mode!r} is neither a mode nor a list of modes")
    else:
        modes = tuple(m for key, m in _LEGACY_KEYS.items() if config.get(key))
    unknown = [m for m in modes if m not in POOLING_MODES]
    if unknown:
        raise UnsupportedModelError(f"pooling mode(s) {unknown} not supported: {POOLING_MODES}")
    return modes or ("mean",)


def read_pooling(folder: Path) -> Pooling:
    """The :class:`Pooling` of a checkpoint folder (mean, not normalized, without the
    sentence-transformers files). A module other than ``Transformer``, ``Pooling`` and
    ``Normalize`` (a ``Dense`` projection, say) is refused, never skipped."""
    modules = _json(folder / "modules.json")
    modes: tuple[str, ...] = ("mean",)
    normalize = False
    path = folder
    if modules is not None:
        if not isinstance(modules, list) or not all(isinstance(m, dict) for m in modules):
            raise ModelLoadError("modules.json is not a list of modules")
        for module in modules:
            kind = str(module.get("type", "")).rsplit(".", 1)[-1]
            where = folder / str(module.get("path", ""))
            if kind == "Transformer":
                path = where
            elif kind == "Pooling":
                modes = _pooling_modes(_json(where / "config.json"))
            elif kind == "Normalize":
                normalize = True
            else:
                raise UnsupportedModelError(
                    f"sentence-transformers module {module.get('type')!r} is not supported "
                    "(only Transformer, Pooling and Normalize)"
                )
    st = _json(path / "sentence_bert_config.json")
    st = st if isinstance(st, dict) else {}
    length = st.get("max_seq_length")
    return Pooling(
        modes=modes,
        normalize=normalize,
        max_seq_length=length if isinstance(length, int) and length > 0 else None,
        lowercase=bool(st.get("do_lower_case", False)),
        path=path,
    )


def _folder(model: str) -> Path:
    """The local folder of ``model``: itself, or the hub's cached snapshot (never a download)."""
    path = Path(model)
    if path.is_dir():
        return path
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(model, local_files_only=True))
    except Exception as exc:
        raise ModelLoadError(
            f"cannot load bi-encoder {model!r}: not a local folder nor a cached hub model"
        ) from exc


def pool(hidden: Any, mask: Any, modes: Sequence[str]) -> Any:
    """One vector per row of ``hidden`` (rows × tokens × width, float32) over the tokens of
    ``mask`` (right-padded), the modes concatenated as sentence-transformers does."""
    import torch

    weights = mask.unsqueeze(-1).to(hidden.dtype)
    lengths = weights.sum(dim=1).clamp(min=1e-9)
    parts = []
    for mode in modes:
        if mode == "cls":
            parts.append(hidden[:, 0])
        elif mode == "max":
            parts.append(hidden.masked_fill(weights == 0, float("-inf")).max(dim=1).values)
        elif mode == "mean":
            parts.append((hidden * weights).sum(dim=1) / lengths)
        elif mode == "mean_sqrt_len_tokens":
            parts.append((hidden * weights).sum(dim=1) / lengths.sqrt())
        elif mode == "weightedmean":
            steps = torch.arange(1, hidden.shape[1] + 1, device=hidden.device, dtype=hidden.dtype)
            ramp = weights * steps.view(1, -1, 1)
            parts.append((hidden * ramp).sum(dim=1) / ramp.sum(dim=1).clamp(min=1e-9))
        else:  # lasttoken: the last token of the mask
            last = (mask.sum(dim=1) - 1).clamp(min=0)
            parts.append(hidden[torch.arange(hidden.shape[0], device=hidden.device), last])
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)


# ---------------------------------------------------------------------- the vector cache

#: Bytes one entry costs beyond its vector's data: the key, the array and tuple objects and
#: the container's slot (the score cache's 96, :mod:`crossrank.reranker.score_cache`).
ENTRY_OVERHEAD = (
    sys.getsizeof(bytes(16)) + sys.getsizeof(np.empty(0, np.float32)) + sys.getsizeof((0, 0)) + 96
)


class EmbeddingCache:
    """A thread-safe LRU of document vectors and their truncation flag, bounded in bytes
    (``max_bytes``: each vector's data plus :data:`ENTRY_OVERHEAD`) and in entries
    (``max_entries``); 0 holds none.

    Not the :class:`~crossrank.reranker.score_cache.ScoreCache`: its entries are fixed-size
    packed scores whose byte count is entries × a constant, and vectors vary in size (with
    the model's width) and are kept as arrays, not packed bytes. The same pattern as the
    document token cache (:mod:`crossrank.reranker.local.encoding`): an ``OrderedDict``
    under a lock, bytes counted on the way in and out. ``hits`` and ``misses`` count
    look-ups (one per document asked for).
    """

    def __init__(self, max_bytes: int, max_entries: int = sys.maxsize) -> None:
        if max_bytes < 0 or max_entries < 0:
            raise ValueError("max_bytes and max_entries must be >= 0")
        self.max_bytes = max_bytes
        self.max_entries = max_entries
        self.nbytes = 0
        self.hits = 0
        self.misses = 0
        self._data: OrderedDict[bytes, tuple[Vector, bool]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._data)

    def get(self, keys: Sequence[bytes]) -> list[tuple[Vector, bool] | None]:
        """The (vector, truncated) of each key (None where missing); found keys become the
        most recent."""
        out: list[tuple[Vector, bool] | None] = []
        with self._lock:
            data = self._data
            for key in keys:
                value = data.get(key)
                if value is not None:
                    data.move_to_end(key)
                out.append(value)
            found = sum(v is not None for v in out)
            self.hits += found
            self.misses += len(out) - found
        return out

    def put(self, items: Iterable[tuple[bytes, Vector, bool]]) -> None:
        """Store (key, vector, truncated) entries, then evict the least recently used until
        both bounds hold. Vectors are copied, so a view never keeps its whole batch alive."""
        fresh = [(key, np.array(vec, dtype=np.float32), cut) for key, vec, cut in items]
        with self._lock:
            data = self._data
            for key, vec, cut in fresh:
                old = data.pop(key, None)  # another thread may have stored it too
                if old is not None:
                    self.nbytes -= old[0].nbytes + ENTRY_OVERHEAD
                data[key] = (vec, cut)
                self.nbytes += vec.nbytes + ENTRY_OVERHEAD
            while data and (len(data) > self.max_entries or self.nbytes > self.max_bytes):
                _, (vec, _) = data.popitem(last=False)
                self.nbytes -= vec.nbytes + ENTRY_OVERHEAD

    def clear(self) -> None:
        """Drop every entry (the counters stay)."""
        with self._lock:
            self._data.clear()
            self.nbytes = 0

    def stats(self) -> CacheStats:
        """Hits, misses, entries and bytes, read together."""
        with self._lock:
            return CacheStats(self.hits, self.misses, len(self._data), self.nbytes)


# ---------------------------------------------------------------------- the scorer


@dataclass
class _Text:
    """One text to embed: its model input row (ids, token types) and whether it was cut."""

    ids: Ids
    types: Ids
    truncated: bool


class BiEncoderScorer:
    """Scores (query, document) pairs with a sentence-embedding model: the dot product of
    the query's and the document's vectors (their cosine when the model normalizes).

    Loads ``config.model`` (a local folder, or a hub model already in the local cache; never
    downloaded) with ``AutoModel`` on ``config.device`` in ``config.dtype``; pooling and
    normalization come from its sentence-transformers files (:func:`read_pooling`), and
    pooling runs in float32 whatever the encoder's dtype. ``max_length``: ``config.max_length``
    when set, else ``sentence_bert_config.json``'s ``max_seq_length``, else the model's limit
    (never beyond it). Queries are cut to ``max_query_tokens`` (``query_truncated``), documents
    to ``max_length``; a request's ``max_tokens_per_query`` / ``max_tokens_per_doc`` cut
    further, and a document cut counts in ``truncated``. Long documents are never split
    (``long_documents`` does not apply); ``sigmoid=True`` squashes the scores as for a
    cross-encoder. Texts are scrubbed (lone surrogates become U+FFFD) and only a bounded
    prefix of each is tokenized (:func:`~crossrank.reranker.local.encoding.prefix_encode`).

    Document vectors are cached (:class:`EmbeddingCache`, ``config.cache_bytes`` bytes and
    ``config.cache_size`` entries) by a BLAKE2b hash of this loaded instance's identity
    (a fresh id per load, its pooling and lengths), the document's token cap and its text.
    Query vectors are not: a query is one short row, embedded with the documents the cache
    missed, and caching it would let one-off queries evict document vectors; the same query
    twice in one call is embedded once. Thread-safe: forward passes run one at a time.
    Counters: :meth:`cache_stats`, ``forward_passes``, ``texts_embedded``.
    """

    def __init__(self, config: RerankConfig | None = None, **overrides: Any) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        self.config = (config or RerankConfig()).with_options(overrides or None)
        cfg = self.config
        self.pooling = read_pooling(_folder(cfg.model))
        #: the ``calibration.json`` beside the model (``crossrank calibrate``), if any
        self.calibration = load_calibration(cfg.model)
        try:
            tokenizer = AutoTokenizer.from_pretrained(
                self.pooling.path, use_fast=True, local_files_only=True
            )
            model = AutoModel.from_pretrained(self.pooling.path, local_files_only=True)
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"cannot load bi-encoder {cfg.model!r}: {exc}") from exc
        backend = getattr(tokenizer, "backend_tokenizer", None) or getattr(
            tokenizer, "_tokenizer", None
        )
        if backend is None:
            raise UnsupportedModelError(
                "BiEncoderScorer needs a fast (Rust `tokenizers`) tokenizer"
            )
        width = getattr(model.config, "hidden_size", None)
        if not isinstance(width, int):
            raise UnsupportedModelError(f"{cfg.model!r} has no hidden_size in its config")
        self.dimension = width * len(self.pooling.modes)
        self.device = pick_device(cfg.device)
        self.dtype = pick_dtype(self.device, cfg.dtype)
        self.model = model.to(device=self.device, dtype=self.dtype).eval()
        self.tokenizer = tokenizer
        limit = _max_length(tokenizer, model)
        self.max_length = min(cfg.max_length or self.pooling.max_seq_length or limit, limit)
        self.uses_token_types = "token_type_ids" in tokenizer.model_input_names
        pad_id = tokenizer.pad_token_id
        self.pad_id = int(pad_id) if pad_id is not None else 0
        # A private copy, so the transformers wrapper's truncation/padding state never leaks in.
        self._backend = type(backend).from_str(backend.to_str())
        self._backend.no_truncation()
        self._backend.no_padding()
        self._prefix_safe = splits_at_spaces(self._backend)
        self._probe_template()
        self.budget = self.max_length - len(self._prefix) - len(self._suffix)
        if self.budget < 1:
            raise ModelLoadError(f"max_length {self.max_length} leaves no room for text")
        self.max_query_tokens = min(cfg.max_query_tokens, self.budget)
        self.cache = EmbeddingCache(cfg.cache_bytes, cfg.cache_size)
        identity = {
            "model": cfg.model,
            "load_id": uuid.uuid4().hex,  # a new load (same path or not) never shares entries
            "device": str(self.device),
            "dtype": str(self.dtype),
            "pooling": self.pooling.modes,
            "normalize": self.pooling.normalize,
            "lowercase": self.pooling.lowercase,
            "max_length": self.max_length,
        }
        self._key = hashlib.blake2b(digest_size=16, person=b"crossrank-embed")
        self._key.update(json.dumps(identity, sort_keys=True).encode())
        self._lock = threading.Lock()
        self._torch = torch
        self.forward_passes = 0
        self.texts_embedded = 0

    def _probe_template(self) -> None:
        """The special tokens around one sequence, read off the tokenizer's post-processor."""
        probe = self._backend.encode("a", add_special_tokens=True)
        ids = np.asarray(probe.ids, dtype=np.int64)
        types = np.asarray(probe.type_ids, dtype=np.int64)
        inside = [i for i, s in enumerate(probe.sequence_ids) if s is not None]
        first, last = (inside[0], inside[-1]) if inside else (len(ids), len(ids) - 1)
        self._prefix, self._prefix_types = ids[:first], types[:first]
        self._suffix, self._suffix_types = ids[last + 1 :], types[last + 1 :]
        self._type = int(types[first]) if inside else 0

    @property
    def name(self) -> str:
        return self.config.model

    def describe(self) -> dict[str, Any]:
        """What the model is and how it is run (no file paths)."""
        return {
            "kind": "bi-encoder",
            "device": self.device,
            "dtype": str(self.dtype).removeprefix("torch."),
            "pooling": "+".join(self.pooling.modes),
            "normalize": self.pooling.normalize,
            "dimension": self.dimension,
            "max_length": self.max_length,
            "max_query_tokens": self.max_query_tokens,
        }

    def cache_stats(self) -> CacheStats:
        """Document-vector cache counters: hits, misses, entries, bytes."""
        return self.cache.stats()

    # ------------------------------------------------------------------ steps

    def _texts(self, texts: Sequence[str], cap: int) -> list[_Text]:
        """Model input rows of ``texts``, each cut to ``cap`` tokens between its specials."""
        clean = [scrub(t) for t in texts]
        if self.pooling.lowercase:
            clean = [t.lower() for t in clean]
        limit = cap + 1  # one more, so that "was it cut" is exact
        first = _CHARS_PER_TOKEN * limit if self._prefix_safe else sys.maxsize
        out = []
        for ids in prefix_encode(self._backend, clean, limit, first):
            kept = np.asarray(ids[:cap], dtype=np.int64)
            row = np.concatenate((self._prefix, kept, self._suffix))
            types = np.concatenate(
                (self._prefix_types, np.full(len(kept), self._type, np.int64), self._suffix_types)
            )
            out.append(_Text(row, types, len(ids) > cap))
        return out

    def _forward(self, rows: Sequence[_Text]) -> Vector:
        """Vectors of one batch of rows (float32; L2-normalized if the model says so)."""
        torch = self._torch
        batch = pad([r.ids for r in rows], [r.types for r in rows], self.pad_id)
        mask = torch.from_numpy(batch.attention_mask).to(self.device)
        inputs = {"input_ids": torch.from_numpy(batch.input_ids).to(self.device)}
        inputs["attention_mask"] = mask
        if self.uses_token_types:
            inputs["token_type_ids"] = torch.from_numpy(batch.token_type_ids).to(self.device)
        with torch.inference_mode():
            hidden = self.model(**inputs)[0].float()
            vectors = pool(hidden, mask, self.pooling.modes)
            if self.pooling.normalize:
                vectors = torch.nn.functional.normalize(vectors, p=2.0, dim=1)
        out: Vector = vectors.cpu().numpy()
        return out

    def embed(self, rows: Sequence[_Text]) -> Vector:
        """Vectors of ``rows`` (rows × dimension), longest first in token-budget batches.

        A row without tokens (a tokenizer with no special tokens, an empty text) gets the
        zero vector without a forward pass.
        """
        out = np.zeros((len(rows), self.dimension), dtype=np.float32)
        full = [i for i, r in enumerate(rows) if len(r.ids)]
        if not full:
            return out
        with self._lock:
            for batch in pack([len(rows[i].ids) for i in full], self.config.batch_tokens):
                chosen = [full[b] for b in batch]
                out[chosen] = self._forward([rows[i] for i in chosen])
                self.forward_passes += 1
                self.texts_embedded += len(chosen)
        if not np.all(np.isfinite(out)):
            raise ScorerError(f"model {self.name!r} produced non-finite embeddings")
        return out

    def _doc_key(self, text: str, cap: int) -> bytes:
        key = self._key.copy()
        key.update(struct.pack("<q", cap))
        key.update(text.encode("utf-8", "surrogatepass"))
        return key.digest()

    def _encode(self, items: Sequence[tuple[str, int]]) -> list[_Text]:
        """Rows of (text, token cap) items, in order (one tokenizer call per distinct cap)."""
        out: list[_Text | None] = [None] * len(items)
        by_cap: dict[int, list[int]] = {}
        for i, (_, cap) in enumerate(items):
            by_cap.setdefault(cap, []).append(i)
        for cap, chosen in by_cap.items():
            for i, text in zip(chosen, self._texts([items[i][0] for i in chosen], cap)):
                out[i] = text
        return [text for text in out if text is not None]

    def score_flagged(
        self, requests: Sequence[ScoreRequest]
    ) -> tuple[list[ScoreResult], list[tuple[bool, bool]]]:
        """:meth:`score`, and each document's (truncated, split) flags in request, then
        document order (split is always False: long documents are cut, not split)."""
        doc_caps = [min(self.budget, r.max_tokens_per_doc or self.budget) for r in requests]
        keys = [[self._doc_key(d, cap) for d in r.documents] for r, cap in zip(requests, doc_caps)]
        found = iter(self.cache.get([k for ks in keys for k in ks]))
        known: dict[bytes, tuple[Vector, bool]] = {}
        missing: dict[bytes, tuple[str, int]] = {}  # first text of each key the cache misses
        for request, request_keys, cap in zip(requests, keys, doc_caps):
            for doc, key in zip(request.documents, request_keys):
                entry = next(found)
                if entry is not None:
                    known[key] = entry
                elif key not in missing:
                    missing[key] = (doc, cap)
        query_caps = [
            min(self.max_query_tokens, r.max_tokens_per_query or self.max_query_tokens)
            for r in requests
        ]
        queries: dict[tuple[str, int], int] = {}
        for request, cap in zip(requests, query_caps):
            queries.setdefault((request.query, cap), len(queries))
        query_rows = self._encode(list(queries))  # every query: its truncation is reported
        needed = sorted(
            {queries[(r.query, cap)] for r, cap in zip(requests, query_caps) if r.documents}
        )
        doc_rows = self._encode(list(missing.values()))
        vectors = self.embed([query_rows[q] for q in needed] + doc_rows)
        query_vectors = dict(zip(needed, vectors))
        fresh = [
            (key, vectors[len(needed) + j], doc_rows[j].truncated) for j, key in enumerate(missing)
        ]
        self.cache.put(fresh)
        known.update((key, (vec, cut)) for key, vec, cut in fresh)
        results: list[ScoreResult] = []
        flags: list[tuple[bool, bool]] = []
        for request, request_keys, cap in zip(requests, keys, query_caps):
            q = queries[(request.query, cap)]
            cut = [known[k][1] for k in request_keys]
            flags.extend((c, False) for c in cut)
            values: list[float] = []
            if request_keys:  # one matrix-vector product per request
                scores = np.stack([known[k][0] for k in request_keys]) @ query_vectors[q]
                if self.config.sigmoid:
                    scores = 1.0 / (1.0 + np.exp(-scores))
                values = scores.tolist()
            results.append(
                ScoreResult(
                    values,
                    truncated=sum(cut),
                    query_truncated=query_rows[q].truncated,
                    model=self.name,
                    calibrated=apply_calibration(
                        self.calibration, values, squashed=self.config.sigmoid
                    ),
                )
            )
        return results, flags

    # ------------------------------------------------------------------ the Scorer interface

    def score(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        """Score every request's documents against its query (cached document vectors where
        found; the documents the cache misses are embedded together, for all requests)."""
        return self.score_flagged(requests)[0]

    async def ascore(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        """Score in a worker thread, off the event loop."""
        return await asyncio.to_thread(self.score, requests)
