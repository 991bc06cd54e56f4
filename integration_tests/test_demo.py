"""The README's first command runs: the demo starts its own engine, reranks, and stops it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_demo_runs_end_to_end(tiny_model_dir: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "crossrank.adapters.demo",
            "--model",
            str(tiny_model_dir),
            "--window",
            "10",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    out = proc.stdout
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "[4/4] queries: engine (BM25) order | reranked order" in out
    assert out.count("(reranked 10 hits in") == 4
    assert out.rstrip().endswith("node stopped.")
