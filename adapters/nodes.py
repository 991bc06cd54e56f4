"""Real Elasticsearch/OpenSearch nodes for tests and demos, without Docker.

The engines come from the "integ-test" zips on Maven Central (fetched with ``mvn``
and cached), are unpacked into a private temporary directory and started as
single-node clusters on free loopback ports.  As root, the install is handed to
``nobody:nogroup`` and the node runs as that user, since neither engine runs as root.

CLI::

    python -m crossrank.adapters.nodes fetch elasticsearch:8.19.21 opensearch:2.19.6
    python -m crossrank.adapters.nodes run opensearch:3.6.0   # prints the URL, Ctrl-C stops
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import grp
import json
import os
import pwd
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Literal

__all__ = [
    "DEFAULT_CACHE_DIR",
    "DEFAULT_MODULES",
    "EngineKind",
    "EngineNode",
    "EngineSpec",
    "EngineStartError",
    "fetch",
    "fetch_module",
    "find_java",
    "java_major",
    "main",
    "start_all",
]

EngineKind = Literal["elasticsearch", "opensearch"]
_KINDS: tuple[EngineKind, ...] = ("elasticsearch", "opensearch")
_GROUPS: dict[str, str] = {
    "elasticsearch": "org.elasticsearch.distribution.integ-test-zip",
    "opensearch": "org.opensearch.distribution.integ-test-zip",
}
DEFAULT_CACHE_DIR = Path.home() / ".cache" / "crossrank" / "engines"
_RUN_AS = ("nobody", "nogroup")


class EngineStartError(RuntimeError):
    """A node could not be fetched, started, or did not become healthy."""


@dataclass(frozen=True)
class EngineSpec:
    """An engine kind and version, e.g. ``EngineSpec("opensearch", "2.19.6")``."""

    kind: EngineKind
    version: str

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(f"unknown engine kind {self.kind!r}; expected one of {_KINDS}")
        if not re.fullmatch(r"\d+\.\d+\.\d+(?:[-.][0-9A-Za-z.-]+)?", self.version):
            raise ValueError(f"bad engine version {self.version!r}; expected e.g. 8.19.21")

    @classmethod
    def parse(cls, text: str) -> EngineSpec:
        """Parse ``"kind:version"`` (``es``/``os`` accepted as short kinds)."""
        kind, sep, version = text.strip().partition(":")
        if not sep or not version:
            raise ValueError(f"bad engine spec {text!r}; expected KIND:VERSION")
        kind = {"es": "elasticsearch", "os": "opensearch"}.get(kind.lower(), kind.lower())
        if kind not in _KINDS:
            raise ValueError(f"unknown engine kind in {text!r}; expected one of {_KINDS}")
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


# --------------------------------------------------------------------------- java


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


# --------------------------------------------------------------------------- fetch


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


#: Modules that the integ-test zips leave out but that Maven Central publishes as jars, added
#: by default so the node behaves like a full distribution (``analysis-common`` brings the
#: language analyzers such as ``english``). Elasticsearch publishes no such artifacts.
DEFAULT_MODULES: dict[str, tuple[str, ...]] = {
    "opensearch": ("analysis-common",),
    "elasticsearch": (),
}


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


# --------------------------------------------------------------------------- node

_used_ports: set[int] = set()
_ports_lock = threading.Lock()
_live: set[EngineNode] = set()


@atexit.register
def _stop_leftovers() -> None:
    for node in list(_live):
        node.stop()


def _free_port() -> int:
    """A currently free loopback port not handed out before by this process."""
    with _ports_lock:
        for _ in range(100):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.bind(("127.0.0.1", 0))
                port = int(sock.getsockname()[1])
            if port not in _used_ports:
                _used_ports.add(port)
                return port
    raise EngineStartError("no free loopback port found")


def _unzip(archive: Path, dest: Path) -> None:
    """Extract ``archive`` into ``dest`` keeping the Unix permission bits."""
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            mode = (info.external_attr >> 16) & 0xFFFF
            path = Path(zf.extract(info, dest))
            if stat.S_IMODE(mode) and not info.is_dir():
                path.chmod(stat.S_IMODE(mode))
        for info in zf.infolist():  # directories last: extract() may create them first
            mode = (info.external_attr >> 16) & 0xFFFF
            if info.is_dir() and stat.S_IMODE(mode):
                (dest / info.filename).chmod(stat.S_IMODE(mode))


def _chown_tree(root: Path, uid: int, gid: int) -> None:
    os.chown(root, uid, gid)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            os.lchown(os.path.join(dirpath, name), uid, gid)


def _tail(path: Path, lines: int = 50) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no output)"
    return "\n".join(text.splitlines()[-lines:]) or "(no output)"


class EngineNode:
    """One single-node Elasticsearch/OpenSearch cluster on a free loopback port.

    Use as a context manager, or call :meth:`start` and :meth:`stop`.  ``heap`` is
    the JVM heap (``-Xms``/``-Xmx``); ``java_home`` overrides the JDK choice; ``modules``
    are extra modules from Maven Central (default :data:`DEFAULT_MODULES`).
    """

    def __init__(
        self,
        spec: EngineSpec | str,
        *,
        heap: str = "512m",
        java_home: Path | str | None = None,
        cache_dir: Path | str | None = None,
        startup_timeout: float = 180.0,
        settings: dict[str, str] | None = None,
        modules: Sequence[str] | None = None,
    ) -> None:
        self.spec = EngineSpec.parse(spec) if isinstance(spec, str) else spec
        self.modules = tuple(DEFAULT_MODULES[self.spec.kind] if modules is None else modules)
        self.heap = heap
        self.java_home = Path(java_home) if java_home else None
        self.cache_dir = cache_dir
        self.startup_timeout = startup_timeout
        self.settings = dict(settings or {})
        self.http_port: int | None = None
        self.workdir: Path | None = None
        self.startup_seconds: float | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: Path | None = None

    def __repr__(self) -> str:
        state = self.url if self.running else "stopped"
        return f"EngineNode({str(self.spec)!r}, {state})"

    @property
    def version(self) -> str:
        """The engine version."""
        return self.spec.version

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:9234``; only valid once started."""
        if self.http_port is None:
            raise RuntimeError(f"{self.spec} is not started")
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def running(self) -> bool:
        """True while the node process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def log_tail(self, lines: int = 50) -> str:
        """The last lines of the node's console output."""
        return _tail(self._log, lines) if self._log else "(not started)"

    def __enter__(self) -> EngineNode:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> EngineNode:
        """Fetch, unpack and start the node, then wait until it is healthy."""
        if self._proc is not None:
            raise RuntimeError(f"{self.spec} is already started")
        began = time.monotonic()
        archive = fetch(self.spec, self.cache_dir)
        java = self.java_home or find_java(self.spec.min_java)
        self.workdir = Path(tempfile.mkdtemp(prefix=f"crossrank-{self.spec.kind}-{self.version}-"))
        _live.add(self)
        try:
            self._launch(archive, java)
            self._wait_healthy()
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - began
        return self

    def _launch(self, archive: Path, java: Path) -> None:
        assert self.workdir is not None
        _unzip(archive, self.workdir)
        home = self.workdir / f"{self.spec.kind}-{self.version}"
        if not home.is_dir():
            raise EngineStartError(f"{archive} has no top folder {home.name}/")
        for name in self.modules:
            _install_module(home, self.spec, name, fetch_module(self.spec, name, self.cache_dir))
        data, logs, tmp = (self.workdir / name for name in ("data", "logs", "tmp"))
        for path in (data, logs, tmp):
            path.mkdir()
        self._log = self.workdir / "console.log"
        self._log.touch()
        self.http_port = _free_port()
        settings = {
            "http.port": str(self.http_port),
            "transport.port": str(_free_port()),
            "discovery.type": "single-node",
            "network.host": "127.0.0.1",
            "path.data": str(data),
            "path.logs": str(logs),
            "cluster.routing.allocation.disk.threshold_enabled": "false",
        }
        if self.spec.kind == "elasticsearch":
            settings["xpack.security.enabled"] = "false"
        settings.update(self.settings)
        cmd = [str(home / "bin" / self.spec.kind)]
        for key, value in settings.items():
            cmd += ["-E", f"{key}={value}"]
        prefix = self.spec.env_prefix
        env = dict(os.environ)
        env.update(
            {
                f"{prefix}_JAVA_HOME": str(java),
                "JAVA_HOME": str(java),
                f"{prefix}_JAVA_OPTS": f"-Xms{self.heap} -Xmx{self.heap}",
                f"{prefix}_TMPDIR": str(tmp),
                "TMPDIR": str(tmp),
                "HOME": str(self.workdir),
            }
        )
        env.pop("ES_PATH_CONF" if prefix == "ES" else "OPENSEARCH_PATH_CONF", None)
        as_root = os.geteuid() == 0
        if as_root:
            uid = pwd.getpwnam(_RUN_AS[0]).pw_uid
            gid = grp.getgrnam(_RUN_AS[1]).gr_gid
            _chown_tree(self.workdir, uid, gid)
            self.workdir.chmod(0o700)
        # As root, run as nobody: neither engine runs as root.
        user = {"user": _RUN_AS[0], "group": _RUN_AS[1], "extra_groups": []} if as_root else {}
        with open(self._log, "ab") as out:
            self._proc = subprocess.Popen(  # type: ignore[call-overload]
                cmd,
                cwd=home,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                **user,
            )

    def _wait_healthy(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + self.startup_timeout
        url = f"{self.url}/_cluster/health?wait_for_status=yellow&timeout=1s"
        last = "no answer yet"
        while True:
            code = self._proc.poll()
            if code is not None:
                raise EngineStartError(
                    f"{self.spec} exited with code {code} during startup; last output:\n"
                    f"{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(url, timeout=5) as resp:
                    body = json.loads(resp.read().decode())
                if body.get("status") in ("yellow", "green"):
                    return
                last = f"status {body.get('status')!r}"
            except urllib.error.HTTPError as err:
                last = f"HTTP {err.code}"
            except (OSError, ValueError) as err:
                last = repr(err)
            if time.monotonic() > deadline:
                raise EngineStartError(
                    f"{self.spec} not healthy after {self.startup_timeout:.0f}s ({last}); "
                    f"last output:\n{self.log_tail()}"
                )
            time.sleep(0.5)

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM the node (its whole process group), then SIGKILL; remove its files."""
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    pass
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # leftover children of the launcher
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None
        self.http_port = None
        _live.discard(self)


def start_all(
    specs: Iterable[EngineSpec | str], *, concurrent: bool = True, heap: str = "512m"
) -> list[EngineNode]:
    """Start one node per spec (in threads if ``concurrent``); all or none.

    If any node fails, the others are stopped and the first error is raised.
    """
    nodes = [EngineNode(spec, heap=heap) for spec in specs]
    errors: list[BaseException] = []

    def run(node: EngineNode) -> None:
        try:
            node.start()
        except BaseException as err:
            errors.append(err)

    if concurrent:
        threads = [threading.Thread(target=run, args=(node,), daemon=True) for node in nodes]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    else:
        for node in nodes:
            run(node)
            if errors:
                break
    if errors:
        for node in nodes:
            node.stop()
        raise errors[0]
    return nodes


# --------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m crossrank.adapters.nodes``."""
    parser = argparse.ArgumentParser(prog="python -m crossrank.adapters.nodes", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p_fetch = sub.add_parser("fetch", help="download engine zips into the cache")
    p_run = sub.add_parser("run", help="start nodes, print their URLs, wait for Ctrl-C")
    for sp in (p_fetch, p_run):
        sp.add_argument("specs", nargs="+", metavar="KIND:VERSION", help="comma lists allowed")
    p_run.add_argument("--heap", default="512m", help="JVM heap per node (default 512m)")
    p_run.add_argument("--sequential", action="store_true", help="start nodes one by one")
    args = parser.parse_args(argv)
    try:
        specs = [spec for arg in args.specs for spec in EngineSpec.parse_list(arg)]
    except ValueError as err:
        parser.error(str(err))

    try:
        return _run_command(args.command, specs, args)
    except EngineStartError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


def _run_command(command: str, specs: list[EngineSpec], args: argparse.Namespace) -> int:
    if command == "fetch":
        for spec in specs:
            print(f"{spec} {fetch(spec)}", flush=True)
            for name in DEFAULT_MODULES[spec.kind]:
                print(f"{spec} {fetch_module(spec, name)}", flush=True)
        return 0

    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    nodes = start_all(specs, concurrent=not args.sequential, heap=args.heap)
    try:
        for node in nodes:
            print(f"{node.spec} {node.url}", flush=True)
        while not stop.wait(1.0):
            for node in nodes:
                if not node.running:
                    print(f"{node.spec} exited:\n{node.log_tail()}", file=sys.stderr)
                    return 1
        return 0
    finally:
        for node in nodes:
            node.stop()


if __name__ == "__main__":
    raise SystemExit(main())
