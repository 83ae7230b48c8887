"""What ``wenxin ask`` and ``wenxin chat`` share: flags, the client, one streamed answer.

Theory of operation
===================

:func:`add_client_arguments` declares the flags both commands take; :func:`build_client` turns
them into a :class:`~wenxin_stream.Client` (flags over qianfan's ``QIANFAN_*`` variables; no
credentials at all means the embedded offline emulator, which :func:`emulator_notice` says in
one line before any answer). :func:`stream_answer` runs one answer: every text piece is written
and flushed the moment it arrives, then one summary line goes to stderr (model, first token,
total time, tokens, how it ended). Failures are one line, ``wenxin: error: …`` (the error's own
message, which the SDK has already redacted), never a traceback; text already shown stays.

Exit statuses: 0 answered; 1 API, network or stream failure; 2 usage or invalid request
(argparse errors, :class:`~wenxin_stream.InvalidRequestError`, missing credentials with
``--no-emulator``, a malformed setting); 130 interrupted (Ctrl-C). Ctrl-C raises
``KeyboardInterrupt`` inside the stream's ``with`` block, so the HTTP response is closed as the
block is left.

The client logs a warning when it falls back to the emulator; :func:`cli_output` routes the
package's log records to stderr as ``wenxin: warning: …`` for the duration of a command and
drops that one warning, since the notice already said it. It also makes sure a terminal whose
encoding lacks Chinese characters shows ``?`` rather than ending the command with a traceback.
"""

from __future__ import annotations

import argparse
import difflib
import json
import logging
import os
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import fields, is_dataclass
from datetime import date
from typing import Any

from .._client import ChatStream, Client
from .._client_base import EMULATOR_NOTICE
from .._events import ChatResult, EndReason, ReasoningDelta, TextDelta
from .._exceptions import (
    APIError,
    ConfigurationError,
    InvalidRequestError,
    MissingCredentialsError,
    WenxinError,
)
from .._models import CATALOGUE, lookup_model
from .._validation import Problem, check_v1_params
from . import CommandError
from ._render import AnswerView, choose_view

EXIT_OK = 0
"""The answer arrived (completed, or cut by a length limit or the content filter)."""
EXIT_FAILED = 1
"""An API, network or stream error."""
EXIT_USAGE = 2
"""Bad flags, an invalid request or missing credentials: nothing was sent."""
EXIT_INTERRUPTED = 130
"""Ctrl-C (128 + SIGINT)."""

_FINISHED = frozenset({EndReason.COMPLETED, EndReason.LENGTH, EndReason.CONTENT_FILTERED})
_USAGE_ERRORS = (InvalidRequestError, MissingCredentialsError, ConfigurationError)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


def add_client_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the flags every answering command takes (model, credentials, hosts, …)."""
    api = parser.add_argument_group("model and API")
    api.add_argument(
        "--model", help="model name (default: ERNIE-Lite-8K on v1, ernie-lite-8k on v2)"
    )
    api.add_argument(
        "--api", choices=("v1", "v2"), help="API generation (default: what the credentials allow)"
    )
    api.add_argument(
        "--emulator",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="--emulator: always answer from the embedded offline emulator; --no-emulator: "
        "fail without credentials instead of falling back to it",
    )

    creds = parser.add_argument_group(
        "credentials",
        "Better set in qianfan's environment variables (named below) than given as flags, which "
        "show up in ps and in shell history. With no credentials at all, answers come from the "
        "offline emulator. Values are never printed.",
    )
    for flag, var, metavar, what in (
        ("--api-key", "QIANFAN_AK", "KEY", "v1 app API Key (OAuth)"),
        ("--secret-key", "QIANFAN_SK", "KEY", "v1 app Secret Key (OAuth)"),
        ("--access-token", "QIANFAN_ACCESS_TOKEN", "TOKEN", "fixed v1 access token"),
        ("--bearer-token", "QIANFAN_BEARER_TOKEN", "KEY", "v2 API key bce-v3/ALTAK-…"),
        ("--access-key", "QIANFAN_ACCESS_KEY", "AK", "account IAM Access Key"),
        ("--secret-access-key", "QIANFAN_SECRET_KEY", "SK", "account IAM Secret Key"),
        ("--app-id", "QIANFAN_APP_ID", "ID", "v2 appid header"),
    ):
        creds.add_argument(flag, metavar=metavar, help=f"{what}; env {var}")

    hosts = parser.add_argument_group("hosts")
    hosts.add_argument("--base-url", metavar="URL", help="v1 and OAuth host (QIANFAN_BASE_URL)")
    hosts.add_argument(
        "--v2-base-url", metavar="URL", help="v2 host (QIANFAN_CONSOLE_API_BASE_URL)"
    )

    req = parser.add_argument_group("request and output")
    req.add_argument("--system", metavar="TEXT", help="persona / system text")
    req.add_argument(
        "--temperature", type=float, metavar="T", help="sampling temperature, in (0, 1]"
    )
    req.add_argument(
        "--timeout",
        type=_positive_float,
        metavar="SECONDS",
        help="limit for connecting, the first token and each silence between chunks "
        "(default: 10 s, 120 s, 60 s)",
    )
    req.add_argument(
        "--retries", type=_count, metavar="N", help="retries before any text arrived (2)"
    )
    req.add_argument(
        "--continue-on-error",
        action="store_true",
        help="when a stream breaks after some text, ask the model to go on (no repeated text)",
    )
    req.add_argument(
        "--json", action="store_true", help="print the final answer as JSON instead of text"
    )
    req.add_argument(
        "--thinking",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="--thinking / --no-thinking: switch deep thinking on or off (enable_thinking), "
        "for the models that can switch it (default: the model's own)",
    )
    req.add_argument(
        "--search",
        action="store_true",
        help="let the model search the web; its sources are listed after the answer",
    )

    out = parser.add_argument_group("display")
    out.add_argument(
        "--plain",
        action="store_true",
        help="raw text, as it arrives, even on a terminal (the default when piped)",
    )
    out.add_argument(
        "--hide-thinking",
        action="store_true",
        help="do not show a reasoning model's thinking (思考过程)",
    )


def answer_view(args: argparse.Namespace) -> AnswerView:
    """The view the display flags ask for (``_render.choose_view``)."""
    return choose_view(plain=args.plain, hide_thinking=args.hide_thinking)


def build_client(args: argparse.Namespace) -> Client:
    """The client the flags describe (raises a usage error as :class:`CommandError`)."""
    try:
        return Client(
            api_key=args.api_key,
            secret_key=args.secret_key,
            access_token=args.access_token,
            access_key=args.access_key,
            secret_access_key=args.secret_access_key,
            bearer_token=args.bearer_token,
            app_id=args.app_id,
            base_url=args.base_url,
            v2_base_url=args.v2_base_url,
            api=args.api,
            model=args.model,
            timeout=args.timeout,
            retry=args.retries,
            continue_on_error=args.continue_on_error,
            emulator=args.emulator,
        )
    except (WenxinError, ValueError) as exc:
        raise CommandError(one_line(str(exc)), EXIT_USAGE) from None


def emulator_notice(client: Client, args: argparse.Namespace) -> str | None:
    """The line that says answers are simulated (``None`` when they come from ERNIE)."""
    if not client.emulated:
        return None
    if args.emulator:
        return "(offline emulator, as asked by --emulator: answers are simulated)"
    text = (
        "(offline emulator: no ERNIE credentials configured — answers are simulated; "
        "set QIANFAN_BEARER_TOKEN or QIANFAN_AK/QIANFAN_SK for ERNIE)"
    )
    ignored = [flag for flag in ("base_url", "v2_base_url") if getattr(args, flag)]
    if ignored:
        names = " and ".join("--" + flag.replace("_", "-") for flag in ignored)
        text += f"\n(without credentials {names} {'is' if len(ignored) == 1 else 'are'} ignored)"
    return text


SEARCH = {"enable": True, "enable_citation": True, "enable_trace": True}
"""The ``web_search`` object ``--search`` sends: search, cite with ``^[n]^``, list sources."""

FLAGS = {
    "temperature": "--temperature",
    "enable_thinking": "--thinking/--no-thinking",
    "web_search": "--search",
    "model": "--model",
    "system": "--system",
}
"""The flag that sets each request field (error messages name the flag)."""


def request_params(args: argparse.Namespace, api: str, model: str) -> dict[str, Any]:
    """Request parameters from the flags (``None`` = not given, left out by the client).

    ``--temperature`` is checked with the SDK's own rule for ERNIE's range, (0, 1]
    (``_validation.check_v1_params``), on v1 and for every model of the catalogue on v2; the
    v2 request builder leaves ranges to the upstream (they are model-dependent), so a v2 id
    the catalogue does not know (DeepSeek, Qwen… on Qianfan) is only held to ERNIE's
    "greater than 0". The rest (``--thinking`` on a model that cannot switch it, ``--search``
    on one that cannot search, v1's unknown model names) the SDK checks when the request is
    built; :func:`print_error` names the flag.

    Raises:
        InvalidRequestError: a flag's value breaks ERNIE's rules (nothing was sent).
    """
    temperature = args.temperature
    if temperature is not None:
        if api == "v1" or lookup_model(model) is not None:
            problem = check_v1_params({"temperature": temperature})
        elif not temperature > 0:
            problem = Problem(
                "temperature", "temperature must be greater than 0", 336003, "invalid_argument"
            )
        else:
            problem = None
        if problem is not None:
            raise InvalidRequestError(problem)
    params: dict[str, Any] = {"temperature": temperature, "enable_thinking": args.thinking}
    if args.search:
        params["web_search"] = dict(SEARCH)
    return params


@contextmanager
def cli_output() -> Iterator[None]:
    """Set the output up for a command: the package's warnings as ``wenxin: warning: …`` lines
    (minus the emulator one), and stdout/stderr that cannot fail on Chinese text — a terminal
    whose encoding has no Chinese characters gets ``?`` instead of a crash."""
    for stream in (sys.stdout, sys.stderr):
        encoding = getattr(stream, "encoding", None) or "utf-8"
        try:
            "文心—·".encode(encoding)
        except (UnicodeEncodeError, LookupError):
            reconfigure = getattr(stream, "reconfigure", None)
            if reconfigure is not None:
                reconfigure(errors="replace")
    logger = logging.getLogger("wenxin_stream")
    handler = _StderrHandler(logging.WARNING)
    saved = logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.propagate = saved


class _StderrHandler(logging.Handler):
    """Writes records to the current ``sys.stderr`` (tests swap it) in the CLI's format."""

    def emit(self, record: logging.LogRecord) -> None:
        if record.msg == EMULATOR_NOTICE:
            return  # the command's own notice says it once
        try:
            text = one_line(record.getMessage())
            print(f"wenxin: {record.levelname.lower()}: {text}", file=sys.stderr, flush=True)
        except Exception:  # pragma: no cover - logging must never break the command
            self.handleError(record)


def one_line(text: str) -> str:
    """``text`` with its line breaks folded into spaces."""
    return " ".join(text.split()) if "\n" in text or "\r" in text else text


def exit_status(exc: BaseException) -> int:
    """The exit status an error gives the command."""
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    return EXIT_USAGE if isinstance(exc, _USAGE_ERRORS) else EXIT_FAILED


_UNKNOWN_MODEL_CODES = frozenset({"invalid_model", "model_not_found", 336005})


def model_hint(exc: APIError, model: str) -> str | None:
    """What the catalogue adds when ERNIE refuses ``model``: the retirement date of a model
    answered ``model_offline``; for one it does not know, the catalogue's closest ids."""
    spec = lookup_model(model)
    if exc.code == "model_offline" and spec is not None and spec.retired_on is not None:
        return f"{spec.id} was retired on {spec.retired_on.isoformat()}; choose a current model"
    if exc.code in _UNKNOWN_MODEL_CODES and spec is None:
        names = difflib.get_close_matches(model.lower(), CATALOGUE.v2_ids(date.today()), n=3)
        if names:
            return "did you mean " + " or ".join(names) + "?"
    return None


def error_text(exc: BaseException, model: str | None = None) -> str:
    """What the ``wenxin: error:`` line says about ``exc``: its message, plus the flag to fix
    for an invalid request, or (given the ``model`` asked for) what the catalogue knows about
    a model ERNIE refused."""
    text = one_line(str(exc)) or type(exc).__name__
    if isinstance(exc, InvalidRequestError) and exc.field in FLAGS:
        text += f" (flag {FLAGS[exc.field]})"
    elif isinstance(exc, APIError) and model:
        hint = model_hint(exc, model)
        if hint:
            text += f" — {hint}"
    return text


def print_error(exc: BaseException, model: str | None = None) -> None:
    """Print ``exc`` as the one ``wenxin: error: …`` line (see :func:`error_text`)."""
    print(f"wenxin: error: {error_text(exc, model)}", file=sys.stderr, flush=True)


def print_note(text: str) -> None:
    """Print an informational line on stderr."""
    print(text, file=sys.stderr, flush=True)


def _milliseconds(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def _seconds(seconds: float) -> str:
    return f"{seconds:.2f} s" if seconds < 1 else f"{seconds:.1f} s"


def summary_line(model: str, stream: ChatStream, result: ChatResult) -> str:
    """``— model · first token 412 ms · total 3.1 s · 23+113=136 tokens · completed``."""
    parts = [f"— {model}"]
    ttft = stream.time_to_first_token
    parts.append("no text" if ttft is None else f"first token {_milliseconds(ttft)}")
    parts.append(f"total {_seconds(stream.elapsed)}")
    usage = result.usage
    if usage is not None:
        parts.append(f"{usage.prompt_tokens}+{usage.completion_tokens}={usage.total_tokens} tokens")
    reason = stream.end_reason
    parts.append("running" if reason is None else reason.value.replace("_", " "))
    if result.need_clear_history:
        parts.append("safety: need_clear_history")
    elif result.flag:
        parts.append(f"safety flag {result.flag}")
    return " · ".join(parts)


def result_json(result: ChatResult, end_reason: EndReason | None) -> str:
    """The answer as a JSON document: every :class:`ChatResult` field plus ``end_reason``."""
    document = _plain(result)
    document["end_reason"] = None if end_reason is None else end_reason.value
    return json.dumps(document, ensure_ascii=False, indent=2)


def _plain(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, tuple | list):
        return [_plain(item) for item in value]
    return value


def _write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def stream_answer(
    open_stream: Callable[[], ChatStream], *, model: str, json_mode: bool, view: AnswerView
) -> int:
    """Stream one answer into ``view``, then its summary to stderr; the exit status.

    ``open_stream`` starts the request (an :class:`~wenxin_stream.InvalidRequestError` from it
    means nothing was sent: only the error line is printed). The thinking of a reasoning model
    goes to ``view.reasoning``, the answer to ``view.text``; with ``json_mode`` neither is
    shown and the final answer is printed as JSON. Ctrl-C stops the answer and returns
    :data:`EXIT_INTERRUPTED`; the text shown so far stays. A closed stdout (``| head``) ends
    the answer quietly with :data:`EXIT_FAILED`.
    """
    try:
        return _stream_answer(open_stream, model=model, json_mode=json_mode, view=view)
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_FAILED


def _show(stream: ChatStream, view: AnswerView) -> None:
    try:
        for event in stream:
            kind = type(event)
            if kind is TextDelta:
                view.text(event.text)  # type: ignore[union-attr]
            elif kind is ReasoningDelta:
                view.reasoning(event.text)  # type: ignore[union-attr]
    finally:
        view.close()


def _stream_answer(
    open_stream: Callable[[], ChatStream], *, model: str, json_mode: bool, view: AnswerView
) -> int:
    stream: ChatStream | None = None
    failure: WenxinError | KeyboardInterrupt | None = None
    try:
        stream = open_stream()
        with stream:
            if json_mode:
                stream.until_done()
            else:
                _show(stream, view)
    except (WenxinError, KeyboardInterrupt) as exc:
        failure = exc
    if stream is not None:
        stream.close()  # idempotent; covers a Ctrl-C between opening and entering the block
    if stream is None:
        assert failure is not None
        if not isinstance(failure, KeyboardInterrupt):
            print_error(failure, model)
        return exit_status(failure)
    result = stream.get_final_message()  # the stream has ended: nothing is left to read
    if json_mode:
        _write(result_json(result, stream.end_reason) + "\n")
    elif result.search_results:
        view.sources(result.search_results)
    print_note(summary_line(result.model or model, stream, result))
    if failure is not None:
        if not isinstance(failure, KeyboardInterrupt):
            print_error(failure, model)
        return exit_status(failure)
    return EXIT_OK if stream.end_reason in _FINISHED else EXIT_FAILED


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # pragma: no cover - stdout without a file descriptor
        pass
