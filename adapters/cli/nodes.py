"""``crossrank nodes``: fetch engine zips, or run a node until Ctrl-C."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence

from crossrank.adapters.nodes import start_all
from crossrank.adapters.nodes.artifacts import (
    DEFAULT_MODULES,
    EngineSpec,
    fetch,
    fetch_module,
)
from crossrank.adapters.processes import ProcessStartError

__all__ = ["main"]


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
    except ProcessStartError as err:  # EngineStartError, or no free port
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
