"""Settings of the scorer service; the model side is the shared :class:`RerankConfig`."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from crossrank.reranker.config import RerankConfig

__all__ = ["ServeSettings"]


class ServeSettings(BaseModel):
    """How ``crossrank serve`` listens, batches and limits.

    ``models`` maps a name (chosen per request by ``model``) to a hub name or path; the first
    is the default. Every model is loaded with ``rerank`` (device, dtype, max_length,
    max_query_tokens, long_documents, cache_size …) with its own ``model`` set, and always
    returns raw model scores: clients apply ``sigmoid`` themselves.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = Field("127.0.0.1", description="address to listen on")
    port: int = Field(8080, ge=0, le=65535, description="port to listen on")
    models: dict[str, str] = Field(min_length=1)
    rerank: RerankConfig = RerankConfig()
    max_queue_pairs: int = Field(
        32_768,
        ge=1,
        description="pairs admitted and not yet scored, over all requests; beyond it: 429",
    )
    batch_tokens: int = Field(
        RerankConfig.model_fields["batch_tokens"].default,
        ge=64,
        description="token budget of one forward pass (rows x padded width), every model",
    )
    max_wait_ms: float = Field(
        5.0, ge=0, description="how long the batcher waits for more pairs before a partial batch"
    )
    max_documents: int = Field(
        10_000, ge=1, description="documents per request, over all its queries; beyond it: 413"
    )
    max_body_bytes: int = Field(
        16 * 1024 * 1024,
        ge=1024,
        description="request body size (Content-Length, checked before reading); beyond it: 413",
    )
    #: bearer token required on the scoring endpoints (none: open)
    api_key: str | None = Field(None, repr=False)
    retry_after: float = Field(1.0, ge=0, description="seconds a 429 asks the client to wait")
    max_queue_wait_ms: float | None = Field(
        None,
        gt=0,
        description="a request expected to wait longer than this in the queue gets 429 at once "
        "(a client's x-crossrank-deadline-ms header can ask for less)",
    )
    threads: int | None = Field(
        None, ge=1, description="CPU threads of the model's forward pass (default: torch's own)"
    )

    @model_validator(mode="after")
    def _check(self) -> ServeSettings:
        if not all(self.models) or not all(self.models.values()):
            raise ValueError("model names and paths must not be empty")
        return self

    @property
    def default_model(self) -> str:
        """The model used when a request names none."""
        return next(iter(self.models))

    def model_config_for(self, name: str) -> RerankConfig:
        """The scorer configuration of model ``name`` (raw scores, the service's budget)."""
        data = {**self.rerank.model_dump(), "model": self.models[name], "sigmoid": False}
        data["batch_tokens"] = self.batch_tokens
        return RerankConfig.model_validate(data)
