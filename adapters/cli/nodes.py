"""``crossrank nodes``: fetch engine zips, or run nodes (or clusters: ``--nodes 3``) until
Ctrl-C."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence

from crossrank.adapters.nodes import EngineCluster, start_all
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
    p_run.add_argument(
        "--nodes",
        type=int,
        default=1,
        help="nodes per engine: above 1, a real cluster of that many nodes (default 1)",
    )
    args = parser.parse_args(argv)
    if args.command == "run" and args.nodes < 1:
        parser.error(f"--nodes must be at least 1, not {args.nodes}")
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
    if args.nodes > 1:
        return _run_clusters(specs, args, stop)
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


def _run_clusters(specs: list[EngineSpec], args: argparse.Namespace, stop: threading.Event) -> int:
    """One cluster of ``--nodes`` nodes per spec, one after the other; a line per cluster
    with its node URLs (comma-separated) until Ctrl-C or a node's exit."""
    clusters: list[EngineCluster] = []
    try:
        for spec in specs:
            clusters.append(EngineCluster(spec, nodes=args.nodes, heap=args.heap).start())
            print(f"{spec} {','.join(clusters[-1].urls)}", flush=True)
        while not stop.wait(1.0):
            for cluster in clusters:
                for node in cluster.nodes:
                    if not node.running:
                        print(f"{node.spec} exited:\n{node.log_tail()}", file=sys.stderr)
                        return 1
        return 0
    finally:
        for cluster in clusters:
            cluster.stop()
