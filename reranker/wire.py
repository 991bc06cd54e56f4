"""Every wire format of the scorer, once: request and response shapes, and which scores are
raw and which have had the sigmoid applied.

Both ends use this module, so they cannot disagree: the scorer service reads requests and
writes responses (:mod:`crossrank.reranker.service.protocol`), and
:class:`~crossrank.reranker.remote.RemoteScorer` writes requests and reads responses. Each
shape is a frozen dataclass with ``to_json`` (write) and ``from_json`` (read). Reading a
request checks its shape and raises :class:`InvalidRequestError` naming the field (the
service's limits and its error table live in ``protocol``); reading a response raises
``ValueError`` (or ``KeyError``/``TypeError``), which the client reports as unreadable.

- crossrank ``POST /rerank``: ``{"model"?, "requests": [{"query", "documents": [str],
  "max_tokens_per_query"?, "max_tokens_per_doc"?}]}`` → ``{"model", "results": [{"scores",
  "truncated", "split", "query_truncated", "calibrated"?}]}``, raw scores in document
  order, several queries per call (for msearch); ``calibrated`` (P(relevant) per document)
  when the served model has a calibration.
- TEI ``POST /rerank`` (told apart by ``texts``): ``{"query", "texts", "raw_scores"?,
  "return_text"?, "truncate"?}`` → ``[{"index", "score", "text"?}]`` by score, descending.
- Cohere ``POST /v1/rerank`` and ``/v2/rerank`` (Jina's and vLLM's shape too): ``{"query",
  "documents": [str | {"text"}], "top_n"?, "return_documents"?, "max_tokens_per_doc"?,
  "max_tokens_per_query"? (vLLM), "model"?}`` → ``{"id", "model", "results": [{"index",
  "relevance_score", "document"?}], "meta"}``.

Scores: crossrank carries raw model scores (and calibrated probabilities when it has them);
TEI carries ``sigmoid(raw)`` unless ``raw_scores``; Cohere's ``relevance_score`` is always
``sigmoid(raw)``, in 0..1. Each request says which with :attr:`squashed`; :func:`to_wire`
applies it on the service side and :func:`from_wire` on the client side (which applies its
own ``sigmoid`` setting to raw scores, as a local scorer does, and never a second time).

Token caps: ``max_tokens_per_doc`` / ``max_tokens_per_query`` become the
:class:`ScoreRequest` fields of the same names (0 or null: no cap, as in vLLM). TEI's
``truncate`` has no cap: absent or true, documents are cut to the model (the service runs as
TEI's ``--auto-truncate``); false, a pair that does not fit is an error.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from crossrank.reranker.errors import InvalidRequestError
from crossrank.reranker.scoring import ScoreRequest, ScoreResult

__all__ = [
    "DEADLINE_HEADER",
    "CohereRequest",
    "CohereResponse",
    "CrossrankRequest",
    "CrossrankResponse",
    "TeiRequest",
    "TeiResponse",
    "from_wire",
    "read_rerank",
    "sigmoid",
    "to_wire",
]

#: the per-request token caps, as every format names them
CAPS = ("max_tokens_per_query", "max_tokens_per_doc")
#: request header: how many milliseconds the client still waits for this answer (any format);
#: a crossrank service whose queue would take longer answers 429 at once instead of queueing
DEADLINE_HEADER = "x-crossrank-deadline-ms"


# ---------------------------------------------------------------------- scores


def sigmoid(x: float) -> float:
    """The logistic function, without overflow."""
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


def to_wire(raw: Sequence[float], squashed: bool) -> list[float]:
    """Raw model scores as a response carries them: ``sigmoid(raw)`` when ``squashed``."""
    return [sigmoid(s) for s in raw] if squashed else [float(s) for s in raw]


def from_wire(scores: Sequence[float], squashed: bool, sigmoid_wanted: bool) -> list[float]:
    """Scores as a response carried them, as a local scorer with ``sigmoid=sigmoid_wanted``
    gives them: raw scores get the sigmoid when it is wanted; squashed ones stay as they are."""
    if sigmoid_wanted and not squashed:
        return [sigmoid(s) for s in scores]
    return list(scores)


# ---------------------------------------------------------------------- reading requests


def _object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise InvalidRequestError("the body must be a JSON object")
    return body


def _unicode(value: str, where: str) -> str:
    """``value``, if it is valid Unicode (no lone surrogate): a tokenizer needs UTF-8."""
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InvalidRequestError(
                f"'{where}' is not valid Unicode: lone surrogate U+{ord(value[exc.start]):04X} "
                f"at character {exc.start}"
            ) from None
    return value


def _query(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidRequestError(f"'{where}' must be a non-empty string")
    return _unicode(value, where)


def _texts(value: Any, where: str, *, objects: bool = False) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise InvalidRequestError(f"'{where}' must be a non-empty list")
    out: list[str] = []
    for i, item in enumerate(value):
        if objects and isinstance(item, dict):
            item = item.get("text")
        if not isinstance(item, str):
            shape = "a string or {'text': string}" if objects else "a string"
            raise InvalidRequestError(f"'{where}[{i}]' must be {shape}")
        out.append(_unicode(item, f"{where}[{i}]"))
    return tuple(out)


def _optional(body: dict[str, Any], key: str, kind: type, default: Any) -> Any:
    value = body.get(key, default)
    if value is None:
        return default
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise InvalidRequestError(f"'{key}' must be of type {kind.__name__}")
    if isinstance(value, int) and not isinstance(value, bool) and value < 1:
        raise InvalidRequestError(f"'{key}' must be at least 1")
    return value


def _cap(body: dict[str, Any], key: str, where: str) -> int | None:
    """A token cap: a positive int; 0, null or absent: none."""
    value = body.get(key)
    if value is None or (value == 0 and not isinstance(value, bool)):
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidRequestError(f"'{where}' must be a positive integer (0 or null: no cap)")
    return value


def _model(body: dict[str, Any]) -> str | None:
    name: str | None = _optional(body, "model", str, None)
    return None if name is None else _unicode(name, "model")


def _caps_json(request: ScoreRequest) -> dict[str, int]:
    return {k: v for k in CAPS if (v := getattr(request, k)) is not None}


# ---------------------------------------------------------------------- reading responses


def _finite(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"not a finite score: {value!r}")
    return float(value)


def _by_index(items: Any, n: int, key: str) -> list[float]:
    """Scores in document order from ``[{"index", key}]`` items in any order."""
    if not isinstance(items, list):
        raise ValueError("results must be a list")
    scores: list[float | None] = [None] * n
    for item in items:
        i = item["index"]
        if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < n or scores[i] is not None:
            raise ValueError(f"bad or repeated index {i!r} for {n} documents")
        scores[i] = _finite(item[key])
    if any(s is None for s in scores):
        raise ValueError(f"{n} documents sent, {len(items)} scores received")
    return [s for s in scores if s is not None]


def _probabilities(value: Any, n: int) -> list[float] | None:
    """A result's ``calibrated`` list: ``n`` probabilities, or None when absent."""
    if value is None:
        return None
    if not isinstance(value, list) or len(value) != n:
        raise ValueError(f"{n} documents sent, calibrated is not a list of {n} probabilities")
    out = [_finite(p) for p in value]
    if any(not 0.0 <= p <= 1.0 for p in out):
        raise ValueError("calibrated probabilities must lie in 0..1")
    return out


def _count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"not a count: {value!r}")
    return value


# ---------------------------------------------------------------------- crossrank


@dataclass(frozen=True)
class CrossrankRequest:
    """crossrank's ``POST /rerank``: several queries, each with its documents and caps."""

    PATH: ClassVar[str] = "/rerank"
    requests: tuple[ScoreRequest, ...]
    model: str | None = None

    @property
    def squashed(self) -> bool:
        """Whether the answer carries ``sigmoid(raw)``: never, crossrank's scores are raw."""
        return False

    def query_field(self, i: int) -> str:
        """The field holding request ``i``'s query (for error messages)."""
        return f"requests[{i}].query"

    def to_json(self) -> dict[str, Any]:
        items = [
            {"query": r.query, "documents": list(r.documents), **_caps_json(r)}
            for r in self.requests
        ]
        body: dict[str, Any] = {"requests": items}
        if self.model is not None:
            body["model"] = self.model
        return body

    @classmethod
    def from_json(cls, body: Any) -> CrossrankRequest:
        body = _object(body)
        items = body.get("requests")
        if not isinstance(items, list) or not items:
            raise InvalidRequestError("'requests' must be a non-empty list")
        requests = []
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                raise InvalidRequestError(f"'requests[{i}]' must be an object")
            at = f"requests[{i}]"
            query = _query(item.get("query"), f"{at}.query")
            docs = _texts(item.get("documents"), f"{at}.documents")
            caps = {k: _cap(item, k, f"{at}.{k}") for k in CAPS}
            requests.append(ScoreRequest(query, docs, **caps))
        return cls(tuple(requests), _model(body))


@dataclass(frozen=True)
class CrossrankResponse:
    """The answer to a :class:`CrossrankRequest`: one result per request, raw scores."""

    model: str
    results: tuple[ScoreResult, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "results": [
                {
                    "scores": list(r.scores),
                    "truncated": r.truncated,
                    "split": r.split,
                    "query_truncated": r.query_truncated,
                    **({"calibrated": list(r.calibrated)} if r.calibrated is not None else {}),
                }
                for r in self.results
            ],
        }

    @classmethod
    def from_json(cls, data: Any, sizes: Sequence[int], model: str) -> CrossrankResponse:
        """Read an answer to requests of ``sizes`` documents (``model``: when not named)."""
        results, name = data["results"], str(data.get("model", model))
        if not isinstance(results, list) or len(results) != len(sizes):
            raise ValueError(f"{len(sizes)} requests sent, {len(results)} results received")
        out = []
        for n, r in zip(sizes, results):
            if not isinstance(r, dict) or not isinstance(r["scores"], list):
                raise ValueError("each result must be an object with a list of scores")
            scores = [_finite(s) for s in r["scores"]]
            if len(scores) != n:
                raise ValueError(f"{n} documents sent, {len(scores)} scores received")
            truncated, split = _count(r.get("truncated", 0)), _count(r.get("split", 0))
            calibrated = _probabilities(r.get("calibrated"), n)
            cut = r.get("query_truncated") is True
            out.append(ScoreResult(scores, truncated, split, cut, name, calibrated=calibrated))
        return cls(name, tuple(out))


# ---------------------------------------------------------------------- TEI


@dataclass(frozen=True)
class TeiRequest:
    """TEI's ``POST /rerank``: one query and its texts.

    ``truncate``: None (absent) or True cuts what does not fit; False makes it an error.
    ``model`` is crossrank's addition (which served model), not TEI's.
    """

    PATH: ClassVar[str] = "/rerank"
    query: str
    texts: tuple[str, ...]
    raw_scores: bool = False
    return_text: bool = False
    truncate: bool | None = None
    model: str | None = None

    @property
    def squashed(self) -> bool:
        """Whether the answer carries ``sigmoid(raw)``: unless ``raw_scores``."""
        return not self.raw_scores

    @property
    def request(self) -> ScoreRequest:
        return ScoreRequest(self.query, self.texts)

    def query_field(self, i: int = 0) -> str:
        return "query"

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"query": self.query, "texts": list(self.texts)}
        body["raw_scores"] = self.raw_scores
        if self.return_text:
            body["return_text"] = True
        if self.truncate is not None:
            body["truncate"] = self.truncate
        if self.model is not None:
            body["model"] = self.model
        return body

    @classmethod
    def from_json(cls, body: Any) -> TeiRequest:
        body = _object(body)
        texts = _texts(body.get("texts"), "texts")
        query = _query(body.get("query"), "query")
        return cls(
            query,
            texts,
            raw_scores=_optional(body, "raw_scores", bool, False),
            return_text=_optional(body, "return_text", bool, False),
            truncate=_optional(body, "truncate", bool, None),
            model=_model(body),
        )


@dataclass(frozen=True)
class TeiResponse:
    """The answer to a :class:`TeiRequest`: scores as carried, in document order."""

    scores: tuple[float, ...]
    texts: tuple[str, ...] | None = None  # returned when return_text

    def to_json(self) -> list[dict[str, Any]]:
        scores, texts = self.scores, self.texts
        order = sorted(range(len(scores)), key=lambda i: -scores[i])
        return [
            {"index": i, "score": scores[i], **({"text": texts[i]} if texts is not None else {})}
            for i in order
        ]

    @classmethod
    def from_json(cls, data: Any, n: int) -> TeiResponse:
        """Read an answer for ``n`` texts (ranks in any order)."""
        return cls(tuple(_by_index(data, n, "score")))


# ---------------------------------------------------------------------- Cohere, Jina, vLLM


@dataclass(frozen=True)
class CohereRequest:
    """Cohere's ``POST /v1/rerank`` and ``/v2/rerank``, also Jina's and vLLM's shape
    (``max_tokens_per_query`` is vLLM's)."""

    PATH: ClassVar[str] = "/v1/rerank"
    query: str
    documents: tuple[str, ...]
    model: str | None = None
    top_n: int | None = None
    return_documents: bool = False
    max_tokens_per_doc: int | None = None
    max_tokens_per_query: int | None = None

    @property
    def squashed(self) -> bool:
        """Whether the answer carries ``sigmoid(raw)``: always, relevance is in 0..1."""
        return True

    @property
    def request(self) -> ScoreRequest:
        return ScoreRequest(
            self.query, self.documents, self.max_tokens_per_query, self.max_tokens_per_doc
        )

    def query_field(self, i: int = 0) -> str:
        return "query"

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"query": self.query, "documents": list(self.documents)}
        if self.model is not None:
            body["model"] = self.model
        if self.top_n is not None:
            body["top_n"] = self.top_n
        body["return_documents"] = self.return_documents
        return {**body, **_caps_json(self.request)}

    @classmethod
    def from_json(cls, body: Any) -> CohereRequest:
        body = _object(body)
        docs = _texts(body.get("documents"), "documents", objects=True)
        query = _query(body.get("query"), "query")
        return cls(
            query,
            docs,
            model=_model(body),
            top_n=_optional(body, "top_n", int, None),
            return_documents=_optional(body, "return_documents", bool, False),
            max_tokens_per_doc=_cap(body, "max_tokens_per_doc", "max_tokens_per_doc"),
            max_tokens_per_query=_cap(body, "max_tokens_per_query", "max_tokens_per_query"),
        )


@dataclass(frozen=True)
class CohereResponse:
    """The answer to a :class:`CohereRequest`: relevance in document order (0..1)."""

    model: str
    scores: tuple[float, ...]
    documents: tuple[str, ...] | None = None  # returned when return_documents
    top_n: int | None = None
    api_version: int = 2
    id: str = field(default_factory=lambda: str(uuid.uuid4()))

    def to_json(self) -> dict[str, Any]:
        scores, docs = self.scores, self.documents
        order = sorted(range(len(scores)), key=lambda i: -scores[i])[: self.top_n]
        return {
            "id": self.id,
            "model": self.model,
            "results": [
                {
                    "index": i,
                    "relevance_score": scores[i],
                    **({"document": {"text": docs[i]}} if docs is not None else {}),
                }
                for i in order
            ],
            "meta": {
                "api_version": {"version": str(self.api_version)},
                "billed_units": {"search_units": 1},
            },
        }

    @classmethod
    def from_json(cls, data: Any, n: int) -> CohereResponse:
        """Read an answer for all ``n`` documents (ranks in any order)."""
        scores = _by_index(data["results"], n, "relevance_score")
        return cls(str(data.get("model", "")), tuple(scores), id=str(data.get("id", "")))


# ---------------------------------------------------------------------- dispatch


def read_rerank(body: Any) -> CrossrankRequest | TeiRequest:
    """``POST /rerank``: TEI's body when it has ``texts``, else crossrank's."""
    body = _object(body)
    if "texts" in body:
        return TeiRequest.from_json(body)
    if "requests" in body:
        return CrossrankRequest.from_json(body)
    raise InvalidRequestError(
        "expected {'requests': [{'query', 'documents'}]} (crossrank) or {'query', 'texts'} (TEI)"
    )
