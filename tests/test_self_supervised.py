"""Self-supervised training data: pseudo-queries and the base's own similarity as labels."""

from __future__ import annotations

import json
import random
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from crossrank.adapters.cli.train import parser, settings_for, text_config_for
from crossrank.adapters.training.loop import TrainGroup
from crossrank.adapters.training.mining import (
    engine_score,
    pseudo_queries,
    self_supervised_groups,
    sentences,
    text_config,
)
from crossrank.adapters.training.teacher import label_groups, teacher_scores
from crossrank.reranker import RerankConfig
from crossrank.reranker.ensemble import combine

TEXT = (
    "flow over a wing . the lift of a thin wing in a slipstream was measured at several "
    "angles of attack . results agree with linear theory up to ten degrees . a short note."
)


def test_sentences_split_after_terminal_punctuation() -> None:
    assert sentences("a b. c d? e!  f 0.5 g") == ["a b.", "c d?", "e!", "f 0.5 g"]


def hit(title: str, text: str = TEXT) -> dict[str, object]:
    return {"_id": "1", "_source": {"title": title, "text": text}}


def test_title_pseudo_query_is_removed_from_the_positive() -> None:
    ((_, query, positive),) = pseudo_queries(hit("Flow over a wing"), ["title"], random.Random(0))
    assert query == "Flow over a wing"
    assert "flow over a wing" not in positive.lower() and "slipstream" in positive


def test_missing_title_falls_back_to_the_first_sentence() -> None:
    ((_, query, positive),) = pseudo_queries(hit(""), ["title"], random.Random(0))
    assert query == "flow over a wing ."
    assert positive.startswith("the lift")


def test_sentence_pseudo_query_keeps_the_title_in_the_positive() -> None:
    ((kind, query, positive),) = pseudo_queries(hit("Wing lift"), ["sentence"], random.Random(0))
    assert kind == "sentence"
    assert query in sentences(TEXT)[1:] and 5 <= len(query.split()) <= 32
    assert positive.startswith("Wing lift\n") and query not in positive


def test_the_positive_is_the_served_document_text_without_the_query() -> None:
    """Fields, template and separator as serving uses them; untouched fields stay as they
    are (white space included), the pseudo-query is cut from every field."""
    source = {"title": "Wing  lift", "text": TEXT, "meta": {"venue": "Aero   Q."}}
    config = RerankConfig(template="{meta.venue} | {title} :: {text}")
    ((_, query, positive),) = pseudo_queries(
        {"_source": source}, ["sentence"], random.Random(0), config=config
    )
    rest = TEXT.replace(query, " ")
    assert positive == f"Aero   Q. | Wing  lift :: {' '.join(rest.split())}"
    joined = text_config(fields=("text", "title"), field_separator=" || ")
    ((_, _, positive),) = pseudo_queries(
        {"_source": source}, ["sentence"], random.Random(0), config=joined
    )
    assert positive.endswith(" || Wing  lift")


def test_unknown_kind_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown pseudo-query kind"):
        pseudo_queries(hit("a title"), ["keyphrase"], random.Random(0))


def test_settings_follow_the_mode_and_the_training_defaults() -> None:
    required = ["--engine-url", "u", "--index", "i", "--base", "b", "--output", "o"]
    args = parser().parse_args(required)
    assert (args.kinds, args.candidates) == ("title,sentence", 30)
    own = settings_for(args)  # self-supervised: distillation, fitted head, the defaults
    assert (own.loss, own.head_init) == ("distill", "fit")
    assert (own.steps, own.max_length, own.learning_rate) == (150, 128, 1e-4)
    assert own.temperature == 0.4  # the bi-encoder + BM25 teacher's scale
    cosine = settings_for(parser().parse_args([*required, "--teacher-bm25-weight", "0"]))
    assert cosine.temperature == 0.05  # the cosine alone: its own
    judged = settings_for(parser().parse_args([*required, "--qrels", "q", "--steps", "9"]))
    assert (judged.loss, judged.head_init, judged.steps) == ("listwise", "random", 9)
    with pytest.raises(SystemExit):  # a Literal setting keeps its choices on the command line
        parser().parse_args([*required, "--dtype", "float16"])
    assert own.max_query_tokens == RerankConfig().max_query_tokens  # the serving default


def test_document_text_options_are_the_proxy_s() -> None:
    required = ["--engine-url", "u", "--index", "i", "--base", "b", "--output", "o"]
    default = text_config_for(parser().parse_args(required))
    assert (default.fields, default.template, default.field_separator) == (
        ("title", "text"),
        None,
        "\n",
    )
    own = text_config_for(parser().parse_args([*required, "--query-field", "name"]))
    assert own.fields == ("name", "text")  # the index's own fields by default
    argv = [*required, "--fields", "name, body.en ,", "--field-separator", " | "]
    given = text_config_for(parser().parse_args(argv))
    assert (given.fields, given.field_separator) == (("name", "body.en"), " | ")
    templated = text_config_for(parser().parse_args([*required, "--template", "{a}: {b}"]))
    assert templated.template == "{a}: {b}"


def test_teacher_is_the_base_cosine(tmp_path: Path) -> None:
    from .test_bi_encoder import build_bi_encoder

    base = build_bi_encoder(tmp_path / "bi")  # sentence-transformers files: normalised
    groups = [TrainGroup("heat transfer", "heat transfer", ("shock waves", "heat transfer"))]
    (labelled,) = label_groups(groups, str(base), device="cpu", progress=False)
    assert labelled.teacher is not None and len(labelled.teacher) == 3
    # identical texts embed identically: cosine 1, and the same text scores the same
    assert labelled.teacher[0] == pytest.approx(1.0, abs=1e-5)
    assert labelled.teacher[2] == pytest.approx(labelled.teacher[0])
    assert labelled.teacher[1] < 1.0 - 1e-4


class FakeEngine:
    """Just enough of a search client for mining: a ``_doc``-ordered scan, and a
    ``multi_match`` that ranks documents by shared words (``_score``: their count), with an
    ``ids`` filter."""

    def __init__(self, docs: dict[str, dict[str, str]]) -> None:
        self.docs = docs
        self.searches: list[dict[str, Any]] = []

    def _hit(self, doc_id: str, score: float | None, fields: list[str]) -> dict[str, Any]:
        source = {k: v for k, v in self.docs[doc_id].items() if k in fields}
        return {"_id": doc_id, "_score": score, "_source": source, "sort": [doc_id]}

    def search(self, index: str, body: dict[str, Any], rerank: bool) -> dict[str, Any]:
        assert rerank is False
        self.searches.append(body)
        fields = body.get("_source") or []
        query = body["query"]
        if "match_all" in query:
            ids = sorted(self.docs)
            after = body.get("search_after")
            ids = [i for i in ids if after is None or i > after[0]][: body["size"]]
            return {"hits": {"hits": [self._hit(i, None, fields) for i in ids]}}
        only = None
        if "bool" in query:
            only = set(query["bool"]["filter"][0]["ids"]["values"])
            query = query["bool"]["must"][0]
        words = set(query["multi_match"]["query"].lower().split())
        scored = []
        for doc_id, doc in self.docs.items():
            text = " ".join(doc.get(f, "") for f in query["multi_match"]["fields"]).lower()
            score = float(len(words & set(text.split())))
            if score and (only is None or doc_id in only):
                scored.append((score, doc_id))
        scored.sort(key=lambda x: (-x[0], x[1]))
        hits = [self._hit(i, s, fields) for s, i in scored[: body["size"]]]
        return {"hits": {"hits": hits}}


BODY = "the lift of a thin wing was measured at several angles of attack in the tunnel ."
DOCS = {
    f"d{n}": {
        "title": f"wing lift study number {n}",
        "text": f"{BODY} case {n} gave results close to theory .",
    }
    for n in range(6)
}


def test_title_groups_carry_no_title_line_the_positive_lacks() -> None:
    """The title shortcut: a title group's positive lost its title (the pseudo-query); its
    negatives must not keep theirs, or "no title line" identifies the positive."""
    engine = FakeEngine(DOCS)
    groups = self_supervised_groups(
        engine, "i", query_field="title", doc_field="text", negatives=30, skip_top=0,
        limit=None, seed=0, kinds=("title", "sentence"), depth=30,
    )  # fmt: skip
    titles = [g for g in groups if g.kind == "title"]
    sentences_ = [g for g in groups if g.kind == "sentence"]
    assert titles and sentences_
    for g in titles:
        for text in (g.positive, *g.negatives):
            assert "\n" not in text and "study number" not in text  # no title, no separator
            assert text.startswith("the lift of a thin wing")
    for g in sentences_:  # sentence groups: every candidate keeps its title line
        assert all(t.startswith("wing lift study number") for t in (g.positive, *g.negatives))


def test_groups_keep_the_engine_scores_of_every_candidate() -> None:
    engine = FakeEngine(DOCS)
    groups = self_supervised_groups(
        engine, "i", query_field="title", doc_field="text", negatives=3, skip_top=0,
        limit=None, seed=0, kinds=("title",), depth=3,
    )  # fmt: skip
    for g in groups:
        assert g.engine is not None and len(g.engine) == 1 + len(g.negatives)
        # the positive matches all the title's words: its score is the top one
        assert g.engine[0] == len(set(g.query.lower().split())) >= max(g.engine[1:])


def test_a_positive_past_the_depth_gets_its_score_from_a_search_by_id() -> None:
    note = {"title": "wing lift", "text": "a wholly different note on drag and flutter ."}
    engine = FakeEngine({**DOCS, "z": note})  # "wing lift": every document ties at 2
    groups = self_supervised_groups(
        engine, "i", query_field="title", doc_field="text", negatives=2, skip_top=0,
        limit=None, seed=0, kinds=("title",), depth=2,
    )  # fmt: skip
    (group,) = [g for g in groups if g.query == "wing lift"]
    assert group.positive == note["text"] and group.engine == (2.0, 2.0, 2.0)
    by_id = [b for b in engine.searches if "bool" in b["query"]]
    assert [b["query"]["bool"]["filter"] for b in by_id] == [[{"ids": {"values": ["z"]}}]]
    assert engine_score(engine, "i", "unrelated words", "z", ("title", "text")) is None


def test_teacher_combines_cosine_and_bm25_z_scores() -> None:
    cos, bm25 = [0.9, 0.5, 0.1], [10.0, 30.0, 20.0]
    mixed = teacher_scores(cos, bm25)
    assert mixed == pytest.approx(combine({"bi": cos, "bm25": bm25}, {}, "zscore"))
    assert mixed[0] > mixed[2] and mixed[1] > mixed[2]  # each signal counts
    assert teacher_scores(cos, None) == cos  # no engine scores: the cosine alone
    assert teacher_scores(cos, bm25, weights={"bi": 1.0, "bm25": 0.0}) == cos
    with pytest.raises(ValueError):
        teacher_scores(cos, bm25[:2])


def test_teacher_labels_use_the_groups_engine_scores(tiny_model_dir: Path) -> None:
    group = TrainGroup("heat transfer", "heat transfer", ("shock waves", "wing flutter"))
    (cosine,) = label_groups([group], str(tiny_model_dir), device="cpu", progress=False)
    with_engine = replace(group, engine=(1.0, 9.0, 5.0))
    (mixed,) = label_groups([with_engine], str(tiny_model_dir), device="cpu", progress=False)
    assert cosine.teacher is not None and mixed.teacher is not None
    assert list(mixed.teacher) == pytest.approx(teacher_scores(cosine.teacher, (1.0, 9.0, 5.0)))


def test_judged_groups_pair_qrels_positives_with_bm25_negatives(tmp_path: Path) -> None:
    from crossrank.adapters.training.mining import judged_groups

    (tmp_path / "qrels").mkdir()
    corpus = [{"_id": k, **v} for k, v in DOCS.items()]
    (tmp_path / "corpus.jsonl").write_text("\n".join(json.dumps(d) for d in corpus))
    (tmp_path / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": "wing lift"}))
    (tmp_path / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td2\t1\n")
    engine = FakeEngine(DOCS)
    [group] = judged_groups(
        engine, "i", tmp_path, "train", fields=("title", "text"), negatives=3, skip_top=0, seed=0
    )
    assert group.query == "wing lift" and "number 2" in group.positive
    assert len(group.negatives) == 3 and all("number 2" not in n for n in group.negatives)
