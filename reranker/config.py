"""The one configuration shared by the client wrappers, the proxy and the scorers.

It has two halves, also usable on their own:

- :class:`ScorerOptions`: how pairs are encoded and scored (model, device, token budget,
  cache, remote scorer). Fixed per scorer: a search cannot change them.
- :class:`RequestOptions`: what one search reranks and returns (document fields, query
  text, window, threshold, fusion, failure handling). Any search may change them.

:class:`RerankConfig` is both, as every existing ``RerankConfig(...)`` call expects;
:meth:`RerankConfig.with_options` applies a search's options and refuses scorer options.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from crossrank.reranker.errors import RerankOptionsError

__all__ = [
    "REQUEST_FIELDS",
    "SCORER_FIELDS",
    "EnsembleMember",
    "FusionConfig",
    "RequestOptions",
    "RerankConfig",
    "ScorerOptions",
]


class FusionConfig(BaseModel):
    """Fuse the model's score (or an ensemble's signals) with the engine's score.

    ``weighted``: normalise every signal over the window (``normalize``: ``minmax`` or
    ``zscore``), then ``weight * model + (1 - weight) * engine``; an ensemble's members share
    ``weight`` in proportion to their own weights (:func:`crossrank.reranker.ensemble.combine`).
    ``rrf``: reciprocal rank fusion, ``1/(rank_constant + rank)`` summed over every ranking
    (ranks start at 1, as in Elasticsearch's ``rrf`` retriever).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: Literal["weighted", "rrf"] = "weighted"
    weight: float = Field(0.5, ge=0.0, le=1.0)
    normalize: Literal["minmax", "zscore"] = "minmax"
    rank_constant: int = Field(60, ge=1)


class EnsembleMember(BaseModel):
    """One scorer of an ensemble: a model (cross-encoder or bi-encoder), local or remote.

    Every other scorer option (device, dtype, lengths, caches, timeouts) is the enclosing
    configuration's. ``weight``: its share among the members (normalised to sum to 1).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    model: str = Field(min_length=1)
    kind: Literal["auto", "cross-encoder", "bi-encoder"] = "auto"
    scorer_urls: tuple[str, ...] = ()
    scorer_format: Literal["crossrank", "tei", "cohere", "jina"] = "crossrank"
    weight: float = Field(1.0, ge=0.0)

    @classmethod
    def parse(cls, text: str) -> EnsembleMember:
        """A member from its command-line form ``NAME=MODEL[,key=value...]``; keys: ``kind``,
        ``weight``, ``scorer_url`` (repeatable), ``scorer_format``. E.g.
        ``bi=/models/minilm,kind=bi-encoder,weight=0.5``."""
        head, *pairs = text.split(",")
        name, sep, model = head.partition("=")
        if not sep:
            raise ValueError(f"an ensemble member is NAME=MODEL[,key=value...], not {text!r}")
        data: dict[str, Any] = {"name": name.strip(), "model": model.strip()}
        urls: list[str] = []
        for pair in pairs:
            key, sep, value = pair.partition("=")
            key = key.strip()
            if not sep or key not in ("kind", "weight", "scorer_url", "scorer_format"):
                raise ValueError(f"ensemble member {name!r}: unknown option {pair!r}")
            if key == "scorer_url":
                urls.append(value.strip())
            else:
                data[key] = value.strip()
        if urls:
            data["scorer_urls"] = tuple(urls)
        return cls.model_validate(data)


class ScorerOptions(BaseModel):
    """How (query, document) pairs are encoded and scored; fixed per scorer."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # model
    model: str = "cross-encoder/ms-marco-MiniLM-L6-v2"
    # cross-encoder (sequence classification) or bi-encoder (sentence embeddings, cosine);
    # auto: read from the checkpoint's files
    kind: Literal["auto", "cross-encoder", "bi-encoder"] = "auto"
    # several scorers whose normalised scores are combined (``model`` is then unused);
    # names must differ and must not be "engine"
    ensemble: tuple[EnsembleMember, ...] = ()
    device: str = "auto"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    sigmoid: bool = False
    # truncation; a query text longer than ``max_query_chars`` is refused (400), not cut
    max_query_tokens: int = Field(64, ge=1)
    max_query_chars: int = Field(8192, ge=1)
    max_length: int | None = Field(None, ge=8)
    long_documents: Literal["truncate", "passages"] = "truncate"
    passage_overlap: int = Field(32, ge=0)
    max_passages: int = Field(8, ge=1)
    # batching and caching (the document token cache is bounded in entries and in bytes)
    batch_tokens: int = Field(16384, ge=64)
    cache_size: int = Field(50_000, ge=0)
    cache_bytes: int = Field(256 * 1024 * 1024, ge=0)
    # score cache: (model instance, settings, caps, query, document) -> score; 0: off
    score_cache_bytes: int = Field(64 * 1024 * 1024, ge=0)
    # seconds a search waits for the model to load; the load goes on in the background,
    # the search answers in engine order (flagged), a failed load is retried after a back-off
    load_timeout: float = Field(10.0, ge=0)
    # remote scorer: when ``scorer_urls`` is set, pairs are scored over HTTP instead of locally
    scorer_urls: tuple[str, ...] = ()
    scorer_format: Literal["crossrank", "tei", "cohere", "jina"] = "crossrank"
    scorer_api_key: str | None = Field(None, repr=False)
    # latency budget of a remote score call: ``scorer_timeout`` bounds the whole call, retries
    # and back-off included (a search user accepts about a second; 0.8 s stays inside the
    # proxy's 1 s budget, so the client itself sees a scorer that does not answer and opens its
    # circuit); one retry fits in it (connecting takes at most 0.2 s)
    scorer_connect_timeout: float = Field(0.2, gt=0)
    scorer_timeout: float = Field(0.8, gt=0)
    scorer_retries: int = Field(1, ge=0)
    # a calibration file (``crossrank calibrate``) for a remote scorer's raw scores; local
    # scorers read the ``calibration.json`` saved beside their model
    calibration: str | None = None

    @model_validator(mode="after")
    def _check_ensemble(self) -> ScorerOptions:
        names = [m.name for m in self.ensemble]
        if len(set(names)) != len(names) or "engine" in names:
            raise ValueError("ensemble member names must be distinct and not 'engine'")
        if self.ensemble and not any(m.weight > 0 for m in self.ensemble):
            raise ValueError("at least one ensemble member needs a positive weight")
        return self


class RequestOptions(BaseModel):
    """What one search reranks and returns: document text, query text, window, output.

    Document side: ``fields`` (names or dotted paths; arrays are joined) or a ``template``
    such as ``"{title}\\n{body}"``, read from the hit's ``_source``, ``fields`` or
    ``highlight`` (``source``). Query side: ``query_text`` or extracted from the query.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    # inputs
    fields: tuple[str, ...] = ("title", "text")
    template: str | None = None
    source: Literal["_source", "fields", "highlight"] = "_source"
    field_separator: str = "\n"
    query_text: str | None = None
    # window and output
    window: int = Field(100, ge=1, le=10_000)
    # calibrated: the model's score is its calibrated P(relevant) (the model needs a
    # calibration, ``crossrank calibrate``), so ``min_score`` is a probability
    calibrated: bool = False
    min_score: float | None = None
    fusion: FusionConfig | None = None
    # failure handling: engine order, flagged, or the error raised to the caller
    on_scorer_error: Literal["fallback", "raise"] = "fallback"

    @model_validator(mode="after")
    def _check(self) -> RequestOptions:
        if not self.fields and self.template is None:
            raise ValueError("set 'fields' or 'template' to choose the document text")
        return self


#: Settings that belong to the scorer (how pairs are encoded and scored), fixed per scorer.
SCORER_FIELDS = frozenset(ScorerOptions.model_fields)
#: Settings a search may change.
REQUEST_FIELDS = frozenset(RequestOptions.model_fields)


class RerankConfig(RequestOptions, ScorerOptions):
    """How hits are turned into cross-encoder inputs, scored and re-ordered: the request
    options (:class:`RequestOptions`) and the scorer's (:class:`ScorerOptions`) together."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @property
    def scorer_options(self) -> ScorerOptions:
        """The scorer half."""
        return ScorerOptions.model_validate(self.model_dump(include=set(SCORER_FIELDS)))

    @property
    def request_options(self) -> RequestOptions:
        """The request half."""
        return RequestOptions.model_validate(self.model_dump(include=set(REQUEST_FIELDS)))

    def with_options(self, options: RerankConfig | dict[str, Any] | None) -> RerankConfig:
        """Return a copy with per-call ``options`` applied (validated like the original)."""
        if options is None:
            return self
        data = options.model_dump(exclude_unset=True) if isinstance(options, BaseModel) else options
        fixed = sorted(set(data) & SCORER_FIELDS)
        changed = [k for k in fixed if data[k] != getattr(self, k)]
        if changed:
            raise RerankOptionsError(
                f"rerank options {changed} belong to the scorer and cannot change per call; "
                "configure them on the scorer"
            )
        try:
            return RerankConfig.model_validate({**self.model_dump(), **data})
        except ValidationError as exc:
            raise RerankOptionsError(f"invalid rerank options: {exc}") from exc
