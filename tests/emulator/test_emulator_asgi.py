"""The ASGI app called directly with fake receive/send: the safety net and the edges."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wenxin_stream._aio import race
from wenxin_stream._asgi import Message, Request, TrackingSend, wait_for_disconnect
from wenxin_stream.emulator import EmulatorConfig, _v1, _v2, create_app

FAST = EmulatorConfig(ttft=0, interval=0, v2_interval=0, thinking_interval=0)
FAST_CONFIG = EmulatorConfig(ttft=0, interval=0, v2_interval=0, thinking_interval=0, no_auth=True)


def scope(
    path: str,
    method: str = "POST",
    query: bytes = b"",
    headers: list[tuple[bytes, bytes]] | None = None,
) -> dict[str, Any]:
    return {
        "type": "http",
        "method": method,
        "path": path,
        "query_string": query,
        "headers": headers or [(b"authorization", b"Bearer k")],
    }


class Peer:
    """Fake ASGI peer: feeds a body, then (optionally) a disconnect; records what is sent."""

    def __init__(self, body: bytes = b"", *, disconnect_first: bool = False) -> None:
        self.body = body
        self.disconnect_first = disconnect_first
        self.sent: list[Message] = []
        self.done = asyncio.Event()

    async def receive(self) -> Message:
        if self.disconnect_first:
            return {"type": "http.disconnect"}
        if self.body is not None:
            body, self.body = self.body, None  # type: ignore[assignment]
            return {"type": "http.request", "body": body, "more_body": False}
        await self.done.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        self.sent.append(message)
        if message["type"] == "http.response.body" and not message.get("more_body"):
            self.done.set()

    @property
    def status(self) -> int:
        return int(self.sent[0]["status"])

    def json(self) -> Any:
        return json.loads(b"".join(m.get("body", b"") for m in self.sent[1:]))


V2_BODY = json.dumps(
    {"model": "ernie-4.0-8k", "messages": [{"role": "user", "content": "hi"}]}
).encode()


async def test_internal_error_in_v2_shape(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def boom(*args: Any) -> None:
        raise RuntimeError("kaboom")

    monkeypatch.setattr(_v2, "handle", boom)
    peer = Peer(V2_BODY)
    with caplog.at_level(logging.ERROR, "wenxin_stream.emulator"):
        await create_app(FAST)(scope("/v2/chat/completions"), peer.receive, peer.send)
    assert peer.status == 500
    assert peer.json()["error"]["code"] == "internal_error"
    assert len(caplog.records) == 1
    assert "kaboom" in caplog.records[0].getMessage()
    assert caplog.records[0].exc_info is None


async def test_internal_error_in_v1_shape_with_debug_traceback(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def boom(*args: Any) -> None:
        raise ValueError("bad")

    monkeypatch.setattr(_v1, "handle", boom)
    peer = Peer()
    app = create_app(EmulatorConfig(debug=True))
    with caplog.at_level(logging.ERROR, "wenxin_stream.emulator"):
        await app(
            scope("/rpc/2.0/ai_custom/v1/wenxinworkshop/chat/completions"), peer.receive, peer.send
        )
    assert peer.status == 200
    assert peer.json() == {"error_code": 336000, "error_msg": "Internal error"}
    assert caplog.records[0].exc_info is not None


async def test_error_after_start_abandons_the_response(monkeypatch: pytest.MonkeyPatch) -> None:
    async def half(shared: Any, request: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        raise RuntimeError("mid-stream")

    monkeypatch.setattr(_v2, "handle", half)
    peer = Peer()
    await create_app(FAST)(scope("/v2/chat/completions"), peer.receive, peer.send)
    assert [m["type"] for m in peer.sent] == ["http.response.start"]


async def test_other_paths_internal_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from wenxin_stream.emulator import _app

    async def boom(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("x")

    monkeypatch.setattr(_app, "send_json", boom)
    peer = Peer()
    with pytest.raises(RuntimeError):
        # the fallback answer itself uses send_json, so the failure propagates to the server
        await create_app(FAST)(scope("/healthz", "GET"), peer.receive, peer.send)


async def test_cancellation_ends_quietly() -> None:
    peer = Peer(V2_BODY)
    app = create_app(EmulatorConfig(ttft=10))
    task = asyncio.create_task(app(scope("/v2/chat/completions"), peer.receive, peer.send))
    await asyncio.sleep(0.05)
    task.cancel()
    await task  # returns normally: no exception for the server to log
    assert not task.cancelled()


async def test_disconnect_while_reading_the_body(caplog: pytest.LogCaptureFixture) -> None:
    paths = (
        "/v2/chat/completions",
        "/rpc/2.0/ai_custom/v1/wenxinworkshop/chat/completions",
        "/v1/chat/completions",
    )
    for path in paths:
        peer = Peer(disconnect_first=True)
        headers = [(b"authorization", b"Bearer k")]
        app = create_app(EmulatorConfig(no_auth=True))
        await app(scope(path, headers=headers), peer.receive, peer.send)
        assert peer.sent == []
    assert [r for r in caplog.records if r.levelname == "ERROR"] == []  # not an internal error


async def test_disconnect_during_a_stream_stops_it() -> None:
    body = json.dumps(
        {"model": "ernie-4.0-8k", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    )
    peer = Peer(body.encode())
    app = create_app(EmulatorConfig(ttft=0, v2_interval=0.01))

    async def hang_up() -> None:
        while len(peer.sent) < 4:  # noqa: ASYNC110 (polling a fake peer's record)
            await asyncio.sleep(0.005)
        peer.done.set()

    hang = asyncio.create_task(hang_up())
    await asyncio.wait_for(app(scope("/v2/chat/completions"), peer.receive, peer.send), 5)
    await hang
    assert not any(m.get("more_body") is False for m in peer.sent)
    assert app.shared.active_streams == 0


async def test_lifespan_and_websocket() -> None:
    app = create_app()
    messages = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])
    sent: list[Message] = []

    async def receive() -> Message:
        return next(messages)

    async def send(message: Message) -> None:
        sent.append(message)

    await app({"type": "lifespan"}, receive, send)
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    sent.clear()
    await app({"type": "websocket", "path": "/"}, receive, send)
    assert sent == [{"type": "websocket.close", "code": 1008}]


def test_request_decoding() -> None:
    request = Request.from_scope(
        {
            "method": "post",
            "path": "/p",
            "query_string": b"a=1&a=2&b=",
            "headers": [(b"X-A", b"1"), (b"x-a", b"2")],
        }
    )
    assert request.method == "POST"
    assert request.query_value("a") == "1"
    assert request.query_value("b") == ""
    assert request.query_value("c") is None
    assert request.headers == {"x-a": "1, 2"}


async def test_racing_the_disconnect_propagates_errors() -> None:
    async def receive() -> Message:
        await asyncio.sleep(10)
        return {"type": "http.disconnect"}

    async def fail() -> None:
        raise KeyError("x")

    with pytest.raises(KeyError):
        await race(fail(), wait_for_disconnect(receive))


async def test_wait_for_disconnect_skips_other_messages() -> None:
    messages: list[Message] = [
        {"type": "http.request", "body": b"", "more_body": True},
        {"type": "websocket.receive", "text": "x"},
        {"type": "websocket.disconnect", "code": 1000},
    ]

    async def receive() -> Message:
        return messages.pop(0)

    await asyncio.wait_for(wait_for_disconnect(receive), 1)
    assert messages == []


async def test_tracking_send_remembers_the_status() -> None:
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    tracked = TrackingSend(send)
    assert (tracked.status, tracked.started) == (0, False)
    await tracked({"type": "http.response.start", "status": 418, "headers": []})
    await tracked({"type": "http.response.body", "body": b"x"})
    assert (tracked.status, tracked.started) == (418, True)
    assert tracked.raw is send
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]


def test_run_in_thread_handle() -> None:
    import httpx

    from wenxin_stream.emulator import run_in_thread

    with run_in_thread(EmulatorConfig(ttft=0)) as handle:
        assert handle.base_url == f"http://127.0.0.1:{handle.port}"
        assert httpx.get(handle.base_url + "/healthz").json() == {"status": "ok"}
    assert not handle.thread.is_alive()


def test_serve_in_thread_reports_a_failed_start(monkeypatch: pytest.MonkeyPatch) -> None:
    import uvicorn

    from wenxin_stream.emulator import serve_in_thread

    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets: None)
    with pytest.raises(RuntimeError, match="did not start"):
        serve_in_thread(create_app(), startup_timeout=2)


def test_importing_the_emulator_does_not_import_uvicorn() -> None:
    import subprocess
    import sys

    code = "import sys, wenxin_stream.emulator, wenxin_stream.cli; print('uvicorn' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"


async def test_v2_content_parts_are_read() -> None:
    body = json.dumps(
        {
            "model": "ernie-4.5-vl-28b-a3b",
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "天气 "},
                        {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
                        {"type": "text", "text": "[[wenxin:fault error=2]]"},
                    ],
                }
            ],
        }
    ).encode()
    peer = Peer(body)
    await create_app(FAST)(scope("/v2/chat/completions"), peer.receive, peer.send)
    assert peer.status == 503
    assert peer.json()["error"]["code"] == "service_unavailable"


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
_MESSAGE = st.fixed_dictionaries(
    {
        "role": st.sampled_from(["user", "assistant", "system", "tool", 3]),
        "content": _JSON | st.text(max_size=12),
    }
)
_BODY = st.fixed_dictionaries(
    {},
    optional={
        "model": _JSON
        | st.sampled_from(["m", "ernie-4.0-8k", "ernie-x1.1", "ernie-5.1", "ernie-4.5-vl-28b-a3b"]),
        "messages": st.lists(_MESSAGE, max_size=4) | _JSON,
        "stream": st.booleans() | _JSON,
        "stream_options": _JSON,
        "stop": _JSON,
        "temperature": _JSON,
        "max_tokens": _JSON,
        "max_output_tokens": _JSON,
        "system": _JSON,
        "tools": _JSON
        | st.just([{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]),
        "tool_choice": _JSON | st.sampled_from(["auto", "none", "required"]),
        "web_search": _JSON | st.just({"enable": True, "enable_citation": True}),
        "enable_thinking": _JSON,
        "thinking_budget": _JSON,
        "response_format": _JSON,
        "functions": _JSON,
    },
)


@settings(max_examples=150, deadline=None)
@given(body=_BODY, v1_route=st.booleans())
def test_fuzzed_bodies_never_cause_an_internal_error(body: dict[str, Any], v1_route: bool) -> None:
    path = (
        "/rpc/2.0/ai_custom/v1/wenxinworkshop/chat/completions"
        if v1_route
        else "/v2/chat/completions"
    )
    peer = Peer(json.dumps(body).encode())
    app = create_app(FAST_CONFIG)
    headers: list[tuple[bytes, bytes]] = [] if v1_route else [(b"authorization", b"Bearer k")]
    asyncio.run(asyncio.wait_for(app(scope(path, headers=headers), peer.receive, peer.send), 10))
    start = peer.sent[0]
    assert start["type"] == "http.response.start"
    assert start["status"] in (200, 400, 401)  # 401: a model outside the roster
    if dict(start["headers"])[b"content-type"] == b"application/json":
        reply = peer.json()
        assert reply.get("error_code") != 336000
        assert reply.get("error", {}).get("code") != "internal_error"
