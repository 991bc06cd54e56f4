"""A wrapper search reranked by Infinity (``infinity-emb``, a peer rerank server) through
``RemoteScorer`` in the ``cohere`` format, against the local scorer on the same checkpoint.

Infinity runs from ``.venv-infinity`` (``make infinity``, part of ``make setup``) and serves a
tiny random cross-encoder from a temp dir, with no hub. Its ``/rerank`` is Cohere's shape
(``--url-prefix /v1`` gives ``/v1/rerank``) and its ``relevance_score`` is ``sigmoid(raw)``:
the order must be the local scorer's, the scores the sigmoid of the local ones.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from crossrank.reranker import LocalScorer, RerankConfig

from .conftest import INDEX, REPO
from .helpers import body_of, ids, scores

sys.path.insert(0, str(REPO / "benchmarks"))
from bench_peers import InfinityServer

QUERY = {"match": {"text": "information retrieval systems for documents and indexing"}}
WINDOW = 15


@pytest.fixture(scope="module")
def spread_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random cross-encoder whose scores differ enough between documents that the
    sigmoid Infinity applies keeps them apart in fp32 (classifier weights x 100, no bias)."""
    import torch
    from transformers import AutoModelForSequenceClassification

    from conftest import build_tiny_model

    path = build_tiny_model(tmp_path_factory.mktemp("infinity-ce"), seed=3)
    model = AutoModelForSequenceClassification.from_pretrained(path)
    with torch.no_grad():
        model.classifier.weight.mul_(100.0)
        model.classifier.bias.zero_()
    model.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def infinity(spread_model: Path) -> Iterator[InfinityServer]:
    server = InfinityServer(spread_model, device="cpu", dtype="float32").start()
    yield server
    server.stop()


def config(model: Path, **kw: Any) -> RerankConfig:
    return RerankConfig(
        model=str(model), dtype="float32", device="cpu", fields=("title", "text"),
        window=WINDOW, **kw,
    )


def test_infinity_reranks_in_the_local_scorer_order(
    engine: Any, infinity: InfinityServer, spread_model: Path
) -> None:
    body = {"query": QUERY, "size": WINDOW}
    local = body_of(
        engine.client(rerank=config(spread_model), scorer=LocalScorer(config(spread_model)))
        .search(index=INDEX, body=body)
    )
    remote_cfg = config(
        spread_model, scorer_urls=(infinity.url,), scorer_format="cohere", scorer_timeout=30.0
    )
    remote = body_of(engine.client(rerank=remote_cfg).search(index=INDEX, body=body))
    assert "fallback" not in remote["_rerank"], remote["_rerank"]
    assert remote["_rerank"]["reranked"] == WINDOW
    engine_ids = [h["_id"] for h in engine.raw_search(body)["hits"]["hits"]]
    assert ids(local) != engine_ids  # the reranking changed something to agree on
    assert ids(remote) == ids(local)
    local_scores = scores(local)
    assert len(set(local_scores)) == len(local_scores)
    # Infinity's relevance is sigmoid(raw): the local raw scores, squashed.
    assert scores(remote) == pytest.approx(
        [1.0 / (1.0 + math.exp(-s)) for s in local_scores], abs=1e-5
    )
