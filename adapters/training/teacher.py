"""Soft labels for self-supervised training: the base checkpoint's own similarity.

A bi-encoder checkpoint (such as all-MiniLM-L6-v2) embeds the pseudo-query and each
candidate separately (mean-pooled, L2-normalised); their cosine is the teacher score that
the cross-encoder learns to reproduce as a distribution over each group. The base's
similarity carries real relevance signal even where the cross-encoder's head starts random,
and unlike hard labels it does not punish the unjudged positives among BM25 candidates.

The teacher embeds the groups' own texts — the document texts that mining built as serving
builds them — each on its own, with its own tokenization (single sequences cut at
``max_length``): it labels the very documents the cross-encoder is trained and served on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from crossrank.adapters.training.loop import TrainGroup

__all__ = ["embed", "label_groups"]


def embed(
    texts: Sequence[str],
    model: Any,
    tokenizer: Any,
    *,
    max_length: int = 128,
    batch_size: int = 64,
    progress: bool = True,
) -> Any:
    """Mean-pooled, L2-normalised embeddings of ``texts`` (longest first, for less padding)."""
    import torch
    from tqdm import tqdm

    device = next(model.parameters()).device
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    out = torch.empty(len(texts), model.config.hidden_size)
    with torch.inference_mode():
        starts = range(0, len(order), batch_size)
        for start in tqdm(starts, desc="teacher", unit="batch", disable=not progress):
            rows = order[start : start + batch_size]
            enc = tokenizer(
                [texts[i] for i in rows],
                truncation=True,
                max_length=max_length,
                padding=True,
                return_tensors="pt",
            ).to(device)
            hidden = model(**enc).last_hidden_state.float()
            mask = enc["attention_mask"].unsqueeze(-1).float()
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
            out[rows] = torch.nn.functional.normalize(pooled, dim=-1).cpu()
    return out


def label_groups(
    groups: Sequence[TrainGroup],
    base: str,
    *,
    max_length: int = 128,
    device: str = "auto",
    progress: bool = True,
) -> list[TrainGroup]:
    """``groups`` with ``teacher`` set: the base bi-encoder's cosine of the query and each
    document (positive first, then the negatives). Each distinct text is embedded once."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from crossrank.reranker.local import pick_device

    dev = pick_device(device)
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModel.from_pretrained(base).to(dev).eval()
    texts: dict[str, int] = {}
    for g in groups:
        for text in (g.query, g.positive, *g.negatives):
            texts.setdefault(text, len(texts))
    vectors = embed(list(texts), model, tokenizer, max_length=max_length, progress=progress)
    labelled = []
    for g in groups:
        q = vectors[texts[g.query]]
        docs = torch.stack([vectors[texts[t]] for t in (g.positive, *g.negatives)])
        labelled.append(replace(g, teacher=tuple((docs @ q).tolist())))
    return labelled
