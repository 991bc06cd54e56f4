"""Fine-tune a cross-encoder on (query, positive, negatives) groups; save it in Hugging Face
format so :class:`~crossrank.reranker.LocalScorer` and the scorer service load it as-is.

Pure training: text groups in, a model directory out. Where the groups come from (judged
pairs, or pseudo-queries with BM25 negatives from a live index) is the caller's business.

Losses: ``listwise`` (softmax cross-entropy, the positive is the answer), ``bce`` (pointwise),
and ``distill`` (listwise KL to a teacher distribution: ``softmax(teacher / temperature)``
mixed with ``hard_weight`` of the one-hot positive; teacher scores from
:mod:`.distill`). ``head_init="fit"`` starts the classification head from a least-squares
fit of the frozen model's pooled features to the teacher scores instead of random weights.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["TrainGroup", "TrainSettings", "train"]

CHECKPOINT = "checkpoint"


@dataclass(frozen=True)
class TrainGroup:
    """One query with a relevant document and non-relevant ones."""

    query: str
    positive: str
    negatives: tuple[str, ...]
    teacher: tuple[float, ...] | None = None
    """Teacher scores of ``(positive, *negatives)``, for the ``distill`` loss."""


class TrainSettings(BaseModel):
    """How to train: base checkpoint, loss, schedule, precision and checkpoints."""

    model_config = ConfigDict(extra="forbid")

    base: str
    output: Path
    loss: Literal["listwise", "bce", "distill"] = "listwise"
    steps: int = Field(1000, ge=1)
    batch_groups: int = Field(4, ge=1)
    negatives: int = Field(7, ge=1)
    max_length: int = Field(128, ge=16)
    learning_rate: float = Field(1e-4, gt=0)
    head_learning_rate: float = Field(1e-3, gt=0)
    warmup: float = Field(0.1, ge=0, le=1)
    temperature: float = Field(0.05, gt=0)
    hard_weight: float = Field(0.2, ge=0, le=1)
    head_init: Literal["random", "fit"] = "random"
    device: str = "auto"
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"
    seed: int = 0
    checkpoint_every: int = Field(200, ge=1)
    resume: bool = True


def _loss(scores: Any, settings: TrainSettings, teacher: Any = None) -> Any:
    import torch

    functional = torch.nn.functional
    if settings.loss == "listwise":  # the positive is column 0 of each group
        target = torch.zeros(scores.shape[0], dtype=torch.long, device=scores.device)
        return functional.cross_entropy(scores, target)
    if settings.loss == "distill":
        hard = torch.zeros_like(scores)
        hard[:, 0] = 1.0
        soft = functional.softmax(teacher / settings.temperature, dim=-1)
        target = settings.hard_weight * hard + (1 - settings.hard_weight) * soft
        return functional.kl_div(
            functional.log_softmax(scores, dim=-1), target, reduction="batchmean"
        )
    labels = torch.zeros_like(scores)
    labels[:, 0] = 1.0
    return functional.binary_cross_entropy_with_logits(scores, labels)


def _sample(group: TrainGroup, k: int, rng: random.Random) -> tuple[list[str], list[float]]:
    """The positive and ``k`` negatives drawn from the group (padded with empty documents),
    with their teacher scores (0 where there is no teacher)."""
    picked = sorted(rng.sample(range(len(group.negatives)), min(k, len(group.negatives))))
    teacher = group.teacher or (0.0,) * (len(group.negatives) + 1)
    docs = [group.positive] + [group.negatives[i] for i in picked]
    scores = [teacher[0]] + [teacher[i + 1] for i in picked]
    pad = k + 1 - len(docs)  # a padded slot scores as the weakest candidate
    return docs + [""] * pad, scores + [min(scores) - 1.0] * pad


def _encode(
    tokenizer: Any, queries: list[str], docs: list[str], max_length: int, device: Any
) -> Any:
    """The padded pair batch on ``device``; the longer side of a pair is cut first, so a
    pseudo-query longer than ``max_length`` is shortened instead of failing the batch."""
    return tokenizer(
        queries,
        docs,
        truncation="longest_first",
        max_length=max_length,
        padding=True,
        return_tensors="pt",
    ).to(device)


def _fit_head(
    model: Any, tokenizer: Any, groups: Sequence[TrainGroup], settings: TrainSettings
) -> None:
    """Set the classification head to the least-squares fit of the frozen model's pooled
    features to the (per-group centred) teacher scores, so training starts from the base's
    own notion of similarity rather than from a random projection."""
    import torch

    head = getattr(model, "classifier", None)
    if not isinstance(head, torch.nn.Linear) or head.out_features != 1:
        raise ValueError("head_init='fit' needs a single linear classification head")
    labelled = [g for g in groups if g.teacher is not None][:24]
    if not labelled:
        raise ValueError("head_init='fit' needs teacher scores (loss='distill')")
    feats, targets = [], []
    device = next(model.parameters()).device
    base = getattr(model, model.base_model_prefix)
    model.eval()
    with torch.inference_mode():
        for g in labelled:
            docs = [g.positive, *g.negatives]
            enc = _encode(tokenizer, [g.query] * len(docs), docs, settings.max_length, device)
            pooled = base(**enc).pooler_output.float()
            feats.append(pooled - pooled.mean(0))
            t = torch.tensor(g.teacher, device=device)
            targets.append((t - t.mean()) / settings.temperature)
    x, y = torch.cat(feats), torch.cat(targets)
    ridge = 1e-2 * x.pow(2).sum(0).mean() * torch.eye(x.shape[1], device=device)
    weight = torch.linalg.solve(x.T @ x + ridge, x.T @ y)
    with torch.no_grad():
        head.weight.copy_(weight.view(1, -1).to(head.weight.dtype))
        head.bias.zero_()
    model.train()


def _save_checkpoint(path: Path, model: Any, tokenizer: Any, state: dict[str, Any]) -> None:
    import torch

    tmp = path.with_name(path.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    torch.save(state, tmp / "trainer_state.pt")
    if path.exists():
        import shutil

        shutil.rmtree(path)
    tmp.rename(path)


def train(
    groups: Sequence[TrainGroup],
    settings: TrainSettings,
    *,
    progress: bool = True,
    on_step: Callable[[int, float], None] | None = None,
    on_model: Callable[[int, Any, Any], None] | None = None,
) -> Path:
    """Train on ``groups`` (cycled, shuffled per epoch) and save to ``settings.output``.

    Resumes from ``output/checkpoint`` when it exists and ``resume`` is set. Returns the
    output directory, a Hugging Face sequence-classification model with its tokenizer.
    ``on_model(step, model, tokenizer)`` sees the model (in eval mode) after each step.
    """
    import torch
    from tqdm import tqdm
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        get_linear_schedule_with_warmup,
    )
    from transformers.utils import logging as hf_logging

    from crossrank.reranker.local import pick_device, pick_dtype

    if not groups:
        raise ValueError("no training groups")
    if settings.loss == "distill" and any(g.teacher is None for g in groups):
        raise ValueError("loss='distill' needs teacher scores on every group")
    out = Path(settings.output)
    ckpt = out / CHECKPOINT
    resume = settings.resume and (ckpt / "trainer_state.pt").exists()
    source = str(ckpt) if resume else settings.base
    torch.manual_seed(settings.seed)
    tokenizer = AutoTokenizer.from_pretrained(source)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity(logging.ERROR)  # a base lacks the new head: expected
    try:
        model = AutoModelForSequenceClassification.from_pretrained(source, num_labels=1)
    finally:
        hf_logging.set_verbosity(verbosity)
    device = pick_device(settings.device)
    model.to(device)
    if settings.head_init == "fit" and not resume:
        _fit_head(model, tokenizer, groups, settings)
    model.train()
    dtype = pick_dtype(device, settings.dtype)
    device_type = device.split(":")[0]
    head = [p for n, p in model.named_parameters() if n.startswith(("classifier", "score"))]
    head_ids = {id(p) for p in head}
    body = [p for p in model.parameters() if id(p) not in head_ids]
    optimizer = torch.optim.AdamW(
        [
            {"params": body, "lr": settings.learning_rate},
            {"params": head, "lr": settings.head_learning_rate},
        ],
        weight_decay=0.01,
    )
    scheduler = get_linear_schedule_with_warmup(  # type: ignore[no-untyped-call]
        optimizer, int(settings.warmup * settings.steps), settings.steps
    )
    step, order, rng = 0, list(range(len(groups))), random.Random(settings.seed)
    rng.shuffle(order)
    cursor = 0
    if resume:
        state = torch.load(ckpt / "trainer_state.pt", weights_only=False, map_location=device)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step, order, cursor = state["step"], state["order"], state["cursor"]
        rng.setstate(state["rng"])
        torch.set_rng_state(state["torch_rng"])

    bar = tqdm(
        total=settings.steps, initial=step, desc="training", unit="step", disable=not progress
    )
    started = time.perf_counter()
    while step < settings.steps:
        batch = []
        for _ in range(settings.batch_groups):
            if cursor >= len(order):
                rng.shuffle(order)
                cursor = 0
            batch.append(groups[order[cursor]])
            cursor += 1
        k = settings.negatives
        queries, docs, teacher = [], [], []
        for g in batch:
            group_docs, group_teacher = _sample(g, k, rng)
            queries += [g.query] * (k + 1)
            docs += group_docs
            teacher.append(group_teacher)
        enc = _encode(tokenizer, queries, docs, settings.max_length, device)
        with torch.autocast(device_type, dtype=dtype, enabled=dtype != torch.float32):
            logits = model(**enc).logits.float().view(len(batch), k + 1)
        loss = _loss(logits, settings, torch.tensor(teacher, device=device))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.4f}")
        if on_step is not None:
            on_step(step, float(loss.item()))
        if on_model is not None:
            model.eval()
            on_model(step, model, tokenizer)
            model.train()
        if step % settings.checkpoint_every == 0 and step < settings.steps:
            _save_checkpoint(
                ckpt,
                model,
                tokenizer,
                {
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "step": step,
                    "order": order,
                    "cursor": cursor,
                    "rng": rng.getstate(),
                    "torch_rng": torch.get_rng_state(),
                },
            )
    bar.close()
    model.eval()
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    if ckpt.exists():  # finished: the model itself is the result
        import shutil

        shutil.rmtree(ckpt)
    meta = {
        **settings.model_dump(mode="json"),
        "groups": len(groups),
        "seconds": round(time.perf_counter() - started, 1),
        "example": {k: v for k, v in asdict(groups[0]).items() if k != "teacher"},
    }
    (out / "crossrank_training.json").write_text(json.dumps(meta, indent=1))
    return out
