"""``crossrank calibrate``: fit a map from a scorer's raw score to P(relevant).

Judged pairs come from either

- **a BEIR folder** (``DATASET``): each judged query is run through the engine (``multi_match``
  over ``--fields``) and its top ``--window`` documents are scored; documents its qrels judge
  relevant are positives, every other document of the window is a negative (unjudged top-k
  documents taken as non-relevant: the calibration is of "relevant among what the engine
  returns", and a little pessimistic where judgments are sparse); or
- **a labelled file** (``--pairs``): JSON lines ``{"query", "document", "label"}`` (scored
  by the scorer) or ``{"score", "label"}`` (already scored), ``query_id`` optional; a label
  above 0 is relevant.

The queries are split in two by a hash of their id (the query text when there is none): the
calibration is fitted on one half and its error (ECE, Brier, before and after) measured on
the other, and both are recorded in the saved JSON with what it was fitted on. ``--method
auto`` is isotonic with at least 50 relevant pairs on the fit half, else Platt.

The calibration is saved as ``calibration.json`` in the model's folder (a local model: the
local scorer and the scorer service load it with the model) or at ``--out`` (a remote scorer:
give the file as its ``calibration`` option). A reliability diagram is written beside it.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from crossrank.adapters.cli import (
    SettingOption,
    add_setting_options,
    comma_list,
    given_settings,
)
from crossrank.reranker.config import RerankConfig
from crossrank.reranker.errors import ConfigurationError

__all__ = ["SCORER_OPTIONS", "main", "parser"]


#: ``RerankConfig`` fields that choose and run the scorer being calibrated
SCORER_OPTIONS = (
    SettingOption("model", "the scorer's model: a local folder, a hub name, or a served name"),
    SettingOption("kind", "cross-encoder or bi-encoder (auto: read from the checkpoint)"),
    SettingOption("fields", "comma-separated document fields", parse=comma_list),
    SettingOption("template", "document text, e.g. '{title}: {text}' (instead of --fields)"),
    SettingOption("device", "auto (cuda, then mps, then cpu), cpu, cuda, ..."),
    SettingOption("dtype", "the weights' dtype (auto: picked for the device)"),
    SettingOption("max_length", "tokens per pair (default: the model's)"),
    SettingOption("scorer_urls", "a remote scorer's URL", flag="--scorer-url", repeat=True),
    SettingOption("scorer_format", "the remote scorer's wire format"),
)


def parser() -> argparse.ArgumentParser:
    """The command line of ``crossrank calibrate``."""
    p = argparse.ArgumentParser(
        prog="crossrank calibrate", description=__doc__.split("\n")[0], allow_abbrev=False
    )
    p.add_argument(
        "dataset", type=Path, nargs="?", help="BEIR folder (corpus.jsonl, queries.jsonl, qrels/)"
    )
    p.add_argument("--pairs", type=Path, help="labelled pairs (JSON lines) instead of a dataset")
    p.add_argument("--engine-url", help="Elasticsearch/OpenSearch URL (with a dataset)")
    p.add_argument("--index", help="index name (default: the folder's name)")
    p.add_argument("--reuse-index", action="store_true", help="keep an existing index")
    p.add_argument("--analyzer", default="auto", help="auto (english if available), ...")
    p.add_argument("--split", default="test", help="the qrels split (qrels/SPLIT.tsv)")
    p.add_argument("--window", type=int, default=100, help="engine hits per query (default: 100)")
    p.add_argument("--max-queries", type=int, help="use the first N judged queries only")
    p.add_argument(
        "--method",
        choices=("auto", "temperature", "platt", "isotonic"),
        default="auto",
        help="auto: isotonic with >= 50 relevant pairs, else platt (default: auto)",
    )
    p.add_argument("--out", type=Path, help="calibration file (default: MODEL/calibration.json)")
    add_setting_options(p.add_argument_group("scorer"), RerankConfig, SCORER_OPTIONS)
    return p


def _destination(args: argparse.Namespace, config: RerankConfig) -> Path:
    from crossrank.reranker.calibration import CALIBRATION_FILE

    if args.out is not None:
        if args.out.is_dir():
            return Path(args.out / CALIBRATION_FILE)
        if not args.out.parent.is_dir():
            raise ConfigurationError(f"no such folder for --out: {args.out.parent}")
        return Path(args.out)
    if config.scorer_urls or not Path(config.model).is_dir():
        raise ConfigurationError(
            f"the model {config.model!r} is not a local folder: give --out FILE (and the file "
            "to the remote scorer as its calibration option)"
        )
    return Path(config.model) / CALIBRATION_FILE


def _read_pairs(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise ConfigurationError(f"no such pairs file: {path}")
    rows = []
    with path.open(encoding="utf-8") as handle:
        for n, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                if not isinstance(row, dict) or "label" not in row:
                    raise ValueError("not an object with a label")
                if "score" not in row and not ("query" in row and "document" in row):
                    raise ValueError("needs 'score', or 'query' and 'document'")
            except ValueError as exc:
                raise ConfigurationError(f"{path} line {n}: {exc}") from exc
            rows.append(row)
    if not rows:
        raise ConfigurationError(f"no pairs in {path}")
    return rows


def _file_runs(
    rows: list[dict[str, Any]], config: RerankConfig, progress: bool
) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, int]]]:
    """Runs (query → pair → raw score) and labels of a labelled file, scored if needed."""
    from crossrank.adapters.evaluation import Window, score_windows

    windows: dict[str, Window] = {}
    qrels: dict[str, dict[str, int]] = {}
    given: dict[str, dict[str, float]] = {}
    for n, row in enumerate(rows):
        qid = str(row.get("query_id") or row.get("query") or "")
        pair = str(n)
        qrels.setdefault(qid, {})[pair] = int(float(row["label"]) > 0)
        if "score" in row:
            given.setdefault(qid, {})[pair] = float(row["score"])
        else:
            w = windows.setdefault(qid, Window(str(row["query"]), [], [], []))
            w.ids.append(pair)
            w.texts.append(str(row["document"]))
    if windows:
        from crossrank.reranker.scoring import make_scorer

        score_windows(make_scorer(config), windows, progress=progress)
    runs = given
    for qid, w in windows.items():
        scores = w.result.scores if w.result is not None else []
        runs.setdefault(qid, {}).update(zip(w.ids, scores))
    return runs, qrels


def _beir_runs(
    args: argparse.Namespace, config: RerankConfig, progress: bool
) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, int]], str]:
    """Runs (query → top-k document → raw score) and qrels of a BEIR folder's queries."""
    from crossrank.adapters.connect import client_for, detect_kind
    from crossrank.adapters.evaluation import (
        load_beir,
        prepare_index,
        score_windows,
        search_windows,
    )
    from crossrank.reranker.scoring import make_scorer

    if not args.engine_url:
        raise ConfigurationError("a dataset needs --engine-url (the engine's top-k are scored)")
    collection = load_beir(args.dataset, args.split)
    if args.max_queries:
        collection.queries = dict(list(collection.queries.items())[: args.max_queries])
    client = client_for(args.engine_url, detect_kind(args.engine_url))
    index = args.index or args.dataset.name.lower()
    print(prepare_index(client, index, collection, reuse=args.reuse_index, analyzer=args.analyzer))
    windows = search_windows(
        client, index, collection.queries, config, window=args.window, progress=progress
    )
    score_windows(make_scorer(config), windows, progress=progress)
    runs = {
        qid: dict(zip(w.ids, w.result.scores if w.result is not None else []))
        for qid, w in windows.items()
    }
    return runs, collection.qrels, str(args.dataset.name)


def main(argv: Sequence[str] | None = None, *, progress: bool = True) -> int:
    """Entry point of ``crossrank calibrate``."""
    from crossrank.adapters.evaluation import (
        check_calibration,
        fit_on_fit_half,
        format_calibration,
        measured_queries,
        plot_reliability,
    )
    from crossrank.reranker.calibration import ISOTONIC_MIN_POSITIVES, UNJUDGED

    p = parser()
    args = p.parse_args(argv)
    if (args.dataset is None) == (args.pairs is None):
        p.error("give a BEIR DATASET folder or --pairs FILE (one of them)")
    config = RerankConfig(**given_settings(args, SCORER_OPTIONS), sigmoid=False)
    out = _destination(args, config)
    if args.pairs is not None:
        runs, qrels = _file_runs(_read_pairs(args.pairs), config, progress)
        source, collection, negatives = "file", None, "labelled in the file"
    else:
        runs, qrels, collection = _beir_runs(args, config, progress)
        source, negatives = "beir", UNJUDGED
    calibration = fit_on_fit_half(
        runs,
        qrels,
        method=args.method,
        source=source,
        collection=collection,
        negatives=negatives,
        window=args.window if source == "beir" else None,
        scorer=config.model,
    )
    kept, statement = measured_queries(list(runs), calibration, collection)
    check = check_calibration(
        calibration,
        {q: runs[q] for q in kept},
        qrels,
        statement,
        probability_scores=bool(config.scorer_urls) and config.scorer_format in ("cohere", "jina"),
    )
    calibration = calibration.model_copy(
        update={"measured": {"before": check.before, "after": check.after}}
    )
    path = calibration.save(out)
    plot = plot_reliability(
        check.curves,
        path.with_name(path.stem + "-reliability.png"),
        f"{collection or args.pairs.name}: {calibration.method}, measure half",
    )
    info = calibration.fitted_on
    assert info is not None  # fit_on_fit_half records it
    print(
        f"fitted {calibration.method} on {info.queries} queries, {info.pairs} pairs, "
        f"{info.positives} relevant ({negatives})"
        + (
            f"; auto: isotonic from {ISOTONIC_MIN_POSITIVES} relevant pairs"
            if args.method == "auto"
            else ""
        )
    )
    print(format_calibration(check))
    print(f"wrote {path}, {plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
