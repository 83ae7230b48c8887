"""``wenxin ask "问题"``: one question, the answer streamed to the terminal as it arrives.

Theory of operation
===================

The question comes from the arguments, or from stdin when the argument is ``-`` or missing and
stdin is not a terminal. The client is built from the flags and qianfan's environment
(``_common.build_client``); without credentials it is the embedded offline emulator and a line
on stderr says so before the answer. ``_common.stream_answer`` then shows the answer as it arrives —
Markdown rendered on a terminal, raw text when piped or with ``--plain`` (``_render``), a
reasoning model's thinking dimmed before it, web-search sources after it — and prints the
summary line on stderr; with ``--json`` the final :class:`~wenxin_stream.ChatResult` is
printed as JSON instead. Exit statuses are
those of ``_common``: 0, 1 (API/network), 2 (usage, invalid request), 130 (Ctrl-C).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .._conversation import ConversationCore
from .._exceptions import InvalidRequestError
from . import CommandError
from ._common import (
    EXIT_INTERRUPTED,
    EXIT_USAGE,
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


def register(subparsers: Any) -> None:
    """Add the ``ask`` subcommand to the ``wenxin`` parser."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "ask",
        help="ask ERNIE one question and stream the answer",
        description="Ask ERNIE (文心一言) one question and stream the answer as it arrives. "
        "Credentials come from qianfan's environment variables (QIANFAN_BEARER_TOKEN for v2, "
        "QIANFAN_AK/QIANFAN_SK for v1, …); without any, an offline emulator answers, and the "
        "command says so.",
    )
    parser.add_argument(
        "question",
        nargs="*",
        help="the question (words are joined by spaces); '-' or nothing reads it from stdin",
    )
    add_client_arguments(parser)
    parser.set_defaults(handler=run)


def read_question(words: list[str]) -> str:
    """The question: the words joined, or stdin for ``-`` / no words on a non-terminal stdin.

    Raises:
        CommandError: no question was given, or it is blank (status 2).
    """
    if words and words != ["-"]:
        text = " ".join(words)
    elif not words and sys.stdin.isatty():
        raise CommandError("no question: give it as an argument or pipe it on stdin", EXIT_USAGE)
    else:
        text = sys.stdin.read()
    text = text.strip()
    if not text:
        raise CommandError("the question is empty", EXIT_USAGE)
    return text


def run(args: argparse.Namespace) -> int:
    """Ask the question; the exit status."""
    with cli_output():
        try:
            return _ask(args)
        except KeyboardInterrupt:
            return EXIT_INTERRUPTED


def _ask(args: argparse.Namespace) -> int:
    question = read_question(args.question)
    with build_client(args) as client:
        notice = emulator_notice(client, args)
        if notice:
            print_note(notice)
        model = args.model or client.model
        try:
            params = request_params(args, client.api, model)
        except InvalidRequestError as exc:
            print_error(exc)
            return exit_status(exc)
        messages, extra = ConversationCore(system=args.system).request(question, client.api)
        return stream_answer(
            lambda: client.chat.stream(messages=messages, model=args.model, **params, **extra),
            model=model,
            json_mode=args.json,
            view=answer_view(args),
        )
