"""The bi-encoder scorer against direct embeddings: pooling, normalization, truncation, the
document-vector cache, kind detection, make_scorer and the scorer service."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch

from conftest import minilm_dir, tiny_bert_config
from crossrank.reranker import BiEncoderScorer, LocalScorer, RerankConfig, ScoreRequest, make_scorer
from crossrank.reranker.errors import UnsupportedModelError
from crossrank.reranker.local import checkpoint_kind, resolve_kind
from crossrank.reranker.local.bi_encoder import ENTRY_OVERHEAD, EmbeddingCache, read_pooling
from crossrank.reranker.service import ServeSettings, create_app, load_backends
from crossrank.reranker.service.backend import BiEncoderBackend, ModelBackend

QUERY = "boundary layer flow"
DOCS = [
    "the boundary layer over a flat plate in supersonic flow",
    "heat transfer to a cylinder",
    "Über naïve café – 日本語 🚀",
    "flow " * 700,
    "",
]


def build_bi_encoder(
    path: Path,
    *,
    pooling: dict[str, Any] | None = None,
    normalize: bool = True,
    st_files: bool = True,
    max_seq_length: int | None = None,
    seed: int = 0,
) -> Path:
    """A tiny random BertModel with the MiniLM tokenizer, saved like sentence-transformers
    saves one (``modules.json``, ``1_Pooling/config.json``, ``2_Normalize``) or bare."""
    from transformers import AutoTokenizer, BertModel

    tokenizer = AutoTokenizer.from_pretrained(minilm_dir())
    torch.manual_seed(seed)
    BertModel(tiny_bert_config(tokenizer)).save_pretrained(path)
    tokenizer.save_pretrained(path)
    if not st_files:
        return path
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {
            "idx": 1,
            "name": "1",
            "path": "1_Pooling",
            "type": "sentence_transformers.models.Pooling",
        },
    ]
    if normalize:
        modules.append(
            {
                "idx": 2,
                "name": "2",
                "path": "2_Normalize",
                "type": "sentence_transformers.models.Normalize",
            }
        )
        (path / "2_Normalize").mkdir()
    (path / "modules.json").write_text(json.dumps(modules))
    (path / "1_Pooling").mkdir()
    mode = pooling or {"word_embedding_dimension": 32, "pooling_mode_mean_tokens": True}
    (path / "1_Pooling" / "config.json").write_text(json.dumps(mode))
    if max_seq_length is not None:
        st = {"max_seq_length": max_seq_length, "do_lower_case": False}
        (path / "sentence_bert_config.json").write_text(json.dumps(st))
    return path


@pytest.fixture(scope="module")
def bi_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Mean pooling, normalized (all-MiniLM-L6-v2's layout)."""
    return build_bi_encoder(tmp_path_factory.mktemp("tiny-bi"))


def n_tokens(text: str) -> int:
    from transformers import AutoTokenizer

    return len(AutoTokenizer.from_pretrained(minilm_dir()).tokenize(text))


def first_tokens(text: str, n: int) -> str:
    """The text of the first ``n`` tokens of ``text`` (ASCII, lower case: it round-trips)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(minilm_dir())
    return str(tok.convert_tokens_to_string(tok.tokenize(text)[:n]))


def scorer(path: Path, **kw: Any) -> BiEncoderScorer:
    return BiEncoderScorer(RerankConfig(model=str(path), dtype="float32", **kw))


def direct_embeddings(
    path: Path, texts: list[str], *, mode: str = "mean", normalize: bool = True, max_length: int
) -> np.ndarray:
    """Embeddings straight from transformers: the tokenizer's own encoding, the model's last
    hidden state, the pooling written out by hand."""
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path).eval()
    enc = tok(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    with torch.inference_mode():
        hidden = model(**enc).last_hidden_state
    mask = enc["attention_mask"].unsqueeze(-1).float()
    if mode == "cls":
        vectors = hidden[:, 0]
    else:
        vectors = (hidden * mask).sum(1) / mask.sum(1)
    if normalize:
        vectors = vectors / vectors.norm(dim=1, keepdim=True)
    out: np.ndarray = vectors.numpy()
    return out


def test_scores_equal_a_direct_mean_pooled_cosine(bi_dir: Path) -> None:
    s = scorer(bi_dir)
    (result,) = s.score([ScoreRequest(QUERY, DOCS)])
    emb = direct_embeddings(bi_dir, [QUERY, *DOCS], max_length=512)
    assert result.scores == pytest.approx((emb[1:] @ emb[0]).tolist(), abs=1e-5)
    assert (result.truncated, result.split, result.query_truncated) == (1, 0, False)
    assert result.model == str(bi_dir)
    info = s.describe()
    assert info["pooling"] == "mean" and info["normalize"] is True and info["max_length"] == 512
    assert all(-1 - 1e-6 <= x <= 1 + 1e-6 for x in result.scores)  # cosines


def test_cls_pooling_is_read_from_the_pooling_config(tmp_path: Path) -> None:
    path = build_bi_encoder(
        tmp_path / "cls",
        pooling={"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False},
        normalize=False,
    )
    assert read_pooling(path).modes == ("cls",) and not read_pooling(path).normalize
    (result,) = scorer(path).score([ScoreRequest(QUERY, DOCS[:3])])
    emb = direct_embeddings(path, [QUERY, *DOCS[:3]], mode="cls", normalize=False, max_length=512)
    assert result.scores == pytest.approx((emb[1:] @ emb[0]).tolist(), abs=1e-5)


def test_mean_pooling_without_any_sentence_transformers_file(tmp_path: Path) -> None:
    path = build_bi_encoder(tmp_path / "bare", st_files=False)
    assert not (path / "modules.json").exists()
    pooling = read_pooling(path)
    assert (pooling.modes, pooling.normalize, pooling.max_seq_length) == (("mean",), False, None)
    (result,) = scorer(path).score([ScoreRequest(QUERY, DOCS[:3])])
    emb = direct_embeddings(path, [QUERY, *DOCS[:3]], normalize=False, max_length=512)
    assert result.scores == pytest.approx((emb[1:] @ emb[0]).tolist(), abs=1e-4)


def test_other_pooling_modes_and_unsupported_modules(tmp_path: Path) -> None:
    both = build_bi_encoder(
        tmp_path / "both", pooling={"pooling_mode": ["cls", "mean"]}, normalize=False
    )
    s = scorer(both)
    assert s.dimension == 64
    (result,) = s.score([ScoreRequest(QUERY, DOCS[:2])])
    cls = direct_embeddings(both, [QUERY, *DOCS[:2]], mode="cls", normalize=False, max_length=512)
    mean = direct_embeddings(both, [QUERY, *DOCS[:2]], normalize=False, max_length=512)
    want = cls[1:] @ cls[0] + mean[1:] @ mean[0]
    assert result.scores == pytest.approx(want.tolist(), abs=1e-4)
    dense = tmp_path / "dense"
    dense.mkdir()
    (dense / "modules.json").write_text(
        json.dumps([{"path": "2_Dense", "type": "sentence_transformers.models.Dense"}])
    )
    with pytest.raises(UnsupportedModelError, match="Dense"):
        read_pooling(dense)


def test_max_seq_length_from_sentence_bert_config(tmp_path: Path) -> None:
    path = build_bi_encoder(tmp_path / "short", max_seq_length=16)
    s = scorer(path)
    assert s.max_length == 16
    (result,) = s.score([ScoreRequest(QUERY, DOCS)])
    emb = direct_embeddings(path, [QUERY, *DOCS], max_length=16)
    assert result.scores == pytest.approx((emb[1:] @ emb[0]).tolist(), abs=1e-5)
    assert result.truncated == sum(n_tokens(d) > 14 for d in DOCS)
    assert scorer(path, max_length=64).max_length == 64  # an explicit setting wins


def test_kind_is_read_from_the_checkpoint(
    bi_dir: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    assert checkpoint_kind(str(bi_dir)) == "bi-encoder"
    assert checkpoint_kind(str(tiny_model_dir)) == "cross-encoder"
    bare = build_bi_encoder(tmp_path / "bare", st_files=False)  # BertModel, no head
    assert checkpoint_kind(str(bare)) == "bi-encoder"
    assert checkpoint_kind(str(minilm_dir())) == "bi-encoder"
    assert checkpoint_kind("cross-encoder/ms-marco-MiniLM-L6-v2") == "cross-encoder"  # hub
    assert checkpoint_kind(str(tmp_path / "missing")) == "cross-encoder"
    auto = RerankConfig(model=str(bi_dir))
    assert resolve_kind(auto) == "bi-encoder"
    assert resolve_kind(auto.model_copy(update={"kind": "cross-encoder"})) == "cross-encoder"
    ce = RerankConfig(model=str(tiny_model_dir), kind="bi-encoder")
    assert resolve_kind(ce) == "bi-encoder"  # explicit wins


def test_make_scorer_picks_the_kind(bi_dir: Path, tiny_model_dir: Path) -> None:
    assert isinstance(
        make_scorer(RerankConfig(model=str(bi_dir), dtype="float32")), BiEncoderScorer
    )
    cross = make_scorer(RerankConfig(model=str(tiny_model_dir), dtype="float32"))
    assert isinstance(cross, LocalScorer)
    # an explicit kind wins: a classifier's encoder as a bi-encoder (its head unused)
    forced = make_scorer(RerankConfig(model=str(tiny_model_dir), kind="bi-encoder"))
    assert isinstance(forced, BiEncoderScorer)


def test_truncation_is_counted_never_silent(bi_dir: Path) -> None:
    s = scorer(bi_dir, max_query_tokens=3)
    long_query = "one two three four five"
    (result,) = s.score([ScoreRequest(long_query, DOCS)])
    assert result.query_truncated and result.truncated == 1
    emb = direct_embeddings(bi_dir, ["one two three", *DOCS], max_length=512)
    assert result.scores == pytest.approx((emb[1:] @ emb[0]).tolist(), abs=1e-5)
    # a request's own caps: each document cut to 4 tokens counts as truncated
    capped = ScoreRequest(QUERY, DOCS[:2], max_tokens_per_query=1, max_tokens_per_doc=4)
    (cut,) = s.score([capped])
    assert cut.query_truncated and cut.truncated == sum(n_tokens(d) > 4 for d in DOCS[:2]) > 0
    texts = [first_tokens(QUERY, 1), *(first_tokens(d, 4) for d in DOCS[:2])]
    emb = direct_embeddings(bi_dir, texts, max_length=512)
    assert cut.scores == pytest.approx((emb[1:] @ emb[0]).tolist(), abs=1e-5)


def test_hostile_text_does_not_crash(bi_dir: Path) -> None:
    s = scorer(bi_dir)
    docs = ["\ud800 lone surrogate", "\udfff", "a\x00b", "🚀" * 3000, " " * 5000]
    (result,) = s.score([ScoreRequest("\ud83d query", docs)])
    assert len(result.scores) == 5 and all(np.isfinite(result.scores))
    # the surrogate scores as U+FFFD would, and the two stay apart in the cache
    (clean,) = s.score([ScoreRequest("\ufffd query", ["\ufffd lone surrogate"])])
    assert clean.scores[0] == pytest.approx(result.scores[0], abs=1e-6)


def test_warm_call_embeds_only_the_query_and_changed_documents(bi_dir: Path) -> None:
    s = scorer(bi_dir)
    docs = [f"document number {i} about flow" for i in range(100)]
    cold = s.score([ScoreRequest(QUERY, docs)])
    assert s.texts_embedded == 101
    passes = s.forward_passes
    warm = s.score([ScoreRequest(QUERY, docs)])
    assert warm[0].scores == pytest.approx(cold[0].scores, abs=1e-6)
    assert (s.texts_embedded, s.forward_passes) == (102, passes + 1)  # the query alone
    assert s.cache_stats()[:3] == (100, 100, 100)
    changed = [*docs[:-1], "a changed last document"]
    (again,) = s.score([ScoreRequest("another query", changed)])
    assert s.texts_embedded == 104  # the query and the changed document
    emb = direct_embeddings(bi_dir, ["another query", changed[0], changed[-1]], max_length=512)
    assert [again.scores[0], again.scores[-1]] == pytest.approx(
        (emb[1:] @ emb[0]).tolist(), abs=1e-5
    )


def test_requests_of_one_call_share_embeddings(bi_dir: Path) -> None:
    s = scorer(bi_dir)
    requests = [ScoreRequest(QUERY, ["a", "b", "a"]), ScoreRequest(QUERY, ["b", "c"])]
    first, second = s.score(requests)
    assert s.texts_embedded == 4  # one query, three distinct documents
    assert first.scores[0] == first.scores[2] and first.scores[1] == second.scores[0]
    (empty,) = s.score([ScoreRequest(QUERY, [])])
    assert empty.scores == [] and s.texts_embedded == 4


def test_the_cache_stays_within_its_byte_bound(bi_dir: Path) -> None:
    entry = 32 * 4 + ENTRY_OVERHEAD
    s = scorer(bi_dir, cache_bytes=10 * entry)
    s.score([ScoreRequest(QUERY, [f"doc {i}" for i in range(25)])])
    stats = s.cache_stats()
    assert (stats.entries, stats.bytes) == (10, 10 * entry)
    none = scorer(bi_dir, cache_bytes=0)
    none.score([ScoreRequest(QUERY, ["x", "y"])])
    none.score([ScoreRequest(QUERY, ["x", "y"])])
    assert none.cache_stats().entries == 0 and none.texts_embedded == 6
    cache = EmbeddingCache(max_bytes=1000, max_entries=2)
    big = np.ones(8, np.float32)
    cache.put((bytes([i]) * 16, big[: i + 1].copy(), False) for i in range(4))
    assert len(cache) == 2 and cache.nbytes <= 1000


def test_new_loads_do_not_share_vectors(bi_dir: Path) -> None:
    a, b = scorer(bi_dir), scorer(bi_dir)
    assert a._doc_key("same", 10) != b._doc_key("same", 10)
    assert a._doc_key("same", 10) != a._doc_key("same", 11)


def test_concurrent_calls_agree(bi_dir: Path) -> None:
    s = scorer(bi_dir)
    want = s.score([ScoreRequest(QUERY, DOCS)])[0].scores
    s.cache.clear()
    got: list[list[float]] = []

    def run() -> None:
        got.append(s.score([ScoreRequest(QUERY, DOCS)])[0].scores)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(g == pytest.approx(want, abs=1e-6) for g in got) and len(got) == 4


def test_ascore_equals_score(bi_dir: Path) -> None:
    s = scorer(bi_dir, sigmoid=True)
    requests = [ScoreRequest(QUERY, DOCS), ScoreRequest("heat", ["x"])]
    sync = s.score(requests)
    async_ = asyncio.run(s.ascore(requests))
    assert [r.scores for r in async_] == [r.scores for r in sync]
    assert all(0 < x < 1 for x in sync[0].scores)  # sigmoid applies as for a cross-encoder


def test_real_minilm_matches_transformers_and_sentence_transformers() -> None:
    path = minilm_dir()
    s = scorer(path)
    assert s.describe()["max_length"] == 256 and s.describe()["normalize"] is True
    query = "how do birds fly"
    docs = ["Birds fly by flapping their wings.", "The stock market fell sharply today."]
    (result,) = s.score([ScoreRequest(query, docs)])
    emb = direct_embeddings(path, [query, *docs], max_length=256)
    want = (emb[1:] @ emb[0]).tolist()
    assert result.scores == pytest.approx(want, abs=1e-5)
    assert result.scores[0] > result.scores[1] + 0.3
    st = pytest.importorskip("sentence_transformers")
    model = st.SentenceTransformer(str(path), device="cpu")
    ref = model.encode([query, *docs], convert_to_numpy=True)
    assert result.scores == pytest.approx((ref[1:] @ ref[0]).tolist(), abs=1e-5)


# ---------------------------------------------------------------------- the scorer service


async def _client(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://svc") as client:
            yield client


@pytest.mark.asyncio(loop_scope="session")
async def test_the_service_serves_a_bi_encoder(bi_dir: Path, tiny_model_dir: Path) -> None:
    settings = ServeSettings(
        models={"bi": str(bi_dir), "ce": str(tiny_model_dir)},
        rerank=RerankConfig(dtype="float32"),
    )
    backends = load_backends(settings)
    assert isinstance(backends["bi"], BiEncoderBackend) and backends["bi"].score_cache is None
    assert type(backends["ce"]) is ModelBackend
    want = scorer(bi_dir).score([ScoreRequest(QUERY, DOCS), ScoreRequest("heat", ["x"])])
    async for client in _client(create_app(settings, backends)):
        body = {
            "model": "bi",
            "requests": [
                {"query": QUERY, "documents": DOCS},
                {"query": "heat", "documents": ["x"]},
            ],
        }
        r = await client.post("/rerank", json=body)
        assert r.status_code == 200, r.text
        data = r.json()
        assert data["model"] == "bi"
        for got, exp in zip(data["results"], want):
            assert got["scores"] == pytest.approx(exp.scores, abs=1e-5)
            assert got["truncated"] == exp.truncated
        cohere = await client.post(
            "/v2/rerank", json={"model": "bi", "query": QUERY, "documents": DOCS[:2]}
        )
        assert cohere.status_code == 200
        assert cohere.json()["results"][0]["index"] == int(np.argmax(want[0].scores[:2]))
        strict = {"model": "bi", "query": QUERY, "texts": DOCS, "truncate": False}
        refused = await client.post("/rerank", json=strict)
        assert refused.status_code == 413 and "1 of the 5 texts" in refused.text
        info = (await client.get("/info")).json()
        bi = next(m for m in info["models"] if m["name"] == "bi")
        assert bi["kind"] == "bi-encoder" and bi["max_length"] == 512
        ce = await client.post("/rerank", json={"model": "ce", "query": QUERY, "texts": ["a"]})
        assert ce.status_code == 200


def test_a_calibration_beside_the_model_fills_calibrated(tmp_path: Path) -> None:
    from crossrank.reranker.calibration import Calibration

    folder = build_bi_encoder(tmp_path / "bi")
    request = [ScoreRequest("wind tunnel", ["a wind tunnel test", "cooking"])]
    assert scorer(folder).score(request)[0].calibrated is None
    Calibration(method="platt", slope=3.0, intercept=-1.0).save(folder)
    calibrated = scorer(folder)
    [result] = calibrated.score(request)
    assert calibrated.calibration is not None
    assert result.calibrated == pytest.approx(calibrated.calibration.apply(result.scores))
    assert all(0.0 < p < 1.0 for p in result.calibrated or [])
