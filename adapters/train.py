"""``crossrank train``: fine-tune a cross-encoder for your index.

Training groups come from either

- **your own index, self-supervised** (default): pseudo-queries from each document — its
  short field (``--query-field``, e.g. the title; the first sentence where there is none)
  and a random sentence — with the document itself, the pseudo-query removed, as the
  positive; or
- **judged pairs** (``--qrels``: a BEIR folder's ``qrels/<split>.tsv`` and its queries).

Candidates are BM25 hits from the live engine. Self-supervised training (loss ``distill``)
learns the base checkpoint's own similarity (a bi-encoder's cosine of the pseudo-query and
each candidate) as a listwise distribution, mixed with the known positive, starting from a
classification head fitted to that similarity; no labels are needed, and unjudged positives
among the candidates are not punished. With hard labels (``listwise``, ``bce``) the top
``--skip-top`` BM25 ranks are left out of the negatives instead. The model is saved in
Hugging Face format; the local scorer and the scorer service load it as-is.
"""

from __future__ import annotations

import argparse
import random
import re
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple, get_args

from crossrank.reranker.training import TrainGroup, TrainSettings, train

from .connect import client_for

__all__ = [
    "PseudoQuery",
    "judged_groups",
    "main",
    "mine_negatives",
    "parser",
    "pseudo_queries",
    "self_supervised_groups",
    "sentences",
    "settings_for",
]


def _body(resp: Any) -> Any:
    return getattr(resp, "body", resp)


def _scan(
    client: Any, index: str, fields: Sequence[str], size: int = 500
) -> Iterator[dict[str, Any]]:
    """Every document of ``index`` (``_id`` and the fields), in ``_doc`` order (search_after)."""
    after: list[Any] | None = None
    while True:
        body: dict[str, Any] = {
            "size": size,
            "sort": ["_doc"],
            "_source": list(fields),
            "query": {"match_all": {}},
        }
        if after is not None:
            body["search_after"] = after
        hits = _body(client.search(index=index, body=body, rerank=False))["hits"]["hits"]
        if not hits:
            return
        for hit in hits:
            yield {"_id": hit["_id"], **hit.get("_source", {})}
        after = hits[-1]["sort"]


def mine_negatives(
    client: Any,
    index: str,
    query: str,
    exclude: set[str],
    fields: Sequence[str],
    *,
    count: int,
    skip_top: int,
    depth: int = 50,
    rng: random.Random,
) -> list[str]:
    """Texts of BM25 hits for ``query`` past the top ``skip_top``, not in ``exclude``."""
    body = {
        "size": depth,
        "query": {"multi_match": {"query": query, "fields": list(fields)}},
        "_source": list(fields),
    }
    hits = _body(client.search(index=index, body=body, rerank=False))["hits"]["hits"]
    pool = [h for h in hits[skip_top:] if h["_id"] not in exclude]
    rng.shuffle(pool)
    texts = []
    for hit in pool[:count]:
        source = hit.get("_source", {})
        texts.append("\n".join(str(source[f]) for f in fields if source.get(f)))
    return texts


def _strip(text: str, phrase: str) -> str:
    """``text`` without occurrences of ``phrase`` (case-insensitive, whitespace-tolerant)."""
    words = phrase.split()
    if not words:
        return text
    pattern = r"\s+".join(re.escape(w) for w in words)
    return " ".join(re.sub(pattern, " ", text, flags=re.IGNORECASE).split())


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
KINDS = ("title", "sentence")


def sentences(text: str) -> list[str]:
    """``text`` split after ``.``, ``!`` or ``?`` followed by white space."""
    return [s.strip() for s in _SENTENCE_END.split(text) if s.strip()]


class PseudoQuery(NamedTuple):
    """A pseudo-query, its kind, and its document without it (the positive)."""

    kind: str
    query: str
    positive: str


def pseudo_queries(
    title: str, text: str, kinds: Sequence[str], rng: random.Random
) -> list[PseudoQuery]:
    """Pseudo-queries from one document, each removed from its positive.

    ``title``: the short field (or, where it is missing, the text's first sentence) against
    the rest of the text. ``sentence``: a random sentence of 5-32 words against the title and
    the rest of the text.
    """
    out = []
    parts = sentences(text)
    for kind in kinds:
        if kind == "title":
            query = title if len(title.split()) >= 2 else (parts[0] if parts else "")
            positive = _strip(text, query)
        elif kind == "sentence":
            pool = [p for p in parts[1:] if 5 <= len(p.split()) <= 32]
            if not pool:
                continue
            query = rng.choice(pool)
            positive = "\n".join(x for x in (title, _strip(text, query)) if x)
        else:
            raise ValueError(f"unknown pseudo-query kind {kind!r}")
        query = " ".join(query.split())
        if len(query.split()) >= 2 and len(positive.split()) >= 5:
            out.append(PseudoQuery(kind, query, positive))
    return out


def self_supervised_groups(
    client: Any,
    index: str,
    *,
    query_field: str,
    doc_field: str,
    negatives: int,
    skip_top: int,
    limit: int | None,
    seed: int,
    kinds: Sequence[str] = ("title",),
    depth: int = 50,
) -> list[TrainGroup]:
    """Pseudo-queries of the given ``kinds`` (see :func:`pseudo_queries`) from every
    document, each with its own document as the positive (the pseudo-query removed) and
    ``negatives`` BM25 hits past the top ``skip_top`` of ``depth`` as negatives.

    Documents are visited in a seeded random order; ``limit`` caps the number of groups.
    """
    rng = random.Random(seed)
    fields = (query_field, doc_field)
    docs = list(_scan(client, index, fields))
    rng.shuffle(docs)
    groups = []
    for doc in docs:
        title, text = str(doc.get(query_field) or "").strip(), str(doc.get(doc_field) or "")
        for _, query, positive in pseudo_queries(title, text, kinds, rng):
            negs = mine_negatives(
                client,
                index,
                query,
                {doc["_id"]},
                fields,
                count=negatives,
                skip_top=skip_top,
                depth=depth,
                rng=rng,
            )
            if negs:
                groups.append(TrainGroup(query, positive, tuple(negs)))
            if limit and len(groups) >= limit:
                return groups
    return groups


def judged_groups(
    client: Any,
    index: str,
    dataset: Path,
    split: str,
    *,
    fields: Sequence[str],
    negatives: int,
    skip_top: int,
    seed: int,
) -> list[TrainGroup]:
    """Judged positives from ``dataset``'s ``split`` qrels, BM25 negatives from the index."""
    from .evaluate import load_beir

    collection = load_beir(dataset, split)
    rng = random.Random(seed)
    groups = []
    for qid, query in collection.queries.items():
        positives = set(collection.qrels[qid])
        negs = mine_negatives(
            client, index, query, positives, fields, count=negatives, skip_top=skip_top, rng=rng
        )
        for doc_id in sorted(positives):
            doc = collection.corpus.get(doc_id)
            if doc and negs:
                text = "\n".join(doc[f] for f in fields if doc.get(f))
                groups.append(TrainGroup(query, text, tuple(negs)))
    return groups


#: ``TrainSettings`` fields that are options of their own; their defaults are the settings'.
SETTING_OPTIONS: dict[str, tuple[Callable[[str], Any], str]] = {
    "steps": (int, "optimizer steps"),
    "batch_groups": (int, "groups per step"),
    "negatives": (int, "negatives per group and step"),
    "max_length": (int, "tokens per pair"),
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
    return TrainSettings(
        base=args.base,
        output=args.output,
        loss=loss,
        head_init=args.head_init or ("fit" if loss == "distill" else "random"),
        resume=not args.no_resume,
        **{name: value for name, value in given.items() if value is not None},
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
    p.add_argument("--no-resume", action="store_true")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``crossrank train``."""
    args = parser().parse_args(argv)
    settings = settings_for(args)
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
        from crossrank.reranker.distill import label_groups

        print(f"teacher scores from {args.base} (its own similarity) ...", flush=True)
        groups = label_groups(
            groups, args.base, max_length=args.teacher_max_length, device=settings.device
        )
    out = train(groups, settings)
    print(f"saved {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
