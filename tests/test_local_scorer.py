"""The local scorer against direct model forwards on the tokenizer's own encodings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from crossrank.reranker import LocalScorer, ModelLoadError, RerankConfig, ScoreRequest
from crossrank.reranker.local import model as local_module
from crossrank.reranker.local.batching import pack

from .tokenizers_kit import tiny_roberta_model

QUERY = "boundary layer flow"
DOCS = [
    "the boundary layer over a flat plate in supersonic flow",
    "heat transfer to a cylinder",
    "Über naïve café – 日本語 🚀",
    "flow " * 700,
    "",
]


def direct_scores(path: Path, query: str, docs: list[str], max_length: int) -> list[list[float]]:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path).eval()
    out = []
    with torch.inference_mode():
        for doc in docs:
            enc = tok(
                query,
                doc or " ",
                truncation="only_second",
                max_length=max_length,
                return_tensors="pt",
            )
            out.append(model(**enc).logits[0].tolist())
    return out


def scorer(path: Path, **kw: Any) -> LocalScorer:
    return LocalScorer(RerankConfig(model=str(path), dtype="float32", **kw))


def test_one_label_scores_equal_direct_forward(tiny_model_dir: Path) -> None:
    s = scorer(tiny_model_dir)
    (result,) = s.score([ScoreRequest(QUERY, DOCS[:4])])
    ref = direct_scores(tiny_model_dir, QUERY, DOCS[:4], 512)
    assert result.scores == pytest.approx([r[0] for r in ref], abs=1e-5)
    assert (result.truncated, result.split, result.model) == (1, 0, str(tiny_model_dir))


def test_two_label_head_and_sigmoid(tiny_model_dir_2labels: Path) -> None:
    ref = direct_scores(tiny_model_dir_2labels, QUERY, DOCS[:3], 512)
    margin = scorer(tiny_model_dir_2labels).score([ScoreRequest(QUERY, DOCS[:3])])[0].scores
    assert margin == pytest.approx([r[1] - r[0] for r in ref], abs=1e-5)
    probs = scorer(tiny_model_dir_2labels, sigmoid=True).score([ScoreRequest(QUERY, DOCS[:3])])
    softmax = [torch.tensor(r).softmax(-1)[1].item() for r in ref]
    assert probs[0].scores == pytest.approx(softmax, abs=1e-5)


def test_model_without_token_type_ids(tmp_path: Path) -> None:
    path = tiny_roberta_model(tmp_path / "roberta")
    s = scorer(path)
    assert not s.loaded.uses_token_types and s.encoder.max_length == 128
    (result,) = s.score([ScoreRequest(QUERY, DOCS[:4])])
    ref = direct_scores(path, QUERY, DOCS[:4], 128)
    assert result.scores == pytest.approx([r[0] for r in ref], abs=1e-5)


def test_deterministic_and_independent_of_batch_budget(tiny_model_dir: Path) -> None:
    big = scorer(tiny_model_dir, score_cache_bytes=0)  # the model twice, not the cache
    small = scorer(tiny_model_dir, batch_tokens=600)
    requests = [ScoreRequest(QUERY, DOCS), ScoreRequest("heat", DOCS[::-1])]
    first = big.score(requests)
    assert [r.scores for r in big.score(requests)] == [r.scores for r in first]
    enc = small.encode(requests)
    assert len(pack([len(ids) for ids in enc.input_ids], 600)) > 1
    for a, b in zip(small.score(requests), first):
        assert a.scores == pytest.approx(b.scores, abs=1e-5)


def test_passages_aggregate_by_max(tiny_model_dir: Path) -> None:
    s = scorer(tiny_model_dir, long_documents="passages", max_length=64, passage_overlap=8)
    long_doc = " ".join(f"token{i} flow" for i in range(60))
    (result,) = s.score([ScoreRequest(QUERY, [long_doc, "short"])])
    assert (result.split, result.truncated) == (1, 0)
    enc = s.encode([ScoreRequest(QUERY, [long_doc])])
    rows = s.score_encoded(enc, [ScoreRequest(QUERY, [long_doc])])
    per_passage = [
        s.forward(s.pad([enc.input_ids[i]], [enc.token_type_ids[i]]))[0]
        for i in range(len(enc.input_ids))
    ]
    assert rows[0].scores[0] == pytest.approx(max(per_passage), abs=1e-5)
    assert result.scores[0] == pytest.approx(max(per_passage), abs=1e-5)


def test_empty_requests_and_async(tiny_model_dir: Path) -> None:
    import asyncio

    s = scorer(tiny_model_dir)
    assert s.score([ScoreRequest(QUERY, [])])[0].scores == []
    sync = s.score([ScoreRequest(QUERY, DOCS[:2])])
    assert asyncio.run(s.ascore([ScoreRequest(QUERY, DOCS[:2])]))[0].scores == sync[0].scores


def test_device_and_dtype_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    assert local_module.pick_device("cpu") == "cpu"
    monkeypatch.setattr(local_module, "cpu_has_fast_bf16", lambda: True)
    assert local_module.pick_dtype("cpu") is torch.bfloat16
    monkeypatch.setattr(local_module, "cpu_has_fast_bf16", lambda: False)
    assert local_module.pick_dtype("cpu") is torch.float32
    assert local_module.pick_dtype("cpu", "float16") is torch.float16


def test_bfloat16_keeps_the_ranking_close(tiny_model_dir: Path) -> None:
    docs = DOCS[:4]
    fp32 = scorer(tiny_model_dir).score([ScoreRequest(QUERY, docs)])[0].scores
    s = LocalScorer(RerankConfig(model=str(tiny_model_dir), dtype="bfloat16"))
    assert s.dtype is torch.bfloat16
    bf16 = s.score([ScoreRequest(QUERY, docs)])[0].scores
    assert bf16 == pytest.approx(fp32, abs=5e-2)


def test_unloadable_model_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="cannot load"):
        LocalScorer(RerankConfig(model=str(tmp_path / "nope")))


def test_device_order_and_gpu_dtypes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert local_module.pick_device("auto") == "cuda"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert local_module.pick_dtype("cuda") is torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert local_module.pick_dtype("cuda:0") is torch.float16
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert local_module.pick_device("auto") == "mps"
    assert local_module.pick_dtype("mps") is torch.float16
    assert local_module.pick_device("cpu") == "cpu"


def test_batches_are_length_sorted_and_under_the_token_budget(tiny_model_dir: Path) -> None:
    s = scorer(tiny_model_dir, batch_tokens=512)
    docs = [" ".join(["flow"] * n) for n in (3, 200, 40, 90, 7, 150, 60)]
    enc = s.encode([ScoreRequest(QUERY, docs)])
    lengths = [len(ids) for ids in enc.input_ids]
    batches = pack(lengths, s.config.batch_tokens)
    assert sorted(r for b in batches for r in b) == list(range(len(docs)))
    order = [lengths[r] for b in batches for r in b]
    assert order == sorted(order, reverse=True)
    for batch in batches:  # padded to the batch's longest row, within the budget
        assert len(batch) == 1 or len(batch) * max(lengths[r] for r in batch) <= 512
    padded = s.pad(
        [enc.input_ids[r] for r in batches[-1]], [enc.token_type_ids[r] for r in batches[-1]]
    )
    assert padded.input_ids.shape[1] == max(lengths[r] for r in batches[-1])


def test_lone_surrogates_score_as_replacement_characters(tiny_model_dir: Path) -> None:
    s = scorer(tiny_model_dir)
    lone = ScoreRequest("heat \ud800 flow", ["heat \ud800", "\udfff", "a \udc80\ud800 b", "flow"])
    fixed = ScoreRequest("heat \ufffd flow", ["heat \ufffd", "\ufffd", "a \ufffd\ufffd b", "flow"])
    (got,) = s.score([lone])
    (want,) = scorer(tiny_model_dir).score([fixed])
    assert got.scores == want.scores
    assert (got.truncated, got.query_truncated) == (want.truncated, want.query_truncated)
    only_query = s.score([ScoreRequest("\udbff", ["flow"])])[0].scores
    assert only_query == s.score([ScoreRequest("\ufffd", ["flow"])])[0].scores
    hits = s.encoder.cache_hits
    s.encoder.encode(["q"], [["heat \ufffd"]])  # the same document as "heat \ud800": a hit
    assert s.encoder.cache_hits == hits + 1


def test_document_cache_bounds_come_from_the_config(tiny_model_dir: Path) -> None:
    s = scorer(tiny_model_dir, cache_bytes=0)
    assert (s.encoder.cache_bytes, s.encoder.cache_size) == (0, 50_000)
    s.score([ScoreRequest(QUERY, DOCS[:3])])
    assert (len(s.encoder._cache), s.encoder.cache_nbytes) == (0, 0)
    small = scorer(tiny_model_dir, cache_bytes=1_000)
    small.score([ScoreRequest(QUERY, DOCS[3:4])])  # "flow " * 700 keeps 510 tokens: 4080 bytes
    assert (len(small.encoder._cache), small.encoder.cache_nbytes) == (0, 0)
    small.score([ScoreRequest(QUERY, DOCS[:3])])
    assert len(small.encoder._cache) == 3 and 0 < small.encoder.cache_nbytes <= 1_000


def test_request_token_caps_score_as_the_capped_texts(tiny_model_dir: Path) -> None:
    s = scorer(tiny_model_dir)
    query, docs = "flow " * 30, ["flow " * 700, "flow " * 5, "heat"]
    capped = ScoreRequest(query, docs, max_tokens_per_query=4, max_tokens_per_doc=8)
    (got,) = s.score([capped, ScoreRequest(query, docs)])[:1]
    (want,) = s.score([ScoreRequest("flow " * 4, ["flow " * 8, "flow " * 5, "heat"])])
    assert got.scores == pytest.approx(want.scores, abs=1e-6)
    assert (got.truncated, got.query_truncated) == (1, True)  # "flow " * 5 fits in 8 tokens
    assert (want.truncated, want.query_truncated) == (0, False)
    # a cap over the model's length changes nothing; the default scorer caps the query at 64
    (loose,) = s.score([ScoreRequest(QUERY, DOCS[:4], max_tokens_per_doc=100_000)])
    (plain,) = s.score([ScoreRequest(QUERY, DOCS[:4])])
    assert (loose.scores, loose.truncated) == (plain.scores, plain.truncated) == (
        plain.scores, 1)
    for bad in (0, -1, True, 1.5):
        with pytest.raises(ValueError, match="max_tokens_per_doc"):
            ScoreRequest("q", ["d"], max_tokens_per_doc=bad)  # type: ignore[arg-type]
