"""pyproject.toml ships every package of adapters/ and reranker/, and builds valid metadata.

setuptools cannot discover packages under renamed folders (``adapters/`` is
``crossrank.adapters``), so ``[tool.setuptools] packages`` lists them by hand: these checks keep
that list equal to the package folders, those that ``crossrank.adapters`` and
``crossrank.reranker`` import from: adapters/ and reranker/ in the editable dev install, the
venv's site-packages when CI runs the unit tests against the installed wheel (``make
wheel-check``, .ci/check_wheel.sh, which also checks the built sdist and wheel file by file).
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

from packaging.requirements import Requirement

if sys.version_info >= (3, 11):
    import tomllib
else:  # the dev extra's backport
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT: dict[str, Any] = tomllib.loads((ROOT / "pyproject.toml").read_text())
SETUPTOOLS: dict[str, Any] = PYPROJECT["tool"]["setuptools"]
PACKAGE_DIR: dict[str, str] = SETUPTOOLS["package-dir"]
JUNK = {"__pycache__"}


def package_root(top: str) -> Path:
    """The folder that ``top`` imports from (the source folder, or site-packages/...)."""
    return Path(str(importlib.import_module(top).__file__)).parent


def folders(top: str) -> list[Path]:
    root = package_root(top)
    return [root, *(p for p in sorted(root.rglob("*")) if p.is_dir() and not JUNK & set(p.parts))]


def dotted(top: str, folder: Path) -> str:
    return ".".join((top, *folder.relative_to(package_root(top)).parts))


def test_package_dir_maps_the_two_packages() -> None:
    assert PACKAGE_DIR == {"crossrank.adapters": "adapters", "crossrank.reranker": "reranker"}


def test_packages_lists_every_folder_with_an_init() -> None:
    on_disk = {
        dotted(top, folder)
        for top in PACKAGE_DIR
        for folder in folders(top)
        if (folder / "__init__.py").is_file()
    }
    listed = set(SETUPTOOLS["packages"])
    assert on_disk - listed == set(), "add these to [tool.setuptools] packages"
    assert listed - on_disk == set(), "these are listed but have no folder with __init__.py"
    assert len(SETUPTOOLS["packages"]) == len(listed), "listed twice"


def test_every_folder_with_python_is_a_package() -> None:
    """A folder of modules without ``__init__.py`` would be left out of the wheel silently."""
    loose = [
        str(folder)
        for top in PACKAGE_DIR
        for folder in folders(top)
        if any(folder.glob("*.py")) and not (folder / "__init__.py").is_file()
    ]
    assert loose == []


def test_data_files_are_declared_and_py_typed_ships() -> None:
    """Files other than modules reach the wheel only through package-data."""
    data: dict[str, list[str]] = SETUPTOOLS.get("package-data", {})
    for top in PACKAGE_DIR:
        assert (package_root(top) / "py.typed").is_file(), top
        assert "py.typed" in data.get(top, []), f"{top}: py.typed not in package-data"
    undeclared = []
    for top in PACKAGE_DIR:
        for folder in folders(top):
            for path in folder.iterdir():
                if path.is_dir() or path.suffix in (".py", ".pyc"):
                    continue
                declared = data.get(dotted(top, folder), []) + data.get("*", [])
                if not any(path.match(pattern) for pattern in declared):
                    undeclared.append(str(path))
    assert undeclared == [], "add these to [tool.setuptools.package-data] or remove them"


def test_build_requirement_takes_the_license_expression() -> None:
    """``license = "<SPDX>"`` (PEP 639) needs setuptools 77: 69 to 76 reject it."""
    (setuptools,) = [
        Requirement(r) for r in PYPROJECT["build-system"]["requires"]
        if Requirement(r).name == "setuptools"
    ]
    if isinstance(PYPROJECT["project"]["license"], str):
        assert not setuptools.specifier.contains("76.1.0"), setuptools
        assert setuptools.specifier.contains("77.0.3"), setuptools
    assert "License :: " not in " ".join(PYPROJECT["project"].get("classifiers", []))


def test_wheel_tooling_is_in_the_dev_extra() -> None:
    dev = {Requirement(r).name for r in PYPROJECT["project"]["optional-dependencies"]["dev"]}
    assert {"build", "twine"} <= dev


def test_console_script_targets_the_cli() -> None:
    from crossrank.adapters import cli

    assert PYPROJECT["project"]["scripts"] == {"crossrank": "crossrank.adapters.cli:main"}
    assert callable(cli.main) and cli.COMMANDS


def test_ci_checks_the_wheel() -> None:
    """.ci/run ends with make wheel-check, which runs .ci/check_wheel.sh."""
    assert "make wheel-check" in (ROOT / ".ci" / "run").read_text()
    makefile = (ROOT / "Makefile").read_text()
    assert "\nwheel-check:" in makefile and ".ci/check_wheel.sh" in makefile
    for name in ("check_wheel.sh", "check_wheel.py", "wheel_pytest_guard.py"):
        assert (ROOT / ".ci" / name).is_file(), name
