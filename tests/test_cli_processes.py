"""``crossrank.adapters.processes``: free ports, waiting for health while a process lives, and
``crossrank`` subcommands started and stopped with their logs (a real proxy, no engine)."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from crossrank.adapters.processes import (
    CrossrankProcess,
    ProcessStartError,
    free_port,
    log_tail,
    wait_healthy,
)
from crossrank.reranker.errors import CrossrankError


def test_free_ports_are_distinct() -> None:
    ports = {free_port() for _ in range(20)}
    assert len(ports) == 20


def test_process_start_error_is_a_crossrank_error_and_a_runtime_error() -> None:
    assert issubclass(ProcessStartError, CrossrankError)
    assert issubclass(ProcessStartError, RuntimeError)


def _python(code: str, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen([sys.executable, "-c", code], stdout=out, stderr=subprocess.STDOUT)


def test_wait_healthy_raises_with_the_log_when_the_process_exits(tmp_path: Path) -> None:
    log = tmp_path / "log"
    proc = _python("import sys; print('bad flag'); sys.exit(3)", log)
    with pytest.raises(ProcessStartError, match=r"(?s)exited with code 3.*bad flag"):
        wait_healthy(f"http://127.0.0.1:{free_port()}/", proc, timeout=30, log=log)


def test_wait_healthy_times_out_while_nothing_answers(tmp_path: Path) -> None:
    log = tmp_path / "log"
    proc = _python("import time; print('still starting', flush=True); time.sleep(30)", log)
    try:
        with pytest.raises(ProcessStartError, match=r"(?s)not healthy after 1s.*still starting"):
            wait_healthy(f"http://127.0.0.1:{free_port()}/", proc, timeout=1.0, log=log)
    finally:
        proc.kill()
        proc.wait()


def test_wait_healthy_returns_once_the_url_answers_and_ignores_http_proxies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")  # nothing there: must not be used
    port = free_port()
    log = tmp_path / "log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    (tmp_path / "health").write_text('{"status": "yellow"}')
    try:
        url = f"http://127.0.0.1:{port}/health"
        wait_healthy(url, proc, timeout=30, log=log, healthy=lambda body: b"yellow" in body)
        with pytest.raises(ProcessStartError, match="answered, not healthy yet"):
            wait_healthy(url, proc, timeout=0.5, healthy=lambda body: b"green" in body)
    finally:
        proc.terminate()
        proc.wait()


def test_log_tail() -> None:
    assert log_tail(None) == "(no output)"
    assert log_tail(Path("/nonexistent/log")) == "(no output)"


def test_a_crossrank_command_that_fails_to_start_says_why(tmp_path: Path) -> None:
    failing = CrossrankProcess("serve", ["--model", "m", "--dtype", "int8"], log=tmp_path / "log")
    with pytest.raises(ProcessStartError, match=r"(?s)crossrank serve .* exited with code 2"):
        failing.start(timeout=60)
    assert not failing.running
    assert "invalid choice: 'int8'" in failing.logs()  # the log is kept, and holds the reason


def test_a_crossrank_proxy_starts_stops_gracefully_and_restarts_on_its_port() -> None:
    args = ["--upstream", "http://127.0.0.1:9", "--disable", "--log-level", "info"]
    with CrossrankProcess("proxy", args) as proxy:
        assert proxy.running and proxy.argv[-2:] == ["--port", str(proxy.port)]
        assert proxy.argv[1:4] == ["-m", "crossrank.adapters.cli", "proxy"]
        status = proxy.stop()
        assert status in (0, -signal.SIGTERM)
        assert "Application shutdown complete." in proxy.logs()
        port = proxy.port
        proxy.start(timeout=60)  # again, on the same port, the log appended to
        assert proxy.port == port and proxy.logs().count("proxy ready") == 2
        with pytest.raises(ProcessStartError, match="already running"):
            proxy.start()
    assert not proxy.running
