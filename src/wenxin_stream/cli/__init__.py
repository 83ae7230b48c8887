"""The ``wenxin`` command line: one argparse parser, one module per subcommand.

Theory of operation
===================

:func:`subcommands` finds the subcommand modules: every public module of this package
(``wenxin_stream.cli.<name>``; names starting with ``_`` are helpers). Each exposes
``register(subparsers) -> None``, which adds its parser and sets the ``handler`` default to a
function ``(args: argparse.Namespace) -> int`` returning the exit status. Adding a subcommand
means writing ``cli/<name>.py``; nothing else changes. :data:`ORDER` fixes the ``--help``
order of the main commands; others follow alphabetically.

Modules must keep their imports light at module level (the emulator's uvicorn, for example,
is imported only when ``wenxin emulate`` actually runs), since every module is imported to
build ``--help``. A :class:`CommandError` raised by a handler is printed as
``wenxin: error: …`` with its exit status; argparse's own usage errors exit with 2.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Callable, Sequence

from .._version import __version__

ORDER: tuple[str, ...] = ("ask", "chat", "serve", "keys", "db", "bench", "emulate")
"""The ``--help`` order of the main subcommands."""


def subcommands() -> list[str]:
    """The names of the subcommand modules under ``wenxin_stream.cli``, in ``--help`` order."""
    found = {m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")}
    return sorted(
        found, key=lambda name: (ORDER.index(name) if name in ORDER else len(ORDER), name)
    )


Handler = Callable[[argparse.Namespace], int]
"""A subcommand's entry point: parsed arguments in, exit status out."""


class CommandError(Exception):
    """A user-facing failure of a subcommand: printed without a traceback, exit ``status``."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


def build_parser() -> argparse.ArgumentParser:
    """The ``wenxin`` parser with every registered subcommand."""
    parser = argparse.ArgumentParser(
        prog="wenxin",
        description="Stream answers from Baidu's ERNIE Bot (文心一言), and emulate it offline.",
    )
    parser.add_argument("--version", action="version", version=f"wenxin-stream {__version__}")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND", dest="command")
    for name in subcommands():
        module = importlib.import_module(f"{__name__}.{name}")
        module.register(subparsers)
    return parser


def _subparser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    """The parser of the subcommand ``name`` (``parser`` itself when there is none)."""
    for action in parser._actions:  # argparse keeps its subparsers only here
        if isinstance(action, argparse._SubParsersAction):
            found = action.choices.get(name)
            if isinstance(found, argparse.ArgumentParser):
                return found
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``wenxin`` command line with ``argv`` (default: ``sys.argv[1:]``)."""
    parser = build_parser()
    args, extra = parser.parse_known_args(list(sys.argv[1:] if argv is None else argv))
    if extra:
        # A misspelt flag of a subcommand (`wenxin ask --modle x`): that command's usage, not
        # the top-level one (argparse reports unknown arguments from the main parser).
        _subparser(parser, getattr(args, "command", None) or "").error(
            "unrecognized arguments: " + " ".join(extra)
        )
    # whether this process's own command line is the one parsed (a command may re-execute it)
    args.own_command_line = argv is None or list(argv) == sys.argv[1:]
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return handler(args)
    except CommandError as exc:
        print(f"wenxin: error: {exc}", file=sys.stderr)
        return exc.status
