"""Running an ASGI app under uvicorn: in a background thread, or in the foreground for the CLI.

Theory of operation
===================

:func:`serve_in_thread` binds the listening socket itself (port 0 lets the OS choose, so
parallel tests never collide), hands it to a ``uvicorn.Server`` running in a daemon thread
with its own event loop (uvloop and httptools when installed), and polls the server's
``started`` flag until it is up — no fixed sleep. The returned :class:`ServerHandle` knows the
``base_url`` and stops the server with :meth:`~ServerHandle.stop`: uvicorn's graceful
shutdown, bounded by ``graceful_timeout`` so that open streams cannot hold it up.

:func:`install_log_filter` silences the one line uvicorn logs when an app returns without
completing a response — which the emulator does on purpose for ``cut_after`` — so an injected
abort is quiet. uvicorn is imported lazily, inside these functions: importing
:mod:`wenxin_stream.emulator` never imports a server.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from typing import TYPE_CHECKING

from .._asgi import ASGIApp
from ._config import EmulatorConfig

if TYPE_CHECKING:
    import uvicorn

_INCOMPLETE = "ASGI callable returned without completing response."


class _DropIncompleteResponse(logging.Filter):
    """Drops uvicorn's "returned without completing response" record (fault ``cut_after``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.msg != _INCOMPLETE


def install_log_filter() -> None:
    """Install (once) the filter that keeps injected connection aborts out of uvicorn's log."""
    target = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _DropIncompleteResponse) for f in target.filters):
        target.addFilter(_DropIncompleteResponse())


def bind_socket(host: str, port: int) -> socket.socket:
    """Bind a listening TCP socket (IPv6 when ``host`` contains a colon)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def uvicorn_config(
    app: ASGIApp,
    *,
    log_level: str = "warning",
    access_log: bool = False,
    graceful_timeout: int | None = 1,
) -> uvicorn.Config:
    """The uvicorn configuration the emulator runs with (no server header, lifespan on)."""
    import uvicorn

    return uvicorn.Config(
        app,
        log_level=log_level,
        access_log=access_log,
        lifespan="on",
        server_header=False,
        timeout_graceful_shutdown=graceful_timeout,
        backlog=2048,
    )


def base_url_of(sock: socket.socket) -> str:
    """``http://host:port`` of a bound socket."""
    host, port = sock.getsockname()[:2]
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


class ServerHandle:
    """A server running in a background thread: :attr:`base_url`, :meth:`stop`."""

    def __init__(self, server: uvicorn.Server, thread: threading.Thread, base_url: str) -> None:
        self.server = server
        self.thread = thread
        self.base_url = base_url

    @property
    def port(self) -> int:
        """The port the server listens on."""
        return int(self.base_url.rsplit(":", 1)[1])

    def stop(self, timeout: float = 10.0) -> None:
        """Shut the server down gracefully and wait for its thread (at most ``timeout`` s)."""
        self.server.should_exit = True
        self.thread.join(timeout)
        if self.thread.is_alive():
            self.server.force_exit = True
            self.thread.join(timeout)

    def __enter__(self) -> ServerHandle:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def serve_in_thread(
    app: ASGIApp,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    startup_timeout: float = 10.0,
    graceful_timeout: int | None = 1,
    log_level: str = "warning",
) -> ServerHandle:
    """Run ``app`` under uvicorn in a daemon thread and return once it accepts connections.

    Raises:
        RuntimeError: the server did not start within ``startup_timeout`` seconds.
    """
    import uvicorn

    install_log_filter()
    sock = bind_socket(host, port)
    config = uvicorn_config(app, log_level=log_level, graceful_timeout=graceful_timeout)
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="wenxin-asgi-server", daemon=True
    )
    thread.start()
    deadline = time.monotonic() + startup_timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            sock.close()
            raise RuntimeError("the ASGI server did not start")
        time.sleep(0.005)
    return ServerHandle(server, thread, base_url_of(sock))


def run_in_thread(
    config: EmulatorConfig | None = None, host: str = "127.0.0.1", port: int = 0
) -> ServerHandle:
    """Run the emulator in a background thread; ``handle.base_url``, ``handle.stop()``.

    ``port=0`` (the default) lets the OS choose a free port.
    """
    from ._app import create_app

    return serve_in_thread(create_app(config), host, port)
