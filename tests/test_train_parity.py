"""Train/serve parity: a model trained here is fed, token for token, the pairs it is served.

The training side is recorded where it cannot lie: a forward pre-hook on the model that
``train`` builds, fed by groups mined from a (fake) engine by the real mining functions. The
serving side is what the proxy does with the same engine hit: ``document_text`` under the
serving config, then the ``LocalScorer`` of the trained model (its ``PairEncoder``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import transformers

from crossrank.adapters.core.inputs import document_text
from crossrank.adapters.training.loop import TrainGroup, TrainSettings, train
from crossrank.adapters.training.mining import KINDS, self_supervised_groups, text_fields
from crossrank.adapters.training.teacher import label_groups
from crossrank.reranker import LocalScorer, RerankConfig, ScoreRequest

MAX_LENGTH = 48

LONG_TEXT = " ".join(
    f"Sentence {i} of a long report on laminar flow over swept wings at high speed."
    for i in range(40)
)  # far over MAX_LENGTH tokens on its own
LONG_TITLE = " ".join(["transonic buffet onset on supercritical aerofoils"] * 12)  # > 44 tokens

HITS: list[dict[str, Any]] = [
    {
        "_id": "1",
        "_source": {
            "title": "Boundary layer transition",
            "text": "Transition was measured on a flat plate. The free stream turbulence level "
            "was varied between two tenths and three percent of the mean speed.",
            "meta": {"venue": "J. Fluid Mech."},
        },
    },
    {
        "_id": "2",
        "_source": {
            "title": "Swept wing flow",
            "text": LONG_TEXT,
            "meta": {"venue": ["AIAA J.", "Conference"]},
        },
    },
    {
        "_id": "3",
        "_source": {
            "title": LONG_TITLE,
            "text": "Buffet onset was found from unsteady pressures. The onset boundary moves "
            "to lower lift as the Mach number rises beyond the design point.",
        },
    },
    {
        "_id": "4",
        "_source": {
            "title": "Heat transfer in hypersonic flow",
            "text": "Heat transfer rates were measured on a cone at Mach eight. Results are "
            "compared with laminar theory and agree within ten percent at zero incidence.",
            "meta": {"venue": "Phys. Fluids"},
        },
    },
]

CONFIGS = {
    "fields": RerankConfig(fields=("title", "text")),
    "template": RerankConfig(template="{meta.venue} | {title}: {text} {{draft}}"),
}


def _filtered(source: Mapping[str, Any], fields: list[str]) -> dict[str, Any]:
    """``_source`` filtering on the top-level names of ``fields`` (enough for these hits)."""
    tops = {f.split(".")[0] for f in fields}
    return {k: v for k, v in source.items() if k in tops}


class FakeEngine:
    """Answers the two searches mining sends: the ``_doc`` scan and a BM25 ``multi_match``
    (every hit, in order: the ranking does not matter here), with ``_source`` filtered."""

    def __init__(self, hits: list[dict[str, Any]]) -> None:
        self.hits = hits
        self.source_requests: list[list[str]] = []

    def search(self, *, index: str, body: dict[str, Any], rerank: bool) -> dict[str, Any]:
        assert rerank is False
        self.source_requests.append(body["_source"])
        if "search_after" in body:
            return {"hits": {"hits": []}}
        hits = [
            {"_id": h["_id"], "_source": _filtered(h["_source"], body["_source"]), "sort": [i]}
            for i, h in enumerate(self.hits)
        ]
        return {"hits": {"hits": hits}}


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[dict[str, np.ndarray]]]:
    """The keyword inputs of every forward of the models ``train`` loads."""
    calls: list[dict[str, np.ndarray]] = []
    auto = transformers.AutoModelForSequenceClassification
    original = auto.from_pretrained

    def hook(module: Any, args: Any, kwargs: dict[str, Any]) -> None:
        calls.append({k: v.detach().cpu().numpy() for k, v in kwargs.items() if v is not None})

    def from_pretrained(*args: Any, **kwargs: Any) -> Any:
        model = original(*args, **kwargs)
        model.register_forward_pre_hook(hook, with_kwargs=True)
        return model

    monkeypatch.setattr(auto, "from_pretrained", from_pretrained)
    yield calls
    monkeypatch.undo()


def _served(hit: Mapping[str, Any], config: RerankConfig, kind: str) -> str:
    """The text serving builds for ``hit``; in a ``title`` group, for the hit without its
    title field (every candidate of a title group lacks the line its positive lost)."""
    if kind == "title":
        source = {k: v for k, v in hit["_source"].items() if k != "title"}
        hit = {**hit, "_source": source}
    return document_text(hit, config).text


def _rows(batch: Mapping[str, np.ndarray]) -> list[tuple[list[int], list[int]]]:
    """(ids, token types) of each row without its padding; the padding is on the right."""
    rows = []
    for ids, types, mask in zip(
        batch["input_ids"], batch["token_type_ids"], batch["attention_mask"]
    ):
        n = int(mask.sum())
        assert mask[:n].all() and not mask[n:].any() and (ids[n:] == 0).all()
        rows.append((ids[:n].tolist(), types[:n].tolist()))
    return rows


def _settings(out: Path, base: Path, **kw: Any) -> TrainSettings:
    args: dict[str, Any] = dict(
        base=str(base), output=out, steps=1, batch_groups=1, max_length=MAX_LENGTH,
        dtype="float32", seed=0,
    )  # fmt: skip
    return TrainSettings(**{**args, **kw})


@pytest.mark.parametrize("name", list(CONFIGS))
def test_training_pairs_are_the_served_pairs_token_for_token(
    name: str,
    tiny_model_dir: Path,
    tmp_path: Path,
    recorded: list[dict[str, np.ndarray]],
) -> None:
    text = CONFIGS[name]
    engine = FakeEngine(HITS)
    groups = self_supervised_groups(
        engine, "idx", query_field="title", doc_field="text", negatives=10, skip_top=0,
        limit=None, seed=0, kinds=("title", "sentence"), depth=10, config=text,
    )  # fmt: skip
    # the fields the config reads were fetched (the template's dotted path too)
    assert all(set(text_fields(text)) <= set(fields) for fields in engine.source_requests)
    served_text = {kind: {_served(h, text, kind): h for h in HITS} for kind in KINDS}
    for g in groups:  # every negative is the text serving builds for its hit
        assert set(g.negatives) <= set(served_text[g.kind])
    assert any(LONG_TITLE in g.query for g in groups)
    k = len(HITS) - 1
    assert all(len(g.negatives) == k for g in groups)
    out = train(
        groups,
        _settings(tmp_path / "m", tiny_model_dir, steps=len(groups), negatives=k),
        progress=False,
    )
    assert len(recorded) == len(groups)  # one forward per step, one group per step

    scorer = LocalScorer(text.model_copy(update={"model": str(out), "dtype": "float32"}))
    assert scorer.encoder.max_length == MAX_LENGTH  # served at its training length
    served: dict[str, Any] = {}
    for g in groups:
        hits = [served_text[g.kind][t] for t in g.negatives]
        # the proxy's path: document texts of the hits, then the scorer's encoder
        docs = [g.positive, *(_served(h, text, g.kind) for h in hits)]
        enc = scorer.encode([ScoreRequest(g.query, docs)])
        padded = scorer.pad(enc.input_ids, enc.token_type_ids)
        served[g.query] = (enc, _rows(padded._asdict()))

    matched = set()
    for batch in recorded:
        rows = _rows(batch)
        found = [q for q, (_, want) in served.items() if want == rows]
        assert len(found) == 1, "a training batch that no served request equals"
        matched.add(found[0])
    assert matched == set(served)  # every group, token for token (ids and token types)

    # the cases that make this test bite: a document over max_length, a query over its cap
    long_doc = next(
        (enc, rows) for enc, rows in served.values() if enc.truncated[0] and len(rows) == k + 1
    )
    assert max(len(ids) for ids, _ in long_doc[1]) == MAX_LENGTH
    query_cut = [enc for enc, _ in served.values() if enc.query_truncated[0]]
    assert query_cut  # the long title, capped at max_query_tokens as served
    tokenizer = scorer.tokenizer
    long_query = next(g for g in groups if LONG_TITLE in g.query)
    old = tokenizer(  # what training fed before: both sides cut, the longer first
        long_query.query, long_query.positive, truncation="longest_first", max_length=MAX_LENGTH
    )["input_ids"]
    assert old != served[long_query.query][1][0][0]


def test_the_training_length_is_saved_and_served(tiny_model_dir: Path, tmp_path: Path) -> None:
    groups = [TrainGroup("heat transfer", "heat transfer on cones", ("wing flutter",))]
    out = train(
        groups, _settings(tmp_path / "m", tiny_model_dir, max_query_tokens=12), progress=False
    )
    config = json.loads((out / "config.json").read_text())
    assert (config["crossrank_max_length"], config["crossrank_max_query_tokens"]) == (48, 12)
    meta = json.loads((out / "crossrank_training.json").read_text())
    assert (meta["crossrank_max_length"], meta["crossrank_max_query_tokens"]) == (48, 12)
    scorer = LocalScorer(RerankConfig(model=str(out), dtype="float32"))
    assert scorer.describe()["max_length"] == 48  # not the tokenizer's 512
    assert scorer.describe()["max_query_tokens"] == 12  # the query cap it was trained with
    # explicit settings still win
    wider = LocalScorer(
        RerankConfig(model=str(out), dtype="float32", max_length=96, max_query_tokens=20)
    )
    assert (wider.describe()["max_length"], wider.describe()["max_query_tokens"]) == (96, 20)


def test_checkpoints_carry_the_training_length(tiny_model_dir: Path, tmp_path: Path) -> None:
    groups = [TrainGroup("heat transfer", "heat transfer on cones", ("wing flutter",))]

    class Stop(Exception):
        pass

    def stop(step: int, loss: float) -> None:
        if step == 2:
            raise Stop

    with pytest.raises(Stop):
        train(
            groups,
            _settings(tmp_path / "m", tiny_model_dir, steps=4, checkpoint_every=1),
            progress=False,
            on_step=stop,
        )
    config = json.loads((tmp_path / "m" / "checkpoint" / "config.json").read_text())
    assert config["crossrank_max_length"] == MAX_LENGTH


def test_a_length_over_the_model_limit_is_capped_as_served(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    groups = [TrainGroup("heat transfer", LONG_TEXT, (LONG_TEXT[::-1],))]
    out = train(groups, _settings(tmp_path / "m", tiny_model_dir, max_length=4096), progress=False)
    assert json.loads((out / "config.json").read_text())["crossrank_max_length"] == 512


def test_the_teacher_sees_the_same_document_text(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from crossrank.reranker.local.bi_encoder import BiEncoderScorer

    text = CONFIGS["template"]
    groups = self_supervised_groups(
        FakeEngine(HITS), "idx", query_field="title", doc_field="text", negatives=10,
        skip_top=0, limit=None, seed=0, config=text,
    )  # fmt: skip
    seen: list[str] = []
    score = BiEncoderScorer.score

    def spy(self: BiEncoderScorer, requests: Any) -> Any:
        seen.extend(d for r in requests for d in r.documents)
        return score(self, requests)

    monkeypatch.setattr(BiEncoderScorer, "score", spy)
    label_groups(groups, str(tiny_model_dir), device="cpu", progress=False)
    served = {_served(h, text, "title") for h in HITS}
    negatives = {t for g in groups for t in g.negatives}
    assert negatives == served and served <= set(seen)
