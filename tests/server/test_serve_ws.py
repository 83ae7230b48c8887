"""The WebSocket: concurrent asks on one socket, in-band cancel, bad frames, authentication."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from server_helpers import Running, new_conversation, paced
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from wenxin_stream.server._store import SyncKeyAdmin


def _ws(srv: Running) -> ClientConnection:
    return connect(srv.url.replace("http://", "ws://") + "/api/ws", open_timeout=5)


def _send(ws: ClientConnection, **frame: Any) -> None:
    ws.send(json.dumps(frame))


def _recv(ws: ClientConnection) -> dict[str, Any]:
    frame: dict[str, Any] = json.loads(ws.recv(timeout=5))
    return frame


def test_two_concurrent_asks_and_an_in_band_cancel(shared: Running) -> None:
    with shared.client() as c:
        cid = new_conversation(c)
    with _ws(shared) as ws:
        _send(
            ws,
            type="ask",
            id="a",
            conversation_id=cid,
            content=paced("第一个", "interval=0.01;chunks=50"),
        )
        _send(ws, type="ask", id="b", content=paced("第二个", "endless=1;interval=0.01"))
        frames: dict[str, list[dict[str, Any]]] = {"a": [], "b": []}
        order: list[tuple[str, str]] = []
        cancelled = False
        while not (
            frames["a"]
            and frames["a"][-1]["type"] == "end"
            and frames["b"]
            and frames["b"][-1]["type"] == "end"
        ):
            frame = _recv(ws)
            frames[frame["id"]].append(frame)
            order.append((frame["id"], frame["type"]))
            if not cancelled and sum(f["type"] == "delta" for f in frames["b"]) >= 3:
                _send(ws, type="cancel", id="b")
                cancelled = True
    a, b = frames["a"], frames["b"]
    assert a[0]["type"] == b[0]["type"] == "start"
    assert a[0]["conversation_id"] == cid
    assert b[0]["conversation_id"] != cid
    assert a[-1]["end_reason"] == "completed"
    assert b[-1]["end_reason"] == "cancelled"
    log = [(who, kind) for who, kind in order]
    a_end = log.index(("a", "end"))
    b_first = log.index(("b", "delta"))
    assert ("b", "delta") in log[:a_end]  # b streamed while a was streaming…
    assert ("a", "delta") in log[b_first:]  # …and a went on after b had started
    for frames_of in (a, b):
        deltas = [f for f in frames_of if f["type"] == "delta"]
        assert [f["seq"] for f in deltas] == list(range(1, len(deltas) + 1))
    with shared.client() as c:
        stored = c.get(f"/api/conversations/{b[0]['conversation_id']}").json()
    assert stored["messages"][1]["end_reason"] == "cancelled"
    assert stored["messages"][1]["content"] == "".join(f["text"] for f in b if f["type"] == "delta")


def test_bad_frames_get_error_frames_and_the_socket_stays_open(shared: Running) -> None:
    with _ws(shared) as ws:
        ws.send("not json")
        assert _recv(ws)["code"] == "invalid_json"
        ws.send("[1, 2]")
        assert _recv(ws)["code"] == "invalid_json"
        ws.send(b"\x00binary")
        assert _recv(ws)["code"] == "invalid_json"
        _send(ws, type="dance")
        assert _recv(ws) | {"message": ""} == {
            "type": "error",
            "code": "invalid_field",
            "param": "type",
            "message": "",
            "status": 400,
        }
        _send(ws, id="x")
        assert _recv(ws)["code"] == "missing_field"
        _send(ws, type="ask", id="r1")
        frame = _recv(ws)
        assert (frame["code"], frame["param"], frame["id"]) == ("missing_field", "content", "r1")
        _send(ws, type="ask", id="r2", content=7)
        assert _recv(ws)["code"] == "invalid_field"
        _send(ws, type="ask", id="r3", content="你好", conversation_id="c_missing")
        assert _recv(ws) | {"message": ""} == {
            "type": "error",
            "id": "r3",
            "code": "not_found",
            "message": "",
            "status": 404,
        }
        _send(ws, type="cancel", id="nothing")
        assert _recv(ws)["code"] == "not_found"
        ws.send("x" * (shared.app.config.max_body_bytes + 1))
        assert _recv(ws)["code"] == "body_too_large"
        _send(ws, type="ask", id="ok", content=paced("还活着", "interval=0.02;chunks=5"))
        _send(ws, type="ask", id="ok", content="again")
        kinds = []
        while True:
            frame = _recv(ws)
            kinds.append((frame["type"], frame.get("code")))
            if frame["type"] == "end":
                break
    assert ("error", "invalid_field") in kinds  # the duplicate id
    assert kinds[-1] == ("end", None)
    assert ("start", None) in kinds


def test_websocket_authentication(make_server: Callable[..., Running], tmp_path: Path) -> None:
    srv = make_server()
    with SyncKeyAdmin(srv.db) as admin:
        record, secret = admin.create_key("ws", rpm=None, tpm=None, max_streams=None)
    srv.app.keys.invalidate()
    with _ws(srv) as ws:
        _send(ws, type="ask", id="early", content="你好")
        assert _recv(ws)["code"] == "invalid_api_key"  # the socket stays open
        _send(ws, type="auth", api_key=secret)
        _send(ws, type="ask", id="ok", content="你好")
        while (frame := _recv(ws))["type"] != "end":
            assert frame["type"] in ("start", "delta")
    with _ws(srv) as ws:
        _send(ws, type="auth", api_key="wx-" + "x" * 40)
        assert _recv(ws)["code"] == "invalid_api_key"
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=5)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 1008
    srv.app.audit.flush()
    lines = [json.loads(line) for line in srv.app.config.audit_path.read_text().splitlines()]
    ws_lines = [line for line in lines if line["route"] == "/api/ws"]
    assert [line["key_id"] for line in ws_lines] == [record.id]  # the authenticated ask
    assert ws_lines[0]["end_reason"] == "completed"
    headers = {"Authorization": f"Bearer {secret}"}
    with connect(srv.url.replace("http://", "ws://") + "/api/ws", additional_headers=headers) as ws:
        _send(ws, type="ask", id="h", content="你好")
        assert _recv(ws)["type"] == "start"


def test_a_revoked_key_stops_an_open_socket(make_server: Callable[..., Running]) -> None:
    """A socket authenticated before its key was revoked is refused at its next ask once
    the key cache has seen the revocation (within its TTL, as on HTTP: ``invalidate`` stands
    for the TTL running out here; the cache's own expiry is tested in ``test_keys``), and
    closed with 1008 and a reason. A second key's socket is untouched."""
    srv = make_server()
    with SyncKeyAdmin(srv.db) as admin:
        doomed, secret = admin.create_key("doomed", rpm=None, tpm=None, max_streams=None)
        _, other = admin.create_key("other", rpm=None, tpm=None, max_streams=None)
    srv.app.keys.invalidate()
    headers = {"Authorization": f"Bearer {secret}"}
    url = srv.url.replace("http://", "ws://") + "/api/ws"
    with (
        connect(url, additional_headers=headers) as by_header,
        _ws(srv) as by_frame,
        _ws(srv) as bystander,
    ):
        _send(by_frame, type="auth", api_key=secret)
        _send(bystander, type="auth", api_key=other)
        for ws in (by_header, by_frame, bystander):
            _send(ws, type="ask", id="before", content="你好")
            while (frame := _recv(ws))["type"] != "end":
                assert frame["type"] in ("start", "delta")
        with SyncKeyAdmin(srv.db) as admin:
            admin.revoke_key(doomed.id)  # `wenxin keys revoke`, another process
        srv.app.keys.invalidate()
        for ws in (by_header, by_frame):
            _send(ws, type="ask", id="after", content="还在吗")
            frame = _recv(ws)
            assert (frame["type"], frame["code"], frame["id"]) == (
                "error",
                "invalid_api_key",
                "after",
            )
            assert "revoked" in frame["message"]
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=5)
            assert closed.value.rcvd is not None
            assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (
                1008,
                "API key no longer valid",
            )
        _send(bystander, type="ask", id="after", content="还在吗")
        assert _recv(bystander)["type"] == "start"


def test_a_dev_mode_socket_stops_once_a_key_exists(make_server: Callable[..., Running]) -> None:
    srv = make_server()
    with _ws(srv) as ws:
        _send(ws, type="ask", id="dev", content="你好")
        while (frame := _recv(ws))["type"] != "end":
            pass
        with SyncKeyAdmin(srv.db) as admin:
            admin.create_key("first", rpm=None, tpm=None, max_streams=None)
        srv.app.keys.invalidate()
        _send(ws, type="ask", id="later", content="你好")
        frame = _recv(ws)
        assert (frame["code"], frame["id"]) == ("invalid_api_key", "later")
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=5)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 1008


def test_unknown_websocket_path_is_refused(shared: Running) -> None:
    with pytest.raises(InvalidStatus, match="403"):
        connect(shared.url.replace("http://", "ws://") + "/elsewhere", open_timeout=5)


def test_socket_edge_cases(shared: Running, monkeypatch: pytest.MonkeyPatch) -> None:
    async def receive() -> dict[str, Any]:
        return {"type": "websocket.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        raise AssertionError("nothing to send")

    asyncio.run(shared.app.sockets.serve({"type": "websocket"}, receive, send))

    shared.app.relay.accepting = False  # shutting down: no new sockets
    try:
        with pytest.raises(InvalidStatus):
            connect(shared.url.replace("http://", "ws://") + "/api/ws", open_timeout=5)
    finally:
        shared.app.relay.accepting = True

    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("bug")

    monkeypatch.setattr(shared.app.answers, "ask", broken)
    with _ws_connect(shared) as ws:
        _send(ws, type="ask", id="r", content="hi")
        frame = _recv(ws)
    assert (frame["code"], frame["id"]) == ("internal_error", "r")
    assert "bug" not in str(frame)

    def broken_find(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("resume bug")

    # A resume fails inside the server the same way: an error frame, and the socket still serves.
    monkeypatch.setattr(shared.app.relay, "find", broken_find)
    with _ws_connect(shared) as ws:
        _send(ws, type="resume", id="s", stream_id="x", last_seq=0)
        frame = _recv(ws)
        assert (frame["type"], frame["code"], frame["id"]) == ("error", "internal_error", "s")
        assert "resume bug" not in str(frame)
        _send(ws, type="resume", id="s", stream_id="x", last_seq=0)  # the id is free again
        assert _recv(ws)["code"] == "internal_error"


def _ws_connect(srv: Running) -> ClientConnection:
    return _ws(srv)
