"""What an engine node is made of: the engine spec, a Java that runs it, and its zip (and
OpenSearch's analysis-common module) from Maven Central, cached."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from crossrank.adapters.processes import ProcessStartError
from crossrank.reranker.errors import ConfigurationError

__all__ = [
    "DEFAULT_CACHE_DIR",
    "DEFAULT_MODULES",
    "EngineKind",
    "EngineSpec",
    "EngineStartError",
    "fetch",
    "fetch_module",
    "find_java",
    "java_major",
]

EngineKind = Literal["elasticsearch", "opensearch"]
_KINDS: tuple[EngineKind, ...] = ("elasticsearch", "opensearch")
_GROUPS: dict[str, str] = {
    "elasticsearch": "org.elasticsearch.distribution.integ-test-zip",
    "opensearch": "org.opensearch.distribution.integ-test-zip",
}


#: Modules that the integ-test zips leave out but that Maven Central publishes as jars, added
#: by default so the node behaves like a full distribution (``analysis-common`` brings the
#: language analyzers such as ``english``). Elasticsearch publishes no such artifacts.
DEFAULT_MODULES: dict[str, tuple[str, ...]] = {
    "opensearch": ("analysis-common",),
    "elasticsearch": (),
}


DEFAULT_CACHE_DIR = Path.home() / ".cache" / "crossrank" / "engines"


_RUN_AS = ("nobody", "nogroup")


class EngineStartError(ProcessStartError):
    """A node could not be fetched, started, or did not become healthy (a
    :class:`~crossrank.adapters.processes.ProcessStartError`, so a ``RuntimeError`` too)."""


@dataclass(frozen=True)
class EngineSpec:
    """An engine kind and version, e.g. ``EngineSpec("opensearch", "2.19.6")``."""

    kind: EngineKind
    version: str

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ConfigurationError(f"unknown engine kind {self.kind!r}; expected one of {_KINDS}")
        if not re.fullmatch(r"\d+\.\d+\.\d+(?:[-.][0-9A-Za-z.-]+)?", self.version):
            raise ConfigurationError(f"bad engine version {self.version!r}; expected e.g. 8.19.21")

    @classmethod
    def parse(cls, text: str) -> EngineSpec:
        """Parse ``"kind:version"`` (``es``/``os`` accepted as short kinds); a bad spec raises
        :class:`~crossrank.reranker.errors.ConfigurationError` (a ``ValueError``)."""
        kind, sep, version = text.strip().partition(":")
        if not sep or not version:
            raise ConfigurationError(f"bad engine spec {text!r}; expected KIND:VERSION")
        kind = {"es": "elasticsearch", "os": "opensearch"}.get(kind.lower(), kind.lower())
        if kind not in _KINDS:
            raise ConfigurationError(f"unknown engine kind in {text!r}; expected one of {_KINDS}")
        return cls(kind, version.strip())

    @classmethod
    def parse_list(cls, text: str) -> list[EngineSpec]:
        """Parse a comma-separated list of specs; empty items are ignored."""
        return [cls.parse(part) for part in text.split(",") if part.strip()]

    def __str__(self) -> str:
        return f"{self.kind}:{self.version}"

    @property
    def major(self) -> int:
        """The engine's major version."""
        return int(self.version.split(".", 1)[0])

    @property
    def artifact(self) -> str:
        """Maven coordinates of the integ-test zip."""
        return f"{_GROUPS[self.kind]}:{self.kind}:{self.version}:zip"

    @property
    def zip_name(self) -> str:
        """File name of the zip, which is also its cached name."""
        return f"{self.kind}-{self.version}.zip"

    @property
    def min_java(self) -> int:
        """Lowest Java major this engine runs on (ES 9 / OpenSearch 3 need 21)."""
        if self.kind == "elasticsearch":
            return 21 if self.major >= 9 else 17
        return 21 if self.major >= 3 else 11

    @property
    def env_prefix(self) -> str:
        """Prefix of the engine's environment variables (``ES`` or ``OPENSEARCH``)."""
        return "ES" if self.kind == "elasticsearch" else "OPENSEARCH"


def java_major(release_text: str) -> int | None:
    """Java major version from the text of a JDK ``release`` file, or None."""
    match = re.search(r'^JAVA_VERSION="?([0-9][0-9._]*)', release_text, re.MULTILINE)
    if not match:
        return None
    parts = match.group(1).replace("_", ".").split(".")
    major = int(parts[0])
    if major == 1 and len(parts) > 1:  # 1.8.0_292
        major = int(parts[1])
    return major


def _candidate_homes(search_dirs: Iterable[Path], java_home: str | None) -> Iterator[Path]:
    if java_home:
        yield Path(java_home)
    for base in search_dirs:
        if base.is_dir():
            yield from sorted(p for p in base.iterdir() if p.is_dir())


def find_java(
    min_major: int,
    *,
    search_dirs: Sequence[Path] = (Path("/usr/lib/jvm"),),
    java_home: str | None = None,
) -> Path:
    """The JDK home with the lowest Java major >= ``min_major``.

    Candidates are ``java_home`` (default ``$JAVA_HOME``) and the directories in
    ``search_dirs``; each needs a ``release`` file and an executable ``bin/java``.
    Ties go to ``java_home``, then to directory name order.
    """
    if java_home is None:
        java_home = os.environ.get("JAVA_HOME")
    best: tuple[int, Path] | None = None
    seen: set[Path] = set()
    found: list[str] = []
    for home in _candidate_homes(search_dirs, java_home):
        real = home.resolve()
        if real in seen:
            continue
        seen.add(real)
        try:
            major = java_major((home / "release").read_text(errors="replace"))
        except OSError:
            continue
        if major is None or not os.access(home / "bin" / "java", os.X_OK):
            continue
        found.append(f"{home} (Java {major})")
        if major >= min_major and (best is None or major < best[0]):
            best = (major, home)
    if best is None:
        raise EngineStartError(
            f"no JDK with Java >= {min_major} found (looked at $JAVA_HOME and "
            f"{', '.join(map(str, search_dirs))}; found: {', '.join(found) or 'none'})"
        )
    return best[1]


def _cache_dir(cache_dir: Path | str | None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir)
    env = os.environ.get("CROSSRANK_ENGINE_CACHE")
    return Path(env) if env else DEFAULT_CACHE_DIR


def _mvn_copy(artifact: str, filename: str, cache: Path, what: str) -> Path:
    """``cache/filename``, downloading ``artifact`` with ``mvn dependency:copy`` unless cached."""
    target = cache / filename
    if target.is_file() and zipfile.is_zipfile(target):
        return target
    cache.mkdir(parents=True, exist_ok=True)
    mvn = shutil.which("mvn")
    if mvn is None:
        raise EngineStartError(f"cannot fetch {what}: 'mvn' (Maven) is not on PATH")
    with tempfile.TemporaryDirectory(dir=cache, prefix=".fetch-") as tmp:
        cmd = [
            mvn,
            "-q",
            "-B",
            "dependency:copy",
            f"-Dartifact={artifact}",
            f"-DoutputDirectory={tmp}",
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        got = Path(tmp) / filename
        if proc.returncode != 0 or not got.is_file():
            raise EngineStartError(
                f"fetching {what} ({artifact}) failed: {' '.join(cmd)} exited "
                f"{proc.returncode}\n{proc.stdout}{proc.stderr}"
            )
        os.replace(got, target)
    return target


def fetch(spec: EngineSpec, cache_dir: Path | str | None = None) -> Path:
    """Path of the engine's zip, downloading it with ``mvn`` unless cached.

    The cache is ``cache_dir``, else ``$CROSSRANK_ENGINE_CACHE``, else
    ``~/.cache/crossrank/engines``.  Raises EngineStartError with mvn's output.
    """
    return _mvn_copy(spec.artifact, spec.zip_name, _cache_dir(cache_dir), str(spec))


def fetch_module(spec: EngineSpec, name: str, cache_dir: Path | str | None = None) -> Path:
    """The jar of OpenSearch module ``name`` for ``spec``'s version (cached like the zips)."""
    if spec.kind != "opensearch":
        raise EngineStartError(f"no published module artifacts for {spec.kind}")
    artifact = f"org.opensearch.plugin:{name}:{spec.version}:jar"
    return _mvn_copy(artifact, f"{name}-{spec.version}.jar", _cache_dir(cache_dir), artifact)


def _install_module(home: Path, spec: EngineSpec, name: str, jar: Path) -> None:
    """Lay out ``modules/<name>/`` from its jar, with the plugin descriptor it needs."""
    with zipfile.ZipFile(jar) as archive:
        plugins = sorted(
            n
            for n in archive.namelist()
            if n.endswith("Plugin.class") and "$" not in n and n.count("/") >= 3
        )
    if not plugins:
        raise EngineStartError(f"{jar} holds no plugin class")
    folder = home / "modules" / name
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy2(jar, folder / jar.name)
    classname = plugins[0][: -len(".class")].replace("/", ".")
    (folder / "plugin-descriptor.properties").write_text(
        f"description={name} module (from Maven Central)\nversion={spec.version}\n"
        f"name={name}\nclassname={classname}\njava.version={spec.min_java}\n"
        f"opensearch.version={spec.version}\nextended.plugins=\nhas.native.controller=false\n"
    )
