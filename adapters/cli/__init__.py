"""The ``crossrank`` command: one entry point, one module per subcommand.

Each subcommand module exposes ``main(argv) -> int`` and is imported only when used, so
``crossrank nodes`` needs no torch and ``crossrank serve`` no engine client.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

#: subcommand → (module with ``main(argv)``, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "eval": ("crossrank.adapters.cli.evaluate", "BM25 vs reranked vs fused on a BEIR collection"),
    "train": ("crossrank.adapters.cli.train", "fine-tune a cross-encoder for your index"),
    "demo": ("crossrank.adapters.cli.demo", "real engine, sample corpus, BM25 vs reranked"),
    "nodes": ("crossrank.adapters.cli.nodes", "fetch or run Elasticsearch/OpenSearch nodes"),
    "serve": ("crossrank.adapters.cli.serve", "run the batching scorer service"),
    "proxy": ("crossrank.adapters.cli.proxy", "run the reranking search proxy"),
}


def command_parser(name: str) -> argparse.ArgumentParser:
    """The argument parser of subcommand ``name`` (its module's ``parser()``)."""
    module = importlib.import_module(COMMANDS[name][0])
    build: Callable[[], argparse.ArgumentParser] = module.parser
    return build()


def _usage() -> str:
    lines = ["usage: crossrank COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name:8} {help_}" for name, (_, help_) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch ``crossrank COMMAND ...`` to the command's module."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(_usage())
        return 0 if args else 2
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(f"crossrank: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    result: int = module.main(rest)
    return result


if __name__ == "__main__":
    sys.exit(main())
