"""Evaluating reranking on a BEIR collection: index it, run every query through a reranking
client (or the proxy), score BM25, reranked and fused runs with ranx, report latency."""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from crossrank.adapters.connect import Kind
from crossrank.adapters.core.plan import fuse_scores
from crossrank.reranker.config import FusionConfig, RerankConfig
from crossrank.reranker.errors import ConfigurationError, EngineRequestError, ScorerError
from crossrank.reranker.scoring import Scorer, ScoreRequest, ScoreResult

if TYPE_CHECKING:
    from crossrank.reranker.calibration import Calibration

__all__ = [
    "METRICS",
    "CalibrationCheck",
    "Collection",
    "EvalResult",
    "ProxySearch",
    "Window",
    "check_calibration",
    "evaluate",
    "fit_on_fit_half",
    "format_calibration",
    "format_summary",
    "index_collection",
    "labelled_pairs",
    "load_beir",
    "measured_queries",
    "pick_analyzer",
    "plot_reliability",
    "prepare_index",
    "read_qrels",
    "score_windows",
    "search_windows",
    "text_query",
    "write_outputs",
]


METRICS = ("ndcg@10", "mrr@10")


@dataclass
class Collection:
    """A BEIR-format collection: corpus, queries and graded judgments."""

    corpus: dict[str, dict[str, str]]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]


def _jsonl(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                yield json.loads(line)


def read_qrels(path: Path | str) -> dict[str, dict[str, int]]:
    """A BEIR qrels TSV (header ``query-id  corpus-id  score``): the pairs scored above 0."""
    qrels: dict[str, dict[str, int]] = {}
    with Path(path).open(encoding="utf-8") as handle:
        for row in csv.DictReader(handle, delimiter="\t"):
            if int(row["score"]) > 0:
                qrels.setdefault(row["query-id"], {})[row["corpus-id"]] = int(row["score"])
    return qrels


def load_beir(
    folder: Path | str, split: str = "test", *, qrels: Path | str | None = None
) -> Collection:
    """Read ``corpus.jsonl``, ``queries.jsonl`` and ``qrels/<split>.tsv`` (or the ``qrels``
    file given, e.g. ``crossrank label``'s pseudo-qrels); keeps judged queries.

    A missing folder or file is a :class:`ConfigurationError` naming it.
    """
    folder = Path(folder)
    qrels_path = Path(qrels) if qrels is not None else folder / "qrels" / f"{split}.tsv"
    for path in (folder / "corpus.jsonl", folder / "queries.jsonl", qrels_path):
        if not path.is_file():
            what = "BEIR folder" if not folder.is_dir() else "file"
            missing = folder if not folder.is_dir() else path
            raise ConfigurationError(f"no such {what}: {missing}")
    corpus = {
        str(d["_id"]): {"title": d.get("title") or "", "text": d.get("text") or ""}
        for d in _jsonl(folder / "corpus.jsonl")
    }
    judged = read_qrels(qrels_path)
    queries = {
        str(q["_id"]): q["text"]
        for q in _jsonl(folder / "queries.jsonl")
        if str(q["_id"]) in judged
    }
    if not queries:
        raise ConfigurationError(
            f"no query of {folder / 'queries.jsonl'} is judged in {qrels_path}"
        )
    return Collection(corpus, queries, {q: judged[q] for q in queries})


def index_collection(
    client: Any, index: str, collection: Collection, *, reuse: bool, analyzer: str = "standard"
) -> int:
    """Create ``index`` and bulk-load the corpus (skipped when ``reuse`` and it exists)."""
    if client.indices.exists(index=index):
        if reuse:
            return 0
        client.indices.delete(index=index)
    text = {"type": "text", "analyzer": analyzer}
    client.indices.create(
        index=index,
        body={
            "settings": {"number_of_shards": 1, "number_of_replicas": 0},
            "mappings": {"properties": {"title": text, "text": text}},
        },
    )
    from tqdm import tqdm

    ids = list(collection.corpus)
    with tqdm(total=len(ids), desc="indexing", unit="doc") as bar:
        for start in range(0, len(ids), 500):
            lines: list[dict[str, Any]] = []
            for doc_id in ids[start : start + 500]:
                lines += [{"index": {"_index": index, "_id": doc_id}}, collection.corpus[doc_id]]
            resp = client.bulk(body=lines)
            if resp.get("errors"):
                raise EngineRequestError(f"bulk indexing failed: {json.dumps(resp)[:500]}")
            bar.update(len(lines) // 2)
    client.indices.refresh(index=index)
    return len(ids)


def pick_analyzer(client: Any, wanted: str = "auto") -> str:
    """``wanted``, or for ``auto`` the ``english`` analyzer where the engine has it (strong
    BM25: stemming and stopwords), else ``standard``."""
    if wanted != "auto":
        return wanted
    try:
        client.indices.analyze(body={"analyzer": "english", "text": "flows"})
    except Exception:
        return "standard"
    return "english"


def prepare_index(
    client: Any, index: str, collection: Collection, *, reuse: bool, analyzer: str = "auto"
) -> str:
    """Index ``collection`` into ``index`` with :func:`pick_analyzer`'s analyzer (or reuse it);
    the line saying which, for a command to print."""
    picked = pick_analyzer(client, analyzer)
    added = index_collection(client, index, collection, reuse=reuse, analyzer=picked)
    done = f"{added} documents indexed" if added else "reused"
    return f"index {index!r}: {done} (analyzer {picked})"


class ProxySearch:
    """Searches through a ``crossrank proxy`` with the engine's official client.

    To :func:`evaluate` it looks like the reranking wrappers (``search(index=, body=,
    rerank=)`` and ``rerank_config``): a call's rerank options travel in the body as
    ``ext.crossrank`` (``rerank=False`` sends ``"crossrank": false``: engine order), and the
    proxy answers with the wrapper's ``_rerank`` keys. ``model`` asks the proxy for that
    model on every call (the proxy must serve it). ``rerank_config`` only feeds the
    evaluation's own fusion; the proxy's settings decide the scoring.
    """

    def __init__(
        self,
        url: str,
        kind: Kind,
        *,
        model: str | None = None,
        config: RerankConfig | None = None,
        timeout: float = 120.0,
    ) -> None:
        self.url = url.rstrip("/")
        self.model = model
        self.rerank_config = config or RerankConfig(**({"model": model} if model else {}))
        self.client: Any
        if kind == "opensearch":
            from opensearchpy import OpenSearch

            self.client = OpenSearch(hosts=[self.url], timeout=timeout)
        else:
            from elasticsearch import Elasticsearch

            self.client = Elasticsearch(self.url, request_timeout=timeout)

    def request_body(
        self, body: Mapping[str, Any], rerank: Mapping[str, Any] | bool | None = None
    ) -> dict[str, Any]:
        """``body`` with the call's rerank options under ``ext.crossrank``."""
        out = dict(body)
        control: dict[str, Any] | bool
        if rerank is False:
            control = False
        else:
            control = {**({"model": self.model} if self.model else {})}
            if isinstance(rerank, Mapping):
                control.update(rerank)
            if not control:
                return out
        out["ext"] = {**dict(out.get("ext") or {}), "crossrank": control}
        return out

    def search(
        self, *, index: str, body: Mapping[str, Any], rerank: Mapping[str, Any] | bool | None = None
    ) -> Any:
        """One ``_search`` through the proxy."""
        return self.client.search(index=index, body=self.request_body(body, rerank))

    def close(self) -> None:
        self.client.close()


@dataclass
class EvalResult:
    """Runs, per-query metrics and stage latencies of one evaluation."""

    runs: dict[str, dict[str, dict[str, float]]]
    per_query: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    summary: dict[str, dict[str, float]] = field(default_factory=dict)
    latency_ms: dict[str, dict[str, float]] = field(default_factory=dict)


def _percentiles(values: list[float]) -> dict[str, float]:
    import numpy as np

    return {"p50": float(np.percentile(values, 50)), "p95": float(np.percentile(values, 95))}


def evaluate(
    client: Any,
    index: str,
    collection: Collection,
    *,
    window: int = 100,
    fusion: FusionConfig | None = None,
    progress: bool = True,
) -> EvalResult:
    """Run every query, build the BM25 / reranked / fused runs and score them with ranx."""
    from tqdm import tqdm

    config = client.rerank_config
    fusion = fusion or FusionConfig(method="weighted", weight=0.5)
    runs: dict[str, dict[str, dict[str, float]]] = {}
    stages: dict[str, list[float]] = {"engine": [], "scoring": [], "total": []}
    items = list(collection.queries.items())
    for qid, text in tqdm(items, desc="queries", unit="q", disable=not progress):
        body = {
            "query": {"multi_match": {"query": text, "fields": ["title", "text"]}},
            "size": window,
            "_source": False,
        }
        start = time.perf_counter()
        resp = client.search(
            index=index,
            body=body,
            rerank={"window": window, "query_text": text, "source": "_source"},
        )
        total = (time.perf_counter() - start) * 1000
        data = getattr(resp, "body", resp)
        hits = data["hits"]["hits"]
        info = data.get("_rerank", {})
        if info.get("fallback"):
            raise ScorerError(
                f"query {qid}: reranking fell back to engine order ({info.get('error')}); "
                "eval needs every query reranked: give scoring more time (the proxy's "
                "--latency-budget-ms, a remote scorer's scorer_timeout) or a faster scorer"
            )
        stages["scoring"].append(float(info.get("scoring_ms", 0.0)))
        stages["total"].append(total)
        stages["engine"].append(total - stages["scoring"][-1])
        by_engine = sorted(hits, key=lambda h: h["_rerank"]["engine_rank"])
        for name, values in _window_runs(config, fusion, by_engine).items():
            runs.setdefault(name, {})[qid] = values
    result = _scored(runs, collection, [*METRICS, f"recall@{window}"])
    result.latency_ms = {stage: _percentiles(values) for stage, values in stages.items() if values}
    return result


def _window_runs(
    config: RerankConfig, fusion: FusionConfig, hits: list[dict[str, Any]]
) -> dict[str, dict[str, float]]:
    """One query's runs from its reranked hits (engine order): ``bm25``, ``reranked`` (the
    model's score; an ensemble's combined score), ``fused`` (with the engine's score); for an
    ensemble also each member alone (``<name>``) and fused with the engine (``<name>+bm25``)."""
    ids = [h["_id"] for h in hits]
    engine = [float(h["_rerank"]["engine_score"] or 0.0) for h in hits]
    signals: dict[str, list[float]] = {}
    for h in hits:
        for name, value in (h["_rerank"].get("signals") or {}).items():
            signals.setdefault(name, []).append(float(value))
    result = ScoreResult(
        scores=[float(h["_rerank"]["score"]) for h in hits],
        signals={k: v for k, v in signals.items() if len(v) == len(hits)},
    )
    fusing = config.model_copy(update={"fusion": fusion})
    out = {
        "bm25": engine,
        "reranked": result.scores,
        "fused": fuse_scores(fusing, result, engine),
    }
    single = config.model_copy(update={"fusion": fusion, "ensemble": ()})
    for name, values in result.signals.items():
        out[name] = values
        out[f"{name}+bm25"] = fuse_scores(single, ScoreResult(scores=values), engine)
    return {name: dict(zip(ids, values)) for name, values in out.items()}


def _scored(
    runs: dict[str, dict[str, dict[str, float]]], collection: Collection, metrics: list[str]
) -> EvalResult:
    """Per-query and mean metrics of each run, with ranx."""
    from ranx import Qrels, Run
    from ranx import evaluate as ranx_evaluate

    qrels = Qrels({q: collection.qrels[q] for q in collection.queries})
    result = EvalResult(runs)
    for name, run in runs.items():
        # ranx needs every judged query in the run; a query with no hits scores zero.
        for qid in collection.queries:
            run.setdefault(qid, {})
        per_query = ranx_evaluate(qrels, Run(run, name=name), metrics, return_mean=False)
        result.per_query[name] = {
            metric: dict(zip(collection.queries, map(float, values)))
            for metric, values in per_query.items()
        }
        result.summary[name] = {
            m: float(sum(v.values()) / len(v)) for m, v in result.per_query[name].items()
        }
    return result


def write_outputs(result: EvalResult, out: Path) -> list[Path]:
    """Per-query JSON and CSV, the summary JSON, and the per-query nDCG@10 difference PNG."""
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for qid in result.per_query["bm25"]["ndcg@10"]:
        row: dict[str, Any] = {"query_id": qid}
        for run, metrics in result.per_query.items():
            for metric, values in metrics.items():
                row[f"{run}_{metric}"] = round(values[qid], 6)
        rows.append(row)
    paths = [
        out / "per_query.json",
        out / "per_query.csv",
        out / "summary.json",
        out / "ndcg_diff.png",
    ]
    paths[0].write_text(json.dumps(rows, indent=1))
    with paths[1].open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    paths[2].write_text(
        json.dumps({"summary": result.summary, "latency_ms": result.latency_ms}, indent=1)
    )
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    diffs = sorted(r["reranked_ndcg@10"] - r["bm25_ndcg@10"] for r in rows)
    fig, ax = plt.subplots(figsize=(8, 3.5))
    ax.bar(range(len(diffs)), diffs, color=["#c0392b" if d < 0 else "#27ae60" for d in diffs])
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xlabel("queries (sorted)")
    ax.set_ylabel("nDCG@10: reranked − BM25")
    ax.set_title(f"per-query nDCG@10 difference (mean {sum(diffs) / len(diffs):+.3f})")
    fig.tight_layout()
    fig.savefig(paths[3], dpi=100)
    plt.close(fig)
    return paths


def format_summary(result: EvalResult) -> str:
    """A readable table: one row per run, one column per metric; then stage latencies."""
    metrics = list(next(iter(result.summary.values())))
    width = max(10, *(len(run) + 1 for run in result.summary))
    lines = [f"{'run':{width}}" + "".join(f"{m:>12}" for m in metrics)]
    for run, values in result.summary.items():
        lines.append(f"{run:{width}}" + "".join(f"{values[m]:12.4f}" for m in metrics))
    lines.append("")
    lines.append(
        "latency ms  "
        + "  ".join(
            f"{stage} p50 {v['p50']:.1f} p95 {v['p95']:.1f}"
            for stage, v in result.latency_ms.items()
        )
    )
    return "\n".join(lines)


# ---------------------------------------------------------------------- windows and calibration


@dataclass
class Window:
    """One query's engine top-k: its text, the hits' ids, engine scores and document texts
    (as the reranker builds them), and once scored the scorer's result."""

    query: str
    ids: list[str]
    engine: list[float]
    texts: list[str]
    result: ScoreResult | None = None


def text_query(text: str, config: RerankConfig, window: int) -> dict[str, Any]:
    """The ``_search`` body ``crossrank eval`` runs for a query text: ``multi_match`` over
    the configured fields (every field for a template)."""
    fields = list(config.fields) if config.template is None else ["*"]
    return {"query": {"multi_match": {"query": text, "fields": fields}}, "size": window}


def search_windows(
    client: Any,
    index: str,
    searches: Mapping[str, Mapping[str, Any] | str],
    config: RerankConfig,
    *,
    window: int,
    progress: bool = True,
) -> dict[str, Window]:
    """Run each search (a query text, or a whole ``_search`` body whose query text is
    extracted as the reranker does) in engine order, top ``window`` only, not reranked."""
    from tqdm import tqdm

    from crossrank.adapters.core.inputs import document_text, query_text_for

    out: dict[str, Window] = {}
    for qid, search in tqdm(searches.items(), desc="searching", unit="q", disable=not progress):
        if isinstance(search, str):
            body, text = text_query(search, config, window), search
        else:
            body = {**search, "size": window, "from": 0}
            text = query_text_for(body, None, config)
        try:
            resp = client.search(index=index, body=body, rerank=False)
        except Exception as exc:
            raise EngineRequestError(f"query {qid}: the engine refused the search: {exc}") from exc
        hits = getattr(resp, "body", resp)["hits"]["hits"]
        out[qid] = Window(
            text,
            [str(h["_id"]) for h in hits],
            [float(h.get("_score") or 0.0) for h in hits],
            [document_text(h, config).text for h in hits],
        )
    return out


def score_windows(
    scorer: Scorer, windows: Mapping[str, Window], *, batch: int = 8, progress: bool = True
) -> None:
    """Score every window's (query, document) pairs with ``scorer``, ``batch`` queries at a
    time; each window's ``result`` is set."""
    from tqdm import tqdm

    items = [w for w in windows.values() if w.ids]
    with tqdm(total=len(items), desc="scoring", unit="q", disable=not progress) as bar:
        for start in range(0, len(items), batch):
            chunk = items[start : start + batch]
            results = scorer.score([ScoreRequest(w.query, w.texts) for w in chunk])
            for w, result in zip(chunk, results):
                w.result = result
            bar.update(len(chunk))
    for w in windows.values():
        if w.result is None:
            w.result = ScoreResult([], model=scorer.name, calibrated=[])


def labelled_pairs(
    runs: Mapping[str, Mapping[str, float]], qrels: Mapping[str, Mapping[str, int]]
) -> tuple[list[float], list[int]]:
    """(score, label) of every document of every query's run: 1 when judged relevant, 0
    otherwise (unjudged top-k documents taken as non-relevant)."""
    scores: list[float] = []
    labels: list[int] = []
    for qid, run in runs.items():
        judged = qrels.get(qid, {})
        for doc, score in run.items():
            scores.append(float(score))
            labels.append(1 if judged.get(doc, 0) > 0 else 0)
    return scores, labels


def fit_on_fit_half(
    runs: Mapping[str, Mapping[str, float]],
    qrels: Mapping[str, Mapping[str, int]],
    *,
    method: Literal["auto", "temperature", "platt", "isotonic"] = "auto",
    source: str = "beir",
    collection: str | None = None,
    negatives: str | None = None,
    window: int | None = None,
    scorer: str = "",
) -> Calibration:
    """A :class:`~crossrank.reranker.calibration.Calibration` fitted on the runs of the fit
    half of the queries (``SPLIT_RULE``), its ``fitted_on`` saying on what."""
    from crossrank.reranker.calibration import (
        SPLIT_RULE,
        UNJUDGED,
        FitInfo,
        fit_calibration,
        query_split,
    )

    fit = {q: r for q, r in runs.items() if query_split(q) == "fit"}
    scores, labels = labelled_pairs(fit, qrels)
    info = FitInfo(
        source=source,
        collection=collection,
        split=SPLIT_RULE,
        queries=len(fit),
        pairs=len(scores),
        positives=sum(labels),
        negatives=negatives or UNJUDGED,
        window=window,
        scorer=scorer,
    )
    return fit_calibration(scores, labels, method, fitted_on=info)


def plot_reliability(
    curves: Mapping[str, tuple[Any, Any]], path: Path, title: str = "reliability"
) -> Path:
    """A reliability diagram (PNG): per curve name, (probabilities, labels) binned in ten;
    the diagonal is perfect calibration, the marker size the bin's share of the pairs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from crossrank.reranker.calibration import measure, reliability_bins

    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    for name, (probs, labels) in curves.items():
        points = reliability_bins(probs, labels)
        total = sum(n for _, _, n in points) or 1
        q = measure(probs, labels)
        ax.plot(
            [p for p, _, _ in points],
            [f for _, f, _ in points],
            marker="o",
            label=f"{name}: ECE {q.ece:.3f}, Brier {q.brier:.3f}",
        )
        ax.scatter(
            [p for p, _, _ in points],
            [f for _, f, _ in points],
            s=[10 + 300 * n / total for _, _, n in points],
            alpha=0.3,
        )
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("predicted P(relevant)")
    ax.set_ylabel("fraction relevant")
    ax.set_title(title)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


@dataclass
class CalibrationCheck:
    """A calibration measured on judged pairs: which queries (``split``), the error
    ``before`` (the sigmoid of the raw score, or the score itself when it is already a
    probability) and ``after``, and the (probabilities, labels) of both for the diagram."""

    split: str
    before: Any
    after: Any
    curves: dict[str, tuple[list[float], list[int]]]


def measured_queries(
    qids: list[str], calibration: Any, collection: str | None
) -> tuple[list[str], str]:
    """The queries a calibration may be measured on, and the statement of which: the
    measure half when it was fitted on the fit half of this collection, else all of them."""
    from crossrank.reranker.calibration import SPLIT_RULE, query_split

    fitted = calibration.fitted_on
    if fitted is not None and fitted.collection == collection and fitted.split == SPLIT_RULE:
        kept = [q for q in qids if query_split(q) == "measure"]
        return kept, (
            f"measured on the measure half ({len(kept)} queries), fitted on the fit half; "
            f"{SPLIT_RULE}"
        )
    where = f"collection {fitted.collection!r}" if fitted and fitted.collection else "other data"
    return qids, f"measured on all {len(qids)} queries (fitted on {where})"


def check_calibration(
    calibration: Any,
    runs: Mapping[str, Mapping[str, float]],
    qrels: Mapping[str, Mapping[str, int]],
    split: str,
    *,
    probability_scores: bool = False,
) -> CalibrationCheck:
    """ECE and Brier of ``runs`` (raw scores per query and document) before and after
    ``calibration``, unjudged documents taken as non-relevant."""
    from crossrank.reranker.calibration import measure, sigmoid_scores

    scores, labels = labelled_pairs(runs, qrels)
    before = list(scores) if probability_scores else [float(v) for v in sigmoid_scores(scores)]
    after = calibration.apply(scores)
    return CalibrationCheck(
        split,
        measure(before, labels),
        measure(after, labels),
        {"before": (before, labels), "after": (after, labels)},
    )


def format_calibration(check: CalibrationCheck) -> str:
    """Two lines of ECE and Brier, before and after, and which queries they were measured on."""
    from crossrank.reranker.calibration import UNJUDGED

    lines = [
        f"{'calibration':12}{'ECE':>8}{'Brier':>8}   pairs {check.after.pairs},"
        f" relevant {check.after.positives} ({UNJUDGED})"
    ]
    for name, q in (("before", check.before), ("after", check.after)):
        lines.append(f"{name:12}{q.ece:8.4f}{q.brier:8.4f}")
    lines.append(check.split)
    return "\n".join(lines)
