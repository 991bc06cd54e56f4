from __future__ import annotations

import pytest

from crossrank.reranker import RerankConfig, RerankOptionsError


def test_per_call_options_validate_and_copy() -> None:
    base = RerankConfig(model="m", window=50)
    call = base.with_options({"window": 10, "fields": ["title"]})
    assert (call.window, call.fields, base.window) == (10, ("title",), 50)
    with pytest.raises(RerankOptionsError):
        base.with_options({"window": 0})
    with pytest.raises(RerankOptionsError):
        base.with_options({"no_such_option": 1})


def test_scorer_settings_cannot_change_per_call() -> None:
    base = RerankConfig(model="m")
    with pytest.raises(RerankOptionsError, match="scorer"):
        base.with_options({"model": "other"})
    assert base.with_options({"model": "m"}).model == "m"


def test_needs_fields_or_template() -> None:
    with pytest.raises(ValueError):
        RerankConfig(model="m", fields=())
    assert RerankConfig(model="m", fields=(), template="{a}").template == "{a}"
