"""Pair encoding equals the tokenizer's own pair encoding; truncation is counted."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import minilm_dir
from crossrank.reranker.local.encoding import PairEncoder, prefix_encode, splits_at_spaces

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


# --- only usable document tokens are cached; the cache is bounded in bytes ---------------


def test_document_cache_keeps_only_usable_tokens_and_is_bounded_in_bytes() -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(minilm_dir())
    words = "the boundary layer over a flat plate in supersonic flow 1960 café "
    docs = [f"document {k} " + words * 12_000 for k in range(15)]  # ~0.8 MB each
    assert all(len(d) > 790_000 for d in docs)
    enc = PairEncoder(tok, max_length=512)
    budget = 512 - 3  # the largest document budget: an empty query
    pairs = enc.encode(["boundary layer"], [docs])
    held = sum(ids.nbytes for ids in enc._cache.values())
    assert len(enc._cache) == 15
    assert held <= 15 * (budget + 1) * 8
    assert enc.cache_nbytes == held
    ref = tok("boundary layer", docs[3], truncation="only_second", max_length=512)
    assert pairs.input_ids[3].tolist() == ref["input_ids"] and pairs.truncated == [15]

    small = PairEncoder(tok, max_length=512, cache_bytes=3 * (budget + 1) * 8)
    small.encode(["q"], [docs])
    assert len(small._cache) == 3 and small.cache_nbytes <= 3 * (budget + 1) * 8
    small.encode(["q"], [docs[:1]])  # evicted: tokenized again
    assert (small.cache_hits, small.cache_misses) == (0, 16)
    none = PairEncoder(tok, max_length=512, cache_bytes=0)
    none.encode(["q"], [docs[:2]])
    assert (len(none._cache), none.cache_nbytes) == (0, 0)


def _single_token_word(tokenizer: Any) -> str:
    for word in ("in", "flow", "a", "1"):
        if len(tokenizer(" ".join([word] * 5), add_special_tokens=False)["input_ids"]) == 5:
            return word
    raise AssertionError("no single-token word")


def _reference_windows(
    n: int, budget: int, mode: str, overlap: int, passages: int
) -> tuple[int, bool]:
    """(number of pieces, truncated) of a document of ``n`` tokens, worked out directly."""
    if n <= budget:
        return 1, False
    if mode == "truncate":
        return 1, True
    step = max(1, budget - overlap)
    needed = 1 + -(-(n - budget) // step)
    return min(needed, passages), needed > passages


def _span(budget: int, mode: str, overlap: int = 6, passages: int = 3) -> int:
    """The most document tokens the windows of ``budget`` use."""
    return budget if mode == "truncate" else (passages - 1) * max(1, budget - overlap) + budget


@pytest.mark.parametrize("mode", ["truncate", "passages"])
def test_results_identical_for_every_document_length(tokenizer: Any, mode: Any) -> None:
    kw: dict[str, Any] = dict(max_length=40, max_query_tokens=12, long_documents=mode,
                              passage_overlap=6, max_passages=3)
    enc = PairEncoder(tokenizer, **kw)
    full = PairEncoder(tokenizer, **kw)  # today's behaviour: every token of every document
    full.keep_tokens, full._prefix_safe = 10**9, False
    word = _single_token_word(tokenizer)
    special = enc.template.num_special
    for query in ["", "x", "boundary layer flow", " ".join(["heat transfer"] * 20)]:
        q = min(len(tokenizer(query, add_special_tokens=False)["input_ids"]), 12)
        budget = 40 - special - q
        span, keep = _span(budget, mode), _span(40 - special, mode) + 1
        lengths = {0, 1, budget - 1, budget, budget + 1, budget + 2, span - 1, span, span + 1,
                   span + 2, 5 * span, keep - 1, keep, keep + 1}
        docs = [" ".join([word] * n) for n in sorted(lengths)] + DOCS
        got, want = enc.encode([query], [docs]), full.encode([query], [docs])
        assert [ids.tolist() for ids in got.input_ids] == [ids.tolist() for ids in want.input_ids]
        assert [t.tolist() for t in got.token_type_ids] == [
            t.tolist() for t in want.token_type_ids
        ]
        assert (got.owner, got.truncated, got.split, got.query_truncated) == (
            want.owner, want.truncated, want.split, want.query_truncated)
        refs = [_reference_windows(n, budget, mode, 6, 3) for n in sorted(lengths)]
        pieces = [sum(1 for _, d in got.owner if d == i) for i in range(len(refs))]
        assert pieces == [r[0] for r in refs], (query, sorted(lengths))
        assert all(len(ids) <= keep for ids in enc._cache.values())


# --- long queries: a bounded prefix, tokenized with the GIL released ----------------------


class _SpyBackend:
    """A ``tokenizers.Tokenizer`` that records how many characters each call tokenizes."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls: list[tuple[str, int]] = []

    def encode(self, text: str, *args: Any, **kw: Any) -> Any:
        self.calls.append(("encode", len(text)))
        return self.inner.encode(text, *args, **kw)

    def encode_batch(self, texts: list[str], *args: Any, **kw: Any) -> Any:
        self.calls.append(("encode_batch", sum(len(t) for t in texts)))
        return self.inner.encode_batch(texts, *args, **kw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_long_query_tokenizes_a_bounded_prefix_with_encode_batch(tokenizer: Any) -> None:
    enc = PairEncoder(tokenizer, max_length=128, max_query_tokens=16)
    query = "boundary layer flow over a flat plate, in supersonic flow! " * 20_000
    spy = enc._backend = _SpyBackend(enc._backend)
    ids, cut = enc.query_ids(query)
    own = tokenizer(query, add_special_tokens=False)["input_ids"]
    assert (ids.tolist(), cut) == (own[:16], True)
    assert {name for name, _ in spy.calls} == {"encode_batch"}
    assert sum(chars for _, chars in spy.calls) <= 1_000  # of 1.2 million characters


def _ticks_while(work: Any) -> tuple[float, int]:
    """Run ``work`` in a thread; (its duration, how often this thread ran meanwhile)."""
    import threading
    import time

    span: list[float] = []

    def timed() -> None:
        span.append(time.perf_counter())
        work()
        span.append(time.perf_counter())

    worker = threading.Thread(target=timed)
    ticks: list[float] = []
    worker.start()
    while worker.is_alive():
        time.sleep(0.001)
        ticks.append(time.perf_counter())
    worker.join()
    return span[1] - span[0], sum(span[0] < t < span[1] for t in ticks)


def test_long_query_tokenization_releases_the_gil() -> None:
    from transformers import AutoTokenizer

    enc = PairEncoder(AutoTokenizer.from_pretrained(minilm_dir()), max_length=128)
    # No space to cut at: tokenized whole. Grown until it lasts long enough to watch, so the
    # check holds on any machine; holding the GIL would leave this thread ~1 tick at most.
    for size in (60_000, 240_000, 960_000, 3_840_000):
        took, ticks = _ticks_while(lambda n=size: enc.query_ids("日本語" * n))
        if took > 0.05:
            break
    assert ticks >= max(3, int(took / 0.001 * 0.05)), (took, ticks)


_POOL = [
    "boundary", "layer", "flow", "supersonic", "café", "naïve", "Über", "1960", "1234",
    "3.14", "commas,", "stops.", "(brackets)", "-", "–", "!!!", "?!?!", "...", "'s", "'re",
    "don't", "日本語の文章", "中文", "한국어", "🚀", "🚀🚀", "e\u0301", "´", "Σ", "ΟΔΟΣ",
    "[SEP]", "[UNK]", "<mask>", "</s>", "<s>", "[CLS]", "▁", "Ġ", "\x00", "\u200b",
    "a" * 150, "supercalifragilistic" * 8, "x" * 40, "ü" * 60, "$$$$$$$$",
]
_SEPARATORS = [" ", " ", " ", "  ", "   ", "\t", "\n", "\r\n", " \t ", "\u00a0", "\u3000", "",
               "", "-", " \n "]


def _random_texts(count: int, seed: int = 7) -> list[str]:
    import random

    rng = random.Random(seed)
    texts = []
    for _ in range(count):
        parts = [rng.choice(_POOL) for _ in range(rng.randint(0, 60))]
        seps = [rng.choice(_SEPARATORS) for _ in parts]
        lead = rng.choice(["", " ", "  ", "\n"])
        texts.append(lead + "".join(p + s for p, s in zip(parts, seps)))
    return texts


ADVERSARIAL = [
    "", " ", "   ", "\n\n", "x", "x" * 5000, "日本語" * 500, "a " * 3000, " a" * 3000,
    "a\t" * 1000 + "b c", "!!!! " * 500, "word" + " " * 2000 + "next", "word \t\n next " * 300,
    " ".join(["a" * 300] * 20), "Über" * 400 + " café", "🚀 " * 700, "e\u0301 " * 700,
    "´ " * 700 + "end", "ΟΔΟΣ ΣΑΣ " * 300, "<mask> <mask>" * 300, "[SEP] [UNK] " * 300,
    "'s 're 've " * 300, "1960 1234 " * 400, "\u00a0 \u3000 " * 500 + "tail",
]


def test_prefix_encoding_equals_whole_text_tokenization(tokenizer: Any) -> None:
    backend = PairEncoder(tokenizer, max_length=128)._backend
    texts = _random_texts(300) + ADVERSARIAL
    whole = [e.ids for e in backend.encode_batch(texts, add_special_tokens=False)]
    for limit in (1, 2, 5, 17, 65):
        for first_chars in (1, 2, 3, 7, 40, 520):
            got = prefix_encode(backend, texts, limit, first_chars)
            bad = [t for t, g, w in zip(texts, got, whole) if g != w[:limit]]
            assert not bad, (limit, first_chars, bad[:3])


def test_query_ids_equal_the_whole_query_tokenization(tokenizer: Any) -> None:
    for cap in (3, 16, 64):
        enc = PairEncoder(tokenizer, max_length=128, max_query_tokens=cap)
        for query in _random_texts(100, seed=cap) + ADVERSARIAL:
            own = tokenizer(query, add_special_tokens=False)["input_ids"]
            ids, cut = enc.query_ids(query)
            assert (ids.tolist(), cut) == (own[:cap], len(own) > cap), query[:80]


def test_prefix_cutting_only_where_the_pre_tokenizer_splits_at_spaces(tokenizer: Any) -> None:
    from tokenizers import pre_tokenizers

    backend = PairEncoder(tokenizer, max_length=128)._backend
    assert splits_at_spaces(backend)
    for pre in (None, pre_tokenizers.ByteLevel(use_regex=False),
                pre_tokenizers.Metaspace(split=False)):
        backend.pre_tokenizer = pre
        assert not splits_at_spaces(backend)
    spaced = PairEncoder(tokenizer, max_length=128)._backend
    spaced.add_tokens(["flat plate"])
    assert not splits_at_spaces(spaced)


# --- a request's own token caps (Cohere/Jina max_tokens_per_doc, vLLM max_tokens_per_query) --


@pytest.mark.parametrize("mode", ["truncate", "passages"])
def test_request_caps_cut_query_and_documents_exactly(tokenizer: Any, mode: Any) -> None:
    kw: dict[str, Any] = dict(max_length=40, max_query_tokens=12, long_documents=mode,
                              passage_overlap=6, max_passages=3)
    enc = PairEncoder(tokenizer, **kw)
    word = _single_token_word(tokenizer)
    query = " ".join([word] * 10)
    lengths = [0, 1, 4, 5, 6, 20, 33, 34, 35, 80, 200]
    docs = [" ".join([word] * n) for n in lengths] + DOCS
    own = [tokenizer(d, add_special_tokens=False)["input_ids"] for d in docs]
    for q_cap, d_cap in [(3, 5), (None, 5), (3, None), (12, 34), (50, 10_000), (1, 1)]:
        got = enc.encode([query], [docs], max_tokens_per_query=[q_cap],
                         max_tokens_per_doc=[d_cap])
        # the same as capping the texts themselves, then encoding without caps
        q_words = min(10, q_cap or 10)
        capped = [" ".join([word] * min(n, d_cap or n)) for n in lengths]
        want = PairEncoder(tokenizer, **kw).encode([" ".join([word] * q_words)], [capped])
        n = len(want.owner)
        assert got.owner[:n] == want.owner
        assert [ids.tolist() for ids in got.input_ids[:n]] == [
            ids.tolist() for ids in want.input_ids
        ], (q_cap, d_cap)
        assert got.query_truncated == [q_cap is not None and q_cap < 10]
        # truncated: content dropped, by the cap or by the model's length
        free = PairEncoder(tokenizer, **kw)
        free.keep_tokens, free._prefix_safe = 10**9, False
        q_ids, _ = free.query_ids(query, q_cap)
        budget = 40 - enc.template.num_special - len(q_ids)
        expected = 0
        for ids in own:
            kept = ids[:d_cap] if d_cap is not None else ids
            span = budget if mode == "truncate" else 2 * max(1, budget - 6) + budget
            expected += len(kept) < len(ids) or len(kept) > span
        assert got.truncated == [expected], (q_cap, d_cap)


def test_request_caps_leave_the_cache_and_other_requests_alone(tokenizer: Any) -> None:
    enc = PairEncoder(tokenizer, max_length=64, max_query_tokens=16)
    docs = DOCS
    before = enc.encode(["boundary layer flow"], [docs])
    both = enc.encode(["boundary layer flow", "boundary layer flow"], [docs, docs],
                      max_tokens_per_query=[None, 1], max_tokens_per_doc=[2, None])
    after = enc.encode(["boundary layer flow"], [docs])
    n = len(docs)
    assert [a.tolist() for a in after.input_ids] == [b.tolist() for b in before.input_ids]
    assert [a.tolist() for a in both.input_ids[n:]] != [b.tolist() for b in before.input_ids]
    assert all(len(ids) <= len(enc.template.prefix) + 16 + len(enc.template.middle) + 2
               + len(enc.template.suffix) for ids in both.input_ids[:n])
    assert both.truncated[0] == sum(
        len(tokenizer(d, add_special_tokens=False)["input_ids"]) > 2 for d in docs
    )
    assert both.query_truncated == [False, True] and after.truncated == before.truncated
    assert (enc.cache_misses, len(enc._cache)) == (len(set(docs)), len(set(docs)))
    with pytest.raises(ValueError, match="per query"):
        enc.encode(["q"], [docs], max_tokens_per_doc=[1, 2])
