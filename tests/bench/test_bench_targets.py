"""Request shapes per target kind, pacing directives, and the native conversation cycle."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from wenxin_stream.bench._client import Connection, build_request
from wenxin_stream.bench._targets import (
    Endpoint,
    SetupError,
    TargetConfig,
    make_target,
    parse_pacing,
)


def test_parse_pacing_adds_stamp_and_reads_the_schedule() -> None:
    p = parse_pacing("ttft=0.2; interval=0.02 ;chunks=64")
    assert p.spec == "ttft=0.2;interval=0.02;chunks=64;stamp=1"
    assert (p.ttft, p.interval, p.chunks) == (0.2, 0.02, 64)
    assert p.has_schedule
    off = parse_pacing("chunks=3;stamp=0")
    assert off.spec == "chunks=3;stamp=0"
    assert not off.has_schedule
    with pytest.raises(ValueError, match="unknown fault key"):
        parse_pacing("speed=9")
    with pytest.raises(ValueError, match="twice"):
        parse_pacing("chunks=1;chunks=2")


def test_endpoint_parse() -> None:
    e = Endpoint.parse("http://127.0.0.1:8000/prefix/")
    assert (e.scheme, e.host, e.port, e.base_path, e.host_header) == (
        "http",
        "127.0.0.1",
        8000,
        "/prefix",
        "127.0.0.1:8000",
    )
    assert e.tls() is None
    assert Endpoint.parse("http://[::1]/").host_header == "[::1]"
    tls = Endpoint.parse("https://localhost")
    assert (tls.port, tls.host_header) == (443, "localhost")
    assert tls.tls() is not None
    for bad in ("ftp://x", "http://", "http://h/?q=1", "http://h/#f"):
        with pytest.raises(ValueError):
            Endpoint.parse(bad)


def request_of(kind: str, **kw: Any) -> tuple[str, dict[str, str], dict[str, Any]]:
    target = make_target(TargetConfig(kind=kind, url="http://127.0.0.1:9/base", **kw))
    target.setup_info["access_token"] = "24.tok/en"
    raw = target.request(7, {"conversation": "c-1"})
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return lines[0], headers, json.loads(body)


def test_openai_request() -> None:
    line, headers, body = request_of("openai", api_key="sk-1", pacing=parse_pacing("chunks=2"))
    assert line == "POST /base/v1/chat/completions HTTP/1.1"
    assert headers["Host"] == "127.0.0.1:9"
    assert headers["Authorization"] == "Bearer sk-1"
    assert headers["Accept"] == "text/event-stream"
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["model"] == "ernie-lite-8k"
    content = body["messages"][0]["content"]
    assert content.endswith("（第7问） [[wenxin:fault chunks=2;stamp=1]]")
    v1_base = make_target(TargetConfig(kind="openai", url="http://127.0.0.1:9/v1"))
    assert v1_base.path == "/v1/chat/completions"
    no_key = request_of("openai", headers=(("X-A", "b"),))[1]
    assert "Authorization" not in no_key
    assert no_key["X-A"] == "b"


def test_ernie_requests() -> None:
    line, headers, body = request_of("ernie-v2", model="ernie-4.0-8k")
    assert line == "POST /base/v2/chat/completions HTTP/1.1"
    assert headers["Authorization"].startswith("Bearer bce-v3/")
    assert body["model"] == "ernie-4.0-8k"
    line, headers, body = request_of("ernie-v1", model="ERNIE-4.0-8K")
    assert line == (
        "POST /base/rpc/2.0/ai_custom/v1/wenxinworkshop/chat/completions_pro"
        "?access_token=24.tok%2Fen HTTP/1.1"
    )
    assert "Authorization" not in headers
    assert body == {"messages": body["messages"], "stream": True}
    assert request_of("ernie-v1", endpoint="my-ep")[0].startswith(
        "POST /base/rpc/2.0/ai_custom/v1/wenxinworkshop/chat/my-ep?"
    )
    assert request_of("ernie-v2", path="/x")[0] == "POST /x HTTP/1.1"


def test_native_request_and_plain_question() -> None:
    line, _, body = request_of("native", model="m", question="问")
    assert line == "POST /base/api/conversations/c-1/messages HTTP/1.1"
    assert body == {"content": "问（第7问）", "model": "m"}


def test_make_target_errors() -> None:
    with pytest.raises(ValueError, match="unknown target kind"):
        make_target(TargetConfig(kind="grpc", url="http://127.0.0.1"))
    with pytest.raises(ValueError, match="--endpoint"):
        make_target(TargetConfig(kind="ernie-v1", url="http://127.0.0.1", model="gpt"))


@pytest.fixture
async def native_server() -> AsyncIterator[tuple[int, list[str]]]:
    """A scripted stand-in for the server's conversation routes; records request lines."""
    seen: list[str] = []
    counter = iter(range(1, 100))

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                if length:
                    await reader.readexactly(length)
                request_line = head.split(b"\r\n")[0].decode()
                seen.append(request_line)
                if request_line.startswith("DELETE"):
                    writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
                elif "fail" in request_line or len(seen) > 6:
                    writer.write(b"HTTP/1.1 500 Oops\r\nContent-Length: 4\r\n\r\nboom")
                else:
                    body = json.dumps({"id": f"c{next(counter)}"}).encode()
                    writer.write(
                        b"HTTP/1.1 201 Created\r\nContent-Length: %d\r\n\r\n" % len(body) + body
                    )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    yield int(server.sockets[0].getsockname()[1]), seen
    server.close()


async def test_native_conversation_cycle(native_server: tuple[int, list[str]]) -> None:
    port, seen = native_server
    target = make_target(
        TargetConfig(kind="native", url=f"http://127.0.0.1:{port}", native_turns=2)
    )
    conn = await Connection.open("127.0.0.1", port)
    state: dict[str, object] = {}
    for _ in range(5):
        await target.prepare(conn, state)
    assert seen == [
        "POST /api/conversations HTTP/1.1",
        "DELETE /api/conversations/c1 HTTP/1.1",
        "POST /api/conversations HTTP/1.1",
        "DELETE /api/conversations/c2 HTTP/1.1",
        "POST /api/conversations HTTP/1.1",
    ]
    assert state == {"conversation": "c3", "turns": 1}
    await target.prepare(conn, state)
    with pytest.raises(SetupError) as exc:
        await target.prepare(conn, state)  # the stand-in now answers 500
    assert exc.value.reason == "conversation_http_500"
    conn.close()
    with pytest.raises(SetupError, match="connection closed"):
        await target.prepare(conn, {"conversation": "c9", "turns": 99})


async def test_setup_errors(native_server: tuple[int, list[str]]) -> None:
    port, _ = native_server
    target = make_target(TargetConfig(kind="ernie-v1", url=f"http://127.0.0.1:{port}/fail"))

    async def opener() -> Connection:
        return await Connection.open("127.0.0.1", port)

    with pytest.raises(SetupError) as exc:
        await target.setup(opener)
    assert exc.value.reason == "oauth_http_500"
    ok = make_target(TargetConfig(kind="ernie-v1", url=f"http://127.0.0.1:{port}"))
    with pytest.raises(SetupError) as exc:
        await ok.setup(opener)  # 201 {"id": …}: no access_token in it
    assert exc.value.reason == "oauth_error"
    await make_target(TargetConfig(kind="openai", url="http://127.0.0.1:1")).setup(opener)


@pytest.mark.parametrize("question", ["请介绍长城。", "第0问 \ue000 tricky"])
@pytest.mark.parametrize("kind", ["openai", "native", "ernie-v1"])
def test_cached_request_equals_a_fresh_encoding(kind: str, question: str) -> None:
    target = make_target(
        TargetConfig(
            kind=kind, url="http://127.0.0.1:9", question=question, pacing=parse_pacing("chunks=3")
        )
    )
    target.setup_info["access_token"] = "tok"
    for n, conversation in ((0, "a"), (7, "a"), (12345, "b")):
        state = {"conversation": conversation}
        body = json.dumps(target.body(n, state), ensure_ascii=False).encode()
        fresh = build_request(
            "POST", target.stream_path(state), target.endpoint.host_header, target.headers, body
        )
        assert target.request(n, state) == fresh
