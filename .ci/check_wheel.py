"""The wheel check's Python side; .ci/check_wheel.sh runs each step, in this order.

    archives SOURCE SDIST WHEEL MODULES
                        the sdist holds every file of adapters/ and reranker/, the wheel exactly
                        those files (as crossrank/...) and valid metadata; writes the source's
                        module names to MODULES
    suite SOURCE DEST   copy the source tree less the package folders (tests/, the root
                        conftest.py, pyproject.toml, docker/, ...) to DEST
    installed SOURCE MODULES
                        run by the fresh venv's python, with -I, from outside the source tree:
                        crossrank comes from site-packages, every module in MODULES and no
                        other is installed and imports, ``crossrank --help`` and each
                        subcommand's ``--help`` exit 0, every ``__main__`` runs with ``--help``

Any problem prints ``check_wheel: FAILED: ...`` and exits 1; nothing is skipped. The source's
modules are read from the files, the package folders from pyproject's ``package-dir``: a module
that is in adapters/ or reranker/ but not in the wheel fails, and so does one only in the wheel.
"""

from __future__ import annotations

import email.parser
import importlib
import importlib.metadata
import json
import os
import pkgutil
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import time
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path, PurePosixPath

if sys.version_info >= (3, 11):
    import tomllib
else:  # the dev extra's backport
    import tomli as tomllib

DIST = "crossrank"
SKIP_PARTS = {"__pycache__"}
SKIP_SUFFIXES = {".pyc", ".pyo"}


class CheckFailed(Exception):
    """One failed check; its message says what and where."""


def fail_if(problems: Iterable[str], what: str) -> None:
    listed = sorted(problems)
    if listed:
        raise CheckFailed(f"{what}:\n  " + "\n  ".join(listed))


def say(message: str) -> None:
    print(f"check_wheel: {message}", flush=True)


def pyproject(source: Path) -> dict[str, object]:
    data: dict[str, object] = tomllib.loads((source / "pyproject.toml").read_text())
    return data


def package_dirs(source: Path) -> dict[str, str]:
    """Top-level package name → its folder (``crossrank.adapters`` → ``adapters``)."""
    tool = pyproject(source)["tool"]
    assert isinstance(tool, dict)
    mapping = tool["setuptools"]["package-dir"]
    if not mapping:
        raise CheckFailed("pyproject.toml: [tool.setuptools] package-dir is empty")
    return {str(k): str(v) for k, v in mapping.items()}


def package_files(source: Path) -> dict[str, Path]:
    """Every file of the package folders: its path in the wheel → its path in the source.

    ``adapters/proxy/app.py`` → ``crossrank/adapters/proxy/app.py``; data files (``py.typed``)
    included, byte code and ``__pycache__`` left out.
    """
    files: dict[str, Path] = {}
    for package, folder in package_dirs(source).items():
        root = source / folder
        if not (root / "__init__.py").is_file():
            raise CheckFailed(f"{root}/__init__.py: missing")
        for path in sorted(root.rglob("*")):
            rel = path.relative_to(root)
            if path.is_dir() or SKIP_PARTS & set(rel.parts) or path.suffix in SKIP_SUFFIXES:
                continue
            files["/".join((*package.split("."), *rel.parts))] = path
    return files


def source_modules(source: Path) -> set[str]:
    """Dotted names of every module and package that the .py files of the source make."""
    names = set()
    for wheel_path in package_files(source):
        parts = PurePosixPath(wheel_path)
        if parts.suffix != ".py":
            continue
        dotted = parts.with_suffix("").parts
        names.add(".".join(dotted[:-1] if dotted[-1] == "__init__" else dotted))
    return names


# ---------------------------------------------------------------------------------- archives


def check_archives(source: Path, sdist: Path, wheel: Path, modules: Path) -> None:
    meta = pyproject(source)["project"]
    assert isinstance(meta, dict)
    version = str(meta["version"])
    expected = package_files(source)
    if not expected:
        raise CheckFailed("no package files found in the source")
    for package, folder in package_dirs(source).items():
        if not (source / folder / "py.typed").is_file():
            raise CheckFailed(f"{folder}/py.typed: missing from the source ({package} is typed)")

    # sdist: every package file at its source path, plus what the build reads.
    prefix = f"{DIST}-{version}/"
    with tarfile.open(sdist) as tar:
        members = {m.name for m in tar.getmembers() if m.isfile()}
    in_sdist = {str(p.relative_to(source)) for p in expected.values()}
    in_sdist |= {"pyproject.toml", "PKG-INFO", str(meta.get("readme", "README.md"))}
    fail_if(
        (f"{prefix}{name}" for name in in_sdist if f"{prefix}{name}" not in members),
        f"{sdist.name} lacks files of the source tree",
    )
    say(f"{sdist.name}: {len(members)} files, every package file among them")

    # wheel: exactly the package files, and metadata built from the current pyproject.
    info = f"{DIST}-{version}.dist-info/"
    with zipfile.ZipFile(wheel) as zf:
        names = {n for n in zf.namelist() if not n.endswith("/")}
        metadata = email.parser.HeaderParser().parsestr(zf.read(info + "METADATA").decode())
        entry_points = zf.read(info + "entry_points.txt").decode()
    content = {n for n in names if not n.startswith(info)}
    fail_if((n for n in expected if n not in content), f"{wheel.name} lacks package files")
    fail_if(
        (n for n in content if n not in expected),
        f"{wheel.name} holds files that are not in adapters/ or reranker/",
    )
    problems = []
    if metadata["Name"] != DIST or metadata["Version"] != version:
        problems.append(f"Name/Version {metadata['Name']} {metadata['Version']}")
    if isinstance(meta.get("license"), str):
        if metadata["License-Expression"] != meta["license"]:
            problems.append(f"License-Expression is {metadata['License-Expression']!r}")
        if metadata["License"] is not None:
            problems.append("a legacy License field beside License-Expression")
        if tuple(int(x) for x in metadata["Metadata-Version"].split(".")) < (2, 4):
            problems.append(f"Metadata-Version {metadata['Metadata-Version']} < 2.4 (PEP 639)")
    for script, target in dict(meta.get("scripts", {})).items():
        if f"{script} = {target}" not in entry_points:
            problems.append(f"entry point {script} = {target} missing")
    fail_if(problems, f"{wheel.name} METADATA/entry points")
    say(f"{wheel.name}: exactly the {len(expected)} package files, metadata as declared")
    modules.write_text("".join(f"{name}\n" for name in sorted(source_modules(source))))


# ------------------------------------------------------------------------------------- suite


def tree_files(source: Path) -> Iterator[str]:
    """Tracked and untracked-but-not-ignored files, as git sees them (a fresh clone: all)."""
    out = subprocess.run(
        ["git", "-C", str(source), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        check=True, capture_output=True,
    ).stdout.decode()
    yield from (name for name in out.split("\0") if name)


def copy_suite(source: Path, dest: Path) -> None:
    """The source tree less the package folders (and .typecheck/'s links to them)."""
    left_out = {*package_dirs(source).values(), ".typecheck"}
    copied = 0
    for name in tree_files(source):
        if name.split("/", 1)[0] in left_out or not (source / name).is_file():
            continue
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source / name, target)
        copied += 1
    for needed in ("conftest.py", "pyproject.toml", "tests/__init__.py"):
        if not (dest / needed).is_file():
            raise CheckFailed(f"{needed} not copied to {dest}")
    for folder in left_out:
        if (dest / folder).exists():
            raise CheckFailed(f"{dest / folder} exists: the suite would see the source")
    say(f"copied {copied} files (no {', '.join(sorted(left_out))}) to {dest}")


# --------------------------------------------------------------------------------- installed


def inside(path: str | Path, folder: str | Path) -> bool:
    return Path(path).resolve().is_relative_to(Path(folder).resolve())


def clean_env() -> dict[str, str]:
    drop = {"PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONSAFEPATH", "PYTHONINSPECT"}
    return {k: v for k, v in os.environ.items() if k not in drop}


def run_help(argv: list[str], label: str) -> str:
    started = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, env=clean_env(), timeout=600)
    took = time.monotonic() - started
    if proc.returncode != 0 or "usage" not in proc.stdout.lower():
        raise CheckFailed(
            f"{label} exited {proc.returncode} (expected 0 and a usage text)\n"
            f"--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
        )
    return f"{label}: ok ({took:.1f}s)"


def check_installed(source: Path, modules: Path) -> None:
    purelib = sysconfig.get_paths()["purelib"]
    cwd = Path.cwd()
    if inside(cwd, source):
        raise CheckFailed(f"run from {cwd}, inside the source tree {source}")
    fail_if(
        (p for p in sys.path if p and inside(p, source)),
        f"sys.path holds folders of the source tree {source}",
    )
    if sys.prefix == sys.base_prefix:
        raise CheckFailed(f"{sys.executable} is not a virtual environment's python")

    dist = importlib.metadata.distribution(DIST)
    direct = json.loads(dist.read_text("direct_url.json") or "{}")
    if not str(direct.get("url", "")).endswith(".whl") or "archive_info" not in direct:
        raise CheckFailed(f"{DIST} is not installed from a wheel file: {direct}")
    say(f"{DIST} {dist.version} installed from {direct['url']}")

    expected = set(modules.read_text().split())
    if not expected:
        raise CheckFailed(f"{modules}: no module names")
    found: set[str] = set()
    mains: list[str] = []
    for package in package_dirs(source):
        module = importlib.import_module(package)
        if not inside(str(module.__file__), purelib):
            raise CheckFailed(f"{package} comes from {module.__file__}, not from {purelib}")
        if not (Path(str(module.__file__)).parent / "py.typed").is_file():
            raise CheckFailed(f"{package}: no py.typed installed")
        found.add(package)

        def onerror(name: str) -> None:
            raise CheckFailed(f"importing package {name} failed") from sys.exc_info()[1]

        for info in pkgutil.walk_packages(module.__path__, package + ".", onerror=onerror):
            found.add(info.name)
            if info.name.rsplit(".", 1)[-1] == "__main__":
                mains.append(info.name)  # runs on import: run as ``python -m`` below
    fail_if(expected - found, "modules of the source tree missing from the installed wheel")
    fail_if(found - expected, "installed modules that the source tree does not have")

    imported = 0
    for name in sorted(found - set(mains)):
        try:
            module = importlib.import_module(name)
        except Exception as exc:  # the import's own error, with its module name
            raise CheckFailed(f"import {name}: {type(exc).__name__}: {exc}") from exc
        if not inside(str(module.__file__), purelib):
            raise CheckFailed(f"{name} comes from {module.__file__}, not from {purelib}")
        imported += 1
    stray = [
        f"{name}: {mod.__file__}" for name, mod in sys.modules.items()
        if name.split(".")[0] == DIST and getattr(mod, "__file__", None)
        and not inside(str(mod.__file__), purelib)
    ]
    fail_if(stray, f"crossrank modules loaded from outside {purelib}")
    say(f"imported all {imported} modules from {purelib} (and found {len(mains)} __main__)")

    from crossrank.adapters.cli import COMMANDS  # the installed command table

    script = Path(sys.executable).parent / "crossrank"
    if not script.is_file():
        raise CheckFailed(f"the console script {script} is not installed")
    say(run_help([str(script), "--help"], "crossrank --help"))
    if not COMMANDS:
        raise CheckFailed("crossrank.adapters.cli.COMMANDS is empty")
    for name in COMMANDS:
        say(run_help([str(script), name, "--help"], f"crossrank {name} --help"))
    for main in mains:
        package = main.rsplit(".", 1)[0]
        argv = [sys.executable, "-I", "-m", package, "--help"]
        say(run_help(argv, f"python -m {package} --help"))


def main(argv: list[str]) -> int:
    try:
        match argv:
            case ["archives", source, sdist, wheel, modules]:
                check_archives(Path(source).resolve(), Path(sdist), Path(wheel), Path(modules))
            case ["suite", source, dest]:
                copy_suite(Path(source).resolve(), Path(dest))
            case ["installed", source, modules]:
                check_installed(Path(source).resolve(), Path(modules))
            case _:
                print(__doc__, file=sys.stderr)
                return 2
    except CheckFailed as exc:
        print(f"check_wheel: FAILED: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
