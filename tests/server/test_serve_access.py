"""Access: API keys and owner isolation, dev mode rules, per-key limits (429 + Retry-After)."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from server_helpers import EventReader, Running, paced, server_config

from wenxin_stream.cli import CommandError
from wenxin_stream.cli.serve import _check_dev_mode
from wenxin_stream.server import create_app
from wenxin_stream.server._access import dev_mode_problem, is_loopback
from wenxin_stream.server._store import SyncKeyAdmin


def _keys(srv: Running, *specs: dict[str, Any]) -> list[dict[str, str]]:
    out = []
    with SyncKeyAdmin(srv.db) as admin:
        for index, spec in enumerate(specs):
            limits = {"rpm": None, "tpm": None, "max_streams": None, **spec}
            record, secret = admin.create_key(f"k{index}", **limits)
            out.append({"Authorization": f"Bearer {secret}", "id": record.id, "secret": secret})
    srv.app.keys.invalidate()
    return out


def _auth(key: dict[str, str]) -> dict[str, str]:
    return {"Authorization": key["Authorization"]}


def test_keys_see_only_their_own_conversations(make_server: Callable[..., Running]) -> None:
    srv = make_server()
    alice, bob = _keys(srv, {}, {})
    with srv.client() as c:
        r = c.get("/api/conversations")
        assert r.status_code == 401
        assert r.json()["error"]["code"] == "invalid_api_key"
        assert r.json()["error"]["type"] == "authentication_error"
        assert r.headers["www-authenticate"] == "Bearer"
        assert (
            c.get(
                "/api/conversations", headers={"Authorization": "Bearer wx-" + "a" * 40}
            ).status_code
            == 401
        )
        cid = c.post("/api/conversations", json={}, headers=_auth(alice)).json()["id"]
        r = c.post(
            f"/api/conversations/{cid}/messages", json={"content": "你好"}, headers=_auth(alice)
        )
        sid = r.text.split('"stream_id":"', 1)[1].split('"', 1)[0]
        assert c.get("/api/conversations", headers=_auth(bob)).json() == {"conversations": []}
        for method, path in [
            ("GET", f"/api/conversations/{cid}"),
            ("DELETE", f"/api/conversations/{cid}"),
            ("PATCH", f"/api/conversations/{cid}"),
            ("POST", f"/api/conversations/{cid}/messages"),
            ("GET", f"/api/streams/{sid}"),
            ("POST", f"/api/streams/{sid}/cancel"),
        ]:
            body = {"content": "偷看"} if path.endswith("messages") else None
            body = {"title": "偷改"} if method == "PATCH" else body
            r = c.request(method, path, json=body, headers=_auth(bob))
            assert r.status_code == 404, (method, path, r.text)
            assert r.json()["error"]["code"] == "not_found"
        mine = c.get(f"/api/conversations/{cid}", headers=_auth(alice)).json()
        assert len(mine["messages"]) == 2
        assert mine["title"] == "你好"  # bob's rename did not land
        assert c.get("/api/info").json()["auth_required"] is True
        with srv.client(headers=_auth(alice)) as mine_client:
            assert mine_client.delete(f"/api/conversations/{cid}").status_code == 204
            assert mine_client.get(f"/api/conversations/{cid}").status_code == 404


def test_rate_limit_answers_429_with_retry_after(make_server: Callable[..., Running]) -> None:
    srv = make_server()
    (key,) = _keys(srv, {"rpm": 3})
    statuses = []
    started = time.monotonic()
    with srv.client(headers=_auth(key)) as c:
        for _ in range(4):  # a burst up to the RPM passes at once; the next is refused
            r = c.post(
                "/v1/chat/completions",
                json={"model": "ernie-lite-8k", "messages": [{"role": "user", "content": "hi"}]},
            )
            statuses.append(r.status_code)
    elapsed = time.monotonic() - started
    assert statuses == [200, 200, 200, 429]
    assert r.json()["error"]["code"] == "rate_limited"
    assert r.json()["error"]["type"] == "rate_limit_error"
    # one request refills in 60/3 s, less what refilled while the requests ran (rounded up)
    assert math.ceil(20 - elapsed) <= int(r.headers["retry-after"]) <= 20


def test_concurrent_stream_limit(make_server: Callable[..., Running]) -> None:
    srv = make_server(default_max_streams=1)
    with srv.client() as c:
        cid = c.post("/api/conversations", json={}).json()["id"]
        request = c.build_request(
            "POST",
            f"/api/conversations/{cid}/messages",
            json={"content": paced("长", "interval=0.02;chunks=30")},
        )
        first = c.send(request, stream=True)
        reader = EventReader(first)
        assert reader.next() is not None
        with srv.client() as other:
            r = other.post(f"/api/conversations/{cid}/messages", json={"content": "又一个"})
            assert r.status_code == 429
            assert r.json()["error"]["code"] == "too_many_streams"
            assert r.headers["retry-after"] == "1"
        reader.rest()
        first.close()
        r = c.post(f"/api/conversations/{cid}/messages", json={"content": "现在可以了"})
        assert r.status_code == 200  # the slot came back when the first stream ended


def test_dev_mode_only_on_loopback(tmp_path: Path) -> None:
    assert is_loopback("127.0.0.1")
    assert is_loopback("::1")
    assert is_loopback("localhost")
    assert not is_loopback("0.0.0.0")
    assert not is_loopback("example.com")
    assert dev_mode_problem("127.0.0.1", keys_exist=False, allow_remote=False) is None
    assert dev_mode_problem("0.0.0.0", keys_exist=True, allow_remote=False) is None
    assert dev_mode_problem("0.0.0.0", keys_exist=False, allow_remote=True) is None
    problem = dev_mode_problem("0.0.0.0", keys_exist=False, allow_remote=False)
    assert problem is not None
    assert "--allow-dev-mode-remote" in problem

    config = server_config(tmp_path / "d", "http://127.0.0.1:9", host="0.0.0.0")
    with pytest.raises(CommandError, match="loopback"):
        _check_dev_mode(config)
    failed = asyncio.run(_lifespan(create_app(config)))
    assert failed["type"] == "lifespan.startup.failed"
    assert "loopback" in failed["message"]
    allowed = config.with_overrides(allow_dev_mode_remote=True)
    _check_dev_mode(allowed)
    assert asyncio.run(_lifespan(create_app(allowed)))["type"] == "lifespan.startup.complete"
    with SyncKeyAdmin(tmp_path / "d" / "wenxin.db") as admin:
        admin.create_key("ops", rpm=None, tpm=None, max_streams=None)
    _check_dev_mode(config)  # a key exists: fine on any address
    assert asyncio.run(_lifespan(create_app(config)))["type"] == "lifespan.startup.complete"


async def _lifespan(app: Any) -> dict[str, Any]:
    """Run the app's lifespan start-up (and shutdown, if it started); the start-up answer."""
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    outbox: list[dict[str, Any]] = []
    await inbox.put({"type": "lifespan.startup"})

    async def send(message: dict[str, Any]) -> None:
        outbox.append(message)
        if message["type"] == "lifespan.startup.complete":
            await inbox.put({"type": "lifespan.shutdown"})

    await asyncio.wait_for(app({"type": "lifespan"}, inbox.get, send), 10)
    return outbox[0]


def test_a_conversation_is_renamed_with_patch(make_server: Callable[..., Running]) -> None:
    srv = make_server()
    with srv.client() as c:
        cid = c.post("/api/conversations", json={"title": "旧标题"}).json()["id"]
        r = c.patch(f"/api/conversations/{cid}", json={"title": "  新的\n标题  "})
        assert r.status_code == 200, r.text
        assert r.json()["title"] == "新的 标题"
        assert r.json()["message_count"] == 0
        assert "messages" not in r.json()
        assert c.get(f"/api/conversations/{cid}").json()["title"] == "新的 标题"
        listed = c.get("/api/conversations").json()["conversations"]
        assert [conv["title"] for conv in listed] == ["新的 标题"]
        for body, code in [
            ({}, "missing_field"),
            ({"title": "   "}, "invalid_field"),
            ({"title": 5}, "invalid_field"),
            ({"title": "长" * 201}, "invalid_field"),
        ]:
            r = c.patch(f"/api/conversations/{cid}", json=body)
            assert r.status_code == 400, (body, r.text)
            assert r.json()["error"]["code"] == code
            assert r.json()["error"]["param"] == "title"
        assert c.patch(f"/api/conversations/{cid}", json={"title": "长" * 200}).status_code == 200
        r = c.patch("/api/conversations/c_missing", json={"title": "x"})
        assert r.status_code == 404
        assert r.json()["error"]["code"] == "not_found"
