"""``wenxin emulate``: run the local ERNIE API emulator under uvicorn.

Theory of operation
===================

:func:`register` declares the flags (one per :class:`~wenxin_stream.emulator.EmulatorConfig`
field, see ``docs/EMULATOR.md``); :func:`config_from_args` turns parsed flags into a config,
reading the credentials and scenario files and parsing every ``--fault-rate`` up front so that
mistakes stop the command before it listens. :func:`run` refuses a non-loopback host unless
``--allow-remote``, binds the socket itself (so ``--port 0`` works and the printed URL is
exact), logs one line to stderr, and serves until SIGINT/SIGTERM; uvicorn shuts down
gracefully (open streams get ``--graceful-timeout`` seconds) and the command exits 0 without a
traceback. uvicorn is imported only here, inside :func:`run`.
"""

from __future__ import annotations

import argparse
import ipaddress
import sys
from typing import Any

from .._models import CATALOGUE
from ..emulator import (
    ConfigError,
    EmulatorConfig,
    FaultSpecError,
    load_credentials,
    load_scenarios,
    parse_fault_rate,
)
from ..emulator._config import (
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_PORT,
    DEFAULT_THINKING_INTERVAL,
    DEFAULT_TOKEN_TTL,
    load_roster,
)
from . import CommandError

_LOOPBACK_NAMES = frozenset({"localhost"})


def register(subparsers: Any) -> None:
    """Add the ``emulate`` subcommand to the ``wenxin`` parser."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "emulate",
        help="run a local ERNIE API emulator (v1, v2, OAuth, IAM, OpenAI-compatible) for "
        "offline use and tests",
        description="Run a faithful local emulator of the ERNIE API. See docs/EMULATOR.md.",
    )
    net = parser.add_argument_group("network")
    net.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    _number(net, "--port", DEFAULT_PORT, "port; 0 = any free port")
    _switch(net, "--allow-remote", "allow a non-loopback --host (no TLS!)")
    _number(net, "--max-body-bytes", DEFAULT_MAX_BODY_BYTES, "request body limit")
    _number(net, "--graceful-timeout", 2, "seconds open streams get at shutdown")

    pace = parser.add_argument_group("answers and pacing")
    _number(pace, "--seed", 0, "seed of answers and fault rates (0)")
    _number(pace, "--ttft", 0.5, "seconds to the first chunk (0.5)")
    _number(pace, "--interval", 0.3, "seconds between v1 chunks")
    _number(pace, "--v2-interval", 0.05, "seconds between v2 chunks")
    pace.add_argument("--scenario", metavar="FILE", help="JSON file of scripted answers")
    _repeatable(pace, "--endpoint", "NAME=MODEL", "extra v1 endpoint served as MODEL")

    auth = parser.add_argument_group("authentication")
    auth.add_argument(
        "--credentials", metavar="FILE", help="JSON file of accepted credentials (strict mode)"
    )
    _switch(auth, "--no-auth", "accept requests that carry no credentials")
    _number(auth, "--token-ttl", DEFAULT_TOKEN_TTL, "access-token lifetime in seconds")
    _number(auth, "--oauth-error-status", 401, "status of OAuth errors")

    limits = parser.add_argument_group("quotas and faults")
    _number(limits, "--rpm", 0, "requests/minute per credential (off)")
    _number(limits, "--tpm", 0, "tokens/minute per credential (off)")
    _repeatable(
        limits, "--fault-rate", "SPEC=RATE", "inject fault SPEC into a fraction RATE of requests"
    )

    proto = parser.add_argument_group("protocol details")
    _switch(proto, "--sse-charset", "send text/event-stream;charset=utf-8")
    _number(proto, "--messages-error-code", 336006, "v1 code of message errors")
    _switch(proto, "--v2-alternation", "enforce v1's message order on v2 too")
    _choice(proto, "--v2-finish-reason", ("stop", "normal"), "v2 finish_reason")
    _repeatable(
        proto, "--v2-model", "MODEL", "serve only these v2 models", "default: the catalogue's"
    )

    models = parser.add_argument_group("models (today's ERNIE; see docs/EMULATOR.md)")
    models.add_argument(
        "--roster", metavar="FILE", help="TOML laid over the model catalogue ([[model]] tables)"
    )
    _choice(
        models,
        "--unknown-models",
        ("reject", "accept"),
        "an id outside the roster: 401 invalid_model (reject) or served as plain text",
    )
    _choice(
        models,
        "--retired-models",
        ("offline", "invalid", "serve"),
        "a retired model: 403 model_offline, 401 invalid_model, or served",
    )
    _choice(
        models,
        "--unknown-capability",
        ("yes", "no"),
        "a capability the catalogue does not know is assumed (yes) or not",
    )
    _choice(
        models,
        "--unsupported-params",
        ("reject", "ignore"),
        "a field the model cannot honour: 400 (reject) or ignored",
    )
    _number(
        models,
        "--thinking-interval",
        DEFAULT_THINKING_INTERVAL,
        f"seconds between reasoning chunks ({DEFAULT_THINKING_INTERVAL})",
    )
    _choice(
        models,
        "--reasoning-in-answer",
        ("absent", "empty", "null"),
        "reasoning_content in the answer chunks of a thinking model",
    )
    _switch(
        models, "--reasoning-tokens-detail", "add usage.completion_tokens_details.reasoning_tokens"
    )
    _switch(models, "--no-tool-call-index", "leave index out of tool-call deltas")
    _number(models, "--tool-call-pieces", 1, "cut tool-call arguments into N deltas")
    _choice(
        models,
        "--search-status-placement",
        ("choice", "delta"),
        "where the search-status chunk's delta_tag sits",
    )

    openai = parser.add_argument_group(
        "OpenAI-compatible mode (/v1/chat/completions, /v1/models: a self-hosted ERNIE 4.5)"
    )
    _choice(
        openai,
        "--openai-compatible",
        ("vllm", "fastdeploy"),
        "the server /v1/chat/completions behaves like: field names, errors (vllm)",
    )
    openai.add_argument(
        "--openai-api-key",
        metavar="KEY",
        help="require this bearer key on the /v1 routes, as vLLM's --api-key (none)",
    )
    openai.add_argument(
        "--served-model-name",
        metavar="MODEL",
        help="the model id served (default: baidu/ERNIE-4.5-21B-A3B-PT or -Paddle)",
    )
    _number(
        openai,
        "--max-model-len",
        32768,
        "context length; longer requests are refused as the server would (32768)",
    )

    logs = parser.add_argument_group("logging")
    _switch(logs, "--access-log", "log every request (info level)")
    _switch(logs, "--debug", "log tracebacks of internal errors")
    parser.set_defaults(handler=run)


def _number(group: Any, flag: str, default: float, help: str) -> None:
    """A flag taking one number, of its default's type (``int`` or ``float``)."""
    group.add_argument(flag, type=type(default), default=default, help=help)


def _switch(group: Any, flag: str, help: str) -> None:
    """A flag that switches something on (off unless given)."""
    group.add_argument(flag, action="store_true", help=help)


def _choice(group: Any, flag: str, choices: tuple[str, ...], help: str) -> None:
    """A flag taking one of ``choices``; the first is the default."""
    group.add_argument(flag, choices=choices, default=choices[0], help=help)


def _repeatable(group: Any, flag: str, metavar: str, help: str, default: str = "") -> None:
    """A flag that may be given again and again: its values in order (``[]`` if never);
    ``default`` says what never giving it means."""
    said = f"; {default}" if default else ""
    group.add_argument(
        flag, action="append", default=[], metavar=metavar, help=f"{help} (repeatable{said})"
    )


def _endpoints(values: list[str]) -> dict[str, str]:
    result = {}
    for value in values:
        name, eq, model = value.partition("=")
        if not eq or not name or not model:
            raise CommandError(f"--endpoint {value!r} must look like NAME=MODEL", 2)
        result[name] = model
    return result


def config_from_args(args: argparse.Namespace) -> EmulatorConfig:
    """Build the emulator configuration from parsed ``wenxin emulate`` flags.

    Raises:
        CommandError: a file cannot be read or parsed, or a value is invalid (status 2).
    """
    try:
        rates = tuple(parse_fault_rate(text) for text in args.fault_rate)
        return EmulatorConfig(
            seed=args.seed,
            ttft=args.ttft,
            interval=args.interval,
            v2_interval=args.v2_interval,
            token_ttl=args.token_ttl,
            credentials=load_credentials(args.credentials) if args.credentials else None,
            no_auth=args.no_auth,
            rpm=args.rpm,
            tpm=args.tpm,
            scenarios=load_scenarios(args.scenario) if args.scenario else (),
            fault_rates=rates,
            max_body_bytes=args.max_body_bytes,
            sse_charset=args.sse_charset,
            oauth_error_status=args.oauth_error_status,
            v1_messages_error_code=args.messages_error_code,
            v2_alternation=args.v2_alternation,
            v2_finish_reason=args.v2_finish_reason,
            custom_endpoints=_endpoints(args.endpoint),
            v2_models=frozenset(args.v2_model) if args.v2_model else None,
            roster=load_roster(args.roster) if args.roster else CATALOGUE,
            unknown_models=args.unknown_models,
            retired_models=args.retired_models,
            unknown_capability=args.unknown_capability == "yes",
            unsupported_params=args.unsupported_params,
            thinking_interval=args.thinking_interval,
            reasoning_in_answer=args.reasoning_in_answer,
            reasoning_tokens_detail=args.reasoning_tokens_detail,
            tool_call_index=not args.no_tool_call_index,
            tool_call_pieces=args.tool_call_pieces,
            search_status_placement=args.search_status_placement,
            openai_flavour=args.openai_compatible,
            openai_api_key=args.openai_api_key,
            openai_model=args.served_model_name,
            openai_max_model_len=args.max_model_len,
            debug=args.debug,
        )
    except (ConfigError, FaultSpecError) as exc:
        raise CommandError(str(exc), 2) from None


def is_loopback(host: str) -> bool:
    """Whether ``host`` names the loopback interface."""
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def run(args: argparse.Namespace) -> int:
    """Serve the emulator until interrupted; the exit status."""
    if not is_loopback(args.host) and not args.allow_remote:
        raise CommandError(
            f"refusing to listen on non-loopback host {args.host!r}; "
            "pass --allow-remote if you really mean it",
            2,
        )
    config = config_from_args(args)

    import uvicorn

    from ..emulator import create_app
    from ..emulator._server import base_url_of, bind_socket, install_log_filter, uvicorn_config

    install_log_filter()
    try:
        sock = bind_socket(args.host, args.port)
    except OSError as exc:
        raise CommandError(f"cannot listen on {args.host}:{args.port}: {exc.strerror}") from None
    server = uvicorn.Server(
        uvicorn_config(
            create_app(config),
            log_level="info" if args.access_log else "warning",
            access_log=args.access_log,
            graceful_timeout=args.graceful_timeout,
        )
    )
    print(
        f"ERNIE emulator listening on {base_url_of(sock)} ({config.mode_description})",
        file=sys.stderr,
        flush=True,
    )
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:
        pass  # uvicorn re-raises the SIGINT it handled; the shutdown was already graceful
    finally:
        sock.close()
    return 0
