"""What a draining server (``SIGTERM``) does with the connections it already has, so that a
proxy in front (nginx's pooled ``keepalive`` connections) stops bringing it work at once:

- an idle HTTP keep-alive connection is closed as soon as the drain begins, not after it (a
  busy one is closed after its response, which still completes);
- a WebSocket with no ask running is closed at once with 1012 (service restart); one with an
  ask running gets that answer to its end, then the same close.

Behind nginx, before this, the pooled connections of a draining instance brought it new
requests throughout the grace, each answered 503 ``shutting_down`` (a WebSocket upgrade: 403),
and WebSocket clients asked on sockets that refused every ask with 503
(tests/server/test_rolling_restart.py shows it end to end).
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import httpx
import pytest
from server_helpers import EventReader, draining, new_conversation, paced, server_config
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from wenxin_stream.emulator import ServerHandle
from wenxin_stream.server import create_app

LONG = "interval=0.05;chunks=40"
"""An answer of about 2 s: still streaming when the idle connections are closed."""


def _idle_keep_alive(url: str) -> socket.socket:
    """A connection that asked once and is kept alive, idle."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    head = sock.recv(65536)
    assert head.startswith(b"HTTP/1.1 200"), head
    assert b"connection: close" not in head.lower()
    return sock


def _close_code(ws: ClientConnection) -> int | None:
    """The code of the close frame the socket gets next (``None``: none, or a frame came)."""
    with pytest.raises(ConnectionClosed) as closed:
        ws.recv(timeout=10)
    return closed.value.rcvd.code if closed.value.rcvd is not None else None


def test_idle_keep_alive_connections_close_when_the_drain_begins(
    tmp_path: Path, emu: ServerHandle
) -> None:
    app = create_app(server_config(tmp_path / "d", emu.base_url, shutdown_grace=10.0))
    with draining(app) as (url, thread, server), httpx.Client(base_url=url, timeout=10) as c:
        idle = _idle_keep_alive(url)
        cid = new_conversation(c)
        request = c.build_request(
            "POST", f"/api/conversations/{cid}/messages", json={"content": paced("长答", LONG)}
        )
        reader = EventReader(c.send(request, stream=True))
        got = [reader.next(), reader.next()]
        server.should_exit = True
        assert idle.recv(1) == b""  # closed by the server (blocks until then: 10 s at most)
        closed_at = time.monotonic()
        rest = reader.rest()  # the busy connection's answer goes on to its end
        ended_at = time.monotonic()
        idle.close()
        thread.join(15)
    events = [e for e in got if e is not None] + rest
    assert events[-1].event == "end"
    assert json.loads(events[-1].data)["end_reason"] == "completed"
    assert ended_at - closed_at > 0.5  # closed at the start of the drain, not at its end


def test_websockets_are_closed_with_1012_once_idle_when_the_drain_begins(
    tmp_path: Path, emu: ServerHandle
) -> None:
    app = create_app(server_config(tmp_path / "d", emu.base_url, shutdown_grace=10.0))
    with draining(app) as (url, thread, server):
        ws_url = url.replace("http://", "ws://") + "/api/ws"
        with connect(ws_url, open_timeout=5) as idle, connect(ws_url, open_timeout=5) as busy:
            busy.send(json.dumps({"type": "ask", "id": "q", "content": paced("长答", LONG)}))
            frames = [json.loads(busy.recv(timeout=10))]
            assert frames[0]["type"] == "start"
            server.should_exit = True
            assert _close_code(idle) == 1012
            closed_at = time.monotonic()
            while frames[-1]["type"] != "end":
                frames.append(json.loads(busy.recv(timeout=10)))
            ended_at = time.monotonic()
            assert _close_code(busy) == 1012  # closed after its last answer
        thread.join(15)
    assert frames[-1]["end_reason"] == "completed"
    assert "".join(f["text"] for f in frames if f["type"] == "delta")
    assert ended_at - closed_at > 0.5  # the idle one did not wait for the busy one's answer
