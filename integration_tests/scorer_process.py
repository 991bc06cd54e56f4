"""A real ``crossrank serve`` process on loopback, for the scorer service tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from .helpers import free_port, wait_healthy


class ScorerProcess:
    """``python -m crossrank.adapters.cli serve ARGS --port PORT`` as a subprocess."""

    def __init__(self, args: list[str], port: int | None = None) -> None:
        self.args = args
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = Path(os.environ.get("TMPDIR", "/tmp")) / f"crossrank-serve-{self.port}.log"

    def start(self, timeout: float = 60.0) -> ScorerProcess:
        """Start and wait until ``/health`` says ok."""
        cmd = [sys.executable, "-m", "crossrank.adapters.cli", "serve", *self.args]
        cmd += ["--port", str(self.port), "--log-level", "warning"]
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_healthy(self.proc, self.url + "/health", timeout, self.log.read_text)
        except (RuntimeError, TimeoutError):
            self.stop()
            raise
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int | None:
        """Signal the process and wait for it; its exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def metric(self, name: str, **labels: str) -> float:
        """The sum of a metric's samples (``name`` as exposed) matching ``labels``."""
        text = httpx.get(self.url + "/metrics", timeout=5).text
        return sum(
            s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
        )
