"""``wenxin chat``: an interactive multi-turn session, answers streamed as they arrive.

Theory of operation
===================

A plain ``input()`` loop (with readline's line editing when stdin is a terminal) over a
:class:`~wenxin_stream._conversation.Conversation`, which keeps the history valid for ERNIE v1
however an answer ends (kept, kept and marked as interrupted, dropped, or cleared for safety).
Each answer goes through ``_common.stream_answer`` like ``wenxin ask``'s: Markdown rendered on
a terminal (raw when piped or with ``--plain``), the thinking dimmed before it, one summary
line on stderr, errors as one ``wenxin: error: …`` line — and the session
goes on.

Ctrl-C during an answer raises ``KeyboardInterrupt`` inside the stream's ``with`` block: the
HTTP response is closed, the summary says ``cancelled`` and the prompt comes back. Ctrl-C or
Ctrl-D (end of input) at the prompt, or ``/exit``, ends the session with status 0. Lines that
start with ``/`` are commands (``/help`` lists them); ``//`` sends a line starting with ``/``.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from typing import Any

from .._conversation import TurnOutcome
from .._conversation_sync import Conversation
from .._exceptions import InvalidRequestError
from ._common import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    add_client_arguments,
    answer_view,
    build_client,
    cli_output,
    emulator_notice,
    exit_status,
    print_error,
    print_note,
    request_params,
    stream_answer,
)

PROMPT = "你> "
"""The input prompt."""

HELP = """\
/reset          clear the history
/history        show the history
/model [NAME]   show or switch the model
/system [TEXT]  set the system (persona) text; without TEXT, remove it
/exit           leave (Ctrl-D or Ctrl-C at the prompt also leave)
/help           this list
Ctrl-C during an answer stops that answer; //text sends a line starting with "/"."""

_LABELS = {"user": "你", "assistant": "文心"}
_PREVIEW = 72


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError(text)
    return value


def register(subparsers: Any) -> None:
    """Add the ``chat`` subcommand to the ``wenxin`` parser."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "chat",
        help="talk with ERNIE: an interactive multi-turn session",
        description="An interactive multi-turn session with ERNIE (文心一言); answers stream as "
        "they arrive. Type /help in the session for its commands. Credentials as for "
        "'wenxin ask'; without any, an offline emulator answers, and the session says so.",
    )
    parser.add_argument(
        "--max-turns",
        type=_count,
        metavar="N",
        help="keep only the newest N question/answer pairs in the history (default: all)",
    )
    add_client_arguments(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Run the session until the user leaves; the exit status."""
    with cli_output():
        try:
            return _session(args)
        except KeyboardInterrupt:  # while starting up
            return EXIT_INTERRUPTED


def _session(args: argparse.Namespace) -> int:
    with build_client(args) as client:
        notice = emulator_notice(client, args)
        if notice:
            print_note(notice)
        try:
            params = request_params(args, client.api, args.model or client.model)
        except InvalidRequestError as exc:
            print_error(exc)
            return exit_status(exc)
        conv = Conversation(
            client, system=args.system, model=args.model, max_turns=args.max_turns, **params
        )
        print_note(
            f"wenxin chat · {conv.model or client.model} ({client.api}) · /help for commands · "
            "Ctrl-D to leave"
        )
        typing = sys.stdin.isatty()
        if typing:
            with contextlib.suppress(ImportError):  # not on every platform
                import readline  # noqa: F401 - importing it gives input() line editing
        # Piped: echo each question as a terminal would have, unless stdout is JSON documents.
        prompt = "" if args.json and not typing else PROMPT
        echo = not typing and not args.json
        while True:
            try:
                line = input(prompt)
            except (EOFError, KeyboardInterrupt):
                if prompt:
                    print(flush=True)  # end the prompt's line
                return EXIT_OK
            if echo:
                print(line, flush=True)
            text = line.strip()
            if not text:
                continue
            if text.startswith("/") and not text.startswith("//"):
                if not command(conv, text):
                    return EXIT_OK
                continue
            try:
                _answer(conv, text[1:] if text.startswith("//") else text, args)
            except KeyboardInterrupt:  # after the answer had ended: nothing to stop
                print(flush=True)


def _answer(conv: Conversation, question: str, args: argparse.Namespace) -> None:
    before = conv.last_turn
    stream_answer(
        lambda: conv.stream(question),
        model=conv.model or conv.client.model,
        json_mode=args.json,
        view=answer_view(args),
    )
    turn = conv.last_turn
    if turn is None or turn is before:
        return  # nothing was sent (an invalid request)
    if turn.outcome is TurnOutcome.CLEARED:
        print_note(
            "(ERNIE's content safety flagged this conversation and asked to clear its history: "
            "the history is now empty)"
        )
    elif turn.outcome is TurnOutcome.PARTIAL:
        print_note("(the interrupted answer stays in the history, marked as unfinished)")


def command(conv: Conversation, line: str) -> bool:
    """Run one ``/command`` line; ``False`` means leave the session."""
    name, _, rest = line.partition(" ")
    rest = rest.strip()
    if name in ("/exit", "/quit"):
        return False
    if name == "/help":
        print(HELP, flush=True)
    elif name == "/reset":
        conv.reset()
        print_note("(history cleared)")
    elif name == "/history":
        print(history_text(conv), flush=True)
    elif name == "/model":
        if rest:
            conv.model = rest
        print_note(f"(model: {conv.model or conv.client.model})")
    elif name == "/system":
        conv.system = rest or None
        print_note(f"(system text: {rest})" if conv.system else "(no system text)")
    else:
        print_note(f"unknown command {name}: /help lists the commands")
    return True


def history_text(conv: Conversation) -> str:
    """The history as numbered one-line previews (and the system text, if any)."""
    lines = []
    if conv.system:
        lines.append(f"   system: {_preview(conv.system)}")
    for number, message in enumerate(conv.messages, 1):
        label = _LABELS.get(message["role"], message["role"])
        lines.append(f"{number:>2} {label}: {_preview(message['content'])}")
    if not conv.messages:
        lines.append("(empty history)")
    return "\n".join(lines)


def _preview(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= _PREVIEW else flat[: _PREVIEW - 1] + "…"
