"""Regenerate, retry and edit on the native routes: an ask with ``"replace": "<the last
question's id>"`` replaces that exchange instead of appending one, so the old exchange leaves
both the stored conversation and the history the model sees (``docs/SERVER-API.md``)."""

from __future__ import annotations

import json
from typing import Any

from server_helpers import (
    EventReader,
    Recorder,
    Running,
    new_conversation,
    paced,
    sse_events,
)

from wenxin_stream.emulator import ServerHandle


def _ask(srv: Running, cid: str, **body: Any) -> dict[str, Any]:
    """Ask and read the whole answer; the ``start`` event's data."""
    with srv.client() as c:
        r = c.post(f"/api/conversations/{cid}/messages", json=body)
    assert r.status_code == 200, r.text
    events = sse_events(r.content)
    assert events[-1].event == "end"
    start: dict[str, Any] = json.loads(events[0].data)
    return start


def _refused(srv: Running, cid: str, replace: str) -> tuple[int, str, str]:
    with srv.client() as c:
        r = c.post(
            f"/api/conversations/{cid}/messages", json={"content": "橙子", "replace": replace}
        )
    error = r.json()["error"]
    return r.status_code, error["code"], error.get("param")


def test_replace_swaps_the_last_exchange_in_store_and_history(
    make_server: Any, recorded: tuple[Recorder, ServerHandle]
) -> None:
    recorder, emu = recorded
    srv = make_server(upstream=emu.base_url)
    with srv.client() as c:
        cid = new_conversation(c)
    first = _ask(srv, cid, content="苹果")
    second = _ask(srv, cid, content="香蕉")
    assert second["question_id"] != first["question_id"]

    again = _ask(srv, cid, content="橙子", replace=second["question_id"])
    # The model saw the first exchange and the new question; not the replaced one.
    history = recorder.bodies[-1]["messages"]
    assert [(m["role"], m["content"]) for m in history if m["role"] == "user"] == [
        ("user", "苹果"), ("user", "橙子"),
    ]  # fmt: skip
    assert [m["role"] for m in history] == ["user", "assistant", "user"]
    with srv.client() as c:
        conv = c.get(f"/api/conversations/{cid}").json()
        listed = c.get("/api/conversations").json()["conversations"]
    ids = [m["id"] for m in conv["messages"]]
    assert [m["content"] for m in conv["messages"] if m["role"] == "user"] == ["苹果", "橙子"]
    assert ids[2:] == [again["question_id"], again["message_id"]]
    assert second["question_id"] not in ids
    assert second["message_id"] not in ids
    assert [c["message_count"] for c in listed if c["id"] == cid] == [4]
    assert conv["title"] == "苹果"

    # Replacing the same exchange again (regenerate twice) works on the new ids only.
    assert _refused(srv, cid, second["question_id"])[:2] == (404, "not_found")
    _ask(srv, cid, content="橙子", replace=again["question_id"])


def test_replace_refuses_all_but_the_last_finished_exchange(shared: Running) -> None:
    with shared.client() as c:
        cid = new_conversation(c)
        other = new_conversation(c)
    first = _ask(shared, cid, content="苹果")
    second = _ask(shared, cid, content="香蕉")
    assert _refused(shared, cid, first["question_id"]) == (409, "not_last_exchange", "replace")
    assert _refused(shared, cid, second["message_id"]) == (404, "not_found", "replace")  # an answer
    assert _refused(shared, other, second["question_id"]) == (404, "not_found", "replace")
    assert _refused(shared, cid, "m_nope") == (404, "not_found", "replace")
    with shared.client() as c:
        r = c.post(f"/api/conversations/{cid}/messages", json={"content": "x", "replace": 5})
        assert (r.status_code, r.json()["error"]["param"]) == (400, "replace")
        messages = c.get(f"/api/conversations/{cid}").json()["messages"]
    assert [m["content"] for m in messages if m["role"] == "user"] == ["苹果", "香蕉"]

    # While its answer streams, the exchange cannot be replaced (stop it first).
    with shared.client() as c, c.stream(
        "POST", f"/api/conversations/{cid}/messages",
        json={"content": paced("慢慢说", "interval=0.05;chunks=200")},
    ) as r:  # fmt: skip
        reader = EventReader(r)
        start = reader.next()
        assert start is not None
        assert start.event == "start"
        data = json.loads(start.data)
        assert _refused(shared, cid, data["question_id"]) == (409, "answer_streaming", "replace")
        c.post(f"/api/streams/{data['stream_id']}/cancel")
        assert [e.event for e in reader.rest() if e.event][-1] == "end"
    _ask(shared, cid, content="好了", replace=data["question_id"])
    with shared.client() as c:
        messages = c.get(f"/api/conversations/{cid}").json()["messages"]
    assert [m["content"] for m in messages if m["role"] == "user"] == ["苹果", "香蕉", "好了"]
