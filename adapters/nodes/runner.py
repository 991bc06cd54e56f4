"""Starting and stopping a node: unpack, configure, run (as ``nobody`` when root), wait for
its health, stop it cleanly."""

from __future__ import annotations

import atexit
import contextlib
import grp
import json
import os
import pwd
import shutil
import signal
import stat
import subprocess
import tempfile
import threading
import time
import zipfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import TracebackType

from crossrank.adapters.nodes.artifacts import (
    _RUN_AS,
    DEFAULT_MODULES,
    EngineSpec,
    EngineStartError,
    _install_module,
    fetch,
    fetch_module,
    find_java,
)
from crossrank.adapters.processes import free_port, log_tail, wait_healthy

__all__ = ["EngineNode", "start_all"]

# --------------------------------------------------------------------------- node

_live: set[EngineNode] = set()


@atexit.register
def _stop_leftovers() -> None:
    for node in list(_live):
        node.stop()


def _yellow_or_green(body: bytes) -> bool:
    health = json.loads(body)
    return isinstance(health, dict) and health.get("status") in ("yellow", "green")


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
            raise EngineStartError(f"{self.spec} is not started")
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def running(self) -> bool:
        """True while the node process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def log_tail(self, lines: int = 50) -> str:
        """The last lines of the node's console output."""
        return log_tail(self._log, lines) if self._log else "(not started)"

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
            raise EngineStartError(f"{self.spec} is already started")
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
        self.http_port = free_port()
        settings = {
            "http.port": str(self.http_port),
            "transport.port": str(free_port()),
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
        wait_healthy(
            f"{self.url}/_cluster/health?wait_for_status=yellow&timeout=1s",
            self._proc,
            timeout=self.startup_timeout,
            log=self._log,
            name=str(self.spec),
            healthy=_yellow_or_green,
            interval=0.5,
            error=EngineStartError,
        )

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
