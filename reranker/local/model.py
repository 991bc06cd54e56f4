"""Loading a cross-encoder: the checkpoint, its tokenizer, the device and the dtype.

Nothing here scores; :class:`~crossrank.reranker.local.scorer.LocalScorer` gets a
:class:`LoadedModel` and runs it.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crossrank.reranker.config import RerankConfig
from crossrank.reranker.errors import ModelLoadError

__all__ = [
    "LoadedModel",
    "head_modules",
    "load_model",
    "pick_device",
    "pick_dtype",
    "run_head_in_fp32",
]

# Models whose position ids start after the padding index (RoBERTa family).
_POSITION_OFFSET_MODELS = {"roberta", "xlm-roberta", "camembert", "xlm-roberta-xl", "longformer"}


def pick_device(requested: str = "auto") -> str:
    """``auto`` → cuda, then mps, then cpu."""
    import torch

    if requested != "auto":
        return requested
    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"


def cpu_has_fast_bf16() -> bool:
    """True on CPUs with AMX or AVX512-BF16 (where bf16 matmuls beat fp32), unless torch's
    kernels are held to AVX2 or less (``ATEN_CPU_CAPABILITY=avx2`` or ``default``, as when
    emulating an AVX2-only CPU): bf16 is then as slow as there."""
    if os.environ.get("ATEN_CPU_CAPABILITY", "").strip().lower() in ("avx2", "default"):
        return False
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def pick_dtype(device: str, requested: str = "auto") -> Any:
    """``auto`` → bf16 (fp16 where bf16 is unsupported) on GPUs; bf16 on CPUs with
    AMX/AVX512-BF16 (where bf16 matmuls run several times faster); fp32 otherwise."""
    import torch

    if requested != "auto":
        if requested == "bfloat16" and device == "cpu" and not cpu_has_fast_bf16():
            warnings.warn(
                "bfloat16 on a CPU without AMX/AVX512-BF16 is much slower than float32 "
                "(measured 7-14x on AVX2); dtype='auto' picks float32 here",
                RuntimeWarning,
                stacklevel=2,
            )
        return getattr(torch, requested)
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.startswith("mps"):
        return torch.float16
    return torch.bfloat16 if cpu_has_fast_bf16() else torch.float32


def head_modules(model: Any) -> list[Any]:
    """The scoring head of a sequence-classification model: every top-level module but the
    encoder (BERT's dropout + ``classifier``, RoBERTa's ``classifier``, DeBERTa's ``pooler`` +
    ``classifier``, ModernBERT's ``head`` + ``classifier``, DistilBERT's ``pre_classifier`` +
    ``classifier``), plus the encoder's own ``pooler`` where it has one (BERT). Empty when
    the encoder is not found under ``base_model_prefix``."""
    base = getattr(model, getattr(model, "base_model_prefix", ""), None)
    if base is None:  # no encoder found by its prefix: no head told apart either
        return []
    heads = [m for m in model.children() if m is not base]
    pooler = getattr(base, "pooler", None)
    if pooler is not None and pooler not in heads:
        heads.insert(0, pooler)
    return heads


def _to_fp32(value: Any) -> Any:
    import torch

    if isinstance(value, torch.Tensor) and value.is_floating_point():
        return value.float()
    if isinstance(value, tuple):
        return tuple(_to_fp32(v) for v in value)
    return value


def _fp32_inputs(_module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    return _to_fp32(args), {k: _to_fp32(v) for k, v in kwargs.items()}


def run_head_in_fp32(model: Any) -> list[Any]:
    """Keep the scoring head in float32 when the encoder runs in bf16/fp16.

    The head's weights are cast to float32 and a forward pre-hook casts its (bf16) inputs,
    so the logits come from fp32 arithmetic: the encoder's speed, the score's resolution.
    A bf16 head gives logits with 8 significant bits (steps of 1/32 around 5), so distinct
    documents tie (seen: two of one top 10 at exactly 5.25). Returns the head modules.
    """
    heads = head_modules(model)
    for module in heads:
        module.float()
        module.register_forward_pre_hook(_fp32_inputs, with_kwargs=True)
    return heads


@dataclass
class LoadedModel:
    """A cross-encoder ready to run: model on its device and dtype, tokenizer, limits."""

    tokenizer: Any
    model: Any
    device: str
    dtype: Any
    num_labels: int
    max_length: int
    uses_token_types: bool
    pad_id: int
    max_query_tokens: int = 64


def _max_length(tokenizer: Any, model: Any) -> int:
    """The longest input the model takes: its tokenizer's limit and its position table."""
    limits = []
    tok_max = getattr(tokenizer, "model_max_length", None)
    if isinstance(tok_max, int) and 0 < tok_max < 1_000_000:
        limits.append(tok_max)
    positions = getattr(model.config, "max_position_embeddings", None)
    if isinstance(positions, int) and positions > 0:
        offset = 2 if model.config.model_type in _POSITION_OFFSET_MODELS else 0
        limits.append(positions - offset)
    return min(limits) if limits else 512


def load_model(config: RerankConfig) -> LoadedModel:
    """Load ``config.model`` (hub name or path) on ``config.device`` in ``config.dtype``.

    ``max_length``: ``config.max_length``, else the length the model was trained at (saved
    by ``crossrank train`` as ``crossrank_max_length`` in its config), else the model's limit.
    ``max_query_tokens``: ``config.max_query_tokens`` when set explicitly, else the query cap
    the model was trained with (``crossrank_max_query_tokens``), else the default.
    In bf16/fp16 the encoder runs in that dtype and the head in float32 (:func:`run_head_in_fp32`).
    """
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(config.model, use_fast=True)
        model = AutoModelForSequenceClassification.from_pretrained(config.model)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot load cross-encoder {config.model!r}: {exc}") from exc
    labels = int(getattr(model.config, "num_labels", 1))
    if labels not in (1, 2):
        raise ModelLoadError(f"{config.model!r} has {labels} labels; expected 1 or 2")
    device = pick_device(config.device)
    dtype = pick_dtype(device, config.dtype)
    trained = getattr(model.config, "crossrank_max_length", None)
    trained_query = getattr(model.config, "crossrank_max_query_tokens", None)
    query_cap = config.max_query_tokens
    if "max_query_tokens" not in config.model_fields_set and isinstance(trained_query, int):
        query_cap = trained_query
    limit = _max_length(tokenizer, model)
    max_length = config.max_length or (trained if isinstance(trained, int) else None) or limit
    pad = tokenizer.pad_token_id
    model = model.to(device=device, dtype=dtype).eval()
    if dtype != torch.float32:
        run_head_in_fp32(model)
    return LoadedModel(
        tokenizer=tokenizer,
        model=model,
        device=device,
        dtype=dtype,
        num_labels=labels,
        max_length=min(max_length, limit),
        uses_token_types="token_type_ids" in tokenizer.model_input_names,
        pad_id=int(pad) if pad is not None else 0,
        max_query_tokens=query_cap,
    )
