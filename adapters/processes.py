"""Child processes on loopback, for the demo, the engine nodes, the tests and the benchmarks:
a free port, a wait until a URL answers healthy while the process lives, and a ``crossrank``
subcommand started and stopped with its log.

    with CrossrankProcess("serve", ["--model", "/models/ce"]) as scorer:
        httpx.post(scorer.url + "/rerank", json={"query": "q", "texts": ["a", "b"]})

Standard library only (``crossrank nodes`` needs no HTTP client).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from crossrank.reranker.errors import CrossrankError

__all__ = [
    "HEALTH",
    "CrossrankProcess",
    "ProcessStartError",
    "free_port",
    "log_tail",
    "wait_healthy",
]

#: The path that answers 200 once each server subcommand is up (the proxy's
#: ``/_crossrank/ready`` waits for its models as well).
HEALTH = {"serve": "/health", "proxy": "/_crossrank/health"}


class ProcessStartError(CrossrankError, RuntimeError):
    """A child process did not start, exited during start-up, or did not answer healthy in
    time (its text ends with the last lines of the process's log)."""


_handed_out: set[int] = set()
_ports_lock = threading.Lock()


def free_port() -> int:
    """A currently free loopback TCP port that this process has not handed out before, so
    that processes started at the same time never get the same one."""
    with _ports_lock:
        for _ in range(100):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.bind(("127.0.0.1", 0))
                port = int(sock.getsockname()[1])
            if port not in _handed_out:
                _handed_out.add(port)
                return port
    raise ProcessStartError("no free loopback port found")


def log_tail(path: Path | None, lines: int = 50) -> str:
    """The last ``lines`` lines of a log file, or ``(no output)``."""
    if path is None:
        return "(no output)"
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no output)"
    return "\n".join(text.splitlines()[-lines:]) or "(no output)"


# Loopback only: a proxy from the environment ($http_proxy) must not answer for the process.
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def wait_healthy(
    url: str,
    process: subprocess.Popen[Any],
    *,
    timeout: float,
    log: Path | None = None,
    name: str | None = None,
    healthy: Callable[[bytes], bool] | None = None,
    interval: float = 0.2,
    error: type[ProcessStartError] = ProcessStartError,
) -> None:
    """Poll ``url`` until it answers 200 (and ``healthy(body)`` holds, when given) while
    ``process`` is alive.

    Raises ``error`` with the last lines of ``log`` when the process exits first or
    ``timeout`` seconds pass; stopping the process is the caller's business.
    """
    name = name or url
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    while True:
        code = process.poll()
        if code is not None:
            raise error(
                f"{name} exited with code {code} during startup; last output:\n{log_tail(log)}"
            )
        try:
            with _opener.open(url, timeout=5) as response:
                body = response.read()
            if healthy is None or healthy(body):
                return
            last = "answered, not healthy yet"
        except urllib.error.HTTPError as err:
            err.close()
            last = f"HTTP {err.code}"
        except (OSError, ValueError) as err:  # URLError is an OSError
            last = repr(err)
        if time.monotonic() > deadline:
            raise error(
                f"{name} not healthy after {timeout:.0f}s ({last}); last output:\n{log_tail(log)}"
            )
        time.sleep(interval)


class CrossrankProcess:
    """``crossrank COMMAND ARGS --port PORT`` as a child process on a loopback port, its
    output (stdout and stderr) appended to ``log``.

    :meth:`start` waits until ``health`` (default :data:`HEALTH` of the command) answers
    200; :meth:`stop` sends SIGTERM (a graceful shutdown: work in flight is finished), then
    SIGKILL. A stopped process can be started again, on the same port. ``env`` is added to
    this process's environment; ``log`` defaults to a new temporary file, which is kept.
    """

    def __init__(
        self,
        command: str,
        args: Sequence[str] = (),
        *,
        port: int | None = None,
        health: str | None = None,
        env: Mapping[str, str] | None = None,
        cwd: Path | str | None = None,
        log: Path | str | None = None,
    ) -> None:
        self.command = command
        self.args = list(args)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.health = health or HEALTH.get(command, "/")
        self.env = dict(env or {})
        self.cwd = cwd
        if log is None:
            fd, name = tempfile.mkstemp(prefix=f"crossrank-{command}-", suffix=".log")
            os.close(fd)
            log = name
        self.log = Path(log)
        self.proc: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        state = self.url if self.running else "stopped"
        return f"CrossrankProcess({self.command!r}, {state})"

    @property
    def argv(self) -> list[str]:
        """The command line (``python -m crossrank.adapters.cli ...``)."""
        cli = [sys.executable, "-m", "crossrank.adapters.cli", self.command]
        return [*cli, *self.args, "--port", str(self.port)]

    @property
    def running(self) -> bool:
        """True while the process is alive."""
        return self.proc is not None and self.proc.poll() is None

    def logs(self) -> str:
        """Everything the process has written so far."""
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def start(self, timeout: float = 60.0) -> CrossrankProcess:
        """Start the process and wait until it answers healthy; on failure it is stopped and
        :class:`ProcessStartError` raised with its log's last lines."""
        if self.running:
            raise ProcessStartError(f"crossrank {self.command} on {self.url} is already running")
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.cwd,
                env={**os.environ, **self.env},
            )
        try:
            wait_healthy(
                self.url + self.health,
                self.proc,
                timeout=timeout,
                log=self.log,
                name=f"crossrank {self.command} ({self.url})",
            )
        except BaseException:
            self.stop(timeout=10.0)
            raise
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int | None:
        """Send ``sig``, wait up to ``timeout`` seconds, then SIGKILL; the exit status
        (None: never started). uvicorn re-raises SIGTERM once it has shut down gracefully,
        so a graceful stop exits with ``-SIGTERM`` (or 0)."""
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return proc.returncode

    def __enter__(self) -> CrossrankProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
