"""Fine-tune a cross-encoder on (query, positive, negatives) groups; save it in Hugging Face
format so :class:`~crossrank.reranker.LocalScorer` and the scorer service load it as-is.

Pure training: text groups in, a model directory out. Where the groups come from (judged
pairs, or pseudo-queries with BM25 negatives from a live index) is the caller's business.
"""

from __future__ import annotations

import json
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


class TrainSettings(BaseModel):
    """How to train: base checkpoint, loss, schedule, precision and checkpoints."""

    model_config = ConfigDict(extra="forbid")

    base: str
    output: Path
    loss: Literal["listwise", "bce"] = "listwise"
    steps: int = Field(1000, ge=1)
    batch_groups: int = Field(4, ge=1)
    negatives: int = Field(7, ge=1)
    max_length: int = Field(256, ge=16)
    learning_rate: float = Field(3e-5, gt=0)
    head_learning_rate: float = Field(1e-3, gt=0)
    warmup: float = Field(0.1, ge=0, le=1)
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"
    seed: int = 0
    checkpoint_every: int = Field(200, ge=1)
    resume: bool = True


def _loss(scores: Any, loss: str) -> Any:
    import torch

    if loss == "listwise":  # the positive is column 0 of each group
        target = torch.zeros(scores.shape[0], dtype=torch.long, device=scores.device)
        return torch.nn.functional.cross_entropy(scores, target)
    labels = torch.zeros_like(scores)
    labels[:, 0] = 1.0
    return torch.nn.functional.binary_cross_entropy_with_logits(scores, labels)


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
) -> Path:
    """Train on ``groups`` (cycled, shuffled per epoch) and save to ``settings.output``.

    Resumes from ``output/checkpoint`` when it exists and ``resume`` is set. Returns the
    output directory, a Hugging Face sequence-classification model with its tokenizer.
    """
    import torch
    from tqdm import tqdm
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        get_linear_schedule_with_warmup,
    )

    from .local import pick_dtype

    if not groups:
        raise ValueError("no training groups")
    out = Path(settings.output)
    ckpt = out / CHECKPOINT
    resume = settings.resume and (ckpt / "trainer_state.pt").exists()
    source = str(ckpt) if resume else settings.base
    torch.manual_seed(settings.seed)
    tokenizer = AutoTokenizer.from_pretrained(source)
    model = AutoModelForSequenceClassification.from_pretrained(source, num_labels=1)
    model.train()
    dtype = pick_dtype("cpu", settings.dtype)
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
        state = torch.load(ckpt / "trainer_state.pt", weights_only=False)
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
        queries, docs = [], []
        for g in batch:
            negs = list(g.negatives[:k]) + [""] * max(0, k - len(g.negatives))
            queries += [g.query] * (k + 1)
            docs += [g.positive, *negs]
        enc = tokenizer(
            queries,
            docs,
            truncation="only_second",
            max_length=settings.max_length,
            padding=True,
            return_tensors="pt",
        )
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            logits = model(**enc).logits.float().view(len(batch), k + 1)
        loss = _loss(logits, settings.loss)
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
        "example": asdict(groups[0]),
    }
    (out / "crossrank_training.json").write_text(json.dumps(meta, indent=1))
    return out
