"""Every bad input of the contract's error table: the right status, code and shape, and never a
traceback."""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from server_helpers import Running, new_conversation, raw_request

CHAT = {"model": "ernie-lite-8k", "messages": [{"role": "user", "content": "hi"}]}


def _check(r: httpx.Response, status: int, code: str, param: str | None = None) -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "code", "param"}
    assert body["error"]["code"] == code
    assert body["error"]["message"]
    if param is not None:
        assert body["error"]["param"] == param
    assert "Traceback" not in r.text
    assert 'File "' not in r.text


@pytest.mark.parametrize(
    ("path", "content", "status", "code", "param"),
    [
        ("conv", b"{not json", 400, "invalid_json", None),
        ("conv", b"[1, 2]", 400, "invalid_json", None),
        ("conv", b"\xff\xfe", 400, "invalid_json", None),
        ("ask", b"{}", 400, "missing_field", "content"),
        ("ask", b'{"content": 5}', 400, "invalid_field", "content"),
        ("ask", b'{"content": "  "}', 400, "invalid_field", "content"),
        ("ask", b'{"content": "hi", "model": 7}', 400, "invalid_field", "model"),
        ("chat", b'{"messages": []}', 400, "missing_field", "model"),
        ("chat", b'{"model": "ernie-lite-8k"}', 400, "missing_field", "messages"),
        (
            "chat",
            b'{"model": "ernie-lite-8k", "messages": [{"role": "wizard", "content": "x"}]}',
            400,
            "invalid_messages",
            "messages",
        ),
        (
            "chat",
            b'{"model": "ernie-lite-8k", "messages": [{"role": ["user"], "content": "x"}]}',
            400,
            "invalid_messages",
            "messages",
        ),
        (
            "chat",
            b'{"model": "ernie-lite-8k", "messages": [{"role": "user", "content": ""}]}',
            400,
            "invalid_messages",
            "messages",
        ),
        ("chat", b'{"model": "ernie-lite-8k", "messages": "hi"}', 400, "invalid_messages", None),
        (
            "chat",
            b'{"model": "ernie-lite-8k", "messages": [{"role": "user", "content": "x"}], '
            b'"stream": "yes"}',
            400,
            "invalid_field",
            "stream",
        ),
        (
            "chat",
            b'{"model": "ernie-lite-8k", "messages": [{"role": "user", "content": "x"}], '
            b'"temperature": 9}',
            400,
            "invalid_field",
            "temperature",
        ),
        (
            "chat",
            b'{"model": "ernie-lite-8k", "messages": [{"role": "user", "content": "x"}], '
            b'"max_tokens": 0}',
            400,
            "invalid_field",
            "max_tokens",
        ),
        (
            "chat",
            b'{"model": "ernie-lite-8k", "messages": [{"role": "user", "content": "x"}], '
            b'"stop": 5}',
            400,
            "invalid_field",
            "stop",
        ),
        (
            "chat",
            b'{"model": "ernie-lite-8k", "messages": [{"role": "user", "content": '
            b'[{"type": "image_url"}]}]}',
            400,
            "invalid_messages",
            "messages",
        ),
        (
            "chat",
            b'{"model": "ernie-lite-8k", "messages": [{"role": "user", "content": "x"}], '
            b'"stop": ["a", "b", "c", "d", "e"]}',
            400,
            "invalid_field",
            "stop",
        ),
    ],
)
def test_bad_bodies(
    shared: Running, path: str, content: bytes, status: int, code: str, param: str | None
) -> None:
    with shared.client() as c:
        url = {
            "conv": "/api/conversations",
            "ask": f"/api/conversations/{new_conversation(c)}/messages",
            "chat": "/v1/chat/completions",
        }[path]
        r = c.post(url, content=content, headers={"content-type": "application/json"})
        _check(r, status, code, param)


def test_not_found_and_method_not_allowed(shared: Running) -> None:
    with shared.client() as c:
        _check(c.get("/nowhere"), 404, "not_found")
        _check(c.get("/api/conversations/c_missing"), 404, "not_found")
        _check(c.delete("/api/conversations/c_missing"), 404, "not_found")
        _check(
            c.post("/api/conversations/c_missing/messages", json={"content": "x"}), 404, "not_found"
        )
        _check(c.get("/api/streams/s_missing"), 404, "not_found")
        _check(c.post("/api/streams/s_missing/cancel"), 404, "not_found")
        r = c.put("/api/conversations")
        _check(r, 405, "method_not_allowed")
        assert r.headers["allow"] == "GET, POST"
        _check(c.get("/v1/chat/completions"), 405, "method_not_allowed")
        _check(c.get("/api/conversations", params={"limit": "x"}), 400, "invalid_field", "limit")


def test_body_too_large(make_server: Callable[..., Running]) -> None:
    srv = make_server(max_body_bytes=1000)
    big = b'{"content": "' + b"x" * 2000 + b'"}'
    with srv.client() as c:
        _check(c.post("/api/conversations", content=big), 413, "body_too_large")

        def chunks() -> Any:  # no Content-Length: the limit applies while reading
            yield big[:600]
            yield big[600:]

        _check(c.post("/v1/chat/completions", content=chunks()), 413, "body_too_large")
    sock = raw_request(
        srv.url,
        "POST",
        "/api/conversations",
        headers={"Content-Length": "999999999", "Content-Type": "application/json"},
    )
    with sock:
        sock.settimeout(5)
        answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 413")
    assert b"body_too_large" in answer


def test_internal_errors_are_caught(
    make_server: Callable[..., Running], monkeypatch: pytest.MonkeyPatch
) -> None:
    srv = make_server()

    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("secret internals /etc/passwd")

    monkeypatch.setattr(srv.app.store, "list_conversations", broken)
    with srv.client() as c:
        r = c.get("/api/conversations")
        _check(r, 500, "internal_error")
        assert "passwd" not in r.text
        assert c.get("/healthz").status_code == 200  # still serving
    assert 'wenxin_errors_total{kind="internal"} 1' in srv.app.metrics.render().decode()


def test_garbage_on_the_socket_does_not_hurt(shared: Running) -> None:
    host, port = shared.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(b"\x16\x03\x01 garbage \r\n\r\n")
        sock.settimeout(5)
        assert sock.recv(100).startswith(b"HTTP/1.1 400")
    with shared.client() as c:
        assert c.get("/healthz").json() == {"status": "ok"}
