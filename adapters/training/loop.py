"""Fine-tune a cross-encoder on (query, positive, negatives) groups; save it in Hugging Face
format so :class:`~crossrank.reranker.LocalScorer` and the scorer service load it as-is.

Pure training: text groups in, a model directory out. Where the groups come from (judged
pairs, or pseudo-queries with BM25 negatives from a live index) is the caller's business;
their document texts should be what serving scores (:func:`~crossrank.adapters.core.inputs.
document_text` with the serving fields or template: :mod:`.mining` builds them so).

Train/serve parity: the pairs are encoded by the scorer's own
:class:`~crossrank.reranker.local.encoding.PairEncoder` (query capped at
``max_query_tokens``, the document filling the rest of ``max_length``, the tokenizer's pair
template) and padded by the scorer's :func:`~crossrank.reranker.local.batching.pad`, so a
(query, document) pair is the same token ids in training as in scoring. The training length
is saved in the model's config (``crossrank_max_length``, ``crossrank_max_query_tokens``),
which the local scorer serves at unless told otherwise.

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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from crossrank.reranker.config import RerankConfig
from crossrank.reranker.errors import ConfigurationError, TrainingError
from crossrank.reranker.local.batching import PaddedBatch, pad
from crossrank.reranker.local.encoding import PairEncoder

__all__ = ["TrainGroup", "TrainSettings", "TrainingPairs", "base_reference", "train"]

CHECKPOINT = "checkpoint"
#: The serving default (``RerankConfig.max_query_tokens``): the same cap in both unless set.
_MAX_QUERY_TOKENS: int = RerankConfig.model_fields["max_query_tokens"].default


@dataclass(frozen=True)
class TrainGroup:
    """One query with a relevant document and non-relevant ones."""

    query: str
    positive: str
    negatives: tuple[str, ...]
    teacher: tuple[float, ...] | None = None
    """Teacher scores of ``(positive, *negatives)``, for the ``distill`` loss."""
    engine: tuple[float, ...] | None = None
    """The engine's (BM25) scores of ``(positive, *negatives)``, where mining kept them."""
    kind: str = ""
    """The pseudo-query kind (``title``, ``sentence``; empty for judged queries)."""


class TrainSettings(BaseModel):
    """How to train: base checkpoint, loss, schedule, precision and checkpoints."""

    model_config = ConfigDict(extra="forbid")

    base: str
    output: Path
    loss: Literal["listwise", "bce", "distill"] = "listwise"
    steps: int = Field(150, ge=1)
    batch_groups: int = Field(4, ge=1)
    negatives: int = Field(7, ge=1)
    max_length: int = Field(128, ge=16)
    max_query_tokens: int = Field(_MAX_QUERY_TOKENS, ge=1)
    learning_rate: float = Field(1e-4, gt=0)
    head_learning_rate: float = Field(1e-3, gt=0)
    warmup: float = Field(0.1, ge=0, le=1)
    temperature: float = Field(0.4, gt=0)
    """Of the teacher's softmax. 0.4 suits the default teacher (z-scores of cosine and BM25,
    averaged: per-group standard deviation ≈ 0.84 on cranfield's pseudo-queries), giving the
    same spread of target logits as 0.05 gave the cosine alone (≈ 0.11 per group) in the
    earlier recipe; use 0.05 with the cosine alone."""
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


class TrainingPairs:
    """Model inputs for training, built exactly as the local scorer builds the pairs it
    scores: :class:`PairEncoder` (query capped at ``max_query_tokens``, the document cut to
    fill the rest of ``max_length``, the tokenizer's pair template) and the scorer's
    :func:`pad`. This class only turns those rows into tensors."""

    def __init__(self, tokenizer: Any, *, max_length: int, max_query_tokens: int) -> None:
        self.encoder = PairEncoder(
            tokenizer, max_length=max_length, max_query_tokens=max_query_tokens
        )
        pad_id = tokenizer.pad_token_id
        self.pad_id = int(pad_id) if pad_id is not None else 0
        self.uses_token_types = "token_type_ids" in tokenizer.model_input_names

    @property
    def max_length(self) -> int:
        return self.encoder.max_length

    @property
    def max_query_tokens(self) -> int:
        return self.encoder.max_query_tokens

    def encode(self, queries: Sequence[str], documents: Sequence[Sequence[str]]) -> PaddedBatch:
        """Rows of each query with its documents, in order, right-padded to the longest."""
        enc = self.encoder.encode(queries, documents)
        return pad(enc.input_ids, enc.token_type_ids, self.pad_id)

    def inputs(
        self, queries: Sequence[str], documents: Sequence[Sequence[str]], device: Any
    ) -> dict[str, Any]:
        """The padded batch as model keyword arguments on ``device``."""
        import torch

        batch = self.encode(queries, documents)
        out = {
            "input_ids": torch.from_numpy(batch.input_ids).to(device),
            "attention_mask": torch.from_numpy(batch.attention_mask).to(device),
        }
        if self.uses_token_types:
            out["token_type_ids"] = torch.from_numpy(batch.token_type_ids).to(device)
        return out


def _fit_head(
    model: Any, pairs: TrainingPairs, groups: Sequence[TrainGroup], settings: TrainSettings
) -> None:
    """Set the classification head to the least-squares fit of the frozen model's pooled
    features to the (per-group centred) teacher scores, so training starts from the base's
    own notion of similarity rather than from a random projection."""
    import torch

    head = getattr(model, "classifier", None)
    if not isinstance(head, torch.nn.Linear) or head.out_features != 1:
        raise ConfigurationError("head_init='fit' needs a single linear classification head")
    labelled = [g for g in groups if g.teacher is not None][:24]
    if not labelled:
        raise ConfigurationError("head_init='fit' needs teacher scores (loss='distill')")
    feats, targets = [], []
    device = next(model.parameters()).device
    base = getattr(model, model.base_model_prefix)
    model.eval()
    with torch.inference_mode():
        for g in labelled:
            enc = pairs.inputs([g.query], [[g.positive, *g.negatives]], device)
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


class _Batches:
    """Groups cycled in a seeded order, reshuffled each epoch; resumable from its state."""

    def __init__(self, groups: Sequence[TrainGroup], seed: int) -> None:
        self.groups, self.rng = groups, random.Random(seed)
        self.order = list(range(len(groups)))
        self.rng.shuffle(self.order)
        self.cursor = 0

    def next(self, n: int) -> list[TrainGroup]:
        batch = []
        for _ in range(n):
            if self.cursor >= len(self.order):
                self.rng.shuffle(self.order)
                self.cursor = 0
            batch.append(self.groups[self.order[self.cursor]])
            self.cursor += 1
        return batch

    def state(self) -> dict[str, Any]:
        return {"order": self.order, "cursor": self.cursor, "rng": self.rng.getstate()}

    def restore(self, state: Mapping[str, Any]) -> None:
        self.order, self.cursor = state["order"], state["cursor"]
        self.rng.setstate(state["rng"])


def _load(source: str) -> tuple[Any, Any]:
    """Tokenizer and one-label sequence-classification model of ``source``."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    tokenizer = AutoTokenizer.from_pretrained(source)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity(logging.ERROR)  # a base lacks the new head: expected
    try:
        model = AutoModelForSequenceClassification.from_pretrained(source, num_labels=1)
    finally:
        hf_logging.set_verbosity(verbosity)
    return tokenizer, model


def _optimizer(model: Any, settings: TrainSettings) -> tuple[Any, Any]:
    """AdamW with its own learning rate for the head, and the warm-up/linear schedule."""
    import torch
    from transformers import get_linear_schedule_with_warmup

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
    return optimizer, scheduler


def _check(groups: Sequence[TrainGroup], settings: TrainSettings) -> None:
    if not groups:
        raise TrainingError("no training groups")
    if settings.loss == "distill" and any(g.teacher is None for g in groups):
        raise TrainingError("loss='distill' needs teacher scores on every group")


def train(
    groups: Sequence[TrainGroup],
    settings: TrainSettings,
    *,
    progress: bool = True,
    on_step: Callable[[int, float], None] | None = None,
    on_model: Callable[[int, Any, Any], None] | None = None,
    record: Mapping[str, Any] | None = None,
) -> Path:
    """Train on ``groups`` (cycled, shuffled per epoch) and save to ``settings.output``.

    Resumes from ``output/checkpoint`` when it exists and ``resume`` is set. Returns the
    output directory, a Hugging Face sequence-classification model with its tokenizer; its
    config holds the training length (``crossrank_max_length``: ``max_length``, capped at
    the model's limit as the scorer caps it), query cap (``crossrank_max_query_tokens``) and
    base checkpoint (``crossrank_base``: where serving finds the base to add it as a
    bi-encoder member of an ensemble), in checkpoints too. ``on_model(step, model,
    tokenizer)`` sees the model (in eval mode) after each step; a model it saves carries the
    same keys. ``record`` is added to ``crossrank_training.json`` (e.g. the document-text
    settings the groups were built with).
    """
    import torch
    from tqdm import tqdm

    from crossrank.reranker.local import pick_device

    _check(groups, settings)
    out = Path(settings.output)
    ckpt = out / CHECKPOINT
    resume = settings.resume and (ckpt / "trainer_state.pt").exists()
    torch.manual_seed(settings.seed)
    tokenizer, model = _load(str(ckpt) if resume else settings.base)
    pairs = _pairs_for(tokenizer, model, settings)
    device = pick_device(settings.device)
    model.to(device)
    if settings.head_init == "fit" and not resume:
        _fit_head(model, pairs, groups, settings)
    model.train()
    optimizer, scheduler = _optimizer(model, settings)
    batches, step = _Batches(groups, settings.seed), 0
    if resume:
        state = torch.load(ckpt / "trainer_state.pt", weights_only=False, map_location=device)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step = state["step"]
        batches.restore(state)
        torch.set_rng_state(state["torch_rng"])
    step_once = _stepper(model, pairs, optimizer, scheduler, settings, device, batches)
    bar = tqdm(
        total=settings.steps, initial=step, desc="training", unit="step", disable=not progress
    )
    started = time.perf_counter()
    while step < settings.steps:
        loss = step_once()
        step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.4f}")
        if on_step is not None:
            on_step(step, loss)
        if on_model is not None:
            model.eval()
            on_model(step, model, tokenizer)
            model.train()
        if step % settings.checkpoint_every == 0 and step < settings.steps:
            state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}
            state.update(step=step, torch_rng=torch.get_rng_state(), **batches.state())
            _save_checkpoint(ckpt, model, tokenizer, state)
    bar.close()
    extra = {"groups": len(groups), "seconds": round(time.perf_counter() - started, 1)}
    return _finish(out, model, tokenizer, pairs, settings, {**(record or {}), **extra}, groups)


def _pairs_for(tokenizer: Any, model: Any, settings: TrainSettings) -> TrainingPairs:
    """The serving encoder at the training length; the length is saved with the model."""
    from crossrank.reranker.local.model import _max_length

    # The scorer's rule: the model's limit caps the length (position table, tokenizer).
    pairs = TrainingPairs(
        tokenizer,
        max_length=min(settings.max_length, _max_length(tokenizer, model)),
        max_query_tokens=settings.max_query_tokens,
    )
    model.config.crossrank_max_length = pairs.max_length  # saved with every save_pretrained
    model.config.crossrank_max_query_tokens = pairs.max_query_tokens
    model.config.crossrank_base = base_reference(settings.base)
    return pairs


def base_reference(base: str) -> str:
    """How a trained model names its base checkpoint (``crossrank_base`` in its config): an
    absolute path where ``base`` is a local folder, the hub name otherwise."""
    path = Path(base).expanduser()
    return str(path.resolve()) if path.is_dir() else base


def _stepper(
    model: Any,
    pairs: TrainingPairs,
    optimizer: Any,
    scheduler: Any,
    settings: TrainSettings,
    device: str,
    batches: _Batches,
) -> Callable[[], float]:
    """One optimizer step on the next batch of groups; returns its loss."""
    import torch

    from crossrank.reranker.local import pick_dtype

    dtype = pick_dtype(device, settings.dtype)
    device_type, k = device.split(":")[0], settings.negatives

    def step_once() -> float:
        batch = batches.next(settings.batch_groups)
        sampled = [_sample(g, k, batches.rng) for g in batch]
        enc = pairs.inputs([g.query for g in batch], [d for d, _ in sampled], device)
        with torch.autocast(device_type, dtype=dtype, enabled=dtype != torch.float32):
            logits = model(**enc).logits.float().view(len(batch), k + 1)
        teacher = torch.tensor([t for _, t in sampled], device=device)
        loss = _loss(logits, settings, teacher)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss.item())

    return step_once


def _finish(
    out: Path,
    model: Any,
    tokenizer: Any,
    pairs: TrainingPairs,
    settings: TrainSettings,
    record: Mapping[str, Any],
    groups: Sequence[TrainGroup],
) -> Path:
    """Save the model (the checkpoint goes: the model is the result) and its record."""
    import shutil

    model.eval()
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    shutil.rmtree(out / CHECKPOINT, ignore_errors=True)
    meta = {
        **settings.model_dump(mode="json"),
        **record,
        "crossrank_max_length": pairs.max_length,
        "crossrank_max_query_tokens": pairs.max_query_tokens,
        "crossrank_base": base_reference(settings.base),
        "example": {k: v for k, v in asdict(groups[0]).items() if k not in ("teacher", "engine")},
    }
    (out / "crossrank_training.json").write_text(json.dumps(meta, indent=1))
    return out
