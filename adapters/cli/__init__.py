"""The ``crossrank`` command: one entry point, one module per subcommand.

Each subcommand module exposes ``main(argv) -> int`` and is imported only when used, so
``crossrank nodes`` needs no torch and ``crossrank serve`` no engine client.

Options that set a field of a settings model are :class:`SettingOption` objects: their default,
type and choices are the field's, written once, in the model.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import types
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Union, get_args, get_origin

from crossrank.reranker.errors import CrossrankError

if TYPE_CHECKING:
    from pydantic import BaseModel

#: subcommand → (module with ``main(argv)``, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "eval": ("crossrank.adapters.cli.evaluate", "BM25 vs reranked vs fused on a BEIR collection"),
    "calibrate": (
        "crossrank.adapters.cli.calibrate",
        "fit a scorer's map from raw score to P(relevant) on judged pairs",
    ),
    "label": (
        "crossrank.adapters.cli.label",
        "pseudo-qrels for a query list or a search log, from a calibrated scorer",
    ),
    "train": ("crossrank.adapters.cli.train", "fine-tune a cross-encoder for your index"),
    "demo": ("crossrank.adapters.cli.demo", "real engine, sample corpus, BM25 vs reranked"),
    "nodes": ("crossrank.adapters.cli.nodes", "fetch or run Elasticsearch/OpenSearch nodes"),
    "serve": ("crossrank.adapters.cli.serve", "run the batching scorer service"),
    "proxy": ("crossrank.adapters.cli.proxy", "run the reranking search proxy"),
}


@dataclass(frozen=True)
class SettingOption:
    """A command-line option that sets one field of a settings model.

    The option's own default is None, "not given", so the model's default applies (and
    ``--help`` shows it). Its type and choices come from the field's annotation: a
    ``Literal`` gives the choices, ``X | None`` parses as ``X``, and a ``bool`` field becomes
    a switch to the other value (``flag`` names it, e.g. ``--no-verify``). ``help``
    defaults to the field's description; ``parse`` replaces the annotation's type (e.g. a
    comma-separated list); ``repeat`` collects the values of a repeated option in a tuple.
    """

    field: str
    help: str | None = None
    flag: str | None = None
    parse: Callable[[str], Any] | None = None
    repeat: bool = False

    @property
    def option(self) -> str:
        """The option string, ``--field-name`` unless ``flag`` says otherwise."""
        return self.flag or "--" + self.field.replace("_", "-")

    def add_to(self, parser: Any, model: type[BaseModel]) -> None:
        """Add the option to ``parser`` (or an argument group); ``dest`` is the field name."""
        info = model.model_fields[self.field]
        text = (self.help or info.description or "").replace("%", "%%")
        kwargs: dict[str, Any] = {"dest": self.field, "default": None}
        if info.annotation is bool:
            kwargs.update(action="store_const", const=not info.default, help=text)
        else:
            kind, choices = _kind(info.annotation)
            if info.is_required():
                kwargs["required"] = True
            elif info.default is not None and info.default != ():
                text = f"{text} (default: {_shown(info.default)})".lstrip()
            metavar = None if choices else self.option.lstrip("-").replace("-", "_").upper()
            kwargs.update(type=self.parse or kind, choices=choices, metavar=metavar)
            kwargs["help"] = text or None
            if self.repeat:
                kwargs["action"] = "append"
        parser.add_argument(self.option, **kwargs)


def _shown(default: Any) -> str:
    return ",".join(map(str, default)) if isinstance(default, tuple) else str(default)


def _kind(annotation: Any) -> tuple[Callable[[str], Any], tuple[Any, ...] | None]:
    """The argparse type and choices of a field's annotation."""
    if get_origin(annotation) in (Union, types.UnionType):
        [annotation] = [a for a in get_args(annotation) if a is not type(None)]
    if get_origin(annotation) is Literal:
        choices = get_args(annotation)
        return type(choices[0]), choices
    if get_origin(annotation) is tuple:  # tuple[str, ...]: one value each time (``repeat``)
        return get_args(annotation)[0], None
    if annotation in (int, float, str):
        kind: Callable[[str], Any] = annotation
        return kind, None
    raise TypeError(f"no command-line type for {annotation!r}: give the option a parse")


def comma_list(text: str) -> tuple[str, ...]:
    """A comma-separated option value as a tuple (blank items dropped)."""
    return tuple(item.strip() for item in text.split(",") if item.strip())


def ensemble_option(note: str = "") -> SettingOption:
    """``--member NAME=MODEL[,key=value...]`` (repeatable): ``RerankConfig.ensemble``."""
    from crossrank.reranker.config import EnsembleMember

    return SettingOption(
        "ensemble",
        "an ensemble member NAME=MODEL[,kind=bi-encoder][,weight=W][,scorer_url=URL]"
        f" (repeat{'; ' + note if note else ''})",
        flag="--member",
        parse=EnsembleMember.parse,
        repeat=True,
    )


def add_setting_options(
    parser: Any, model: type[BaseModel], options: Iterable[SettingOption]
) -> None:
    """Add ``options`` (fields of ``model``) to ``parser`` or an argument group."""
    for option in options:
        option.add_to(parser, model)


def given_settings(args: argparse.Namespace, options: Iterable[SettingOption]) -> dict[str, Any]:
    """The fields set on the command line, by name (repeated options as tuples); an option
    not given is left out, so the settings model's default applies."""
    given: dict[str, Any] = {}
    for option in options:
        value = getattr(args, option.field)
        if value is not None:
            given[option.field] = tuple(value) if option.repeat else value
    return given


def command_parser(name: str) -> argparse.ArgumentParser:
    """The argument parser of subcommand ``name`` (its module's ``parser()``)."""
    module = importlib.import_module(COMMANDS[name][0])
    build: Callable[[], argparse.ArgumentParser] = module.parser
    return build()


def _usage() -> str:
    lines = ["usage: crossrank COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name:10} {help_}" for name, (_, help_) in COMMANDS.items()]
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
    try:
        result: int = module.main(rest)
    except CrossrankError as exc:  # what went wrong, in one line: never a traceback
        print(f"crossrank {name}: {exc}", file=sys.stderr)
        return 1
    return result


if __name__ == "__main__":
    sys.exit(main())
