"""What a draining server (``SIGTERM``) does with the connections it already has, so that a
proxy in front (nginx's pooled ``keepalive`` connections) neither keeps bringing it work nor
loses a request it had already sent:

- an idle HTTP keep-alive connection stays open for a short window (``drain_idle``); a request
  that comes on it meanwhile is answered in full, with ``Connection: close``, and the
  connection closes after it; one still idle at the window's end is closed then (a busy one is
  closed after its response, which still completes);
- a WebSocket with no ask running is closed at once with 1012 (service restart); one with an
  ask running gets that answer to its end, then the same close (so does a WebSocket upgrade
  that comes on an idle keep-alive connection during the window).

Behind nginx, before the first of these, a drain closed idle keep-alive connections at once:
when nginx had just taken one from its pool and written a POST on it, it read the close, and
(rightly: a POST that may have reached the server is never asked twice) answered the client 502
(tests/server/test_rolling_restart.py, now and then under load). Before that still, the pooled
connections of a draining instance brought it new requests throughout the grace, each answered
503 ``shutting_down`` (a WebSocket upgrade: 403).
"""

from __future__ import annotations

import json
import select
import socket
import struct
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from server_helpers import (
    EventReader,
    draining,
    new_conversation,
    paced,
    server_config,
    sse_events,
    wait_for,
)
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from wenxin_stream import ServerSentEvent
from wenxin_stream.emulator import ServerHandle
from wenxin_stream.server import Server, ServerState, create_app

LONG = "interval=0.05;chunks=40"
"""An answer of about 2 s: still streaming when the idle connections are closed."""
SHORT = "interval=0.01;chunks=5"
"""An answer well inside the grace."""


def _idle_keep_alive(url: str) -> socket.socket:
    """A connection that asked once and is kept alive, idle."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    head = sock.recv(65536)
    assert head.startswith(b"HTTP/1.1 200"), head
    assert b"connection: close" not in head.lower()
    return sock


def _post(sock: socket.socket, path: str, body: object) -> None:
    data = json.dumps(body).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n"
        f"content-length: {len(data)}\r\n\r\n"
    )
    sock.sendall(head.encode() + data)


def _until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (a reset ends it too)."""
    got = bytearray()
    try:
        while chunk := sock.recv(65536):
            got += chunk
    except ConnectionResetError:
        pass
    return bytes(got)


def _dechunk(body: bytes) -> bytes:
    """A chunked body's content (all of it must be there)."""
    out = bytearray()
    while True:
        size_line, _, body = body.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            return bytes(out)
        out += body[:size]
        body = body[size + 2 :]


def _last_answer(got: bytes) -> list[ServerSentEvent]:
    """The events of a connection's last response: a whole 200 event stream that says
    ``Connection: close``."""
    head, _, body = got.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), got[:300]
    assert b"connection: close" in head.lower()
    return sse_events(_dechunk(body))


def _begin_drain(app: Server, server: Any) -> float:
    """Start the drain as SIGTERM does; the moment it has begun."""
    server.should_exit = True
    wait_for(lambda: app.state is ServerState.STOPPING, timeout=5, step=0.005)
    return time.monotonic()


def test_a_post_on_an_idle_keep_alive_connection_as_the_drain_begins_is_answered(
    tmp_path: Path, emu: ServerHandle
) -> None:
    """The race behind nginx's 502s: a proxy writes a POST on a pooled connection just as the
    instance begins to drain. It is answered in full, with ``Connection: close``, and the
    connection is closed after it (never under the request)."""
    app = create_app(server_config(tmp_path / "d", emu.base_url, shutdown_grace=10.0))
    with draining(app) as (url, thread, server), httpx.Client(base_url=url, timeout=10) as c:
        cid = new_conversation(c)
        idle = _idle_keep_alive(url)
        _begin_drain(app, server)
        _post(idle, f"/api/conversations/{cid}/messages", {"content": paced("再问", SHORT)})
        got = _until_closed(idle)
        idle.close()
        thread.join(15)
    events = _last_answer(got)
    assert events[-1].event == "end"
    assert json.loads(events[-1].data)["end_reason"] == "completed"
    assert "".join(json.loads(e.data)["text"] for e in events if e.event == "delta")


def test_an_answer_taken_in_the_drains_window_gets_the_whole_grace(
    tmp_path: Path, emu: ServerHandle
) -> None:
    """An OpenAI-route stream (not resumable: cut means lost) that a proxy sent on a pooled
    connection 0.6 s into a 1 s grace, and that takes 0.8 s: it is answered in full. Before,
    the grace counted from the signal for it too, and it was cut at 1 s with
    ``server_shutdown`` (``tests/server/test_rolling_restart.py`` caught it now and then)."""
    grace = 1.0
    app = create_app(server_config(tmp_path / "d", emu.base_url, shutdown_grace=grace))
    with draining(app) as (url, thread, server):
        idle = _idle_keep_alive(url)
        began = _begin_drain(app, server)
        time.sleep(0.6)
        body = {
            "model": "ernie-lite-8k",
            "stream": True,
            "messages": [{"role": "user", "content": paced("晚到的问题", "interval=0.1;chunks=8")}],
        }
        _post(idle, "/v1/chat/completions", body)
        got = _until_closed(idle)
        answered = time.monotonic()
        idle.close()
        thread.join(15)
    events = _last_answer(got)
    assert events[-1].data == "[DONE]"
    chunks = [json.loads(e.data) for e in events[:-1]]
    assert not [c for c in chunks if "error" in c], chunks
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert answered - began > grace  # it did run past the grace counted from the signal
    assert not thread.is_alive()


def test_idle_keep_alive_connections_close_at_the_end_of_the_idle_window(
    tmp_path: Path, emu: ServerHandle
) -> None:
    app = create_app(server_config(tmp_path / "d", emu.base_url, shutdown_grace=10.0))
    with (
        draining(app, drain_idle=1.0) as (url, thread, server),
        httpx.Client(base_url=url, timeout=10) as c,
    ):
        idle = _idle_keep_alive(url)
        cid = new_conversation(c)
        request = c.build_request(
            "POST", f"/api/conversations/{cid}/messages", json={"content": paced("长答", LONG)}
        )
        reader = EventReader(c.send(request, stream=True))
        got = [reader.next(), reader.next()]
        began = _begin_drain(app, server)
        readable, _, _ = select.select([idle], [], [], 0.5)
        assert not readable  # still open (nothing sent, not closed) well into the window
        assert idle.recv(1) == b""  # then closed by the server (10 s at most)
        closed_at = time.monotonic()
        rest = reader.rest()  # the busy connection's answer goes on to its end
        ended_at = time.monotonic()
        idle.close()
        thread.join(15)
    events = [e for e in got if e is not None] + rest
    assert events[-1].event == "end"
    assert json.loads(events[-1].data)["end_reason"] == "completed"
    assert 0.5 < closed_at - began < 3.0  # at the window's end (1 s), not at once
    assert ended_at - closed_at > 0.3  # nor at the end of the drain


def test_a_websocket_upgrade_on_an_idle_keep_alive_connection_gets_1012(
    tmp_path: Path, emu: ServerHandle
) -> None:
    """A proxy may bring a WebSocket upgrade on a pooled connection too: accepted, then
    closed at once with 1012 (connect again: to another instance), not refused 403."""
    app = create_app(server_config(tmp_path / "d", emu.base_url, shutdown_grace=10.0))
    with draining(app) as (url, thread, server):
        idle = _idle_keep_alive(url)
        _begin_drain(app, server)
        idle.sendall(
            b"GET /api/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            b"Sec-WebSocket-Version: 13\r\n\r\n"
        )
        got = b""
        while b"\r\n\r\n" not in got or len(got.partition(b"\r\n\r\n")[2]) < 4:
            chunk = idle.recv(65536)
            assert chunk, got
            got += chunk
        idle.close()
        thread.join(15)
    head, _, frame = got.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101"), head
    assert frame[0] == 0x88  # a close frame
    assert struct.unpack("!H", frame[2:4])[0] == 1012


def _close_code(ws: ClientConnection) -> int | None:
    """The code of the close frame the socket gets next (``None``: none, or a frame came)."""
    with pytest.raises(ConnectionClosed) as closed:
        ws.recv(timeout=10)
    return closed.value.rcvd.code if closed.value.rcvd is not None else None


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
