"""``crossrank serve`` as a real process on loopback, and RemoteScorer against it.

No engine, so a unit test: run once, not in each integration pass.
"""

from __future__ import annotations

import asyncio
import json
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from crossrank.adapters.processes import CrossrankProcess, free_port
from crossrank.reranker import LocalScorer, RerankConfig, ScoreRequest, ScorerError
from crossrank.reranker.remote import RemoteScorer

KEY = "s3cret"
#: exit statuses of a drained shutdown (uvicorn re-raises SIGTERM after draining)
GRACEFUL = (0, -signal.SIGTERM)
AUTH = {"Authorization": f"Bearer {KEY}"}
QUERY = "boundary layer flow"
DOCS = ["the boundary layer over a flat plate", "heat transfer to a cylinder", "", "flow " * 700]


class ScorerProcess(CrossrankProcess):
    """``crossrank serve ARGS`` on loopback, with its metrics at hand."""

    def __init__(self, args: list[str], port: int | None = None) -> None:
        super().__init__("serve", [*args, "--log-level", "warning"], port=port)

    def metric(self, name: str, **labels: str) -> float:
        """The sum of a metric's samples (``name`` as exposed) matching ``labels``."""
        text = httpx.get(self.url + "/metrics", timeout=5).text
        return sum(
            s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
        )


def fresh_docs(n: int, tag: str, words: int = 120) -> list[str]:
    """Documents the service has not tokenized yet (no cache hits)."""
    return [
        f"{tag} {i} " + " ".join(f"w{(i * 7 + j) % 997}{tag}" for j in range(words))
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def service(
    tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ScorerProcess]:
    key_file = tmp_path_factory.mktemp("secrets") / "api-key"
    key_file.write_text(f"{KEY}\n")  # a file, so the key stays out of `ps`
    args = ["--model", f"tiny={tiny_model_dir}", "--model", f"twin={tiny_model_dir}"]
    args += ["--dtype", "float32", "--api-key-file", str(key_file), "--max-queue-pairs", "200"]
    args += ["--max-documents", "1000", "--batch-tokens", "2048", "--max-wait-ms", "20"]
    args += ["--max-body-bytes", "2000000"]
    proc = ScorerProcess(args).start()
    yield proc
    assert proc.stop() in GRACEFUL


#: how long the ``held`` service keeps a request's pairs queued before scoring them: the
#: margin its tests need, not a speed they assume (each step they take is milliseconds)
HOLD_MS = 3000


@pytest.fixture(scope="module")
def held(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScorerProcess]:
    """A service whose batcher waits HOLD_MS for more pairs (its token budget is never
    filled): work stays queued long enough to overload it, leave it, or share a batch."""
    key_file = tmp_path_factory.mktemp("held") / "api-key"
    key_file.write_text(f"{KEY}\n")
    args = ["--model", f"tiny={tiny_model_dir}", "--dtype", "float32"]
    args += ["--api-key-file", str(key_file), "--max-queue-pairs", "200"]
    args += ["--max-documents", "1000", "--batch-tokens", "1000000"]
    args += ["--max-wait-ms", str(HOLD_MS), "--max-body-bytes", "2000000"]
    proc = ScorerProcess(args).start()
    yield proc
    assert proc.stop() in GRACEFUL


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    """Poll ``condition``, sleeping in between; fail after a generous ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout}s: {what}"
        time.sleep(0.02)


async def await_until(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    """:func:`wait_until` without blocking the event loop."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout}s: {what}"
        await asyncio.sleep(0.02)


def idle(proc: ScorerProcess) -> None:
    """Wait until ``proc`` has no pairs pending (an earlier test's may still be queued)."""
    wait_until(lambda: proc.metric("crossrank_queue_pairs", model="tiny") == 0, "idle")


def remote(proc: ScorerProcess, **kw: Any) -> RemoteScorer:
    # a generous deadline: these tests check answers, not speed (the default is 1 s)
    config = {"scorer_timeout": 30.0, **kw}
    return RemoteScorer(RerankConfig(scorer_urls=(proc.url,), scorer_api_key=KEY, **config))


def local(path: Path) -> LocalScorer:
    return LocalScorer(RerankConfig(model=str(path), dtype="float32"))


async def test_remote_scores_equal_local(service: ScorerProcess, tiny_model_dir: Path) -> None:
    requests = [ScoreRequest(QUERY, DOCS), ScoreRequest("heat", ["x", "heat"])]
    expected = local(tiny_model_dir).score(requests)
    for kw in ({}, {"model": "twin"}, {"scorer_format": "tei"}):
        scorer = remote(service, **kw)
        for got in (scorer.score(requests), await scorer.ascore(requests)):
            assert [g.scores for g in got] == [
                pytest.approx(e.scores, abs=1e-5) for e in expected
            ], kw
        await scorer.aclose()
    got = remote(service).score(requests)
    assert got[0].truncated == 1 and got[0].model == "tiny"
    probs = remote(service, scorer_format="cohere", model="tiny").score(requests)
    assert all(0 < s < 1 for r in probs for s in r.scores)
    ranks = sorted(range(4), key=lambda i: -expected[0].scores[i])
    assert sorted(range(4), key=lambda i: -probs[0].scores[i]) == ranks


async def test_concurrent_clients_share_forward_passes(held: ScorerProcess) -> None:
    idle(held)
    before = held.metric("crossrank_forward_passes_total", model="tiny")
    async with httpx.AsyncClient(base_url=held.url, headers=AUTH, timeout=60) as client:
        bodies = [{"query": f"q {i}", "texts": fresh_docs(4, f"c{i}", 20)} for i in range(16)]
        replies = await asyncio.gather(*(client.post("/rerank", json=b) for b in bodies))
    assert [r.status_code for r in replies] == [200] * 16
    passes = held.metric("crossrank_forward_passes_total", model="tiny") - before
    assert 1 <= passes < 16
    assert held.metric("crossrank_batch_pairs_count", model="tiny") > 0


async def test_overload_gives_429_then_recovers(held: ScorerProcess) -> None:
    idle(held)
    pending = lambda: held.metric("crossrank_queue_pairs", model="tiny")  # noqa: E731
    async with httpx.AsyncClient(base_url=held.url, headers=AUTH, timeout=60) as client:
        body = {"query": "q", "texts": fresh_docs(1000, "over", 12)}
        big = asyncio.ensure_future(client.post("/rerank", json=body))
        # admitted alone although over the limit, then held in the queue for HOLD_MS
        await await_until(lambda: pending() > 200 or big.done(), "the big request queued")
        assert not big.done()
        busy = await client.post("/rerank", json={"query": "q", "texts": ["small"]})
        assert busy.status_code == 429, busy.text
        assert busy.headers["retry-after"] == "1"
        assert busy.json()["error"]["type"] == "overloaded"
        assert (await big).status_code == 200
        after = await client.post("/rerank", json={"query": "q", "texts": ["small"]})
        assert after.status_code == 200
    assert held.metric("crossrank_requests_total", outcome="overloaded") >= 1


async def test_client_disconnect_drops_its_work(held: ScorerProcess) -> None:
    idle(held)
    dropped = lambda: held.metric("crossrank_pairs_dropped_total", model="tiny")  # noqa: E731
    gone = lambda: held.metric("crossrank_requests_total", outcome="disconnected")  # noqa: E731
    before, gone_before = dropped(), gone()
    body = json.dumps({"query": "q", "texts": fresh_docs(50, "gone", 20)}).encode()
    head = (
        f"POST /rerank HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {KEY}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    _reader, writer = await asyncio.open_connection("127.0.0.1", held.port)
    writer.write(head.encode() + body)
    await writer.drain()
    # its pairs are queued, and held there for HOLD_MS: now the client goes away
    await await_until(lambda: held.metric("crossrank_queue_pairs", model="tiny") > 0, "queued")
    writer.close()
    await writer.wait_closed()
    await await_until(lambda: gone() > gone_before, "the service saw the disconnect")
    await await_until(lambda: dropped() - before == 50, "its 50 pairs were dropped")
    assert httpx.get(held.url + "/health").status_code == 200


def test_bad_inputs_are_errors_and_the_service_stays_up(
    service: ScorerProcess, tiny_model_dir: Path
) -> None:
    with httpx.Client(base_url=service.url, headers=AUTH) as c:
        cases = [
            (c.post("/rerank", content=b"{oops"), 400, "JSON"),
            (
                c.post("/rerank", json={"requests": [{"query": "q", "documents": []}]}),
                400,
                "non-empty",
            ),
            (
                c.post("/v1/rerank", json={"query": "q", "documents": ["a"] * 1001}),
                413,
                "max_documents",
            ),
            (c.post("/rerank", content=b"x" * 2_100_000), 413, "max_body_bytes"),
            (c.post("/rerank", content=b'{"query": "\\ud800", "texts": ["a"]}'), 400, "Unicode"),
            (c.post("/rerank", content=b"[" * 100_000), 400, "nesting depth"),
            (c.post("/rerank", json={"query": "q" * 9000, "texts": ["a"]}), 400, "max_query_chars"),
            (
                c.post(
                    "/rerank", json={"query": "q", "texts": ["a"]}, headers={"Authorization": "x"}
                ),
                401,
                "token",
            ),
        ]
        for response, status, words in cases:
            assert response.status_code == status
            assert (
                response.json()["status"] == status and words in response.json()["error"]["reason"]
            )
        assert c.post("/rerank", json={"query": "q", "texts": ["a"]}).status_code == 200
        info = c.get("/info")
        assert [m["name"] for m in info.json()["models"]] == ["tiny", "twin"]
        assert info.json()["limits"]["max_documents"] == 1000
        assert str(tiny_model_dir) not in info.text  # served names only, no paths
    assert service.proc is not None and KEY not in " ".join(map(str, service.proc.args))
    scorer = remote(service, model="nope")
    with pytest.raises(ScorerError, match="unknown model"):
        scorer.score([ScoreRequest("q", ["a"])])


def test_kill_breaker_restart_and_graceful_drain(tiny_model_dir: Path) -> None:
    port = free_port()
    args = ["--model", str(tiny_model_dir), "--dtype", "float32", "--batch-tokens", "1024"]
    proc = ScorerProcess(args, port).start()
    cfg = RerankConfig(scorer_urls=(proc.url,), scorer_timeout=3.0, scorer_retries=1)
    scorer = RemoteScorer(cfg, breaker_threshold=2, breaker_cooldown=1.0)
    request = [ScoreRequest("q", ["a", "b"])]
    try:
        assert len(scorer.score(request)[0].scores) == 2
        # graceful shutdown: work in flight when SIGTERM arrives is finished
        out: dict[str, Any] = {}
        body = {"query": "q", "texts": fresh_docs(200, "drain", 40)}
        thread = threading.Thread(
            target=lambda: out.setdefault(
                "r", httpx.post(proc.url + "/rerank", json=body, timeout=60)
            )
        )
        thread.start()
        # SIGTERM once the request is admitted (or, on a fast machine, already answered)
        wait_until(
            lambda: proc.metric("crossrank_queue_pairs") > 0 or not thread.is_alive(),
            "the request reached the service",
        )
        proc.stop(signal.SIGTERM)
        thread.join()
        assert out["r"].status_code == 200 and len(out["r"].json()) == 200
        assert proc.proc is not None and proc.proc.returncode in GRACEFUL
        # the scorer is gone: connection refused, retried, then the circuit opens
        with pytest.raises(ScorerError) as info:
            scorer.score(request)
        assert isinstance(info.value.__cause__, httpx.ConnectError)
        assert scorer.balancer.state(0, time.monotonic()) == "open"
        with pytest.raises(ScorerError, match="circuit is open"):
            scorer.score(request)
        proc.start()  # back on the same port; half-open after the cool-down, then closed
        time.sleep(1.0)
        assert len(scorer.score(request)[0].scores) == 2
        assert scorer.balancer.failures == [0]
    finally:
        proc.stop(signal.SIGKILL)
        scorer.close()
