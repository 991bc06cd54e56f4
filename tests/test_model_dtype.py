"""bf16 scoring: the encoder in bf16, the scoring head (pooler, classifier) in fp32."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from crossrank.reranker import LocalScorer, RerankConfig, ScoreRequest
from crossrank.reranker.local.model import head_modules

from .tokenizers_kit import tiny_roberta_model

QUERY = "boundary layer flow"
DOCS = [f"the boundary layer over plate number {i} in supersonic flow" for i in range(40)]


def _record_head_dtypes(model: Any) -> list[tuple[str, torch.dtype, torch.dtype]]:
    """Hooks that record (module, input dtype, output dtype) of every head Linear."""
    seen: list[tuple[str, torch.dtype, torch.dtype]] = []

    def hook(module: Any, args: tuple[Any, ...], out: Any) -> None:
        seen.append((type(module).__name__, args[0].dtype, out.dtype))

    for head in head_modules(model):
        for sub in head.modules():
            if isinstance(sub, torch.nn.Linear):
                sub.register_forward_hook(hook)
    return seen


def _check_bf16_encoder_fp32_head(path: Path, head_names: set[str]) -> None:
    s = LocalScorer(RerankConfig(model=str(path), dtype="bfloat16"))
    assert s.dtype is torch.bfloat16
    heads = head_modules(s.model)
    head_params = {id(p) for h in heads for p in h.parameters()}
    assert head_params, "no head found"
    assert {n.split(".")[0] for n, _ in s.model.named_children()} >= head_names
    for name, param in s.model.named_parameters():
        expected = torch.float32 if id(param) in head_params else torch.bfloat16
        assert param.dtype is expected, name
    seen = _record_head_dtypes(s.model)
    (result,) = s.score([ScoreRequest(QUERY, DOCS)])
    # Every head Linear ran on fp32 inputs with fp32 outputs (the pre-hook cast the bf16
    # hidden states), so the scores are fp32 values, not bf16 ones widened.
    assert seen and all(i is torch.float32 and o is torch.float32 for _, i, o in seen)
    on_bf16_grid = [v for v in result.scores if torch.tensor(v).bfloat16().item() == v]
    assert len(on_bf16_grid) <= 2, on_bf16_grid
    assert len(set(result.scores)) == len(DOCS)
    # The same scores as the fp32 model within bf16 encoder error.
    ref = LocalScorer(RerankConfig(model=str(path), dtype="float32")).score(
        [ScoreRequest(QUERY, DOCS)]
    )[0]
    assert result.scores == pytest.approx(ref.scores, abs=5e-2)


def test_bf16_bert_runs_pooler_and_classifier_in_fp32(tiny_model_dir: Path) -> None:
    _check_bf16_encoder_fp32_head(tiny_model_dir, {"bert", "classifier"})


def test_bf16_roberta_runs_classification_head_in_fp32(tmp_path: Path) -> None:
    _check_bf16_encoder_fp32_head(tiny_roberta_model(tmp_path / "roberta"), {"classifier"})


def test_fp32_model_has_no_hooks(tiny_model_dir: Path) -> None:
    s = LocalScorer(RerankConfig(model=str(tiny_model_dir), dtype="float32"))
    assert all(not h._forward_pre_hooks for h in head_modules(s.model))
    assert {p.dtype for p in s.model.parameters()} == {torch.float32}


def test_auto_dtype_is_fp32_when_torch_is_held_to_avx2(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from crossrank.reranker.local.model import cpu_has_fast_bf16, pick_dtype

    for capability in ("avx2", "DEFAULT"):
        monkeypatch.setenv("ATEN_CPU_CAPABILITY", capability)
        assert cpu_has_fast_bf16() is False
        assert pick_dtype("cpu") == torch.float32
