"""What one client can make the server hold (``_http_limits``), against the real server under
``uvicorn_server`` on loopback: 431 for heads over their size or header count, 408 for heads
and bodies that do not arrive in time, a plain close for an idle connection, 503 with
``Retry-After`` over the connection caps (total and per address, WebSockets included), idle
keep-alive connections closed — and a stream longer than every deadline not cut; each
request's disconnect signal, and the streaming routes following their clients with it. Also
the uvicorn internals the protocol relies on, so that a new uvicorn fails here first."""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import json
import socket
import sys
import threading
import time
import tomllib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from packaging.specifiers import SpecifierSet
from server_helpers import (
    EventReader,
    Running,
    new_conversation,
    paced,
    server_config,
    texts,
    wait_for,
)
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle
from websockets.sync.client import connect as ws_connect

from wenxin_stream._asgi import DisconnectSignal, disconnect_signal
from wenxin_stream._http_limits import (
    RETRY_AFTER,
    Connections,
    HTTPLimits,
    LimitedConfig,
    LimitedHttpToolsProtocol,
    counted_websocket_protocol,
)
from wenxin_stream.cli import CommandError, build_parser
from wenxin_stream.cli.serve import config_from_args
from wenxin_stream.cli.serve import run as serve_command
from wenxin_stream.emulator import ServerHandle
from wenxin_stream.emulator._server import base_url_of, bind_socket
from wenxin_stream.server import (
    ServerConfig,
    ServerConfigError,
    create_app,
    http_limits,
    uvicorn_server,
)

ROOT = Path(__file__).resolve().parents[2]

# -- the server as `wenxin serve` runs it, in a thread -----------------------------------------


@contextmanager
def hardened(data_dir: Path, upstream: str, **overrides: Any) -> Iterator[Running]:
    """The Q&A server under :func:`uvicorn_server` (the limited protocol), for the block."""
    app = create_app(server_config(data_dir, upstream, **overrides))
    server = uvicorn_server(app)
    sock = bind_socket("127.0.0.1", 0)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    handle = ServerHandle(server, thread, base_url_of(sock))
    try:
        wait_for(lambda: server.started or not thread.is_alive(), timeout=10)
        assert server.started
        yield Running(app, handle.base_url, handle)
    finally:
        handle.stop()
        sock.close()


@pytest.fixture
def serve(tmp_path: Path, emu: ServerHandle) -> Iterator[Callable[..., Running]]:
    stack: list[Any] = []

    def start(**overrides: Any) -> Running:
        cm = hardened(tmp_path / f"data{len(stack)}", emu.base_url, **overrides)
        stack.append(cm)
        return cm.__enter__()

    yield start
    for cm in reversed(stack):
        cm.__exit__(None, None, None)


def connections_of(srv: Running) -> Connections:
    config = srv.handle.server.config
    assert isinstance(config, LimitedConfig)
    return config.connections


def dial(srv: Running, source: str = "127.0.0.1") -> socket.socket:
    host, port = srv.url.removeprefix("http://").split(":")
    sock = socket.socket()
    sock.bind((source, 0))
    sock.connect((host, int(port)))
    sock.settimeout(10)
    return sock


def read_to_close(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes (a reset after the answer ends it too)."""
    out = _BUFFERS.pop(sock.fileno(), bytearray())
    while True:
        try:
            data = sock.recv(65536)
        except ConnectionResetError:
            return bytes(out)
        if not data:
            return bytes(out)
        out += data


_BUFFERS: dict[int, bytearray] = {}


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """The next response (with a ``Content-Length`` body) on ``sock``: status, headers, body.
    What follows it stays buffered for the next call."""
    raw = _BUFFERS.setdefault(sock.fileno(), bytearray())
    while b"\r\n\r\n" not in raw:
        data = sock.recv(65536)
        assert data, bytes(raw)
        raw += data
    end = raw.index(b"\r\n\r\n")
    status_line, *lines = raw[:end].decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}
    length = int(headers["content-length"])
    while len(raw) < end + 4 + length:
        data = sock.recv(65536)
        assert data
        raw += data
    body = bytes(raw[end + 4 : end + 4 + length])
    del raw[: end + 4 + length]
    return int(status_line.split()[1]), headers, body


def refusal(data: bytes) -> tuple[int, dict[str, str], dict[str, Any]]:
    """A complete refusal: status, headers, the error object; nothing may follow it."""
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}
    assert len(body) == int(headers["content-length"]), data
    assert headers["connection"] == "close"
    assert headers["content-type"] == "application/json"
    error: dict[str, Any] = json.loads(body)["error"]
    return int(status_line.split()[1]), headers, error


def head_of(size: int, *, path: str = "/healthz") -> bytes:
    """A complete GET head of exactly ``size`` bytes (padded in one header)."""
    start = f"GET {path} HTTP/1.1\r\nHost: t\r\nX-Pad: ".encode()
    pad = size - len(start) - 4
    assert pad >= 0
    return start + b"p" * pad + b"\r\n\r\n"


GET = b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"

# -- 431 ---------------------------------------------------------------------------------------


def test_a_head_over_max_header_bytes_is_431_and_one_at_the_cap_is_served(
    serve: Callable[..., Running],
) -> None:
    srv = serve(max_header_bytes=4096)
    with dial(srv) as sock:
        sock.sendall(head_of(4096))
        assert read_response(sock)[0] == 200
        sock.sendall(head_of(4096, path="/api/info"))  # the cap is per request
        assert read_response(sock)[0] == 200
    with dial(srv) as sock:
        sock.sendall(head_of(4097))
        status, _, error = refusal(read_to_close(sock))
    assert status == 431
    assert error["code"] == "headers_too_large"
    assert error["type"] == "invalid_request_error"
    assert "4096 bytes" in error["message"]
    with dial(srv) as sock:  # never finished: answered at the cap, the rest discarded
        sock.sendall(b"GET / HTTP/1.1\r\nX-Big: ")
        try:
            for _ in range(64):
                sock.sendall(b"a" * 1000)
        except OSError:
            pass  # the server may close before all of it is sent
        status, _, _ = refusal(read_to_close(sock))
    assert status == 431
    assert connections_of(srv).total == 0 or wait_for(lambda: connections_of(srv).total == 0)


def test_more_than_max_headers_is_431(serve: Callable[..., Running]) -> None:
    srv = serve(max_headers=10)

    def with_headers(count: int) -> bytes:  # Host and count - 1 others
        extra = b"".join(b"X-%d: v\r\n" % i for i in range(count - 1))
        return b"GET /healthz HTTP/1.1\r\nHost: t\r\n" + extra + b"\r\n"

    with dial(srv) as sock:
        sock.sendall(with_headers(10))
        assert read_response(sock)[0] == 200
    with dial(srv) as sock:
        sock.sendall(with_headers(11))
        status, _, error = refusal(read_to_close(sock))
    assert (status, error["code"]) == (431, "headers_too_large")
    assert "more than 10 headers" in error["message"]


# -- 408 and idle connections ----------------------------------------------------------------


def test_a_slow_head_is_408_and_a_silent_connection_is_closed(
    serve: Callable[..., Running],
) -> None:
    srv = serve(header_timeout=0.5)
    with dial(srv) as slow, dial(srv) as silent:
        began = time.monotonic()
        slow.sendall(b"GET /healthz HTTP/1.1\r\n")
        slow.settimeout(0.1)
        answer = b""
        for i in range(100):  # slowloris: one header byte every 0.1 s, never the end
            try:
                slow.sendall(b"X-%d: 1\r\n" % i)
                answer = slow.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                break
            break
        slow.settimeout(10)
        status, _, error = refusal(answer + read_to_close(slow))
        elapsed = time.monotonic() - began
        assert (status, error["code"]) == (408, "request_timeout")
        assert "headers did not arrive within 0.5 s" in error["message"]
        assert elapsed >= 0.49  # the deadline runs from the connection's opening
        assert read_to_close(silent) == b""  # nothing came: nothing to answer


def test_a_slow_body_is_408(serve: Callable[..., Running]) -> None:
    srv = serve(body_timeout=0.5)
    with dial(srv) as sock:
        sock.sendall(
            b"POST /api/conversations HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            b'Content-Length: 40\r\n\r\n{"title": '
        )
        status, _, error = refusal(read_to_close(sock))
    assert (status, error["code"]) == (408, "request_timeout")
    assert "body did not arrive within 0.5 s" in error["message"]
    with srv.client() as c:  # nothing was half-created
        assert c.get("/api/conversations").json()["conversations"] == []


def test_idle_keep_alive_connections_are_closed(serve: Callable[..., Running]) -> None:
    srv = serve(keep_alive_timeout=1, header_timeout=0.3)
    with dial(srv) as sock:
        sock.sendall(GET)
        assert read_response(sock)[0] == 200
        sock.sendall(GET)  # kept alive
        assert read_response(sock)[0] == 200
        assert read_to_close(sock) == b""  # then closed once idle
    with dial(srv) as sock:  # a later head has its own deadline, from its first byte
        sock.sendall(GET)
        assert read_response(sock)[0] == 200
        sock.sendall(b"GET /healthz HTTP/1.1\r\n")
        status, _, error = refusal(read_to_close(sock))
    assert (status, error["code"]) == (408, "request_timeout")


def test_malformed_requests_are_still_400(serve: Callable[..., Running]) -> None:
    srv = serve()
    for request in (b"NOT HTTP AT ALL\r\n\r\n", b"GET http://[bad HTTP/1.1\r\nHost: t\r\n\r\n"):
        with dial(srv) as sock:
            sock.sendall(request)
            assert read_to_close(sock).startswith(b"HTTP/1.1 400 Bad Request\r\n")


def test_a_head_pipelined_during_a_stream(serve: Callable[..., Running]) -> None:
    """Its deadline starts when the stream ends, which it does not cut; a head over the cap
    cannot be answered in the middle of a response: the connection is closed."""
    srv = serve(header_timeout=0.3, max_header_bytes=2048)
    with srv.client() as c:
        cid = new_conversation(c)
    body = json.dumps({"content": paced("长", "interval=0.05;chunks=20")}).encode()
    ask = (
        f"POST /api/conversations/{cid}/messages HTTP/1.1\r\nHost: t\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    with dial(srv) as sock:
        sock.sendall(ask)
        assert sock.recv(65536).startswith(b"HTTP/1.1 200 OK\r\n")
        sock.sendall(b"GET /healthz HTTP/1.1\r\n")  # and nothing more
        rest = read_to_close(sock)
    _, _, after = rest.partition(b"event: end")
    assert after, rest[-500:]
    assert b'"end_reason":"completed"' in after.replace(b" ", b"")
    assert b"HTTP/1.1 408 Request Timeout\r\n" in after
    with dial(srv) as sock:
        sock.sendall(ask)
        assert sock.recv(65536).startswith(b"HTTP/1.1 200 OK\r\n")
        sock.sendall(b"GET /healthz HTTP/1.1\r\nX-Big: " + b"a" * 4096)
        rest = read_to_close(sock)
    assert b"event: end" not in rest
    assert b"HTTP/1.1 431" not in rest


def test_heads_and_bodies_in_any_packets_are_served(serve: Callable[..., Running]) -> None:
    srv = serve(max_header_bytes=1024)
    body = b'{"title": "padded"' + b" " * 5000 + b"}"
    post = (
        b"POST /api/conversations HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body)
    )
    with dial(srv) as sock:
        sock.sendall(post + body + GET + GET)  # a body over the head cap, then two pipelined
        status, _, created = read_response(sock)
        assert (status, json.loads(created)["title"]) == (201, "padded")
        assert read_response(sock)[0] == 200
        assert read_response(sock)[0] == 200
    with dial(srv) as sock:  # one byte at a time
        for byte in post + body:
            sock.send(bytes([byte]))
        assert read_response(sock)[0] == 201


# -- connection caps -----------------------------------------------------------------------------


def test_connection_caps_total_and_per_address(serve: Callable[..., Running]) -> None:
    srv = serve(max_connections=4, max_connections_per_ip=2)
    held = []
    for source in ("127.0.0.1", "127.0.0.1", "127.0.0.2", "127.0.0.2"):
        sock = dial(srv, source)
        sock.sendall(GET)
        assert read_response(sock)[0] == 200  # admitted, and kept alive
        held.append(sock)
    counted = connections_of(srv)
    assert (counted.total, counted.of("127.0.0.1"), counted.of("127.0.0.2")) == (4, 2, 2)
    with dial(srv, "127.0.0.3") as sock:
        status, headers, error = refusal(read_to_close(sock))
    assert (status, error["code"], error["type"]) == (503, "too_many_connections", "server_error")
    assert headers["retry-after"] == str(RETRY_AFTER)
    assert "the server has too many" in error["message"]
    held.pop().close()  # one of 127.0.0.2's
    wait_for(lambda: counted.total == 3)
    with dial(srv, "127.0.0.1") as sock:  # room in total, none for this address
        sock.sendall(GET)
        status, headers, error = refusal(read_to_close(sock))
    assert (status, error["code"]) == (503, "too_many_connections")
    assert "from your address" in error["message"]
    with dial(srv, "127.0.0.2") as sock:
        sock.sendall(GET)
        assert read_response(sock)[0] == 200
    for sock in held:
        sock.close()
    wait_for(lambda: counted.total == 0)
    with srv.client() as c:
        metrics = c.get("/metrics").text
    lines = metrics.splitlines()
    assert 'wenxin_connections_refused_total{reason="max_connections"} 1' in lines
    assert 'wenxin_connections_refused_total{reason="max_connections_per_ip"} 1' in lines
    assert "wenxin_connections_open 1" in lines  # the one asking for the metrics
    (tasks,) = [line for line in lines if line.startswith("wenxin_asyncio_tasks ")]
    assert float(tasks.split()[1]) >= 1  # at least the one answering


def test_a_websocket_holds_its_connection_until_it_closes(serve: Callable[..., Running]) -> None:
    srv = serve(max_connections_per_ip=1, header_timeout=0.3)
    counted = connections_of(srv)
    with ws_connect(srv.url.replace("http://", "ws://") + "/api/ws", open_timeout=5) as ws:
        ws.send(json.dumps({"type": "ask", "id": "a", "content": paced("长", "interval=0.05")}))
        frames = []
        while not frames or frames[-1]["type"] != "end":  # longer than the head deadline
            frames.append(json.loads(ws.recv(timeout=10)))
        assert frames[-1]["end_reason"] == "completed"
        assert counted.of("127.0.0.1") == 1
        with dial(srv) as sock:
            status, _, error = refusal(read_to_close(sock))
        assert (status, error["code"]) == (503, "too_many_connections")
    wait_for(lambda: counted.total == 0)
    with srv.client() as c:
        assert c.get("/healthz").status_code == 200


# -- what the limits must not touch --------------------------------------------------------------


def test_a_stream_longer_than_every_deadline_is_not_cut(serve: Callable[..., Running]) -> None:
    srv = serve(header_timeout=0.3, body_timeout=0.3, keep_alive_timeout=1, ping_interval=0.2)
    with srv.client() as c:
        cid = new_conversation(c)
        question = paced("讲一个长故事", "interval=0.05;chunks=40")  # about 2 s
        began = time.monotonic()
        with c.stream(
            "POST", f"/api/conversations/{cid}/messages", json={"content": question}
        ) as r:
            assert r.status_code == 200
            events = EventReader(r).rest()
        assert time.monotonic() - began > 1.0  # longer than every deadline above
        end = json.loads(events[-1].data)
        assert (events[-1].event, end["end_reason"]) == ("end", "completed")
        assert len(texts(events)) > 0
        body = {"model": "ernie-4.0-8k", "stream": True, "messages": [{"role": "user",
                "content": question}]}  # fmt: skip
        with c.stream("POST", "/v1/chat/completions", json=body) as r:
            raw = b"".join(r.iter_raw())
        assert raw.rstrip().endswith(b"data: [DONE]")
        assert b'"finish_reason": "stop"' in raw or b'"finish_reason":"stop"' in raw


def _ends(srv: Running, reason: str) -> float:
    """How many streams ended with ``reason`` (``/metrics``)."""
    with srv.client() as c:
        text = c.get("/metrics").text
    prefix = f'wenxin_stream_ends_total{{reason="{reason}"}} '
    lines = [line for line in text.splitlines() if line.startswith(prefix)]
    return float(lines[0].removeprefix(prefix)) if lines else 0.0


def test_streams_follow_their_clients_through_the_protocols_signal(
    serve: Callable[..., Running],
) -> None:
    """On the server's own protocol the streaming routes watch their clients without a task
    (``_connection.follow``): a silent stream is pinged, and a client gone mid-answer stops
    it at once, on the native and the OpenAI route."""
    srv = serve(resume_grace=0.0, ping_interval=0.1)
    with srv.client() as c:
        cid = new_conversation(c)
        with c.stream(
            "POST", f"/api/conversations/{cid}/messages",
            json={"content": paced("慢", "ttft=0.5;chunks=2")},
        ) as r:  # fmt: skip
            raw = b"".join(r.iter_raw())
        assert raw.count(b": ping") >= 2  # the silence before the first text was filled
        assert b"event: end" in raw

        endless = paced("无尽", "endless=1;interval=0.01")
        with c.stream("POST", f"/api/conversations/{cid}/messages", json={"content": endless}) as r:
            reader = EventReader(r)
            for _ in range(3):
                assert reader.next() is not None
        # the response is closed: the client is gone
        answer = wait_for(
            lambda: (
                (m := c.get(f"/api/conversations/{cid}").json()["messages"][-1])["status"]
                != "streaming"
                and m
            ),
            timeout=3,
        )
        assert (answer["status"], answer["end_reason"]) == ("partial", "client_disconnected")

        slow = paced("慢", "ttft=0.5;chunks=2")
        body = {"model": "ernie-4.0-8k", "stream": True,
                "messages": [{"role": "user", "content": slow}]}  # fmt: skip
        with c.stream("POST", "/v1/chat/completions", json=body) as r:
            assert r.status_code == 200
            raw = b"".join(r.iter_raw())
        assert raw.startswith(b": ping")  # the headers went out with the first ping
        assert raw.count(b": ping") >= 2
        assert raw.rstrip().endswith(b"data: [DONE]")

        before = _ends(srv, "client_disconnected")
        body = {"model": "ernie-4.0-8k", "stream": True,
                "messages": [{"role": "user", "content": endless}]}  # fmt: skip
        with c.stream("POST", "/v1/chat/completions", json=body) as r:
            chunks = r.iter_raw()
            assert next(chunks)
        wait_for(lambda: _ends(srv, "client_disconnected") > before, timeout=3)


# -- configuration -------------------------------------------------------------------------------


def test_settings_from_flags_environment_and_file(tmp_path: Path) -> None:
    defaults = ServerConfig()
    limits = http_limits(defaults)
    assert limits == HTTPLimits()  # one set of defaults
    for name in HTTPLimits.__dataclass_fields__:
        assert getattr(limits, name) == getattr(defaults, name)
    file = tmp_path / "serve.toml"
    file.write_text("max-header-bytes = 16384\nbody-timeout = 5\nmax-connections = 0\n")
    args = build_parser().parse_args(
        ["serve", "--config", str(file), "--max-headers", "50", "--header-timeout", "2.5"]
    )
    env = {"WENXIN_KEEP_ALIVE_TIMEOUT": "7", "WENXIN_MAX_CONNECTIONS_PER_IP": "0"}
    config = config_from_args(args, environ=env)
    assert http_limits(config) == HTTPLimits(
        max_header_bytes=16384,
        max_headers=50,
        header_timeout=2.5,
        body_timeout=5.0,
        keep_alive_timeout=7,
        max_connections=0,
        max_connections_per_ip=0,
    )


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"max_header_bytes": 0}, "max_header_bytes: must be greater than 0"),
        ({"max_headers": 0}, "max_headers: must be greater than 0"),
        ({"header_timeout": 0}, "header_timeout: must be greater than 0"),
        ({"body_timeout": -1}, "body_timeout"),
        ({"keep_alive_timeout": "1.5"}, "keep_alive_timeout"),
        ({"max_connections": -1}, "max_connections"),
    ],
)
def test_invalid_settings(values: dict[str, object], message: str) -> None:
    with pytest.raises(ServerConfigError, match=message):
        ServerConfig(**values)  # type: ignore[arg-type]


def test_limits_and_counts_by_themselves() -> None:
    for bad in ({"max_header_bytes": 0}, {"body_timeout": 0.0}, {"max_connections": -1}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            HTTPLimits(**bad)  # type: ignore[arg-type]
    count = Connections(HTTPLimits(max_connections=3, max_connections_per_ip=2))
    assert [count.admit("a"), count.admit("a"), count.admit("a")] == [
        None, None, "max_connections_per_ip",
    ]  # fmt: skip
    assert count.admit("b") is None
    assert count.admit("c") == "max_connections"
    count.release("a")
    assert (count.total, count.of("a"), count.of("b")) == (2, 1, 1)
    assert count.admit("c") is None
    for address in ("a", "b", "c"):
        count.release(address)
    assert (count.total, count.of("a")) == (0, 0)
    unlimited = Connections(HTTPLimits(max_connections=0, max_connections_per_ip=0))
    assert all(unlimited.admit("a") is None for _ in range(5000))


def test_the_protocol_needs_its_configuration() -> None:
    config = uvicorn.Config(lambda scope, receive, send: None)
    with pytest.raises(TypeError, match="LimitedConfig"):
        LimitedHttpToolsProtocol(config, uvicorn.server.ServerState(), {})
    base = counted_websocket_protocol(HttpToolsProtocol)
    assert counted_websocket_protocol(base) is base


@contextmanager
def limited(app: Any) -> Iterator[str]:
    """Any ASGI ``app`` under uvicorn with the limited protocol, on loopback: its URL."""
    server = uvicorn.Server(LimitedConfig(app, HTTPLimits(), log_level="warning", lifespan="off"))
    sock = bind_socket("127.0.0.1", 0)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started or not thread.is_alive(), timeout=10)
        assert server.started
        yield base_url_of(sock)
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def test_a_lost_connection_fires_its_requests_disconnect_signal_once_mid_response() -> None:
    fired: list[str] = []
    signals: list[DisconnectSignal | None] = []
    responding = threading.Event()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        signal = disconnect_signal(scope)
        signals.append(signal)
        if signal is None:
            return
        path = scope["path"]
        gone = asyncio.Event()

        def lost() -> None:
            fired.append(path)
            gone.set()

        signal.subscribe(lost)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        if path == "/whole":  # complete: a close afterwards is no disconnect of this request
            await send({"type": "http.response.body", "body": b"done"})
            return
        await send({"type": "http.response.body", "body": b"part", "more_body": True})
        responding.set()
        await asyncio.wait_for(gone.wait(), 30)  # no task waits in `receive`: the signal tells

    with limited(app) as url:
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(b"GET /whole HTTP/1.1\r\nHost: x\r\n\r\n")
            assert b"done" in sock.recv(4096)
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
            assert responding.wait(10)
        wait_for(lambda: fired == ["/stream"], timeout=10)
        time.sleep(0.1)
        assert fired == ["/stream"]  # once, and only the response in progress
    assert len(signals) == 2
    assert all(isinstance(s, DisconnectSignal) for s in signals)
    assert signals[0] is not signals[1]  # one per request


def test_a_disconnect_signal_fires_once_and_runs_a_late_subscriber_at_once() -> None:
    signal = DisconnectSignal()
    calls: list[str] = []
    signal.subscribe(lambda: calls.append("first"))
    signal.unsubscribe()
    signal.fire()
    signal.fire()
    assert calls == []
    assert signal.lost
    signal.subscribe(lambda: calls.append("late"))
    assert calls == ["late"]
    assert disconnect_signal({"extensions": {"wenxin.disconnect": signal}}) is signal
    assert disconnect_signal({}) is None
    assert disconnect_signal({"extensions": None}) is None
    assert disconnect_signal({"extensions": {"wenxin.disconnect": object()}}) is None


# -- the uvicorn internals the protocol relies on ------------------------------------------------

UVICORN_SOURCES = {
    # what _http_limits overrides or copies (data_received), or whose state it reads or sets
    HttpToolsProtocol.__init__: "4f08999410347141",
    HttpToolsProtocol.data_received: "010a7ae59a5d3b1a",
    HttpToolsProtocol.connection_made: "6efb565ff3d36b91",
    HttpToolsProtocol.connection_lost: "c91a4c9bf2e29c55",
    HttpToolsProtocol.handle_websocket_upgrade: "d5da377bfc77e588",
    HttpToolsProtocol.on_message_begin: "96d377fdc7c2baef",  # the scope, without extensions
    HttpToolsProtocol.on_header: "1e86ebb6cea0458c",
    HttpToolsProtocol.on_headers_complete: "1ea8589acfad92d8",
    HttpToolsProtocol.on_message_complete: "1fbad42dc31fc01f",
    HttpToolsProtocol.on_response_complete: "64e254f28e389e76",
    HttpToolsProtocol.send_400_response: "ae5a4a3782b646fd",
    HttpToolsProtocol.shutdown: "d7351fa33f00d430",
    HttpToolsProtocol.timeout_keep_alive_handler: "8b53bf5f2e202970",  # drain: the idle close
    HttpToolsProtocol._unset_keepalive_if_required: "00a6a4e47214e68e",
    RequestResponseCycle.__init__: "4d2f220910c33c12",
    RequestResponseCycle.send: "abdd8601b326a8da",
    RequestResponseCycle.receive: "8124ae006be71184",
    RequestResponseCycle.run_asgi: "0f33f2449a444bc2",
}


def test_uvicorn_is_the_version_the_protocol_was_written_for() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]["server"]
    (pin,) = [spec for spec in extras if spec.startswith("uvicorn[standard]")]
    assert uvicorn.__version__ in SpecifierSet(pin.removeprefix("uvicorn[standard]")), (
        f"uvicorn {uvicorn.__version__} is outside the range {pin} that _http_limits was "
        "written and tested for"
    )
    changed = [
        function.__qualname__
        for function, digest in UVICORN_SOURCES.items()
        if hashlib.sha256(inspect.getsource(function).encode()).hexdigest()[:16] != digest
    ]
    assert changed == [], (
        f"uvicorn {uvicorn.__version__} changed {changed}: _http_limits overrides, copies or "
        "relies on these. Re-read them against _http_limits.py, adapt it, then record the new "
        "digests here (and widen the pin in pyproject.toml)."
    )


def test_without_httptools_serve_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delitem(sys.modules, "wenxin_stream._http_limits", raising=False)
    monkeypatch.setitem(sys.modules, "httptools", None)  # import httptools → ImportError
    args = build_parser().parse_args(["serve", "--port", "0", "--data-dir", str(tmp_path)])
    with pytest.raises(
        CommandError, match=r"needs httptools: pip install 'wenxin-stream\[server\]'"
    ):
        serve_command(args)
