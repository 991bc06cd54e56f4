"""``crossrank label``: pseudo-relevance judgments from a calibrated scorer, no humans needed.

Runs a query list through the engine — a file of queries (JSON lines ``{"_id", "text"}``
as a BEIR ``queries.jsonl``, or one query per line), or queries sampled from a log of
``_search`` bodies (JSON lines: the body, or ``{"body": ...}``; run as logged, their query
text extracted as the reranker does) — and scores each query's top ``--window`` hits with a
scorer or an ensemble (``--member``) that has a calibration. A hit is graded by its calibrated
probability: grade g when it reaches the g-th of ``--grades`` (default ``0.5,0.8``: 1 from
P >= 0.5, 2 from P >= 0.8).

Writes, in ``--out``: ``qrels/test.tsv`` (BEIR pseudo-qrels, graded pairs only),
``queries.jsonl``, ``scores.jsonl`` (every hit: engine score, raw score, probability,
grade) and ``summary.json``. ``crossrank eval DATASET --qrels OUT/qrels/test.tsv`` then
compares analyzers, fields, BM25 and reranking without human judgments. Pseudo-qrels only
know the documents the engine returned here, and they favour the labeller's own ranking:
compare other systems with them, not the labeller against itself.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from crossrank.adapters.cli import (
    SettingOption,
    add_setting_options,
    ensemble_option,
    given_settings,
)
from crossrank.adapters.cli.calibrate import SCORER_OPTIONS
from crossrank.reranker.config import RerankConfig
from crossrank.reranker.errors import ConfigurationError

__all__ = ["LABEL_OPTIONS", "grade", "main", "parser", "pseudo_qrels", "read_queries"]

#: the scorer options of ``calibrate``, and an ensemble's members and a remote calibration
LABEL_OPTIONS = (
    *SCORER_OPTIONS,
    ensemble_option("each needs its calibration: the ensemble's probability is their mean"),
    SettingOption("calibration", "a remote scorer's calibration file (crossrank calibrate)"),
)


def _thresholds(text: str) -> tuple[float, ...]:
    values = tuple(float(v) for v in text.split(",") if v.strip())
    if not values or any(not 0 < v < 1 for v in values) or list(values) != sorted(set(values)):
        raise ValueError("grades are increasing probabilities in (0, 1), e.g. 0.5,0.8")
    return values


def parser() -> argparse.ArgumentParser:
    """The command line of ``crossrank label``."""
    p = argparse.ArgumentParser(
        prog="crossrank label", description=__doc__.split("\n")[0], allow_abbrev=False
    )
    p.add_argument("--engine-url", required=True, help="Elasticsearch/OpenSearch URL")
    p.add_argument("--index", required=True, help="the index searched")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--queries", type=Path, help="queries: JSON lines {_id, text}, or text")
    source.add_argument("--search-log", type=Path, help="a log of _search bodies (JSON lines)")
    p.add_argument("--sample", type=int, help="label N queries drawn at random (default: all)")
    p.add_argument("--seed", type=int, default=0, help="of the sample (default: 0)")
    p.add_argument("--window", type=int, default=100, help="hits labelled per query (default: 100)")
    p.add_argument(
        "--grades",
        type=_thresholds,
        default=(0.5, 0.8),
        help="probability thresholds of grades 1, 2, ... (default: 0.5,0.8)",
    )
    p.add_argument("--out", type=Path, required=True, help="output folder")
    add_setting_options(p.add_argument_group("scorer"), RerankConfig, LABEL_OPTIONS)
    return p


def read_queries(
    path: Path, *, log: bool = False, sample: int | None = None, seed: int = 0
) -> dict[str, dict[str, Any] | str]:
    """Queries by id: texts from a query file, or ``_search`` bodies from a log (``log``);
    ``sample`` of them drawn with ``seed``. :class:`ConfigurationError` for a missing or
    empty file or an unreadable line."""
    if not path.is_file():
        raise ConfigurationError(f"no such {'search log' if log else 'query file'}: {path}")
    out: dict[str, dict[str, Any] | str] = {}
    with path.open(encoding="utf-8") as handle:
        for n, line in enumerate(handle, 1):
            line = line.strip()
            if not line:
                continue
            if log or line.startswith("{"):
                try:
                    row = json.loads(line)
                except ValueError as exc:
                    raise ConfigurationError(f"{path} line {n}: not JSON ({exc})") from exc
                if not isinstance(row, dict):
                    raise ConfigurationError(f"{path} line {n}: not a JSON object")
                if log:
                    body = row.get("body", row)
                    if not isinstance(body, dict) or "query" not in body:
                        raise ConfigurationError(f"{path} line {n}: a _search body has no query")
                    out[f"log-{n}"] = body
                elif isinstance(row.get("text"), str) and row["text"].strip():
                    out[str(row.get("_id", f"q{n}"))] = row["text"]
                else:
                    raise ConfigurationError(f"{path} line {n}: no 'text'")
            else:
                out[f"q{n}"] = line
    if not out:
        raise ConfigurationError(f"{path} holds no query")
    if sample is not None and sample < len(out):
        keep = set(random.Random(seed).sample(sorted(out), sample))
        out = {q: v for q, v in out.items() if q in keep}
    return out


def grade(probability: float, thresholds: Sequence[float]) -> int:
    """How many of ``thresholds`` the probability reaches (0: not relevant)."""
    return sum(probability >= t for t in thresholds)


def pseudo_qrels(windows: dict[str, Any], thresholds: Sequence[float]) -> dict[str, dict[str, int]]:
    """Graded pseudo-qrels (grade >= 1 only) of scored windows, by calibrated probability."""
    qrels: dict[str, dict[str, int]] = {}
    for qid, w in windows.items():
        probs = w.result.calibrated if w.result is not None else None
        for doc, p in zip(w.ids, probs or []):
            if (g := grade(p, thresholds)) > 0:
                qrels.setdefault(qid, {})[doc] = g
    return qrels


def _check_calibrated(config: RerankConfig, scorer: Any | None = None) -> None:
    """:class:`ConfigurationError` unless every scorer has a calibration: local models are
    checked before they load (``calibration.json`` beside them); with ``scorer``, remote
    ones are asked (one pair) once built."""
    from crossrank.reranker.calibration import load_calibration
    from crossrank.reranker.scoring import ScoreRequest

    members = [(m.name, m.model, m.scorer_urls) for m in config.ensemble] or [
        ("", config.model, config.scorer_urls)
    ]
    for name, model, urls in members:
        if not urls and load_calibration(model) is None:
            who = f"ensemble member {name!r}" if name else "the scorer"
            raise ConfigurationError(
                f"{who} has no calibration (no calibration.json in {model}): "
                "fit one with `crossrank calibrate`"
            )
    if scorer is not None and any(urls for _, _, urls in members):
        [probe] = scorer.score([ScoreRequest("calibration check", ["a document"])])
        if probe.calibrated is None:
            raise ConfigurationError(
                "the remote scorer sends no calibrated scores: give --calibration FILE "
                "(fit one with `crossrank calibrate`)"
            )


def write_labels(
    out: Path,
    windows: dict[str, Any],
    qrels: dict[str, dict[str, int]],
    thresholds: Sequence[float],
) -> list[Path]:
    """``qrels/test.tsv``, ``queries.jsonl`` and ``scores.jsonl`` in ``out``."""
    (out / "qrels").mkdir(parents=True, exist_ok=True)
    paths = [out / "qrels" / "test.tsv", out / "queries.jsonl", out / "scores.jsonl"]
    with paths[0].open("w", encoding="utf-8") as handle:
        handle.write("query-id\tcorpus-id\tscore\n")
        for qid, docs in qrels.items():
            for doc, g in docs.items():
                handle.write(f"{qid}\t{doc}\t{g}\n")
    with paths[1].open("w", encoding="utf-8") as handle:
        for qid, w in windows.items():
            handle.write(json.dumps({"_id": qid, "text": w.query}, ensure_ascii=False) + "\n")
    with paths[2].open("w", encoding="utf-8") as handle:
        for qid, w in windows.items():
            result = w.result
            hits = []
            for i, doc in enumerate(w.ids):
                p = result.calibrated[i] if result and result.calibrated else None
                hit: dict[str, Any] = {
                    "_id": doc,
                    "engine_score": w.engine[i],
                    "score": result.scores[i] if result else None,
                    "probability": p,
                    "grade": grade(p, thresholds) if p is not None else 0,
                }
                if result and result.signals:
                    hit["signals"] = {k: v[i] for k, v in result.signals.items()}
                hits.append(hit)
            row = {"query_id": qid, "query": w.query, "hits": hits}
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    return paths


def main(argv: Sequence[str] | None = None, *, progress: bool = True) -> int:
    """Entry point of ``crossrank label``."""
    from crossrank.adapters.connect import client_for, detect_kind
    from crossrank.adapters.evaluation import score_windows, search_windows
    from crossrank.reranker.scoring import make_scorer

    args = parser().parse_args(argv)
    searches = read_queries(
        args.queries or args.search_log,
        log=args.search_log is not None,
        sample=args.sample,
        seed=args.seed,
    )
    config = RerankConfig(**given_settings(args, LABEL_OPTIONS), sigmoid=False)
    _check_calibrated(config)
    scorer = make_scorer(config)
    _check_calibrated(config, scorer)
    client = client_for(args.engine_url, detect_kind(args.engine_url))
    if not client.indices.exists(index=args.index):
        raise ConfigurationError(f"no index {args.index!r} at {args.engine_url}")
    windows = search_windows(
        client, args.index, searches, config, window=args.window, progress=progress
    )
    score_windows(scorer, windows, progress=progress)
    if any(w.result is None or w.result.calibrated is None for w in windows.values()):
        raise ConfigurationError(
            f"the scorer {scorer.name!r} returned no calibrated scores although it has a "
            "calibration file (a scorer kind that does not apply calibrations yet)"
        )
    qrels = pseudo_qrels(windows, args.grades)
    paths = write_labels(args.out, windows, qrels, args.grades)
    counts = [0] * (len(args.grades) + 1)
    for w in windows.values():
        for p in (w.result.calibrated or []) if w.result else []:
            counts[grade(p, args.grades)] += 1
    summary = {
        "queries": len(windows),
        "queries_with_relevant": len(qrels),
        "pairs": sum(counts),
        "pairs_per_grade": dict(enumerate(counts)),
        "grades": list(args.grades),
        "window": args.window,
        "scorer": scorer.name,
    }
    paths.append(args.out / "summary.json")
    paths[-1].write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    print(
        f"labelled {summary['pairs']} hits of {len(windows)} queries with {scorer.name}"
        f" (top {args.window}); {len(qrels)} queries have a relevant hit"
    )
    thresholds = ", ".join(f"grade {g} from P >= {t:g}" for g, t in enumerate(args.grades, 1))
    print(f"{thresholds}; hits per grade: " + ", ".join(f"{g}: {n}" for g, n in enumerate(counts)))
    print(
        "pseudo-qrels favour the labeller's own ranking: compare other systems with them, "
        "not the labeller against itself"
    )
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
