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
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

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
from crossrank.adapters.nodes.config import ClusterPlan, node_env, node_settings
from crossrank.adapters.processes import free_port, log_tail, wait_healthy

__all__ = ["EngineNode", "start_all", "start_nodes"]

# --------------------------------------------------------------------------- node

_live: set[EngineNode] = set()


@atexit.register
def _stop_leftovers() -> None:
    for node in list(_live):
        node.stop()


def _yellow_or_green(health: Any) -> bool:
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
    """One Elasticsearch/OpenSearch node on free loopback ports: a single-node cluster, or
    member ``member`` of ``cluster`` (see :class:`~crossrank.adapters.nodes.EngineCluster`).

    Use as a context manager, or call :meth:`start` and :meth:`stop`; :meth:`kill` ends the
    process with SIGKILL but keeps its data and ports, and a later :meth:`start` brings the
    same node back.  ``heap`` is the JVM heap (``-Xms``/``-Xmx``); ``java_home`` overrides
    the JDK choice; ``modules`` are extra modules from Maven Central (default
    :data:`DEFAULT_MODULES`); ``settings`` are added to (and win over) the generated ones.
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
        cluster: ClusterPlan | None = None,
        member: int = 0,
    ) -> None:
        self.spec = EngineSpec.parse(spec) if isinstance(spec, str) else spec
        self.modules = tuple(DEFAULT_MODULES[self.spec.kind] if modules is None else modules)
        self.heap = heap
        self.java_home = Path(java_home) if java_home else None
        self.cache_dir = cache_dir
        self.startup_timeout = startup_timeout
        self.settings = dict(settings or {})
        self.cluster = cluster
        self.member = member
        if cluster is not None:
            cluster.member_settings(self.spec, member)  # a bad member fails here, not at start
        self.http_port: int | None = None
        self.transport_port: int | None = None
        self.workdir: Path | None = None
        self.startup_seconds: float | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: Path | None = None
        self._java: Path | None = None

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
        """Fetch, unpack and start the node, then wait until it is healthy; a killed node
        is started again from its data, on the same ports."""
        if self.running:
            raise EngineStartError(f"{self.spec} is already started")
        began = time.monotonic()
        _live.add(self)
        try:
            if self.workdir is None:
                self._install()
            self._spawn()
            self._wait_healthy()
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - began
        return self

    @property
    def _home(self) -> Path:
        assert self.workdir is not None
        return self.workdir / f"{self.spec.kind}-{self.version}"

    def _install(self) -> None:
        """Unpack the zip and the modules into a new private work directory."""
        archive = fetch(self.spec, self.cache_dir)
        self._java = self.java_home or find_java(self.spec.min_java)
        self.workdir = Path(tempfile.mkdtemp(prefix=f"crossrank-{self.spec.kind}-{self.version}-"))
        _unzip(archive, self.workdir)
        if not self._home.is_dir():
            raise EngineStartError(f"{archive} has no top folder {self._home.name}/")
        for name in self.modules:
            jar = fetch_module(self.spec, name, self.cache_dir)
            _install_module(self._home, self.spec, name, jar)
        for name in ("data", "logs", "tmp"):
            (self.workdir / name).mkdir()
        self._log = self.workdir / "console.log"
        self._log.touch()
        if os.geteuid() == 0:  # the node runs as nobody: hand it its files
            _chown_tree(
                self.workdir, pwd.getpwnam(_RUN_AS[0]).pw_uid, grp.getgrnam(_RUN_AS[1]).gr_gid
            )
            self.workdir.chmod(0o700)

    def _spawn(self) -> None:
        """Start the engine process on the node's ports (chosen on the first start, kept)."""
        assert self.workdir is not None and self._java is not None and self._log is not None
        self.http_port = self.http_port or free_port()
        if self.cluster is not None:
            self.transport_port = self.cluster.transport_ports[self.member]
        self.transport_port = self.transport_port or free_port()
        settings = node_settings(
            self.spec,
            http_port=self.http_port,
            transport_port=self.transport_port,
            data=self.workdir / "data",
            logs=self.workdir / "logs",
            cluster=self.cluster,
            member=self.member,
            extra=self.settings,
        )
        cmd = [str(self._home / "bin" / self.spec.kind)]
        for key, value in settings.items():
            cmd += ["-E", f"{key}={value}"]
        env = node_env(
            self.spec, java=self._java, heap=self.heap, tmp=self.workdir / "tmp", home=self.workdir
        )
        # As root, run as nobody: neither engine runs as root.
        as_root = os.geteuid() == 0
        user = {"user": _RUN_AS[0], "group": _RUN_AS[1], "extra_groups": []} if as_root else {}
        with open(self._log, "ab") as out:
            self._proc = subprocess.Popen(  # type: ignore[call-overload]
                cmd,
                cwd=self._home,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                **user,
            )

    def _wait_healthy(self) -> None:
        self.wait_health("wait_for_status=yellow", _yellow_or_green, self.startup_timeout)

    def wait_health(self, params: str, healthy: Callable[[Any], bool], timeout: float) -> None:
        """Poll ``/_cluster/health?<params>&timeout=1s`` on this node until ``healthy`` holds
        for the parsed answer; :class:`EngineStartError` with the log's tail if the node
        exits first or ``timeout`` seconds pass."""
        if self._proc is None:
            raise EngineStartError(f"{self.spec} is not started")
        wait_healthy(
            f"{self.url}/_cluster/health?{params}&timeout=1s",
            self._proc,
            timeout=timeout,
            log=self._log,
            name=f"{self.spec} ({self.url})",
            healthy=lambda body: healthy(json.loads(body)),
            interval=0.5,
            error=EngineStartError,
        )

    def kill(self) -> None:
        """SIGKILL the node's process group, as a crash would end it: no shutdown, its
        connections reset. Its files and ports are kept for :meth:`start`."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            raise EngineStartError(f"{self.spec} is not running")
        _kill_group(proc, signal.SIGKILL, timeout=30.0)

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM the node (its whole process group), then SIGKILL; remove its files."""
        proc, self._proc = self._proc, None
        if proc is not None:
            _kill_group(proc, signal.SIGTERM, timeout)
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None
        self.http_port = self.transport_port = None
        _live.discard(self)


def _kill_group(proc: subprocess.Popen[bytes], sig: int, timeout: float) -> None:
    """Send ``sig`` to the process group, wait up to ``timeout``, then SIGKILL the group
    (leftover children of the launcher)."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(10)


def start_nodes(nodes: Sequence[EngineNode], *, concurrent: bool = True) -> None:
    """Start ``nodes`` (in threads if ``concurrent``); all or none.

    If any node fails, all of them are stopped and the first error is raised.
    """
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


def start_all(
    specs: Iterable[EngineSpec | str], *, concurrent: bool = True, heap: str = "512m"
) -> list[EngineNode]:
    """Start one node per spec (in threads if ``concurrent``); all or none.

    If any node fails, the others are stopped and the first error is raised.
    """
    nodes = [EngineNode(spec, heap=heap) for spec in specs]
    start_nodes(nodes, concurrent=concurrent)
    return nodes
