"""One exception root: what crossrank raises to a user derives from ``CrossrankError`` (and
from the builtin a caller may catch), the tree is drawn once, and the command lines turn
these errors into one line and an exit status."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import sys
from pathlib import Path

import pytest

import crossrank.adapters
import crossrank.reranker
from crossrank.adapters.cli import proxy as proxy_cli
from crossrank.adapters.cli import serve as serve_cli
from crossrank.adapters.proxy import errors as proxy_errors
from crossrank.adapters.proxy.scorers import load_factory
from crossrank.reranker import errors
from crossrank.reranker.errors import ConfigurationError, CrossrankError
from crossrank.reranker.scoring import make_scorer


def _package_exceptions() -> list[type[BaseException]]:
    """Every public exception class defined in crossrank's modules (all imported)."""
    found: dict[str, type[BaseException]] = {}
    for package in (crossrank.adapters, crossrank.reranker):
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            if info.name.endswith("__main__"):  # runs a command when imported
                continue
            module = importlib.import_module(info.name)
            for name, value in vars(module).items():
                if (
                    inspect.isclass(value)
                    and issubclass(value, BaseException)
                    and value.__module__ == info.name
                    and not name.startswith("_")
                ):
                    found[f"{info.name}.{name}"] = value
    return list(found.values())


EXCEPTIONS = _package_exceptions()


def test_every_exception_of_the_package_has_the_one_root() -> None:
    assert len(EXCEPTIONS) > 10
    assert [e for e in EXCEPTIONS if not issubclass(e, CrossrankError)] == []


def test_the_tree_is_drawn_once_and_names_every_class() -> None:
    tree = errors.__doc__ or ""
    drawn = [f"── {e.__name__}" in tree or f"    {e.__name__}\n" in tree for e in EXCEPTIONS]
    assert [e.__name__ for e, ok in zip(EXCEPTIONS, drawn) if not ok] == []
    for cls in EXCEPTIONS:  # a builtin base is named next to the class
        for base in cls.__bases__:
            if base.__module__ == "builtins" and base is not Exception:
                assert f"{cls.__name__} ({base.__name__})" in tree
    assert "──" not in (proxy_errors.__doc__ or "")  # referenced there, not redrawn
    assert "crossrank.reranker.errors" in (proxy_errors.__doc__ or "")


def test_builtin_bases_are_kept_where_callers_catch_them() -> None:
    from crossrank.adapters.nodes import EngineStartError
    from crossrank.adapters.processes import ProcessStartError

    for cls, builtin in [
        (EngineStartError, RuntimeError),
        (ProcessStartError, RuntimeError),
        (ConfigurationError, ValueError),
        (errors.UnsupportedModelError, TypeError),
        (errors.TrainingError, ValueError),
    ]:
        assert issubclass(cls, CrossrankError) and issubclass(cls, builtin), cls
    assert issubclass(errors.UnsupportedModelError, errors.ModelLoadError)


# --------------------------------------------------------------------------- scorer factory


def a_factory(config: object) -> None:
    """A callable found by ``module:callable`` (the module is this test file)."""


NOT_CALLABLE = 42


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ("no_colon", "module:callable"),
        (":make", "module:callable"),
        ("crossrank_no_such_module:make", "cannot import"),
        (f"{__name__}:missing", "no callable 'missing'"),
        (f"{__name__}:NOT_CALLABLE", "no callable 'NOT_CALLABLE'"),
    ],
)
def test_a_bad_scorer_factory_is_a_configuration_error(spec: str, words: str) -> None:
    with pytest.raises(ConfigurationError, match=words) as info:
        load_factory(spec)
    if "cannot import" in words:
        assert isinstance(info.value.__cause__, ImportError)


def test_scorer_factories_that_load() -> None:
    assert load_factory(None) is make_scorer
    assert load_factory("crossrank.reranker.scoring:make_scorer") is make_scorer
    assert load_factory(f"{__name__}:a_factory") is a_factory


# --------------------------------------------------------------------------- command lines


def test_proxy_cli_reports_configuration_errors_in_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    base = ["--upstream", "http://127.0.0.1:9", "--no-preload", "--log-level", "critical"]
    assert proxy_cli.main([*base, "--scorer-factory", "crossrank_no_such_module:f"]) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith("crossrank proxy: cannot import scorer factory") and "Traceback" not in err
    )
    assert proxy_cli.main([*base, "--rerank-json", "[1]"]) == 2
    assert "must be a JSON object" in capsys.readouterr().err
    assert proxy_cli.main([*base, "--token-file", str(tmp_path / "none")]) == 2
    assert "No such file" in capsys.readouterr().err


def test_serve_cli_empty_key_file_is_a_configuration_error(tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_text("\n")
    with pytest.raises(ConfigurationError, match="is empty"):
        serve_cli.parse_args(["--model", "m", "--api-key-file", str(key)])


def test_nodes_cli_reports_engine_errors_in_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from crossrank.adapters.cli import nodes as nodes_cli
    from crossrank.adapters.nodes import artifacts

    monkeypatch.setattr(artifacts.shutil, "which", lambda name: None)
    monkeypatch.setenv("CROSSRANK_ENGINE_CACHE", str(Path(sys.prefix) / "no-cache-here"))
    assert nodes_cli.main(["fetch", "opensearch:9.9.9"]) == 1
    assert capsys.readouterr().err.startswith("error: cannot fetch opensearch:9.9.9: 'mvn'")
