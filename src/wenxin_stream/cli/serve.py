"""``wenxin serve``: run the real-time Q&A server (SSE, WebSocket, OpenAI-compatible API).

Theory of operation
===================

:func:`register` declares the flags; each maps to a :class:`~wenxin_stream.server.ServerConfig`
field and defaults to "not given" (``None``), so :meth:`ServerConfig.load` can apply the
precedence flags > ``WENXIN_*`` environment > ``--config`` TOML file > defaults. :func:`run`
checks the configuration and the dev-mode rule (no API keys on a non-loopback address needs
``--allow-dev-mode-remote``) before binding, binds the socket itself (so ``--port 0`` works
and the printed URL is exact), and serves until SIGINT/SIGTERM with a graceful drain. The
server and uvicorn are imported only inside :func:`run`.

The one start-up line names the upstream, e.g.::

    wenxin serve on http://127.0.0.1:8000 — upstream: embedded ERNIE emulator (offline; set QIANFAN_* for real ERNIE)
"""  # noqa: E501

from __future__ import annotations

import argparse
import errno
from typing import Any

from . import CommandError


def _flag(group: Any, name: str, help: str, **kwargs: Any) -> None:
    group.add_argument(f"--{name}", default=None, help=help, **kwargs)


def register(subparsers: Any) -> None:
    """Add the ``serve`` subcommand to the ``wenxin`` parser."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "serve",
        help="run the real-time Q&A server (web page, SSE, WebSocket, OpenAI-compatible API)",
        description="Serve ERNIE answers to browsers and OpenAI clients. See "
        "docs/SERVER-API.md. Every flag can also be set as WENXIN_<FLAG> or in --config.",
    )
    net = parser.add_argument_group("network and files")
    _flag(net, "host", "address to listen on (127.0.0.1)")
    _flag(net, "port", "port; 0 = any free port (8000)", type=int)
    _flag(net, "data-dir", "directory of the database and audit log (./data)")
    _flag(net, "database-url", "postgresql://user:pass@host/db, or sqlite:///path (data dir's)")
    _flag(net, "database-pool-size", "PostgreSQL connections per process (10)", type=int)
    _flag(net, "database-pool-timeout", "seconds to wait for one; then 503 (5)", type=float)
    _flag(
        net, "migrate", "bring the schema up to date at start-up, or refuse (auto)",
        choices=("auto", "off"),
    )  # fmt: skip

    fleet = parser.add_argument_group("scale-out (several workers and instances)")
    _flag(fleet, "redis-url", "Redis shared by workers and instances (default: none, in memory)")
    _flag(
        fleet, "workers", "worker processes sharing the port; > 1 needs --redis-url (1)", type=int
    )
    _flag(fleet, "instance-id", "this process's name in the fleet (host:pid:random)")
    _flag(fleet, "metrics-dir", "directory shared by this machine's processes for /metrics (temp)")
    _flag(fleet, "redis-max-connections", "Redis pool size per process (64)", type=int)
    _flag(fleet, "redis-timeout", "seconds a Redis call may take (1.0)", type=float)
    _flag(fleet, "lease-ttl", "seconds a dead process's stream slots stay taken (10)", type=float)
    _flag(
        fleet,
        "answer-lease-ttl",
        "seconds before another instance takes over a dead producer's answer (3)",
        type=float,
    )
    _flag(
        fleet,
        "takeover",
        "a dead producer's answer: continue it (the SDK's continue mode) or end it interrupted",
        choices=("continue", "interrupt"),
    )
    net.add_argument("--config", metavar="FILE", help="TOML file of settings (WENXIN_CONFIG)")
    _flag(net, "max-body-bytes", "largest request body (1048576)", type=int)

    streams = parser.add_argument_group("streams")
    _flag(
        streams,
        "on-disconnect",
        "when the last client is gone: cancel the upstream or drain it (cancel)",
        choices=("cancel", "drain"),
    )
    _flag(streams, "resume-grace", "seconds a stream waits for a reconnect (5)", type=float)
    _flag(
        streams, "ping-interval", "longest silence on a stream, filled by `: ping` (15)", type=float
    )
    _flag(streams, "stall-timeout", "drop a client that reads nothing this long (30)", type=float)
    _flag(streams, "shutdown-grace", "seconds running answers get at shutdown (10)", type=float)
    _flag(
        streams,
        "checkpoint-interval",
        "seconds between writes of streaming answers' text; a crash loses at most this (1; 0: off)",
        type=float,
    )
    _flag(
        streams,
        "start-slice",
        "admission pacing: seconds of start work between two looks at the sockets (0.002; 0: off)",
        type=float,
    )
    _flag(streams, "default-model", "model of requests that name none")

    conns = parser.add_argument_group("connections (what one client can make the server hold)")
    _flag(
        conns, "max-header-bytes", "largest request head, in bytes; over it: 431 (32768)", type=int
    )
    _flag(conns, "max-headers", "most headers in one request; over it: 431 (100)", type=int)
    _flag(conns, "header-timeout", "seconds to receive a request's head; then 408 (10)", type=float)
    _flag(conns, "body-timeout", "seconds to receive a request's body; then 408 (30)", type=float)
    _flag(conns, "keep-alive-timeout", "whole seconds an idle connection stays open (20)", type=int)
    _flag(conns, "max-connections", "most open connections; over it: 503 (10000; 0: off)", type=int)
    _flag(
        conns,
        "max-connections-per-ip",
        "most open connections from one address; over it: 503 (1000; 0: off)",
        type=int,
    )

    access = parser.add_argument_group("access and limits")
    _flag(
        access,
        "allow-dev-mode-remote",
        "allow dev mode (no keys) on a non-loopback host",
        action="store_const",
        const=True,
    )
    _flag(access, "default-rpm", "requests/minute per key without its own limit (0: off)", type=int)
    _flag(access, "default-tpm", "tokens/minute per key without its own limit (0: off)", type=int)
    _flag(access, "default-max-streams", "concurrent streams per key (0: off)", type=int)
    _flag(
        access,
        "audit-questions",
        "write question texts into the audit log",
        action="store_const",
        const=True,
    )

    gateway = parser.add_argument_group(
        "gateway (channels are [[channels]] of the --config file: docs/GATEWAY.md; the admin "
        "view's key is WENXIN_ADMIN_KEY or admin_key in the file, never a flag)"
    )
    _flag(gateway, "failover-attempts", "most upstream requests per answer (3)", type=int)
    _flag(
        gateway,
        "failover-deadline",
        "seconds after which no other channel is tried before the first token (60)",
        type=float,
    )
    _flag(
        gateway,
        "breaker-threshold",
        "consecutive failures that cool a channel down (3; 0: never)",
        type=int,
    )
    _flag(gateway, "breaker-cooldown", "seconds a failing channel is left out (30)", type=float)

    process = parser.add_argument_group("process")
    _flag(
        process,
        "allocator",
        "where objects come from: jemalloc gives a peak's memory back; other than python, "
        "serve re-executes itself to switch (auto: jemalloc where installed)",
        choices=("python", "malloc", "jemalloc", "auto"),
    )

    logs = parser.add_argument_group("logging")
    _flag(logs, "access-log", "log every request", action="store_const", const=True)
    _flag(logs, "debug", "log tracebacks of internal errors", action="store_const", const=True)
    _flag(
        logs,
        "stall-report",
        "log where the event loop was whenever it ran this many seconds late (0: off)",
        type=float,
    )
    parser.set_defaults(handler=run)


_FIELDS = (
    "host",
    "port",
    "data_dir",
    "database_url",
    "database_pool_size",
    "database_pool_timeout",
    "migrate",
    "redis_url",
    "workers",
    "instance_id",
    "lease_ttl",
    "answer_lease_ttl",
    "takeover",
    "metrics_dir",
    "redis_max_connections",
    "redis_timeout",
    "max_body_bytes",
    "max_header_bytes",
    "max_headers",
    "header_timeout",
    "body_timeout",
    "keep_alive_timeout",
    "max_connections",
    "max_connections_per_ip",
    "on_disconnect",
    "resume_grace",
    "ping_interval",
    "stall_timeout",
    "shutdown_grace",
    "checkpoint_interval",
    "start_slice",
    "default_model",
    "allow_dev_mode_remote",
    "default_rpm",
    "default_tpm",
    "default_max_streams",
    "audit_questions",
    "failover_attempts",
    "failover_deadline",
    "breaker_threshold",
    "breaker_cooldown",
    "access_log",
    "debug",
    "stall_report",
    "allocator",
)


def config_from_args(args: argparse.Namespace, environ: Any = None) -> Any:
    """The :class:`~wenxin_stream.server.ServerConfig` of parsed flags over the environment
    and the config file.

    Raises:
        CommandError: a value or the file is invalid (status 2).
    """
    from ..server import ServerConfig, ServerConfigError

    flags = {name: getattr(args, name) for name in _FIELDS}
    try:
        return ServerConfig.load(flags, environ=environ, config_file=args.config)
    except ServerConfigError as exc:
        raise CommandError(str(exc), 2) from None


def _choose_allocator(wanted: str, *, own_command_line: bool) -> None:
    """Re-execute this command under the ``wanted`` allocator if another one runs
    (``server/_allocator.py``). Only a process whose command line is this command
    (``own_command_line``) is re-executed: one that runs ``serve`` in-process (a test, an
    embedding program) keeps its allocator, and says so when it differs."""
    import logging
    import os

    from ..server._allocator import AllocatorError, plan, reexec

    try:
        env = plan(wanted, os.environ)
    except AllocatorError as exc:
        raise CommandError(str(exc), 2) from None
    if env is None:
        return
    if not own_command_line:
        logging.getLogger("wenxin_stream.server").warning(
            "allocator: %s not applied: serve runs inside another program", wanted
        )
        return
    reexec(env)


def _check_dev_mode(config: Any) -> None:
    from ..server._access import dev_mode_problem
    from ..server._store import StoreError, SyncKeyAdmin

    if dev_mode_problem(config.host, keys_exist=False, allow_remote=config.allow_dev_mode_remote):
        try:
            with SyncKeyAdmin(config.database) as admin:
                keys = admin.count_active_keys() > 0
        except (StoreError, OSError) as exc:
            raise CommandError(f"cannot open the database: {exc}") from None
        problem = dev_mode_problem(
            config.host, keys_exist=keys, allow_remote=config.allow_dev_mode_remote
        )
        if problem:
            raise CommandError(problem, 2)


def run(args: argparse.Namespace) -> int:
    """Serve until interrupted; the exit status."""
    config = config_from_args(args)
    _choose_allocator(config.allocator, own_command_line=getattr(args, "own_command_line", False))
    _check_dev_mode(config)
    from ..emulator._server import bind_socket
    from ..server import StartupError, run_server

    try:
        sock = bind_socket(config.host, config.port)
    except OSError as exc:
        hint = ""
        if exc.errno == errno.EADDRINUSE:
            hint = (
                f" (another program uses port {config.port}: choose another with --port N or "
                "WENXIN_PORT=N, e.g. WENXIN_PORT=8011 scripts/run)"
            )
        raise CommandError(
            f"cannot listen on {config.host}:{config.port}: {exc.strerror}{hint}"
        ) from None
    try:
        if config.workers > 1:
            from ..server._workers import run_workers

            status = run_workers(config, sock)
        else:
            status = run_server(config, sock=sock)
    except StartupError as exc:
        raise CommandError(str(exc)) from None
    if status:
        raise CommandError("the server could not start (see the message above)")
    return 0
