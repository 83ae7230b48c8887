"""A raw-socket HTTP/1.1 upstream whose every connection does exactly what a plan says
(:class:`Upstream`): the kept-alive connection a server closes as the client reuses it (issue
9), for the transports' tests (``tests/sdk/test_stale_connections.py``) and the server's
``wenxin_upstream_stale_resends_total`` (``tests/server/test_stale_resends.py``).

:func:`one_per_connection` answers the first request on a connection in full — HTTP/1.1,
``Content-Length``, no ``Connection: close``, so the client keeps the connection — and answers
the next request on the same connection by reading it and closing the socket without a byte:
what a server whose keep-alive timer fires while the client's request is on the wire looks
like from the client. Exact, not a matter of timing.
"""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

Action = str
"""``answer``; ``close`` (read the request, close without a byte); ``reset`` (the same with a
TCP reset); ``partial_head`` (part of a status line, then close); ``cut_body`` (the headers
and half the body, then close)."""

Plan = Callable[[int, int], Action]
"""The action for the ``n``-th request (from 0) on the ``c``-th connection (from 0)."""


def one_per_connection(connection: int, request: int) -> Action:
    """Every connection answers its first request and drops the next."""
    return "answer" if request == 0 else "close"


@dataclass
class Upstream:
    """A loopback HTTP/1.1 server whose every connection follows ``plan``, answering with
    ``body``."""

    plan: Plan
    body: bytes
    """The body of every answer (an event stream)."""
    requests: list[tuple[int, int, bytes]] = field(default_factory=list)
    """(connection, request on it, body) of every request read."""
    connections: int = 0

    def __post_init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return  # closed
            index, self.connections = self.connections, self.connections + 1
            thread = threading.Thread(target=self._serve, args=(sock, index), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, sock: socket.socket, connection: int) -> None:
        with sock:
            buffered = b""
            for request in range(100):
                while b"\r\n\r\n" not in buffered:
                    data = sock.recv(65536)
                    if not data:
                        return
                    buffered += data
                head, _, buffered = buffered.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                while len(buffered) < length:
                    buffered += sock.recv(65536)
                body, buffered = buffered[:length], buffered[length:]
                self.requests.append((connection, request, body))
                action = self.plan(connection, request)
                head_out = (
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                    b"Content-Length: %d\r\n\r\n" % len(self.body)
                )
                if action == "answer":
                    sock.sendall(head_out + self.body)
                    continue
                if action == "reset":
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                elif action == "partial_head":
                    sock.sendall(b"HTTP/1.1 20")
                elif action == "cut_body":
                    sock.sendall(head_out + self.body[: len(self.body) // 2])
                return  # closing the socket

    def close(self) -> None:
        self._listener.close()
