"""Training groups from a live engine: pseudo-queries from your documents (self-supervised)
or judged queries, with BM25 candidates from the index."""

from __future__ import annotations

import random
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from crossrank.adapters.training.loop import TrainGroup

__all__ = [
    "KINDS",
    "PseudoQuery",
    "judged_groups",
    "mine_negatives",
    "pseudo_queries",
    "self_supervised_groups",
    "sentences",
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
    from crossrank.adapters.evaluation import load_beir

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
