"""The load generator's HTTP/1.1 client against a scripted raw server on loopback."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from wenxin_stream.bench._client import (
    BufferSink,
    Connection,
    StreamAbort,
    build_request,
    fetch,
)
from wenxin_stream.bench._http import ResponseHead

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
Responder = Callable[[list[bytes]], Awaitable[int]]

CHUNKED_OK = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
)


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return head + (await reader.readexactly(length) if length else b"")


async def serve(handler: Handler) -> AsyncIterator[int]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield port
    finally:
        server.close()


@pytest.fixture
async def responder() -> AsyncIterator[Responder]:
    """A server that answers the n-th request on a connection with the n-th scripted reply,
    then closes the connection."""
    servers: list[asyncio.Server] = []

    async def start(replies: list[bytes]) -> int:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                for reply in replies:
                    await read_request(reader)
                    writer.write(reply)
                    await writer.drain()
                await asyncio.sleep(0.05)
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
            finally:
                writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    yield start
    for server in servers:
        server.close()


def get(port: int, path: str = "/") -> bytes:
    return build_request("GET", path, f"127.0.0.1:{port}", [("Accept", "*/*")])


async def test_keep_alive_carries_several_requests(responder: Responder) -> None:
    port = await responder([CHUNKED_OK, b"HTTP/1.1 204 No Content\r\n\r\n", CHUNKED_OK])
    conn = await Connection.open("127.0.0.1", port)
    first = await fetch(conn, get(port), "GET")
    assert first.head is not None
    assert first.head.status == 200
    assert bytes(first.body) == b"hello world"
    assert conn.reusable
    second = await fetch(conn, get(port), "GET")
    assert second.head is not None
    assert second.head.status == 204
    third = await fetch(conn, get(port), "GET")
    assert bytes(third.body) == b"hello world"
    assert not conn.busy
    conn.close(reset=True)
    conn.close()  # twice is fine
    assert not conn.reusable
    with pytest.raises(RuntimeError, match="not reusable"):
        conn.send(get(port), BufferSink())


async def test_close_delimited_body(responder: Responder) -> None:
    port = await responder([b"HTTP/1.0 200 OK\r\n\r\nuntil the end"])
    conn = await Connection.open("127.0.0.1", port)
    sink = await fetch(conn, get(port), "GET")
    assert sink.error is None
    assert bytes(sink.body) == b"until the end"
    assert not conn.reusable


async def test_connection_close_header(responder: Responder) -> None:
    port = await responder([b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"])
    conn = await Connection.open("127.0.0.1", port)
    sink = await fetch(conn, get(port), "GET")
    assert bytes(sink.body) == b"ok"
    assert not conn.reusable


async def test_body_cut_short_is_incomplete(responder: Responder) -> None:
    port = await responder([b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel"])
    conn = await Connection.open("127.0.0.1", port)
    sink = await fetch(conn, get(port), "GET")
    assert sink.error is not None
    assert sink.error[0] == "incomplete"
    assert bytes(sink.body) == b"hel"


async def test_malformed_response_is_a_protocol_error(responder: Responder) -> None:
    port = await responder([b"SMTP ready\r\n\r\n"])
    conn = await Connection.open("127.0.0.1", port)
    sink = await fetch(conn, get(port), "GET")
    assert sink.error is not None
    assert sink.error[0] == "protocol_error"
    assert not conn.reusable


async def test_unsolicited_bytes_after_a_response(responder: Responder) -> None:
    port = await responder([b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA"])
    conn = await Connection.open("127.0.0.1", port)
    sink = await fetch(conn, get(port), "GET")
    assert sink.error is not None
    assert "unsolicited" in sink.error[1]


async def test_bytes_on_an_idle_connection_are_refused() -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(0.2)
        writer.close()

    async for port in serve(handle):
        conn = await Connection.open("127.0.0.1", port)
        for _ in range(100):
            if not conn.reusable:
                break
            await asyncio.sleep(0.01)
        assert not conn.reusable


async def test_sink_can_abort_and_runner_can_abort(responder: Responder) -> None:
    class Refuse(BufferSink):
        def on_head(self, head: ResponseHead, now: float) -> None:
            raise StreamAbort("protocol_error", "not what I wanted")

    port = await responder([CHUNKED_OK])
    conn = await Connection.open("127.0.0.1", port)
    sink = Refuse()
    await conn.send(get(port), sink, "GET")
    assert sink.error == ("protocol_error", "not what I wanted")

    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(5)

    async for port2 in serve(slow):
        conn2 = await Connection.open("127.0.0.1", port2)
        sink2 = BufferSink()
        future = conn2.send(get(port2), sink2, "GET")
        await asyncio.sleep(0.05)
        assert conn2.busy
        assert conn2.last_activity > 0
        conn2.abort("timeout", "took too long")
        await asyncio.wait_for(future, 1)
        assert sink2.error == ("timeout", "took too long")
        conn2.abort("timeout", "again: no response in progress, just closes")


async def test_body_limit_of_buffer_sink(responder: Responder) -> None:
    port = await responder([b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 100])
    conn = await Connection.open("127.0.0.1", port)
    sink = await fetch(conn, get(port), "GET", limit=10)
    assert sink.error is not None
    assert "over 10 bytes" in sink.error[1]


async def test_connect_errors() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(OSError):
        await Connection.open("127.0.0.1", port)


def test_build_request() -> None:
    assert (
        build_request("GET", "/x", "h:1", [("A", "b")])
        == b"GET /x HTTP/1.1\r\nHost: h:1\r\nA: b\r\n\r\n"
    )
    post = build_request("POST", "/y", "h", [], b"{}")
    assert post.endswith(b"Content-Length: 2\r\n\r\n{}")
    assert b"Content-Length: 0" in build_request("POST", "/y", "h", [])


async def test_a_bug_in_a_sink_ends_the_stream_visibly(responder: Responder) -> None:
    class Buggy(BufferSink):
        def on_body(self, pieces: list[bytes], now: float) -> None:
            raise KeyError("oops")

    port = await responder([CHUNKED_OK])
    conn = await Connection.open("127.0.0.1", port)
    sink = Buggy()
    await asyncio.wait_for(conn.send(get(port), sink, "GET"), 2)
    assert sink.error == ("client_error", "KeyError: 'oops'")
