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
    net.add_argument("--port", type=int, default=DEFAULT_PORT, help="port; 0 = any free port")
    net.add_argument(
        "--allow-remote", action="store_true", help="allow a non-loopback --host (no TLS!)"
    )
    net.add_argument(
        "--max-body-bytes", type=int, default=DEFAULT_MAX_BODY_BYTES, help="request body limit"
    )
    net.add_argument(
        "--graceful-timeout", type=int, default=2, help="seconds open streams get at shutdown"
    )

    pace = parser.add_argument_group("answers and pacing")
    pace.add_argument("--seed", type=int, default=0, help="seed of answers and fault rates (0)")
    pace.add_argument("--ttft", type=float, default=0.5, help="seconds to the first chunk (0.5)")
    pace.add_argument("--interval", type=float, default=0.3, help="seconds between v1 chunks")
    pace.add_argument("--v2-interval", type=float, default=0.05, help="seconds between v2 chunks")
    pace.add_argument("--scenario", metavar="FILE", help="JSON file of scripted answers")
    pace.add_argument(
        "--endpoint",
        action="append",
        default=[],
        metavar="NAME=MODEL",
        help="extra v1 endpoint served as MODEL (repeatable)",
    )

    auth = parser.add_argument_group("authentication")
    auth.add_argument(
        "--credentials", metavar="FILE", help="JSON file of accepted credentials (strict mode)"
    )
    auth.add_argument(
        "--no-auth", action="store_true", help="accept requests that carry no credentials"
    )
    auth.add_argument(
        "--token-ttl",
        type=int,
        default=DEFAULT_TOKEN_TTL,
        help="access-token lifetime in seconds",
    )
    auth.add_argument("--oauth-error-status", type=int, default=401, help="status of OAuth errors")

    limits = parser.add_argument_group("quotas and faults")
    limits.add_argument("--rpm", type=int, default=0, help="requests/minute per credential (off)")
    limits.add_argument("--tpm", type=int, default=0, help="tokens/minute per credential (off)")
    limits.add_argument(
        "--fault-rate",
        action="append",
        default=[],
        metavar="SPEC=RATE",
        help="inject fault SPEC into a fraction RATE of requests (repeatable)",
    )

    proto = parser.add_argument_group("protocol details")
    proto.add_argument(
        "--sse-charset", action="store_true", help="send text/event-stream;charset=utf-8"
    )
    proto.add_argument(
        "--messages-error-code", type=int, default=336006, help="v1 code of message errors"
    )
    proto.add_argument(
        "--v2-alternation", action="store_true", help="enforce v1's message order on v2 too"
    )
    proto.add_argument(
        "--v2-finish-reason", default="stop", choices=("stop", "normal"), help="v2 finish_reason"
    )
    proto.add_argument(
        "--v2-model",
        action="append",
        default=None,
        metavar="MODEL",
        help="serve only these v2 models (repeatable; default: the catalogue's)",
    )

    models = parser.add_argument_group("models (today's ERNIE; see docs/EMULATOR.md)")
    models.add_argument(
        "--roster", metavar="FILE", help="TOML laid over the model catalogue ([[model]] tables)"
    )
    models.add_argument(
        "--unknown-models",
        choices=("reject", "accept"),
        default="reject",
        help="an id outside the roster: 401 invalid_model (reject) or served as plain text",
    )
    models.add_argument(
        "--retired-models",
        choices=("offline", "invalid", "serve"),
        default="offline",
        help="a retired model: 403 model_offline, 401 invalid_model, or served",
    )
    models.add_argument(
        "--unknown-capability",
        choices=("yes", "no"),
        default="yes",
        help="a capability the catalogue does not know is assumed (yes) or not",
    )
    models.add_argument(
        "--unsupported-params",
        choices=("reject", "ignore"),
        default="reject",
        help="a field the model cannot honour: 400 (reject) or ignored",
    )
    models.add_argument(
        "--thinking-interval",
        type=float,
        default=DEFAULT_THINKING_INTERVAL,
        help=f"seconds between reasoning chunks ({DEFAULT_THINKING_INTERVAL})",
    )
    models.add_argument(
        "--reasoning-in-answer",
        choices=("absent", "empty", "null"),
        default="absent",
        help="reasoning_content in the answer chunks of a thinking model",
    )
    models.add_argument(
        "--reasoning-tokens-detail",
        action="store_true",
        help="add usage.completion_tokens_details.reasoning_tokens",
    )
    models.add_argument(
        "--no-tool-call-index", action="store_true", help="leave index out of tool-call deltas"
    )
    models.add_argument(
        "--tool-call-pieces", type=int, default=1, help="cut tool-call arguments into N deltas"
    )
    models.add_argument(
        "--search-status-placement",
        choices=("choice", "delta"),
        default="choice",
        help="where the search-status chunk's delta_tag sits",
    )

    openai = parser.add_argument_group(
        "OpenAI-compatible mode (/v1/chat/completions, /v1/models: a self-hosted ERNIE 4.5)"
    )
    openai.add_argument(
        "--openai-compatible",
        choices=("vllm", "fastdeploy"),
        default="vllm",
        help="the server /v1/chat/completions behaves like: field names, errors (vllm)",
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
    openai.add_argument(
        "--max-model-len",
        type=int,
        default=32768,
        help="context length; longer requests are refused as the server would (32768)",
    )

    logs = parser.add_argument_group("logging")
    logs.add_argument("--access-log", action="store_true", help="log every request (info level)")
    logs.add_argument("--debug", action="store_true", help="log tracebacks of internal errors")
    parser.set_defaults(handler=run)


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
