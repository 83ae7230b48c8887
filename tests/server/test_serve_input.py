"""Input hygiene: text that no UTF-8 encoder can write (lone surrogate escapes) and numbers that
``str.isdigit`` accepts but ``int`` refuses are 400 ``invalid_field`` naming the field — on every
route and the WebSocket — never a 500, and nothing is stored; the OpenAPI document's
mismatches with the server (bodyless create, ``GET /api/ws``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from server_helpers import Running, new_conversation, server_config, sse_events
from websockets.sync.client import connect

from wenxin_stream.server import create_app

LONE = '"\\ud800"'  # JSON text: a lone high surrogate once decoded


def lone(template: str) -> str:
    """``template`` (JSON text) with its ``LONE`` replaced by a lone surrogate escape."""
    return template.replace("LONE", LONE)


CHAT = '{"model": "ernie-lite-8k", "messages": [{"role": "user", "content": %s}]}'


def _post(c: httpx.Client, url: str, raw: str, method: str = "POST") -> httpx.Response:
    return c.request(
        method, url, content=raw.encode(), headers={"content-type": "application/json"}
    )


def _invalid(r: httpx.Response, param: str) -> None:
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert (error["code"], error["param"]) == ("invalid_field", param)
    assert "surrogate" in error["message"]


@pytest.mark.parametrize(
    ("route", "raw", "param"),
    [
        ("create", lone('{"title": LONE}'), "title"),
        ("create", lone('{"system": "好" , "model": LONE}'), "model"),
        ("create", '{"system": "a\\udfffb"}', "system"),
        ("rename", lone('{"title": LONE}'), "title"),
        ("ask", lone('{"content": LONE}'), "content"),
        ("ask", lone('{"content": "你好", "model": LONE}'), "model"),
        ("chat", lone(CHAT % "LONE"), "messages[0].content"),
        ("chat", lone(CHAT % '[{"type": "text", "text": "ok"}, {"type": "text", "text": LONE}]'),
         "messages[0].content[1].text"),
        ("chat", lone('{"model": LONE, "messages": []}'), "model"),
        ("chat", lone(CHAT[:-1] % '"hi"' + ', "user": LONE}'), "user"),
        ("chat", lone(CHAT[:-1] % '"hi"' + ', "stop": ["a", LONE]}'), "stop[1]"),
        ("chat", '{"\\ud800": 1}', "body (a key)"),
    ],
)  # fmt: skip
def test_lone_surrogates_are_400_naming_the_field(
    shared: Running, route: str, raw: str, param: str
) -> None:
    with shared.client() as c:
        cid = new_conversation(c)
        url = {
            "create": "/api/conversations",
            "rename": f"/api/conversations/{cid}",
            "ask": f"/api/conversations/{cid}/messages",
            "chat": "/v1/chat/completions",
        }[route]
        r = _post(c, url, raw, "PATCH" if route == "rename" else "POST")
        _invalid(r, param)
        conv = c.get(f"/api/conversations/{cid}").json()
    assert conv["messages"] == []  # nothing stored: no question, no answer stuck streaming
    assert conv["title"] == ""


def test_escapes_that_are_text_still_pass(shared: Running) -> None:
    with shared.client() as c:
        r = _post(c, "/api/conversations", '{"title": "\\u4f60\\u597d \\ud83d\\ude00 \\\\ud800"}')
    assert r.status_code == 201, r.text
    assert r.json()["title"] == "你好 😀 \\ud800"  # a pair is one character; "\\\\u" is text


def test_lone_surrogates_in_websocket_frames(shared: Running) -> None:
    with connect(shared.url.replace("http", "ws") + "/api/ws") as ws:
        ws.send(lone('{"type": "ask", "id": "s1", "content": LONE}'))
        frame = json.loads(ws.recv(timeout=10))
        assert (frame["type"], frame["code"], frame["param"]) == (
            "error",
            "invalid_field",
            "content",
        )
        assert frame["id"] == "s1"
        ws.send(lone('{"type": "ask", "id": LONE, "content": "x"}'))
        frame = json.loads(ws.recv(timeout=10))
        assert (frame["code"], frame["param"]) == ("invalid_field", "id")
        assert "id" not in frame  # the id itself cannot be echoed
        ws.send(lone('{"type": "auth", "api_key": LONE}'))
        assert json.loads(ws.recv(timeout=10))["param"] == "api_key"
        ws.send(json.dumps({"type": "ask", "id": "ok", "content": "还好吗"}))
        kinds = []
        while not kinds or kinds[-1] != "end":
            kinds.append(json.loads(ws.recv(timeout=10))["type"])
    assert kinds[0] == "start"  # the socket stayed open and useful


@pytest.mark.parametrize("value", ["²", "٣", "1²", "+5", "-1", "0x10", "9" * 5000, "0" * 5000])
def test_limit_is_parsed_strictly(shared: Running, value: str) -> None:
    with shared.client() as c:
        r = c.get("/api/conversations", params={"limit": value})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == "limit"


def test_limit_with_leading_zeros_is_still_a_number(shared: Running) -> None:
    with shared.client() as c:
        assert c.get("/api/conversations", params={"limit": "0007"}).status_code == 200


def test_last_event_id_is_parsed_strictly(shared: Running) -> None:
    with shared.client() as c:
        cid = new_conversation(c)
        events = sse_events(
            c.post(f"/api/conversations/{cid}/messages", json={"content": "你好"}).content
        )
        sid = json.loads(events[0].data)["stream_id"]
        for value in ("²", f"{sid}:²", "9" * 5000, f"{sid}:" + "9" * 5000, "١"):
            answers = [c.get(f"/api/streams/{sid}", params={"last_event_id": value})]
            if all(ord(ch) < 256 for ch in value):  # a header is latin-1 ("²" is 0xB2)
                header = {"Last-Event-ID": value.encode("latin-1")}
                answers.append(c.get(f"/api/streams/{sid}", headers=header))
            for r in answers:
                assert r.status_code == 400, (value[:20], r.text)
                assert r.json()["error"]["param"] == "last_event_id"
        resumed = c.get(f"/api/streams/{sid}", params={"last_event_id": f"{sid}:000"})
        assert resumed.status_code == 200  # leading zeros are still the number 0


async def _asgi_post(app: Any, headers: list[tuple[bytes, bytes]], body: bytes) -> int:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/api/conversations", "headers": headers}
    await app(scope, receive, send)
    status: int = sent[0]["status"]
    return status


async def test_content_length_is_parsed_strictly(tmp_path: Path) -> None:
    """uvicorn's parsers refuse such headers before the app; any other ASGI server must not
    make them a 500 either."""
    app = create_app(server_config(tmp_path / "d", "http://127.0.0.1:9"))
    await app.startup()
    try:
        json_type = (b"content-type", b"application/json")
        assert await _asgi_post(app, [(b"content-length", b"9" * 5000), json_type], b"{}") == 413
        assert (
            await _asgi_post(app, [(b"content-length", b"0" * 5000 + b"2"), json_type], b"{}")
            == 201
        )
        assert await _asgi_post(app, [(b"content-length", b"\xb2"), json_type], b"{}") == 201
        assert await _asgi_post(app, [(b"content-length", b"1\xb2"), json_type], b"{}") == 201
    finally:
        await app.shutdown()


def test_a_bodyless_create_makes_a_conversation(shared: Running) -> None:
    with shared.client() as c:
        r = c.post("/api/conversations")
        assert r.status_code == 201, r.text
        assert r.json()["messages"] == []
        spaces = c.post(
            "/api/conversations", content=b"  \n", headers={"content-type": "application/json"}
        )
        assert spaces.status_code == 201
        assert c.post("/api/conversations/x/messages").status_code in (400, 404)


def test_a_plain_get_of_the_websocket_is_426(shared: Running) -> None:
    with shared.client() as c:
        r = c.get("/api/ws")
    assert r.status_code == 426
    assert r.headers["upgrade"] == "websocket"
    assert r.json()["error"]["code"] == "upgrade_required"
