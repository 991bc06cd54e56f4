"""Token-budget batching, one rule for the local scorer and the scorer service's queue:
rows longest first, each batch's rows × its widest row within the budget (at least one row),
right-padded to its widest row."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from crossrank.reranker.local.encoding import Ids

__all__ = ["PaddedBatch", "pack", "pad"]


class PaddedBatch(NamedTuple):
    """Model inputs of one batch, right-padded to its longest row."""

    input_ids: np.ndarray
    token_type_ids: np.ndarray
    attention_mask: np.ndarray


def pack(lengths: Sequence[int], budget: int) -> list[list[int]]:
    """Row indexes in batches, longest rows first; ``len(batch) * widest <= budget``."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])  # stable: ties keep order
    batches: list[list[int]] = []
    start = 0
    while start < len(order):
        width = max(lengths[order[start]], 1)
        take = max(1, budget // width)
        batches.append(order[start : start + take])
        start += take
    return batches


def pad(input_ids: Sequence[Ids], token_type_ids: Sequence[Ids], pad_id: int) -> PaddedBatch:
    """Right-pad encoded rows to the longest one: (ids, token types, attention mask)."""
    width = max(len(row) for row in input_ids)
    ids = np.full((len(input_ids), width), pad_id, dtype=np.int64)
    types = np.zeros((len(input_ids), width), dtype=np.int64)
    mask = np.zeros((len(input_ids), width), dtype=np.int64)
    for i, (row, row_types) in enumerate(zip(input_ids, token_type_ids)):
        n = len(row)
        ids[i, :n] = row
        types[i, :n] = row_types
        mask[i, :n] = 1
    return PaddedBatch(ids, types, mask)
