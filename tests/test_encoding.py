"""Pair encoding equals the tokenizer's own pair encoding; truncation is counted."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import minilm_dir
from crossrank.reranker.encoding import PairEncoder

from .tokenizers_kit import roberta_style, unigram_style

QUERIES = ["boundary layer flow", "Über café 🚀 unicode", "x"]
DOCS = [
    "the boundary layer over a flat plate in supersonic flow " * 3,
    "heat transfer to a cylinder in hypersonic flow",
    "Über naïve café – unicode text with accents and emoji 🚀",
    "numbers 1960 1234 and punctuation: commas, stops. " * 30,  # long: truncated
    "a",
]


@pytest.fixture(scope="module", params=["bert-wordpiece", "roberta-bpe", "unigram"])
def tokenizer(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Any:
    from transformers import AutoTokenizer

    builders: dict[str, Callable[[Path], Path]] = {
        "bert-wordpiece": lambda p: minilm_dir(),
        "roberta-bpe": roberta_style,
        "unigram": unigram_style,
    }
    path = builders[request.param](tmp_path_factory.mktemp(request.param))
    return AutoTokenizer.from_pretrained(path)


@pytest.mark.parametrize("max_length", [64, 128])
def test_equals_tokenizer_pair_encoding(tokenizer: Any, max_length: int) -> None:
    enc = PairEncoder(tokenizer, max_length=max_length, max_query_tokens=32)
    for query in QUERIES:
        pairs = enc.encode([query], [DOCS])
        for i, doc in enumerate(DOCS):
            ref = tokenizer(query, doc, truncation="only_second", max_length=max_length)
            assert pairs.input_ids[i].tolist() == ref["input_ids"], (query, doc)
            if "token_type_ids" in ref:
                assert pairs.token_type_ids[i].tolist() == ref["token_type_ids"]
        assert pairs.truncated == [sum(
            len(tokenizer(query, d)["input_ids"]) > max_length for d in DOCS
        )]


def test_query_is_capped_and_reported(tokenizer: Any) -> None:
    enc = PairEncoder(tokenizer, max_length=128, max_query_tokens=4)
    long_query = "boundary layer flow over a flat plate in supersonic flow"
    pairs = enc.encode([long_query], [["doc"]])
    own = tokenizer(long_query, add_special_tokens=False)["input_ids"]
    assert pairs.query_truncated == [True]
    ids = pairs.input_ids[0].tolist()
    assert ids[len(enc.template.prefix) : len(enc.template.prefix) + 4] == own[:4]
    assert enc.encode(["x"], [["doc"]]).query_truncated == [False]


def test_passages_cover_the_document_with_overlap() -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(minilm_dir())
    doc = " ".join(f"w{i}" for i in range(300))
    doc_ids = tok(doc, add_special_tokens=False)["input_ids"]
    enc = PairEncoder(tok, max_length=64, max_query_tokens=8, long_documents="passages",
                      passage_overlap=16, max_passages=100)
    pairs = enc.encode(["q"], [[doc, "short"]])
    budget = 64 - 3 - 1
    pieces = [ids.tolist()[3:-1] for ids, (_, d) in zip(pairs.input_ids, pairs.owner) if d == 0]
    assert all(len(p) <= budget for p in pieces) and len(pieces) > 1
    assert pieces[0] == doc_ids[:budget]
    assert pieces[1][:16] == pieces[0][-16:]  # overlap
    assert pieces[-1][-1] == doc_ids[-1]  # nothing lost
    assert (pairs.split, pairs.truncated) == ([1], [0])
    capped = PairEncoder(tok, max_length=64, max_query_tokens=8, long_documents="passages",
                         passage_overlap=16, max_passages=2).encode(["q"], [[doc]])
    assert len(capped.input_ids) == 2 and capped.truncated == [1]


def test_document_cache_is_bounded_and_reused() -> None:
    from transformers import AutoTokenizer

    enc = PairEncoder(AutoTokenizer.from_pretrained(minilm_dir()), max_length=64, cache_size=3)
    first = enc.encode(["q"], [["a b", "c d", "a b"]])
    assert (enc.cache_misses, enc.cache_hits) == (2, 0)
    second = enc.encode(["other"], [["a b", "c d"]])
    assert (enc.cache_misses, enc.cache_hits) == (2, 2)
    assert first.input_ids[0][-3:].tolist() == second.input_ids[0][-3:].tolist()
    enc.encode(["q"], [["e", "f", "g", "h"]])
    assert len(enc._cache) == 3
