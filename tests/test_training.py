"""Training: the loss goes down, runs are seeded, checkpoints resume, the output loads."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from crossrank.adapters.training.loop import TrainGroup, TrainSettings, base_reference, train
from crossrank.reranker import LocalScorer, RerankConfig, ScoreRequest

TOPICS = [
    "supersonic flow",
    "heat transfer",
    "boundary layer",
    "shock waves",
    "wing flutter",
    "retrieval systems",
    "library catalogues",
    "automatic indexing",
]
GROUPS = [
    # Positives share a marker word: a tiny random model can learn that within a few steps.
    TrainGroup(t, f"relevant study of {t}", tuple(f"notes on {o}" for o in TOPICS if o != t))
    for t in TOPICS
]


def settings(tmp: Path, base: Path, **kw: object) -> TrainSettings:
    args: dict[str, object] = dict(
        base=str(base),
        output=tmp,
        steps=30,
        batch_groups=4,
        negatives=3,
        max_length=32,
        learning_rate=3e-3,
        head_learning_rate=1e-2,
        dtype="float32",
        seed=1,
    )
    return TrainSettings(**{**args, **kw})  # type: ignore[arg-type]


def test_listwise_training_learns_and_saves_a_loadable_model(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    losses: list[float] = []
    out = train(
        GROUPS,
        settings(tmp_path / "m", tiny_model_dir),
        progress=False,
        on_step=lambda step, loss: losses.append(loss),
    )
    assert len(losses) == 30
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 * 0.8
    assert not (out / "checkpoint").exists() and (out / "crossrank_training.json").exists()
    scorer = LocalScorer(RerankConfig(model=str(out), dtype="float32"))
    (result,) = scorer.score(
        [
            ScoreRequest(
                "heat transfer",
                ["relevant study of heat transfer", "notes on wing flutter"],
            )
        ]
    )
    assert result.scores[0] > result.scores[1]
    # the base is named in the saved config, for serving it as a bi-encoder ensemble member
    config = json.loads((out / "config.json").read_text())
    assert config["crossrank_base"] == str(tiny_model_dir.resolve())
    meta = json.loads((out / "crossrank_training.json").read_text())
    assert meta["crossrank_base"] == str(tiny_model_dir.resolve())


def test_base_reference_is_absolute_for_a_folder(tmp_path: Path) -> None:
    assert base_reference(str(tmp_path)) == str(tmp_path.resolve())
    assert base_reference("org/some-model") == "org/some-model"  # a hub name stays as given


def test_bce_loss_and_seeded_runs_are_identical(tiny_model_dir: Path, tmp_path: Path) -> None:
    a = train(GROUPS, settings(tmp_path / "a", tiny_model_dir, steps=4, loss="bce"), progress=False)
    b = train(GROUPS, settings(tmp_path / "b", tiny_model_dir, steps=4, loss="bce"), progress=False)
    from safetensors.torch import load_file

    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_resume_from_checkpoint(tiny_model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "r"

    class Stop(Exception):
        pass

    def stop_at_5(step: int, loss: float) -> None:
        if step == 5:
            raise Stop

    with pytest.raises(Stop):
        train(
            GROUPS,
            settings(out, tiny_model_dir, steps=8, checkpoint_every=2),
            progress=False,
            on_step=stop_at_5,
        )
    assert (out / "checkpoint" / "trainer_state.pt").exists()
    steps: list[int] = []
    train(
        GROUPS,
        settings(out, tiny_model_dir, steps=8, checkpoint_every=2),
        progress=False,
        on_step=lambda step, loss: steps.append(step),
    )
    assert steps == [5, 6, 7, 8]  # resumed after the step-4 checkpoint


def test_no_groups_is_an_error(tiny_model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no training groups"):
        train([], settings(tmp_path, tiny_model_dir), progress=False)


def _with_teacher(groups: list[TrainGroup]) -> list[TrainGroup]:
    """A teacher that prefers the positive (0.9) and spreads the negatives below it."""
    return [
        TrainGroup(g.query, g.positive, g.negatives, (0.9, *(0.3 - 0.01 * i for i in range(7))))
        for g in groups
    ]


def test_distill_loss_learns_the_teacher_order(tiny_model_dir: Path, tmp_path: Path) -> None:
    losses: list[float] = []
    out = train(
        _with_teacher(GROUPS),
        settings(tmp_path / "d", tiny_model_dir, loss="distill", hard_weight=0.0),
        progress=False,
        on_step=lambda step, loss: losses.append(loss),
    )
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 * 0.8
    scorer = LocalScorer(RerankConfig(model=str(out), dtype="float32"))
    (result,) = scorer.score(
        [ScoreRequest("shock waves", ["relevant study of shock waves", "notes on heat transfer"])]
    )
    assert result.scores[0] > result.scores[1]


def test_distill_needs_teacher_scores(tiny_model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="teacher"):
        train(GROUPS, settings(tmp_path, tiny_model_dir, loss="distill"), progress=False)


def test_fitted_head_starts_from_the_teacher(tiny_model_dir: Path, tmp_path: Path) -> None:
    """With ``head_init="fit"`` the first scores already follow the teacher within a group."""
    from scipy.stats import spearmanr

    groups = _with_teacher(GROUPS)
    g = groups[0]
    docs = [g.positive, *g.negatives]
    seen: dict[str, float] = {}
    for init in ("random", "fit"):

        def correlation(step: int, model: Any, tokenizer: Any, init: str = init) -> None:
            enc = tokenizer([g.query] * len(docs), docs, padding=True, return_tensors="pt")
            with torch.no_grad():
                scores = model(**enc).logits.view(-1).tolist()
            seen[init] = float(spearmanr(scores, g.teacher).statistic)

        frozen = dict(learning_rate=1e-12, head_learning_rate=1e-12)
        train(
            groups,
            settings(
                tmp_path / init, tiny_model_dir, loss="distill", steps=1, head_init=init, **frozen
            ),
            progress=False,
            on_model=correlation,
        )
    assert seen["fit"] > 0.6 > seen["random"]


def test_a_query_longer_than_max_length_is_cut_not_fatal(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    long = " ".join(["supersonic flow"] * 40)  # far over max_length=32 on its own
    groups = _with_teacher([TrainGroup(long, g.positive, g.negatives) for g in GROUPS])
    out = train(
        groups,
        settings(tmp_path / "long", tiny_model_dir, loss="distill", steps=2, head_init="fit"),
        progress=False,
    )
    assert (out / "config.json").exists()
