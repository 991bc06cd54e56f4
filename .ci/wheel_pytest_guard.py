"""pytest plugin for the wheel check: the unit tests ran against the installed wheel.

.ci/check_wheel.sh copies it next to the copied test suite and runs
``python -m pytest -p wheel_pytest_guard``. Before collection, ``crossrank`` must import from
the venv's site-packages and no sys.path entry may lie in the source tree
(``CROSSRANK_SOURCE_TREE``); after the session, every ``crossrank`` module that the tests
loaded must have come from site-packages, and at least one test must have run. Otherwise the
session fails.
"""

from __future__ import annotations

import os
import sys
import sysconfig
from pathlib import Path

import pytest

PURELIB = Path(sysconfig.get_paths()["purelib"]).resolve()


def _source() -> Path:
    value = os.environ.get("CROSSRANK_SOURCE_TREE")
    if not value:
        raise pytest.UsageError("wheel_pytest_guard: CROSSRANK_SOURCE_TREE is not set")
    return Path(value).resolve()


def _problems() -> list[str]:
    source = _source()
    found = [
        f"sys.path entry in the source tree: {entry}"
        for entry in sys.path
        if entry and Path(entry).resolve().is_relative_to(source)
    ]
    for name, module in sorted(sys.modules.items()):
        file = getattr(module, "__file__", None)
        if name.split(".")[0] == "crossrank" and file:
            if not Path(file).resolve().is_relative_to(PURELIB):
                found.append(f"{name} loaded from {file}, not from {PURELIB}")
    return found


def pytest_configure(config: pytest.Config) -> None:
    import crossrank.adapters
    import crossrank.reranker

    problems = _problems()
    if problems:
        raise pytest.UsageError("wheel_pytest_guard:\n  " + "\n  ".join(problems))
    where = Path(crossrank.adapters.__file__).parent.parent
    print(f"wheel_pytest_guard: testing crossrank in {where}", flush=True)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    problems = _problems()
    if session.testscollected == 0:
        problems.append("no test was collected")
    if problems:
        print("\nwheel_pytest_guard: FAILED:\n  " + "\n  ".join(problems), flush=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
