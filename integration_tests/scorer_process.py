"""A real ``crossrank serve`` process on loopback, for the tests that need a scorer service."""

from __future__ import annotations

from collections.abc import Sequence

from crossrank.adapters.processes import CrossrankProcess


class ScorerProcess(CrossrankProcess):
    """``crossrank serve ARGS --log-level warning --port PORT`` as a subprocess; ``start()``
    waits until ``/health`` says ok, ``stop(sig)`` returns the exit status."""

    def __init__(self, args: Sequence[str], port: int | None = None) -> None:
        super().__init__("serve", [*args, "--log-level", "warning"], port=port)
