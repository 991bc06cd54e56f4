"""``crossrank calibrate``, ``crossrank label`` and ``crossrank eval --qrels`` end to end
against the real engines, on ADI with a tiny cross-encoder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from crossrank.adapters.cli import main as cli_main
from crossrank.reranker.calibration import UNJUDGED, load_calibration

from .conftest import dataset_dir


def test_calibrate_label_and_eval_with_pseudo_qrels(
    engine: Any, tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    index = "adi_calibrate"
    common = ["--engine-url", engine.url, "--index", index, "--dtype", "float32"]
    assert cli_main(["calibrate", str(dataset_dir()), *common, "--model", str(model),
                     "--window", "20"]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert "measured on the measure half" in printed and UNJUDGED in printed
    calibration = load_calibration(model)
    assert calibration is not None and calibration.fitted_on is not None
    assert calibration.fitted_on.collection == "adi" and calibration.fitted_on.window == 20
    assert calibration.fitted_on.positives > 0 and calibration.method == "platt"  # < 50
    assert set(calibration.measured) == {"before", "after"}
    assert (model / "calibration-reliability.png").read_bytes()[:4] == b"\x89PNG"

    labels = tmp_path / "labels"
    assert cli_main(["label", *common, "--model", str(model), "--window", "20",
                     "--queries", str(dataset_dir() / "queries.jsonl"), "--grades", "0.1,0.5",
                     "--out", str(labels)]) == 0  # fmt: skip
    summary = json.loads((labels / "summary.json").read_text())
    rows = [json.loads(line) for line in (labels / "scores.jsonl").read_text().splitlines()]
    assert summary["queries"] == len(rows) == 35  # a query may match fewer than 20 docs
    assert summary["pairs"] == sum(len(r["hits"]) for r in rows) > 30 * 20
    probs = [h["probability"] for r in rows for h in r["hits"]]
    assert all(0 <= p <= 1 for p in probs)
    lines = (labels / "qrels" / "test.tsv").read_text().splitlines()
    assert lines[0] == "query-id\tcorpus-id\tscore"
    if len(lines) > 1:  # a random-init model may call nothing relevant at 0.1
        assert cli_main(["eval", str(dataset_dir()), "--engine-url", engine.url, "--index",
                         index, "--reuse-index", "--model", str(model), "--window", "20",
                         "--qrels", str(labels / "qrels" / "test.tsv"),
                         "--out", str(tmp_path / "pseudo")]) == 0  # fmt: skip
        assert "judgments: " in capsys.readouterr().out

    assert cli_main(["eval", str(dataset_dir()), "--engine-url", engine.url, "--index", index,
                     "--reuse-index", "--model", str(model), "--window", "20",
                     "--out", str(tmp_path / "human")]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "calibration" in out and "before" in out and "after" in out
    assert (tmp_path / "human" / "reliability.png").is_file()


def test_label_a_search_log_with_calibrated_wrapper_searches(
    engine: Any, tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Queries sampled from a log of ``_search`` bodies; the same calibration then makes a
    wrapper search's ``min_score`` a probability."""
    from crossrank.reranker import RerankConfig
    from crossrank.reranker.calibration import Calibration

    from .conftest import INDEX

    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    Calibration(method="platt", slope=1.0, intercept=0.0).save(model)
    log = tmp_path / "searches.jsonl"
    bodies = [{"query": {"match": {"text": w}}, "size": 3} for w in ("computer", "index", "data")]
    log.write_text("".join(json.dumps({"body": b}) + "\n" for b in bodies))
    out = tmp_path / "labels"
    assert cli_main(["label", "--engine-url", engine.url, "--index", INDEX, "--model", str(model),
                     "--dtype", "float32", "--search-log", str(log), "--sample", "2",
                     "--window", "5", "--out", str(out)]) == 0  # fmt: skip
    assert json.loads((out / "summary.json").read_text())["queries"] == 2
    capsys.readouterr()

    client = engine.client(rerank=RerankConfig(model=str(model), dtype="float32", window=10))
    body = {"query": {"match": {"text": "computer"}}, "size": 10}
    resp = client.search(index=INDEX, body=body, rerank={"calibrated": True, "min_score": 0.5})
    hits = getattr(resp, "body", resp)["hits"]["hits"]
    assert all(0.5 <= h["_rerank"]["score"] <= 1.0 for h in hits)
