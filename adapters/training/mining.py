"""Training groups from a live engine: pseudo-queries from your documents (self-supervised)
or judged queries, with BM25 candidates from the index.

Every document text here — positives and negatives — is what serving scores for the same
hit: :func:`~crossrank.adapters.core.inputs.document_text` with a :class:`RerankConfig`'s
``fields`` (or ``template``) and ``field_separator``, read from the hit's ``_source``. Give
mining the document-text settings the proxy or client wrapper uses; by default they are the
pseudo-query field and the document field, in that order (``title``, ``text``: the
``RerankConfig`` default).
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from crossrank.adapters.core.inputs import document_text
from crossrank.adapters.training.loop import TrainGroup
from crossrank.reranker.config import RerankConfig
from crossrank.reranker.errors import ConfigurationError

__all__ = [
    "KINDS",
    "Candidates",
    "PseudoQuery",
    "engine_score",
    "hit_text",
    "judged_groups",
    "mine_candidates",
    "pseudo_queries",
    "self_supervised_groups",
    "sentences",
    "text_config",
    "text_fields",
]

#: ``{name}`` placeholders of a template once ``{{``/``}}`` escapes are set aside (as
#: :func:`document_text` reads them).
_PLACEHOLDER = re.compile(r"\{([^{}]+)\}")


def _body(resp: Any) -> Any:
    return getattr(resp, "body", resp)


def text_config(
    query_field: str = "title",
    doc_field: str = "text",
    *,
    fields: Sequence[str] | None = None,
    template: str | None = None,
    field_separator: str | None = None,
) -> RerankConfig:
    """The document-text settings training shares with serving: ``fields`` (default: the
    pseudo-query field, then the document field) or ``template``, and ``field_separator``."""
    options: dict[str, Any] = {"fields": tuple(fields or (query_field, doc_field))}
    if template is not None:
        options["template"] = template
    if field_separator is not None:
        options["field_separator"] = field_separator
    return RerankConfig(**options)


def text_fields(config: RerankConfig) -> list[str]:
    """The ``_source`` fields :func:`document_text` reads under ``config``."""
    if config.template is None:
        return list(config.fields)
    template = config.template.replace("{{", "\0").replace("}}", "\1")
    return list(dict.fromkeys(m.strip() for m in _PLACEHOLDER.findall(template)))


def _check(config: RerankConfig) -> None:
    if config.source != "_source":
        raise ConfigurationError(
            f"training reads document texts from _source, not {config.source!r}: "
            "pass a config with source='_source'"
        )


def hit_text(hit: Mapping[str, Any], config: RerankConfig) -> str:
    """The document text of an engine hit (or ``{"_source": doc}``), as serving builds it."""
    return document_text(hit, config).text


def _scan(
    client: Any, index: str, fields: Sequence[str], size: int = 500
) -> Iterator[dict[str, Any]]:
    """Every hit of ``index`` (``_id`` and ``_source`` with ``fields``), in ``_doc`` order."""
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
            yield {"_id": hit["_id"], "_source": hit.get("_source") or {}}
        after = hits[-1]["sort"]


class Candidates(NamedTuple):
    """BM25 candidates of a query: document texts, their engine ``_score`` and ids, and the
    scores of the excluded documents that were among the hits."""

    texts: list[str]
    scores: list[float]
    ids: list[str]
    excluded: dict[str, float]


def mine_candidates(
    client: Any,
    index: str,
    query: str,
    exclude: set[str],
    search_fields: Sequence[str],
    *,
    config: RerankConfig,
    count: int,
    skip_top: int,
    depth: int = 50,
    rng: random.Random,
    drop: str | None = None,
) -> Candidates:
    """Document texts (:func:`hit_text` under ``config``) and BM25 scores of the hits for
    ``query`` on ``search_fields``, past the top ``skip_top``, not in ``exclude``; ``drop``
    names a field left out of every text (title groups: see :func:`self_supervised_groups`)."""
    _check(config)
    body = {
        "size": depth,
        "query": {"multi_match": {"query": query, "fields": list(search_fields)}},
        "_source": text_fields(config),
    }
    hits = _body(client.search(index=index, body=body, rerank=False))["hits"]["hits"]
    pool = [h for h in hits[skip_top:] if h["_id"] not in exclude]
    rng.shuffle(pool)
    out = Candidates([], [], [], {})
    for hit in hits:
        if hit["_id"] in exclude:
            out.excluded[str(hit["_id"])] = float(hit.get("_score") or 0.0)
    for hit in pool:
        if drop is not None:
            hit = {**hit, "_source": _drop(hit.get("_source") or {}, drop)}
        text = hit_text(hit, config)
        if text and len(out.texts) < count:
            out.texts.append(text)
            out.scores.append(float(hit.get("_score") or 0.0))
            out.ids.append(str(hit["_id"]))
    return out


def engine_score(
    client: Any, index: str, query: str, doc_id: str, search_fields: Sequence[str]
) -> float | None:
    """The BM25 score of document ``doc_id`` for ``query`` (the candidates' search, restricted
    to that id: the same statistics, so the same score the document has in the full ranking);
    None where the document does not match at all."""
    body = {
        "size": 1,
        "_source": False,
        "query": {
            "bool": {
                "must": [{"multi_match": {"query": query, "fields": list(search_fields)}}],
                "filter": [{"ids": {"values": [doc_id]}}],
            }
        },
    }
    hits = _body(client.search(index=index, body=body, rerank=False))["hits"]["hits"]
    return float(hits[0]["_score"]) if hits else None


def _drop(source: Mapping[str, Any], field: str) -> dict[str, Any]:
    """``source`` without the (dotted) ``field``."""
    head, _, rest = field.partition(".")
    out = dict(source)
    if head in out:
        if rest and isinstance(out[head], Mapping):
            out[head] = _drop(out[head], rest)
        elif not rest:
            del out[head]
    return out


def _strip(text: str, phrase: str) -> str:
    """``text`` without occurrences of ``phrase`` (case-insensitive, whitespace-tolerant);
    ``text`` itself where the phrase does not occur."""
    words = phrase.split()
    if not words:
        return text
    pattern = re.compile(r"\s+".join(re.escape(w) for w in words), flags=re.IGNORECASE)
    if not pattern.search(text):
        return text
    return " ".join(pattern.sub(" ", text).split())


def _without(value: Any, phrase: str) -> Any:
    """``value`` (a ``_source``) with ``phrase`` stripped from every string in it."""
    if isinstance(value, str):
        return _strip(value, phrase)
    if isinstance(value, Mapping):
        return {k: _without(v, phrase) for k, v in value.items()}
    if isinstance(value, list):
        return [_without(v, phrase) for v in value]
    return value


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


KINDS = ("title", "sentence")


def sentences(text: str) -> list[str]:
    """``text`` split after ``.``, ``!`` or ``?`` followed by white space."""
    return [s.strip() for s in _SENTENCE_END.split(text) if s.strip()]


class PseudoQuery(NamedTuple):
    """A pseudo-query, its kind, and its document's text without it (the positive)."""

    kind: str
    query: str
    positive: str


def pseudo_queries(
    hit: Mapping[str, Any],
    kinds: Sequence[str],
    rng: random.Random,
    *,
    config: RerankConfig | None = None,
    query_field: str = "title",
    doc_field: str = "text",
) -> list[PseudoQuery]:
    """Pseudo-queries from one hit, each removed from its positive.

    ``title``: the short field ``query_field`` (or, where it has fewer than two words, the
    first sentence of ``doc_field``). ``sentence``: a random sentence of 5-32 words of
    ``doc_field`` other than the first. The positive is the hit's document text under
    ``config`` (:func:`hit_text`; default :func:`text_config` of the two fields) with the
    pseudo-query stripped from every field, so apart from that it is what serving scores;
    for ``title`` the whole ``query_field`` is left out of it, as it is left out of the
    group's other candidates (otherwise "the one without a title" gives the positive away).
    """
    config = config or text_config(query_field, doc_field)
    title = hit_text(hit, text_config(fields=(query_field,))).strip()
    text = hit_text(hit, text_config(fields=(doc_field,)))
    source = hit.get("_source") or {}
    out = []
    parts = sentences(text)
    for kind in kinds:
        if kind == "title":
            query = title if len(title.split()) >= 2 else (parts[0] if parts else "")
        elif kind == "sentence":
            pool = [p for p in parts[1:] if 5 <= len(p.split()) <= 32]
            if not pool:
                continue
            query = rng.choice(pool)
        else:
            raise ConfigurationError(f"unknown pseudo-query kind {kind!r}")
        # A title group's candidates are all read without the query field (see
        # self_supervised_groups), the positive too: no line tells the positive apart.
        own = _drop(source, query_field) if kind == "title" else source
        positive = hit_text({"_source": _without(own, query)}, config)
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
    config: RerankConfig | None = None,
) -> list[TrainGroup]:
    """Pseudo-queries of the given ``kinds`` (see :func:`pseudo_queries`) from every
    document, each with its own document as the positive (the pseudo-query removed) and
    ``negatives`` BM25 hits (on ``query_field`` and ``doc_field``) past the top ``skip_top``
    of ``depth`` as negatives. Document texts follow ``config`` (default: :func:`text_config`
    of the two fields), as serving builds them.

    Each group carries the engine's BM25 ``_score`` of its positive and negatives
    (``engine``), for the teacher. The positive's is its score in the candidates' search
    (it is usually the top hit: the pseudo-query is its own text, still in the index); where
    it is past ``depth``, one more search restricted to its id gives the same score; where
    it does not match at all, the lowest candidate's score stands in.

    ``title`` groups leave ``query_field`` out of every candidate's text, the positive's
    included: the positive lost its title (the pseudo-query), so negatives with a title line
    would let "no title line" identify it.

    Documents are visited in a seeded random order; ``limit`` caps the number of groups.
    """
    config = config or text_config(query_field, doc_field)
    _check(config)
    rng = random.Random(seed)
    search_fields = (query_field, doc_field)
    fetch = list(dict.fromkeys([*search_fields, *text_fields(config)]))
    docs = list(_scan(client, index, fetch))
    rng.shuffle(docs)
    groups = []
    for doc in docs:
        found = pseudo_queries(
            doc, kinds, rng, config=config, query_field=query_field, doc_field=doc_field
        )
        for kind, query, positive in found:
            cands = mine_candidates(
                client,
                index,
                query,
                {doc["_id"]},
                search_fields,
                config=config,
                count=negatives,
                skip_top=skip_top,
                depth=depth,
                rng=rng,
                drop=query_field if kind == "title" else None,
            )
            if not cands.texts:
                continue
            score = cands.excluded.get(str(doc["_id"]))
            if score is None:
                score = engine_score(client, index, query, str(doc["_id"]), search_fields)
            own = min(cands.scores) if score is None else score
            engine = (own, *cands.scores)
            groups.append(TrainGroup(query, positive, tuple(cands.texts), engine=engine, kind=kind))
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
    config: RerankConfig | None = None,
) -> list[TrainGroup]:
    """Judged positives from ``dataset``'s ``split`` qrels, BM25 negatives (on ``fields``)
    from the index; document texts follow ``config`` (default: :func:`text_config` of
    ``fields``), the positives' read from the collection's documents as ``_source``."""
    from crossrank.adapters.evaluation import load_beir

    config = config or text_config(fields=fields)
    collection = load_beir(dataset, split)
    rng = random.Random(seed)
    groups = []
    for qid, query in collection.queries.items():
        positives = set(collection.qrels[qid])
        negs = mine_candidates(
            client,
            index,
            query,
            positives,
            fields,
            config=config,
            count=negatives,
            skip_top=skip_top,
            rng=rng,
        ).texts
        for doc_id in sorted(positives):
            doc = collection.corpus.get(doc_id)
            text = hit_text({"_source": doc}, config) if doc else ""
            if text and negs:
                groups.append(TrainGroup(query, text, tuple(negs)))
    return groups
