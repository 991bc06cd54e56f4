"""benchmarks/gpu_check.py in its quick CPU mode, as a subprocess: every section is there.

The GPU figures come from the same script on a CUDA machine; this keeps it runnable.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "benchmarks" / "gpu_check.py"


def datasets() -> Path:
    """``$CROSSRANK_DATASETS``, else ``shared/datasets`` beside the source tree (also when
    the suite runs from a copy against the installed wheel: ``$CROSSRANK_SOURCE_TREE``)."""
    if os.environ.get("CROSSRANK_DATASETS"):
        return Path(os.environ["CROSSRANK_DATASETS"])
    tree = Path(os.environ.get("CROSSRANK_SOURCE_TREE") or REPO)
    return tree.parent / "shared" / "datasets"


def test_gpu_check_quick_cpu_mode_reports_every_section(tmp_path: Path) -> None:
    out = tmp_path / "gpu_check.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--device", "cpu", "--quick", "--json", str(out),
         "--deadline-s", "280", "--datasets", str(datasets())],
        capture_output=True, text=True, timeout=330, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads(out.read_text())
    assert data["status"] == "ok" and data["errors"] == {}
    assert data["device"] == "cpu" and data["quick"] is True
    rows = data["rows"]
    by_section: dict[str, list[str]] = {}
    for row in rows:
        by_section.setdefault(row["section"], []).append(row["variant"])
    latency = [
        "CrossEncoder fp32", "CrossEncoder bf16", "crossrank fp32 cold", "crossrank fp32 warm",
        "crossrank bf16 cold", "crossrank bf16 warm",
    ]
    assert by_section == {
        "latency": latency,
        "latency_1000": latency,
        "service": ["serve, 1 client", "serve, 4 clients", "serve, 16 clients"],
        "train": ["train step"],
    }
    for row in rows:
        assert row["n"] >= 1 and row["p50_ms"] > 0 and row["p99_ms"] >= row["p50_ms"], row
        assert row["pairs_per_s"] > 0, row
    for row in rows:
        if row["variant"].startswith("crossrank fp32"):
            # Same weights, same truncation: the fp32 ranking is CrossEncoder's.
            assert math.isclose(row["tau"], 1.0, abs_tol=1e-9), row
    assert set(data["goals"]) == {"crossrank bf16 cold", "crossrank bf16 warm"}
    # The printed table names every section and the goal lines.
    for section in ("latency", "latency_1000", "service", "train"):
        assert f"\n{section} " in proc.stdout
    assert "goal (crossrank bf16 cold)" in proc.stdout
    assert "status: ok" in proc.stdout
