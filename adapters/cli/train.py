"""``crossrank train``: fine-tune a cross-encoder for your index.

Training groups come from either

- **your own index, self-supervised** (default): pseudo-queries from each document — its
  short field (``--query-field``, e.g. the title; the first sentence where there is none)
  and a random sentence — with the document itself, the pseudo-query removed, as the
  positive; or
- **judged pairs** (``--qrels``: a BEIR folder's ``qrels/<split>.tsv`` and its queries).

Candidates are BM25 hits from the live engine, with their BM25 scores. Self-supervised
training (loss ``distill``) learns a teacher — the base checkpoint as a bi-encoder (cosine of
the pseudo-query and each candidate) combined with the candidates' BM25 scores (per-group
z-scores, equal weights; ``--teacher-bm25-weight 0`` for the cosine alone) — as a listwise
distribution, mixed with the known positive, starting from a classification head fitted to
that teacher; no labels are needed, and unjudged positives among the candidates are not
punished. Title pseudo-queries leave the title field out of every candidate of their group
(the positive lost it), so a missing title cannot give the positive away. The base is named
in the saved model's config (``crossrank_base``), for serving it as an ensemble member.
With hard labels (``listwise``, ``bce``) the top ``--skip-top`` BM25 ranks are left out of
the negatives instead. The model is saved in Hugging Face format; the local scorer and the
scorer service load it as-is.

Training sees what serving scores: document texts from ``--fields`` (default: the query
field, then the document field) or ``--template`` and ``--field-separator``, as the proxy's
and the client wrappers' options of the same names build them (give training the ones you
serve with), and pairs encoded by the scorer's own encoder (query capped at
``--max-query-tokens``, the document filling the rest of ``--max-length``). The model's
config records its training length, which the scorer serves at unless ``max_length`` is set.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, get_args

from crossrank.adapters.connect import client_for
from crossrank.adapters.training.loop import TrainSettings, train
from crossrank.adapters.training.mining import (
    KINDS,
    judged_groups,
    self_supervised_groups,
    text_config,
)
from crossrank.adapters.training.teacher import TEACHER_WEIGHTS
from crossrank.reranker.config import RerankConfig

__all__ = ["SETTING_OPTIONS", "main", "parser", "settings_for", "text_config_for"]

#: The distillation temperature for the cosine alone (``--teacher-bm25-weight 0``), whose
#: per-group spread is about a tenth of the default teacher's z-scores.
COSINE_TEMPERATURE = 0.05


#: ``TrainSettings`` fields that are options of their own; their defaults are the settings'.
SETTING_OPTIONS: dict[str, tuple[Callable[[str], Any], str]] = {
    "steps": (int, "optimizer steps"),
    "batch_groups": (int, "groups per step"),
    "negatives": (int, "negatives per group and step"),
    "max_length": (int, "tokens per pair, saved with the model as its serving length"),
    "max_query_tokens": (int, "query tokens per pair at most (serving: max_query_tokens)"),
    "learning_rate": (float, "body learning rate"),
    "head_learning_rate": (float, "classification-head learning rate"),
    "temperature": (float, "teacher softmax temperature"),
    "hard_weight": (float, "weight of the hard label in the distill target"),
    "device": (str, "auto, cpu, cuda, ..."),
    "dtype": (str, "auto, float32 or bfloat16"),
    "seed": (int, "random seed"),
    "checkpoint_every": (int, "steps between checkpoints"),
}


def settings_for(args: argparse.Namespace) -> TrainSettings:
    """The training settings of a parsed command line: the options given, the loss and head
    that fit the mode (distill and a fitted head when self-supervised), defaults for the rest."""
    loss = args.loss or ("listwise" if args.qrels else "distill")
    given = {name: getattr(args, name) for name in SETTING_OPTIONS}
    if given["temperature"] is None and not getattr(args, "teacher_bm25_weight", 1.0):
        given["temperature"] = COSINE_TEMPERATURE  # the cosine alone: its own scale
    return TrainSettings(
        base=args.base,
        output=args.output,
        loss=loss,
        head_init=args.head_init or ("fit" if loss == "distill" else "random"),
        resume=not args.no_resume,
        **{name: value for name, value in given.items() if value is not None},
    )


def text_config_for(args: argparse.Namespace) -> RerankConfig:
    """The document-text settings of a parsed command line (``--fields``, ``--template``,
    ``--field-separator``), as the proxy reads its options of the same names."""
    fields = [f.strip() for f in args.fields.split(",") if f.strip()] if args.fields else None
    return text_config(
        args.query_field,
        args.doc_field,
        fields=fields,
        template=args.template,
        field_separator=args.field_separator,
    )


def parser() -> argparse.ArgumentParser:
    """The ``crossrank train`` command line."""
    p = argparse.ArgumentParser(
        prog="crossrank train",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--engine-url", required=True)
    p.add_argument("--index", required=True)
    p.add_argument("--base", required=True, help="base checkpoint: hub name or path")
    p.add_argument("--output", type=Path, required=True)
    p.add_argument("--qrels", type=Path, help="BEIR folder with judged pairs (train split)")
    p.add_argument("--split", default="train")
    p.add_argument("--query-field", default="title")
    p.add_argument("--doc-field", default="text")
    text = p.add_argument_group(
        "document text (as served: give the proxy's or the wrapper's settings)"
    )
    text.add_argument(
        "--fields",
        help="comma-separated fields or dotted paths (default: the query field, the doc field)",
    )
    text.add_argument("--template", help='e.g. "{title}: {text}" (instead of --fields)')
    separator = RerankConfig.model_fields["field_separator"].default
    text.add_argument(
        "--field-separator", help=f"between --fields (default: {json.dumps(separator)})"
    )
    p.add_argument(
        "--kinds",
        default=",".join(KINDS),
        help="pseudo-query kinds, comma-separated: title (or the first sentence), sentence",
    )
    p.add_argument("--depth", type=int, default=30, help="BM25 hits fetched per query")
    p.add_argument("--candidates", type=int, default=30, help="negatives kept per group")
    p.add_argument(
        "--skip-top", type=int, help="BM25 ranks not used as negatives (default: 0 distill, 3)"
    )
    p.add_argument("--limit", type=int, help="at most this many groups (default: steps x batch)")
    p.add_argument(
        "--loss",
        choices=["distill", "listwise", "bce"],
        help="default: distill (self-supervised), listwise (--qrels)",
    )
    for name, (kind, help_text) in SETTING_OPTIONS.items():
        field = TrainSettings.model_fields[name]
        p.add_argument(
            f"--{name.replace('_', '-')}",
            type=kind,
            choices=get_args(field.annotation) or None,  # a Literal's values
            help=f"{help_text} ({field.default})",
        )
    p.add_argument("--head-init", choices=["fit", "random"], help="default: fit with distill")
    p.add_argument("--teacher-max-length", type=int, default=128)
    p.add_argument(
        "--teacher-bm25-weight",
        type=float,
        default=TEACHER_WEIGHTS["bm25"],
        help="weight of BM25 against the base's cosine (weight 1) in the teacher;"
        f" 0: the cosine alone, at temperature {COSINE_TEMPERATURE} unless --temperature"
        " is given (default: %(default)s)",
    )
    p.add_argument("--no-resume", action="store_true")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``crossrank train``."""
    args = parser().parse_args(argv)
    settings = settings_for(args)
    config = text_config_for(args)
    distill = settings.loss == "distill"
    skip_top = args.skip_top if args.skip_top is not None else (0 if distill else 3)
    client = client_for(args.engine_url)
    started = time.perf_counter()
    if args.qrels:
        groups = judged_groups(
            client,
            args.index,
            args.qrels,
            args.split,
            fields=(args.query_field, args.doc_field),
            negatives=args.candidates,
            skip_top=0,
            seed=settings.seed,
            config=config,
        )
    else:
        groups = self_supervised_groups(
            client,
            args.index,
            query_field=args.query_field,
            doc_field=args.doc_field,
            negatives=args.candidates,
            skip_top=skip_top,
            limit=args.limit or settings.steps * settings.batch_groups,
            seed=settings.seed,
            kinds=[k.strip() for k in args.kinds.split(",") if k.strip()],
            depth=args.depth,
            config=config,
        )
    if not groups:
        print("crossrank train: no training groups could be built from the index", file=sys.stderr)
        return 1
    print(
        f"{len(groups)} training groups in {time.perf_counter() - started:.0f} s;"
        f" e.g. query {groups[0].query!r}",
        flush=True,
    )
    if distill:
        from crossrank.adapters.training.teacher import label_groups

        weights = {"bi": TEACHER_WEIGHTS["bi"], "bm25": args.teacher_bm25_weight}
        with_bm25 = " + BM25" if args.teacher_bm25_weight else ""
        print(f"teacher scores: {args.base} as a bi-encoder{with_bm25} ...", flush=True)
        groups = label_groups(
            groups,
            args.base,
            max_length=args.teacher_max_length,
            device=settings.device,
            weights=weights,
        )
    document = config.model_dump(include={"fields", "template", "field_separator", "source"})
    out = train(groups, settings, record={"document_text": document})
    print(f"saved {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
