"""What every wrapped client shares: its rerank state, and the engine I/O of one call."""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any, TypeAlias

from crossrank.adapters.core.flow import (
    PASSTHROUGH,
    EngineCall,
    Flow,
    msearch_flow,
    run_async,
    run_sync,
    search_flow,
)
from crossrank.reranker.config import RerankConfig
from crossrank.reranker.loader import ScorerLoader
from crossrank.reranker.scoring import (
    Scorer,
    ScoreRequest,
    ScoreResult,
    make_scorer,
    scorer_name,
)

__all__ = [
    "AsyncReranking",
    "EngineCalls",
    "RerankOption",
    "RerankState",
    "RerankingClient",
    "SyncReranking",
]

#: Per-call control: ``None`` (client defaults), ``False`` (off), a dict or a config.
RerankOption: TypeAlias = bool | dict[str, Any] | RerankConfig | None


class RerankState:
    """A client's default :class:`RerankConfig` and its scorer, given or loaded on first use.

    A search waits for the loading model at most ``config.load_timeout`` seconds, then
    answers in engine order (flagged) while the load goes on; a failed load is remembered
    and retried after a back-off (:class:`~crossrank.reranker.loader.ScorerLoader`).
    """

    def __init__(self, config: RerankConfig | dict[str, Any] | None, scorer: Scorer | None) -> None:
        if isinstance(config, dict):
            config = RerankConfig.model_validate(config)
        cfg: RerankConfig = config or RerankConfig()
        self.config = cfg
        self._given = scorer
        self.loader = ScorerLoader(lambda: make_scorer(cfg), name=scorer_name(cfg))

    @property
    def scorer(self) -> Scorer:
        """The scorer (waits for the load; raises ``ModelLoadError`` when it failed)."""
        return self._given or self.loader.get(None)

    @property
    def name(self) -> str:
        name: str = self.scorer.name
        return name

    def score(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        """Score with the scorer, loaded on first use: passthrough calls never load a model."""
        scorer = self._given or self.loader.get(self.config.load_timeout)
        results: list[ScoreResult] = scorer.score(requests)
        return results

    async def ascore(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        """Async :meth:`score` (waiting for a load does not block the event loop)."""
        scorer = self._given or await self.loader.aget(self.config.load_timeout)
        results: list[ScoreResult] = await scorer.ascore(requests)
        return results

    def config_for(self, option: RerankOption) -> RerankConfig:
        """The configuration of one call."""
        if option is None or option is True:
            return self.config
        if option is False:
            return self.config.model_copy(update={"enabled": False})
        return self.config.with_options(option)


class EngineCalls:
    """The engine I/O of one wrapped call.

    ``original`` is the caller's keyword arguments, sent as they are for passthrough;
    ``rest`` is what accompanies a rewritten body. Keeps the last response so the result
    can be returned as the client's own response type.
    """

    #: The client's keyword for each engine URL parameter the flow may ask to drop.
    url_names: dict[str, str] = {}  # noqa: RUF012 (read-only class table)

    def __init__(
        self, method: Any, original: dict[str, Any], rest: dict[str, Any], body_arg: str = "body"
    ) -> None:
        self.method, self.original, self.rest, self.body_arg = method, original, rest, body_arg
        self.last: Any = None

    def _args(self, call: EngineCall) -> dict[str, Any]:
        if call.original:
            return self.original
        drop = set(call.drop_params)
        args = {k: v for k, v in self.rest.items() if self.url_names.get(k, k) not in drop}
        if isinstance(args.get("params"), dict):
            params = args["params"]
            args["params"] = {
                k: v for k, v in params.items() if self.url_names.get(k, k) not in drop
            }
        return {**args, self.body_arg: call.body}

    def body_of(self, response: Any) -> Any:
        """The JSON body of a client response (the response itself for plain dicts)."""
        return response

    def wrap(self, body: dict[str, Any], response: Any) -> Any:
        """A rewritten body in the client's response type."""
        return body

    def sync(self, call: EngineCall) -> Any:
        self.last = self.method(**self._args(call))
        return self.body_of(self.last)

    async def async_(self, call: EngineCall) -> Any:
        self.last = await self.method(**self._args(call))
        return self.body_of(self.last)

    def result(self, out: Any) -> Any:
        """The engine's own response for passthrough, else the rewritten one."""
        return self.last if out is PASSTHROUGH else self.wrap(out, self.last)


class RerankingClient:
    """Mixin: reranking state and the flows of ``search``/``msearch``.

    A client module supplies how its call's keyword arguments split into body, URL
    parameters and the rest (``_split_search``, ``_split_msearch``) and its ``_calls`` type.
    """

    _rerank: RerankState
    _calls: type[EngineCalls] = EngineCalls

    def __init__(
        self,
        *args: Any,
        rerank: RerankConfig | dict[str, Any] | None = None,
        scorer: Scorer | None = None,
        **kwargs: Any,
    ) -> None:
        """The official client's constructor, plus ``rerank=`` and ``scorer=``."""
        super().__init__(*args, **kwargs)
        self._rerank = RerankState(rerank, scorer)

    @property
    def rerank_config(self) -> RerankConfig:
        """The client's default rerank configuration."""
        return self._rerank.config

    @property
    def scorer(self) -> Scorer:
        """The client's scorer."""
        return self._rerank.scorer

    @staticmethod
    def _split_search(kwargs: dict[str, Any]) -> tuple[Any, dict[str, Any], dict[str, Any]]:
        """(body, URL parameters by engine name, arguments to send with a rewritten body)."""
        raise NotImplementedError

    @staticmethod
    def _split_msearch(kwargs: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        """(body, arguments to send with a rewritten body)."""
        raise NotImplementedError

    def _search_flow(
        self, method: Any, rerank: RerankOption, kwargs: dict[str, Any]
    ) -> tuple[Flow, EngineCalls]:
        body, params, rest = self._split_search(kwargs)
        flow = search_flow(body, params, self._rerank.config_for(rerank))
        return flow, self._calls(method, kwargs, rest)

    def _msearch_flow(
        self, method: Any, rerank: RerankOption, kwargs: dict[str, Any]
    ) -> tuple[Flow, EngineCalls]:
        body, rest = self._split_msearch(kwargs)
        flow = msearch_flow(body, self._rerank.config_for(rerank))
        return flow, self._calls(method, kwargs, rest)


def as_keywords(method: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """The call's arguments as keywords, accepted exactly as the official ``method`` accepts
    them: positional ones only where its signature has positional parameters (opensearch-py
    2's ``search(body, index)``); otherwise the ``TypeError`` Python would raise."""
    if not args:
        return kwargs
    positional = [
        p.name
        for p in inspect.signature(method).parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name != "self"
    ]
    name = getattr(method, "__name__", "search")
    if len(args) > len(positional):
        raise TypeError(
            f"{name}() takes {len(positional) + 1} positional arguments but "
            f"{len(args) + 1} were given"
        )
    out = dict(kwargs)
    for param, value in zip(positional, args):
        if param in out:
            raise TypeError(f"{name}() got multiple values for argument '{param}'")
        out[param] = value
    return out


class SyncReranking(RerankingClient):
    """Mixin for a sync client class: ``rerank=``/``scorer=`` and reranking search/msearch.

    Place it before the official client class; ``super()`` reaches the client's own methods.
    """

    def search(self, *args: Any, rerank: RerankOption = None, **kwargs: Any) -> Any:
        """The client's ``search``, reranked: ``rerank=False`` turns it off for this call,
        a dict of :class:`RerankConfig` options overrides the client's for this call."""
        method = super().search  # type: ignore[misc]
        kwargs = as_keywords(method, args, kwargs)
        flow, calls = self._search_flow(method, rerank, kwargs)
        return calls.result(run_sync(flow, calls.sync, self._rerank))

    def msearch(self, *args: Any, rerank: RerankOption = None, **kwargs: Any) -> Any:
        """The client's ``msearch``, reranked; the pairs of all items are scored together."""
        method = super().msearch  # type: ignore[misc]
        kwargs = as_keywords(method, args, kwargs)
        flow, calls = self._msearch_flow(method, rerank, kwargs)
        return calls.result(run_sync(flow, calls.sync, self._rerank))


class AsyncReranking(RerankingClient):
    """Mixin for an async client class; the async twin of :class:`SyncReranking`."""

    async def search(self, *args: Any, rerank: RerankOption = None, **kwargs: Any) -> Any:
        """The client's ``search``, reranked (see :meth:`SyncReranking.search`)."""
        method = super().search  # type: ignore[misc]
        kwargs = as_keywords(method, args, kwargs)
        flow, calls = self._search_flow(method, rerank, kwargs)
        return calls.result(await run_async(flow, calls.async_, self._rerank))

    async def msearch(self, *args: Any, rerank: RerankOption = None, **kwargs: Any) -> Any:
        """The client's ``msearch``, reranked; the pairs of all items are scored together."""
        method = super().msearch  # type: ignore[misc]
        kwargs = as_keywords(method, args, kwargs)
        flow, calls = self._msearch_flow(method, rerank, kwargs)
        return calls.result(await run_async(flow, calls.async_, self._rerank))
