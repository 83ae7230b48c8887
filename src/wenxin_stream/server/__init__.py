"""``wenxin serve``: the real-time ERNIE Q&A server (SSE, WebSocket, OpenAI-compatible API).

Theory of operation
===================

A plain ASGI 3 application (no framework: the per-chunk path is a few concatenations and one
``send``) built by :func:`create_app` from a :class:`ServerConfig`, served by uvicorn with
httptools and uvloop. The contract is ``docs/SERVER-API.md``.

Module map (each layer imports only the ones below it; nothing imports ``_app``):

- ``_app``: composes — lifespan, the routing table, the safety net, :class:`ServerState`;
- routes: ``_routes_service`` (health, readiness, metrics, OpenAPI, info) · ``_static`` (the
  page) · ``_routes_conversations`` (CRUD) · ``_routes_streams`` (SSE ask, resume, cancel) ·
  ``_routes_openai`` (``/v1/chat/completions``, ``/v1/models``) · ``_ws`` (WebSocket);
- ``_answers``: the answer use case (admission, history, generation start, persistence,
  audit record);
- ``_checkpoints``: the text of answers written to the store while they stream;
- ``_connection``: the outlet, heartbeat and watcher every stream races its relay against
  (the per-connection race is drawn there) · ``_relay``: the generation registry and its
  event logs · ``_upstream``: the one ERNIE client and its models · ``_access``: API keys or
  dev mode;
- ``_http``: request context, ``HTTPError``, body and field reading;
- state and policies: ``_store`` (the store objects) over ``_schema`` (records, migrations,
  operations), ``_sqlite`` (the worker) and ``_sql`` (dialect, ``Db``) · ``_keys`` ·
  ``_limits`` · ``_metrics`` · ``_audit`` · ``_gc`` (collections at quiet moments) ·
  ``_config`` · ``_openapi``.

:func:`uvicorn_server` serves it with :mod:`wenxin_stream._http_limits`' protocol, which bounds
what one client can make the server hold: request heads (bytes and header count → 431), the
time to receive a head or a body (→ 408), open connections in total and per client address
(→ 503 with ``Retry-After``), idle keep-alive connections (closed); counted in ``/metrics`` as
``wenxin_connections_refused_total`` and ``wenxin_connections_open`` (with the event loop's
task count, ``wenxin_asyncio_tasks``). A response in progress
is never cut by these: an answer may stream for minutes.

:func:`run_server` runs it in the foreground: it binds the socket, logs one start-up line that
names the upstream, turns CPython's cyclic collector over to :class:`~._gc.Collector`
(collections at quiet moments, not mid-burst), and on SIGINT/SIGTERM stops accepting, makes
every HTTP response from then on its connection's last (``Connection: close``; a busy
connection closes after its response), and drains (running answers get ``shutdown_grace``
seconds, the rest end as ``server_shutdown`` or, in a fleet, are handed over) *before*
uvicorn closes the remaining connections. An idle keep-alive connection is not closed at
once: a proxy may have just written a request on it, and it cannot send a POST again
elsewhere (nginx answers its client 502). It stays open for ``drain_idle`` seconds
(``_http_limits.DRAIN_IDLE``; longer than the idle timeout of nginx's pool in
``deploy/nginx.conf``, which so drops it first), and what comes on it meanwhile is served as
any request is — an ask is taken and gets the whole grace from its start, as those already
running got it from the signal — then the connection closes (``_http_limits``, *Draining*).
The drain waits for that window while such connections remain, so it lasts at most
``shutdown_grace`` + ``drain_idle`` before what is still running is handed over or ended.
Importing this package does not import uvicorn.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ._app import Server, ServerState, StartupError, create_app
from ._config import ServerConfig, ServerConfigError
from ._gc import Collector
from ._loop_lag import LoopLag

if TYPE_CHECKING:
    import uvicorn

    from .._http_limits import HTTPLimits

__all__ = [
    "Server",
    "ServerConfig",
    "ServerConfigError",
    "ServerState",
    "StartupError",
    "create_app",
    "describe_upstream",
    "http_limits",
    "run_server",
    "uvicorn_server",
]


def describe_upstream(server: Server) -> str:
    """The start-up line's description of the upstream (of a started server)."""
    return server.upstream.describe()


def http_limits(config: ServerConfig) -> HTTPLimits:
    """The bounds on receiving requests and on open connections that ``config`` sets."""
    from .._http_limits import HTTPLimits

    return HTTPLimits(
        max_header_bytes=config.max_header_bytes,
        max_headers=config.max_headers,
        header_timeout=config.header_timeout,
        body_timeout=config.body_timeout,
        keep_alive_timeout=config.keep_alive_timeout,
        max_connections=config.max_connections,
        max_connections_per_ip=config.max_connections_per_ip,
    )


def uvicorn_server(
    app: Server, *, log_level: str = "warning", drain_idle: float | None = None
) -> uvicorn.Server:
    """A uvicorn server for ``app``: its HTTP protocol bounds what a client can make it hold
    (``_http_limits``: header size and count, receive deadlines, connection caps, counted in
    ``/metrics``), and its shutdown drains the app first (see the module docstring), keeping
    idle keep-alive connections open ``drain_idle`` seconds (default
    ``_http_limits.DRAIN_IDLE``)."""
    import uvicorn

    try:
        from .._http_limits import DRAIN_IDLE, LimitedConfig, LimitedHttpToolsProtocol
    except ImportError as exc:  # httptools is the server extra's
        raise StartupError(
            f"wenxin serve needs {exc.name or 'httptools'}: pip install 'wenxin-stream[server]'"
        ) from None
    from ._metrics import Counter, FunctionMetric
    from ._stuck_tasks import watch_shutdown

    config = app.config
    refused = Counter(
        "wenxin_connections_refused_total",
        "Connections answered and closed by a limit on receiving requests or on connections.",
        ("reason",),
    )

    window = DRAIN_IDLE if drain_idle is None else drain_idle

    class _Server(uvicorn.Server):
        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            for server in self.servers:  # stop accepting at once, then let streams end
                server.close()
            # where it waits, should it not end in time (an answer taken in the window gets
            # the whole grace: _relay.Relay.shutdown)
            watch_shutdown(config.shutdown_grace + window)
            # HTTP keep-alive connections too: each response from now on is its connection's
            # last, so a proxy's pool (nginx's `keepalive`) stops bringing this instance work;
            # an idle one is closed after the window, not under a request a proxy may have
            # just written on it (WebSockets: _ws drains)
            loop = asyncio.get_running_loop()
            until = loop.time() + window
            for connection in list(self.server_state.connections):
                if isinstance(connection, LimitedHttpToolsProtocol):
                    connection.drain(window)
            admitting = loop.create_task(self._answered(until))
            try:
                await app.drain(admitting)  # asks are taken while requests may still come
                await admitting
            finally:
                admitting.cancel()
            await super().shutdown(sockets)

        async def _answered(self, until: float) -> None:
            """Return once every HTTP connection has its answer under way or is gone (an idle
            one is closed by its client, after a request, or by its timer at ``until``):
            no request can come any more that the app has not yet admitted or refused."""
            loop = asyncio.get_running_loop()
            while loop.time() < until and any(  # noqa: ASYNC110 (uvicorn's state, as it does)
                isinstance(c, LimitedHttpToolsProtocol) and c.unanswered
                for c in self.server_state.connections
            ):
                await asyncio.sleep(0.05)

    server_config = LimitedConfig(
        app,
        http_limits(config),
        on_reject=lambda reason: refused.labels(reason).inc(),
        log_level="info" if config.access_log else log_level,
        access_log=config.access_log,
        lifespan="on",
        server_header=False,
        timeout_graceful_shutdown=max(1, int(config.shutdown_grace) + 1),
        backlog=4096,
        ws_max_size=max(16 << 20, 2 * config.max_body_bytes),
    )
    app.metrics.register(refused)
    app.metrics.register(
        FunctionMetric(
            "wenxin_connections_open",
            "Client connections open now (WebSockets included).",
            lambda: server_config.connections.total,
            multiprocess_mode="livesum",
        )
    )
    app.metrics.register(
        FunctionMetric(
            "wenxin_asyncio_tasks",
            "Tasks of the event loop now (a leak shows as growth; bench/soak.py samples it).",
            _LoopTasks(),
            multiprocess_mode="livesum",
        )
    )
    return _Server(server_config)


class _LoopTasks:
    """Counts the serving event loop's tasks: the loop is taken when read inside it (a scrape
    of ``/metrics``), and counted from any thread afterwards (the multiprocess flush thread);
    ``asyncio.all_tasks`` copies the loop's task set safely for that."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None

    def __call__(self) -> float:
        with contextlib.suppress(RuntimeError):  # not in the loop: the one taken before
            self._loop = asyncio.get_running_loop()
        return float(len(asyncio.all_tasks(self._loop))) if self._loop is not None else 0.0


def run_server(config: ServerConfig, *, sock: socket.socket | None = None,
               announce: Callable[[str], Any] | None = None) -> int:  # fmt: skip
    """Serve until SIGINT/SIGTERM; the exit status (0, or 1 when start-up failed).

    ``sock`` is a bound listening socket (default: bind ``config.host:config.port``);
    ``announce`` receives the start-up line (default: print it to stderr).
    """
    from ..emulator._server import base_url_of, bind_socket, install_log_filter

    install_log_filter()  # a dropped stalled client is closed on purpose, not an error
    if sock is None:
        sock = bind_socket(config.host, config.port)
    url = base_url_of(sock)

    collectors: list[Collector] = []
    lags: list[LoopLag] = []

    def ready(server: Server) -> None:
        # the cyclic collector off, full collections at quiet moments (see server/_gc.py)
        collector = Collector(
            server.metrics,
            lambda: len(server.relay.running),
            describe=config.debug,
            trim=config.heap_trim,
            release=server.store.release_memory,
        )
        collector.start(asyncio.get_running_loop())
        collectors.append(collector)
        # the loop's own lateness in /metrics; stall reports when asked (server/_loop_lag.py)
        lag = LoopLag(server.metrics, stall_report=config.stall_report)
        lag.start(asyncio.get_running_loop())
        lags.append(lag)
        line = f"wenxin serve on {url} — upstream: {describe_upstream(server)}"
        if announce is None:
            print(line, file=sys.stderr, flush=True)
        else:
            announce(line)

    app = create_app(config, on_ready=ready)
    try:
        server = uvicorn_server(app)
    except StartupError:
        sock.close()
        raise
    # uvicorn handles SIGINT/SIGTERM itself (graceful shutdown), then re-raises the signal
    # under the previous handler: make that one harmless, so the exit status stays 0.
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, lambda signum, frame: None)
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:
        pass  # the SIGINT uvicorn re-raised; the shutdown was already graceful
    finally:
        for collector in collectors:
            collector.stop()
        for lag in lags:
            lag.stop()
        sock.close()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return 0 if app.state is not ServerState.STARTING else 1
