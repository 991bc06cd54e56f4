"""``crossrank label``: reading queries and search logs, grading, writing pseudo-qrels, and
its one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from crossrank.adapters.cli import main as cli_main
from crossrank.adapters.cli.label import grade, pseudo_qrels, read_queries, write_labels
from crossrank.adapters.evaluation import Window, load_beir, read_qrels
from crossrank.reranker import ScoreResult
from crossrank.reranker.errors import ConfigurationError


def test_query_files_beir_and_plain(tmp_path: Path) -> None:
    beir = tmp_path / "queries.jsonl"
    beir.write_text('{"_id": "7", "text": "wind tunnels"}\n\n{"_id": "9", "text": "flow"}\n')
    assert read_queries(beir) == {"7": "wind tunnels", "9": "flow"}
    plain = tmp_path / "queries.txt"
    plain.write_text("wind tunnels\n\nflow\n")
    assert read_queries(plain) == {"q1": "wind tunnels", "q3": "flow"}


def test_search_log_bodies_and_sampling(tmp_path: Path) -> None:
    log = tmp_path / "log.jsonl"
    bodies = [{"query": {"match": {"text": f"w{i}"}}} for i in range(10)]
    lines = [json.dumps(b if i % 2 else {"body": b}) for i, b in enumerate(bodies)]
    log.write_text("\n".join(lines) + "\n")
    everything = read_queries(log, log=True)
    assert list(everything.values()) == bodies
    sample = read_queries(log, log=True, sample=4, seed=1)
    assert len(sample) == 4 and sample == read_queries(log, log=True, sample=4, seed=1)
    assert set(sample) <= set(everything)


@pytest.mark.parametrize(
    ("text", "log", "message"),
    [
        ("\n\n", False, "holds no query"),
        ('{"_id": "1"}\n', False, "line 1: no 'text'"),
        ("not json\n", True, "line 1: not JSON"),
        ('{"size": 3}\n', True, "line 1: a _search body has no query"),
    ],
)
def test_bad_query_files(tmp_path: Path, text: str, log: bool, message: str) -> None:
    path = tmp_path / "q"
    path.write_text(text)
    with pytest.raises(ConfigurationError, match=message):
        read_queries(path, log=log)
    with pytest.raises(ConfigurationError, match="no such query file"):
        read_queries(tmp_path / "missing")


def test_grades_by_probability_thresholds() -> None:
    assert [grade(p, (0.5, 0.8)) for p in (0.1, 0.5, 0.79, 0.8, 1.0)] == [0, 1, 1, 2, 2]


def test_pseudo_qrels_written_in_beir_format_and_read_back(tmp_path: Path) -> None:
    windows = {
        "1": Window("wind", ["a", "b", "c"], [3.0, 2.0, 1.0], ["ta", "tb", "tc"]),
        "2": Window("flow", ["d"], [1.0], ["td"]),
    }
    windows["1"].result = ScoreResult([2.0, 0.5, -1.0], calibrated=[0.9, 0.6, 0.1])
    windows["2"].result = ScoreResult([-3.0], calibrated=[0.05])
    qrels = pseudo_qrels(windows, (0.5, 0.8))
    assert qrels == {"1": {"a": 2, "b": 1}}
    paths = write_labels(tmp_path, windows, qrels, (0.5, 0.8))
    assert read_qrels(paths[0]) == qrels
    (tmp_path / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": d, "title": "", "text": d}) + "\n" for d in "abcd")
    )
    collection = load_beir(tmp_path)  # the output folder is a BEIR folder of its own
    assert collection.queries == {"1": "wind"} and collection.qrels == qrels
    rows = [json.loads(line) for line in paths[2].read_text().splitlines()]
    assert rows[0]["hits"][0] == {
        "_id": "a", "engine_score": 3.0, "score": 2.0, "probability": 0.9, "grade": 2
    }  # fmt: skip


def test_label_bad_input_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], tiny_model_dir: Path
) -> None:
    common = ["label", "--engine-url", "http://127.0.0.1:9", "--index", "i", "--out", str(tmp_path)]
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    assert cli_main([*common, "--queries", str(empty), "--model", str(tiny_model_dir)]) == 1
    err = capsys.readouterr().err
    assert err == f"crossrank label: {empty} holds no query\n"
    queries = tmp_path / "q.txt"
    queries.write_text("wind tunnels\n")
    code = cli_main(
        [*common, "--queries", str(queries), "--model", str(tiny_model_dir), "--dtype", "float32"]
    )
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1
    assert "the scorer has no calibration (no calibration.json in" in err
    assert "crossrank calibrate" in err
    with pytest.raises(SystemExit) as info:
        cli_main([*common, "--queries", str(queries), "--grades", "0.8,0.5"])
    assert info.value.code == 2
    assert "grades" in capsys.readouterr().err
