"""The HTTP layer: routes, auth, body limits, disconnects; one handler shape for all.

Data flows http (here) → validation (:mod:`.protocol`) → queue (:mod:`.queue`) → batcher
(:mod:`.batcher`) → backend (:mod:`.backend`).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response

from crossrank.reranker import jsonio
from crossrank.reranker.errors import (
    ClientDisconnectedError,
    InvalidRequestError,
    ModelLoadError,
    PayloadTooLargeError,
    UnauthorizedError,
)
from crossrank.reranker.score_cache import ScoreCache
from crossrank.reranker.service.backend import ModelBackend
from crossrank.reranker.service.batcher import Batcher
from crossrank.reranker.service.metrics import CONTENT_TYPE, ServiceMetrics
from crossrank.reranker.service.protocol import (
    Job,
    Limits,
    error_response,
    parse_cohere,
    parse_rerank,
)
from crossrank.reranker.service.queue import REQUEST_DEADLINE, parse_deadline
from crossrank.reranker.service.settings import ServeSettings
from crossrank.reranker.wire import DEADLINE_HEADER

__all__ = ["create_app", "load_backends"]

log = logging.getLogger(__name__)
T = TypeVar("T")
Parse = Callable[[Any, Limits], Job]


def _load(name: str, settings: ServeSettings, cache: ScoreCache | None) -> ModelBackend:
    try:
        return ModelBackend(name, settings.model_config_for(name), cache)
    except Exception as exc:
        raise ModelLoadError(f"cannot load model {name!r}: {exc}") from exc


def load_backends(settings: ServeSettings) -> dict[str, ModelBackend]:
    """Load every model of ``settings`` (blocking), sharing one score cache of
    ``settings.rerank.score_cache_bytes`` (0: none) between them.

    Any failure raises ``ModelLoadError`` ("cannot load model 'NAME': …"), the cause chained.
    """
    size = settings.rerank.score_cache_bytes
    cache = ScoreCache(size) if size > 0 else None
    return {name: _load(name, settings, cache) for name in settings.models}


async def _read_json(request: Request, limit: int) -> Any:
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise PayloadTooLargeError(f"body of {length} bytes exceeds {limit} (max_body_bytes)")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLargeError(f"body exceeds {limit} bytes (max_body_bytes)")
        chunks.append(chunk)
    body = b"".join(chunks)
    if not body.strip():
        raise InvalidRequestError("empty body; expected a JSON object")
    return jsonio.loads(body, what="JSON request body")  # MalformedInputError: 400


async def _until_disconnect(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _unless_disconnected(request: Request, work: Awaitable[T]) -> T:
    """Await ``work``; cancel it (dropping its pairs) if the client disconnects first."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_until_disconnect(request))
    try:
        done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        task.cancel()
        raise
    finally:
        watcher.cancel()
    if task in done:
        return task.result()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    raise ClientDisconnectedError("the client disconnected; its pairs were dropped")


class _Service:
    """One service's state (models, batchers, metrics) and its endpoint handlers."""

    def __init__(self, settings: ServeSettings, models: Mapping[str, ModelBackend]) -> None:
        self.settings, self.models = settings, dict(models)
        self.limits = Limits.of(settings)
        caches = {id(c): c for b in self.models.values() if (c := b.score_cache) is not None}
        self.metrics = ServiceMetrics(score_caches=list(caches.values()))
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="crossrank-forward")
        self.batchers = {
            name: Batcher(
                backend,
                self.metrics,
                self.executor,
                max_pairs=settings.max_queue_pairs,
                batch_tokens=settings.batch_tokens,
                max_wait=settings.max_wait_ms / 1000,
                retry_after=settings.retry_after,
                max_queue_wait=(
                    settings.max_queue_wait_ms / 1000 if settings.max_queue_wait_ms else None
                ),
            )
            for name, backend in self.models.items()
        }
        self.status = "starting"

    @asynccontextmanager
    async def lifespan(self, app: FastAPI) -> AsyncIterator[None]:
        """Start the batchers; on shutdown drain the admitted work, then stop."""
        for batcher in self.batchers.values():
            batcher.start()
        self.status = "ok"
        try:
            yield
        finally:
            self.status = "draining"
            await asyncio.gather(*(b.drain() for b in self.batchers.values()))
            self.executor.shutdown(wait=True)

    def authorize(self, request: Request) -> None:
        key = self.settings.api_key
        if key is None:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            token.strip().encode(), key.encode()
        ):
            raise UnauthorizedError("missing or wrong bearer token")

    async def serve(self, request: Request, endpoint: str, parse: Parse) -> Response:
        """Every scoring endpoint: auth → body → validation → queue → render, or an error."""
        outcome = "ok"
        try:
            self.authorize(request)
            body = await _read_json(request, self.settings.max_body_bytes)
            job = parse(body, self.limits)
            name = job.model or self.settings.default_model
            if name not in self.batchers:
                raise InvalidRequestError(
                    f"unknown model {name!r}; served: {sorted(self.batchers)}"
                )
            REQUEST_DEADLINE.set(parse_deadline(request.headers.get(DEADLINE_HEADER)))
            work = self.batchers[name].score(job.requests, job.check)
            results = await _unless_disconnected(request, work)
            return JSONResponse(job.render(results, name))
        except Exception as exc:
            status, outcome, error, headers = error_response(exc)
            if status >= 500:
                log.error("%s failed: %s", endpoint, exc, exc_info=exc)
            return JSONResponse(error, status, headers)
        finally:
            self.metrics.requests.labels(endpoint, outcome).inc()

    async def health(self) -> Response:
        ok = self.status == "ok"
        return JSONResponse({"status": self.status}, 200 if ok else 503)

    async def info(self) -> Response:
        settings, limits = self.settings, self.limits
        return JSONResponse(
            {
                "default_model": settings.default_model,
                "models": [b.info() for b in self.models.values()],
                "limits": {
                    "max_documents": limits.max_documents,
                    "max_query_chars": limits.max_query_chars,
                    "max_body_bytes": settings.max_body_bytes,
                    "max_queue_pairs": settings.max_queue_pairs,
                    "batch_tokens": settings.batch_tokens,
                    "max_wait_ms": settings.max_wait_ms,
                },
                "auth": settings.api_key is not None,
            }
        )

    async def prometheus(self) -> Response:
        return Response(self.metrics.render(), media_type=CONTENT_TYPE)


async def _http_error(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, StarletteHTTPException) else 500
    kind = "not_found" if status == 404 else "http_error"
    body = {"error": {"type": kind, "reason": str(getattr(exc, "detail", exc))}}
    return JSONResponse({**body, "status": status}, status)


def create_app(
    settings: ServeSettings, backends: Mapping[str, ModelBackend] | None = None
) -> FastAPI:
    """The scorer service app; ``backends`` (already loaded models) or loaded from settings."""
    service = _Service(settings, backends if backends is not None else load_backends(settings))
    app = FastAPI(
        title="crossrank scorer", lifespan=service.lifespan, docs_url=None, redoc_url=None
    )
    app.state.metrics = service.metrics
    app.state.batchers = service.batchers

    async def rerank(request: Request) -> Response:
        return await service.serve(request, "/rerank", parse_rerank)

    async def cohere_v1(request: Request) -> Response:
        return await service.serve(request, "/v1/rerank", lambda b, lim: parse_cohere(b, lim, 1))

    async def cohere_v2(request: Request) -> Response:
        return await service.serve(request, "/v2/rerank", lambda b, lim: parse_cohere(b, lim, 2))

    app.add_api_route("/rerank", rerank, methods=["POST"])
    app.add_api_route("/v1/rerank", cohere_v1, methods=["POST"])
    app.add_api_route("/v2/rerank", cohere_v2, methods=["POST"])
    app.add_api_route("/health", service.health, methods=["GET"])
    app.add_api_route("/info", service.info, methods=["GET"])
    app.add_api_route("/metrics", service.prometheus, methods=["GET"])
    app.add_exception_handler(StarletteHTTPException, _http_error)
    return app
