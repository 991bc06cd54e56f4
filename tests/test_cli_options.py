"""``crossrank serve`` and ``crossrank proxy`` options come from the settings models: every
default is the model's (written once), every field is an option or listed as deliberately not
one, and secrets are never flags."""

from __future__ import annotations

import argparse
from typing import Any

import pytest
from pydantic import BaseModel

from crossrank.adapters.cli import SettingOption, proxy, serve
from crossrank.adapters.proxy.settings import ProxySettings
from crossrank.reranker.config import EnsembleMember, RerankConfig
from crossrank.reranker.service.settings import ServeSettings

SECRETS = ("CROSSRANK_API_KEY", "CROSSRANK_PROXY_TOKEN", "CROSSRANK_SCORER_API_KEY",
           "CROSSRANK_UPSTREAM_AUTH")  # fmt: skip
UPSTREAM = "http://engine:9200"
PROXY_OPTIONS = [o for group in proxy.PROXY_OPTIONS.values() for o in group]


@pytest.fixture(autouse=True)
def no_secrets_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in SECRETS:
        monkeypatch.delenv(name, raising=False)


def _serve(*argv: str) -> ServeSettings:
    return serve.parse_args(["--model", "m", *argv])


def _proxy(*argv: str) -> ProxySettings:
    return proxy.build_settings(proxy.parser().parse_args(["--upstream", UPSTREAM, *argv]))


# --------------------------------------------------------------------------- defaults


def test_no_flags_give_exactly_the_settings_defaults() -> None:
    assert _serve() == ServeSettings(models={"m": "m"})
    assert _proxy() == ProxySettings(upstream=UPSTREAM)


DEFAULT_CASES = {
    "serve": (serve.parser, ["--model", "m"], serve.SERVICE_OPTIONS, ServeSettings, _serve),
    "serve-rerank": (
        serve.parser, ["--model", "m"], serve.MODEL_OPTIONS, RerankConfig,
        lambda: _serve().rerank,
    ),
    "proxy": (proxy.parser, ["--upstream", UPSTREAM], PROXY_OPTIONS, ProxySettings, _proxy),
    "proxy-rerank": (
        proxy.parser, ["--upstream", UPSTREAM], proxy.RERANK_OPTIONS, RerankConfig,
        lambda: _proxy().rerank,
    ),
}  # fmt: skip


@pytest.mark.parametrize(
    ("parser", "required", "options", "model", "settings"),
    list(DEFAULT_CASES.values()),
    ids=list(DEFAULT_CASES),
)
def test_every_option_defaults_to_its_field(
    parser: Any, required: list[str], options: Any, model: type[BaseModel], settings: Any
) -> None:
    """Not given, an option is None on the command line (it writes no default of its own)
    and the settings hold the field's default; ``--help`` shows that default."""
    p: argparse.ArgumentParser = parser()
    args = p.parse_args(required)
    built = settings()
    actions = {a.dest: a for a in p._actions}
    for option in options:
        field = model.model_fields[option.field]
        if field.is_required():
            continue
        assert actions[option.field].default is None, option
        assert getattr(args, option.field) is None, option
        assert getattr(built, option.field) == field.default, option
        if field.default not in (None, ()) and field.annotation is not bool:
            assert "(default: " in (actions[option.field].help or ""), option


# --------------------------------------------------------------------------- completeness


@pytest.mark.parametrize(
    ("top", "options", "rerank_options", "not_options"),
    [
        (ServeSettings, serve.SERVICE_OPTIONS, serve.MODEL_OPTIONS, serve.NOT_OPTIONS),
        (ProxySettings, PROXY_OPTIONS, proxy.RERANK_OPTIONS, proxy.NOT_OPTIONS),
    ],
    ids=["serve", "proxy"],
)
def test_every_field_is_an_option_or_deliberately_not_one(
    top: type[BaseModel],
    options: list[SettingOption],
    rerank_options: list[SettingOption],
    not_options: dict[str, str],
) -> None:
    fields = set(top.model_fields) | {f"rerank.{name}" for name in RerankConfig.model_fields}
    as_options = [o.field for o in options] + [f"rerank.{o.field}" for o in rerank_options]
    assert len(as_options) == len(set(as_options))
    assert not set(as_options) & set(not_options), "an option listed as not one"
    assert set(as_options) | set(not_options) == fields
    assert all(why.strip() for why in not_options.values())


# --------------------------------------------------------------------------- each flag


def _value(option: SettingOption, model: type[BaseModel]) -> tuple[list[str], Any]:
    """Command-line words setting ``option`` to something other than its default, and the
    value the settings should then hold."""
    field = model.model_fields[option.field]
    default = None if field.is_required() else field.default
    if field.annotation is bool:
        return [option.option], not default
    action = next(
        a for a in serve.parser()._actions + proxy.parser()._actions if a.dest == option.field
    )
    if action.choices:
        choice = next(c for c in action.choices if c != default)
        return [option.option, str(choice)], choice
    if option.field == "upstream":  # repeated: the nodes of one cluster
        other, third = "http://other:9201", "http://third:9202"
        return [option.option, other, option.option, third], (other, third)
    if option.field == "ensemble":  # NAME=MODEL[,key=value...] members
        words = [option.option, "a=m1", option.option, "b=m2,kind=bi-encoder,weight=2"]
        return words, (
            EnsembleMember(name="a", model="m1"),
            EnsembleMember(name="b", model="m2", kind="bi-encoder", weight=2),
        )
    if option.repeat and action.type is int:
        return [option.option, "500", option.option, "503"], (500, 503)
    if option.repeat:
        return [option.option, "a", option.option, "b"], ("a", "b")
    if option.parse is not None:  # the comma-separated fields
        return [option.option, "a, b"], ("a", "b")
    if action.type is int:
        return [option.option, str((default or 63) + 1)], (default or 63) + 1
    if action.type is float:
        return [option.option, str((default or 1.0) + 1.5)], (default or 1.0) + 1.5
    text = f"x-{default or 'set'}"
    return [option.option, text], text


@pytest.mark.parametrize("option", serve.SERVICE_OPTIONS, ids=lambda o: o.option)
def test_each_serve_option_sets_its_field(option: SettingOption) -> None:
    words, expected = _value(option, ServeSettings)
    assert getattr(_serve(*words), option.field) == expected


@pytest.mark.parametrize("option", serve.MODEL_OPTIONS, ids=lambda o: o.option)
def test_each_serve_model_option_sets_its_field(option: SettingOption) -> None:
    words, expected = _value(option, RerankConfig)
    settings = _serve(*words)
    assert getattr(settings.rerank, option.field) == expected
    assert getattr(settings.model_config_for("m"), option.field) == expected


@pytest.mark.parametrize("option", PROXY_OPTIONS, ids=lambda o: o.option)
def test_each_proxy_option_sets_its_field(option: SettingOption) -> None:
    words, expected = _value(option, ProxySettings)
    settings = proxy.build_settings(proxy.parser().parse_args(["--upstream", UPSTREAM, *words]))
    if option.field == "token_header":
        expected = expected.lower()
    if option.field == "upstream":
        expected = (UPSTREAM, *expected)
    assert getattr(settings, option.field) == expected


@pytest.mark.parametrize("option", proxy.RERANK_OPTIONS, ids=lambda o: o.option)
def test_each_proxy_rerank_option_sets_its_field(option: SettingOption) -> None:
    words, expected = _value(option, RerankConfig)
    assert getattr(_proxy(*words).rerank, option.field) == expected


def test_flags_override_rerank_json_and_keep_the_rest() -> None:
    settings = _proxy("--rerank-json", '{"window": 7, "max_length": 64}', "--window", "9")
    assert (settings.rerank.window, settings.rerank.max_length) == (9, 64)
    assert _proxy("--rerank-json", '{"window": 7}').rerank.window == 7


def test_choices_come_from_the_literal() -> None:
    with pytest.raises(SystemExit):
        _serve("--dtype", "int8")
    with pytest.raises(SystemExit):
        _proxy("--on-scorer-error", "ignore")


# --------------------------------------------------------------------------- secrets


@pytest.mark.parametrize("flag", ["--api-key", "--token", "--scorer-api-key", "--upstream-auth"])
def test_secrets_are_never_flags_not_even_abbreviated(flag: str) -> None:
    for parse in (lambda: _serve(flag, "s3cret"), lambda: _proxy(flag, "s3cret")):
        with pytest.raises(SystemExit):
            parse()


def test_secrets_come_from_files_or_the_environment(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CROSSRANK_PROXY_TOKEN", "env-token")
    monkeypatch.setenv("CROSSRANK_UPSTREAM_AUTH", "Basic abc")
    monkeypatch.setenv("CROSSRANK_SCORER_API_KEY", "env-key")
    settings = _proxy()
    assert (settings.token, settings.upstream_auth) == ("env-token", "Basic abc")
    assert settings.rerank.scorer_api_key == "env-key"
    token = tmp_path / "token"
    token.write_text("file-token\n")
    assert _proxy("--token-file", str(token)).token == "file-token"
    assert "file-token" not in repr(_proxy("--token-file", str(token)))
