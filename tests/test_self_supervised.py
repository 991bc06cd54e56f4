"""Self-supervised training data: pseudo-queries and the base's own similarity as labels."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from crossrank.adapters.cli.train import parser, settings_for, text_config_for
from crossrank.adapters.training.loop import TrainGroup
from crossrank.adapters.training.mining import pseudo_queries, sentences, text_config
from crossrank.adapters.training.teacher import label_groups
from crossrank.reranker import RerankConfig

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
    assert (own.steps, own.max_length, own.learning_rate) == (1000, 128, 1e-4)
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


def test_teacher_is_the_base_cosine(tiny_model_dir: Path) -> None:
    groups = [TrainGroup("heat transfer", "heat transfer", ("shock waves", "heat transfer"))]
    (labelled,) = label_groups(groups, str(tiny_model_dir), device="cpu", progress=False)
    assert labelled.teacher is not None and len(labelled.teacher) == 3
    # identical texts embed identically: cosine 1, and the same text scores the same
    assert labelled.teacher[0] == pytest.approx(1.0, abs=1e-5)
    assert labelled.teacher[2] == pytest.approx(labelled.teacher[0])
    assert labelled.teacher[1] < 1.0 - 1e-4
