"""``crossrank train``: fine-tune a cross-encoder for your index.

Training groups come from either

- **judged pairs** (``--qrels``: a BEIR folder's ``qrels/<split>.tsv`` and its queries): each
  judged-relevant document is a positive; or
- **your own index, self-supervised** (default): a short field (``--query-field``, e.g. the
  title) is the pseudo-query and the document's long field (``--doc-field``) the positive,
  with the pseudo-query's text removed from it so the model cannot just match it back.

Negatives are mined with BM25 from the live engine, skipping the very top ranks
(``--skip-top``), which are often unjudged positives. The model is saved in Hugging Face
format; the local scorer and the scorer service load it as-is.
"""

from __future__ import annotations

import argparse
import random
import re
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from crossrank.reranker.training import TrainGroup, TrainSettings, train

from .connect import client_for

__all__ = ["judged_groups", "main", "mine_negatives", "self_supervised_groups"]


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
) -> list[TrainGroup]:
    """Pseudo-query = ``query_field``, positive = ``doc_field`` without it, BM25 negatives."""
    rng = random.Random(seed)
    groups = []
    fields = (query_field, doc_field)
    for doc in _scan(client, index, fields):
        query, text = str(doc.get(query_field) or "").strip(), str(doc.get(doc_field) or "")
        positive = _strip(text, query)
        if len(query.split()) < 2 or len(positive.split()) < 5:
            continue
        negs = mine_negatives(
            client, index, query, {doc["_id"]}, fields, count=negatives, skip_top=skip_top, rng=rng
        )
        if negs:
            groups.append(TrainGroup(query, positive, tuple(negs)))
        if limit and len(groups) >= limit:
            break
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


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``crossrank train``."""
    parser = argparse.ArgumentParser(
        prog="crossrank train",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--engine-url", required=True)
    parser.add_argument("--index", required=True)
    parser.add_argument("--base", required=True, help="base checkpoint: hub name or path")
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--qrels", type=Path, help="BEIR folder with judged pairs (train split)")
    parser.add_argument("--split", default="train")
    parser.add_argument("--query-field", default="title")
    parser.add_argument("--doc-field", default="text")
    parser.add_argument("--skip-top", type=int, default=3)
    parser.add_argument("--limit", type=int, help="at most this many training groups")
    parser.add_argument("--loss", choices=["listwise", "bce"], default="listwise")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--batch-groups", type=int, default=4)
    parser.add_argument("--negatives", type=int, default=7)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--learning-rate", type=float, default=3e-5)
    parser.add_argument("--dtype", choices=["auto", "float32", "bfloat16"], default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--checkpoint-every", type=int, default=200)
    parser.add_argument("--no-resume", action="store_true")
    args = parser.parse_args(argv)

    client = client_for(args.engine_url)
    if args.qrels:
        groups = judged_groups(
            client,
            args.index,
            args.qrels,
            args.split,
            fields=(args.query_field, args.doc_field),
            negatives=args.negatives,
            skip_top=0,
            seed=args.seed,
        )
    else:
        groups = self_supervised_groups(
            client,
            args.index,
            query_field=args.query_field,
            doc_field=args.doc_field,
            negatives=args.negatives,
            skip_top=args.skip_top,
            limit=args.limit,
            seed=args.seed,
        )
    if not groups:
        print("crossrank train: no training groups could be built from the index", file=sys.stderr)
        return 1
    print(f"{len(groups)} training groups; e.g. query {groups[0].query!r}", flush=True)
    settings = TrainSettings(
        base=args.base,
        output=args.output,
        loss=args.loss,
        steps=args.steps,
        batch_groups=args.batch_groups,
        negatives=args.negatives,
        max_length=args.max_length,
        learning_rate=args.learning_rate,
        dtype=args.dtype,
        seed=args.seed,
        checkpoint_every=args.checkpoint_every,
        resume=not args.no_resume,
    )
    out = train(groups, settings)
    print(f"saved {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
