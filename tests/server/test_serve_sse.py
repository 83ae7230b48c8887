"""Asking over SSE: framing, ids, pings, headers, what is stored, multi-turn history, errors."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from server_helpers import EventReader, Running, new_conversation, paced, seqs, sse_events, texts

from wenxin_stream.server._answers import history_core
from wenxin_stream.server._store import HistoryMessage


def test_sse_framing_ids_headers_and_stored_messages(shared: Running) -> None:
    with shared.client() as c:
        cid = new_conversation(c)
        r = c.post(f"/api/conversations/{cid}/messages", json={"content": "介绍一下长城"})
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["cache-control"] == "no-cache"
        assert r.headers["x-accel-buffering"] == "no"
        assert r.content.startswith(b"retry: 1000\n\n")
        events = sse_events(r.content)
        start, *deltas, end = events
        assert start.event == "start"
        assert end.event == "end"
        assert all(e.event == "delta" for e in deltas)
        assert deltas
        sid = json.loads(start.data)["stream_id"]
        assert all(e.id.startswith(sid + ":") for e in events)
        assert seqs(events) == list(range(len(events)))
        data = json.loads(end.data)
        assert data["end_reason"] == "completed"
        assert data["finish_reason"] == "stop"
        assert data["usage"]["completion_tokens"] > 0
        assert data["ttft_ms"] >= 0
        assert data["total_ms"] >= data["ttft_ms"]
        start_data = json.loads(start.data)
        assert start_data["conversation_id"] == cid
        assert start_data["model"] == "ernie-lite-8k"
        assert data["message_id"] == start_data["message_id"]

        conv = c.get(f"/api/conversations/{cid}").json()
        assert conv["title"] == "介绍一下长城"
        user, answer = conv["messages"]
        assert (user["role"], user["status"], user["content"]) == (
            "user",
            "complete",
            "介绍一下长城",
        )
        assert answer["id"] == data["message_id"]
        assert answer["status"] == "complete"
        assert answer["end_reason"] == "completed"
        assert answer["content"] == texts(events)
        assert answer["usage"] == data["usage"]
        assert answer["generated_chars"] == answer["delivered_chars"] == len(answer["content"])
        assert answer["ttft_ms"] is not None
        assert answer["total_ms"] is not None


def test_headers_then_pings_while_upstream_is_silent(make_server: Callable[..., Running]) -> None:
    srv = make_server(ping_interval=0.1)
    with srv.client() as c:
        cid = new_conversation(c)
        t0 = time.monotonic()
        body = {"content": paced("慢一点", "ttft=0.6;interval=0;chunks=3")}
        with c.stream("POST", f"/api/conversations/{cid}/messages", json=body) as r:
            headers_after = time.monotonic() - t0
            reader = EventReader(r)
            start = reader.next()
            assert start is not None
            assert start.event == "start"
            start_after = time.monotonic() - t0
            events = reader.rest()
        raw = bytes(reader.raw)
    assert headers_after < 0.3
    assert start_after < 0.3
    before_text = raw[: raw.index(b"event: delta")]
    assert before_text.count(b": ping\n\n") >= 3  # 0.6 s of silence, a ping every 0.1 s
    for block in raw.split(b"\n\n"):
        if block.startswith(b": ping"):
            assert block == b": ping"  # a comment only: no id, no data
    assert events[-1].event == "end"
    assert seqs([start, *events]) == list(range(len(events) + 1))


def test_multi_turn_sends_the_history(shared: Running) -> None:
    with shared.client() as c:
        cid = new_conversation(c, system="你是导游")
        first = sse_events(
            c.post(f"/api/conversations/{cid}/messages", json={"content": "长城"}).content
        )
        second = sse_events(
            c.post(f"/api/conversations/{cid}/messages", json={"content": "长城"}).content
        )
    p1 = json.loads(first[-1].data)["usage"]["prompt_tokens"]
    p2 = json.loads(second[-1].data)["usage"]["prompt_tokens"]
    assert p2 > p1 + 50  # the first answer went up with the second question


def _msg(
    role: str, content: str, status: str = "complete", reason: str | None = None
) -> HistoryMessage:
    return HistoryMessage("m", role, content, status, reason)


def test_history_is_valid_for_v1_whatever_happened() -> None:
    records = [
        _msg("user", "q1"),
        _msg("assistant", "a1", reason="completed"),
        _msg("user", "q2"),
        _msg("assistant", "half", "partial", "client_disconnected"),
        _msg("user", "q3"),
        _msg("assistant", "", "partial", "upstream_error"),  # nothing shown: dropped
        _msg("user", "q4"),  # never answered (a crash): dropped
        _msg("user", "q5"),
        _msg("assistant", "", "streaming"),  # still running elsewhere: not history
    ]
    messages, params = history_core("persona", records, 50).request("q6", "v1")
    assert [m["role"] for m in messages] == ["user", "assistant"] * 2 + ["user"]
    assert messages[3]["content"].startswith("half")
    assert "中断" in messages[3]["content"]
    assert messages[-1]["content"] == "q6"
    assert params == {"system": "persona"}
    v2, extra = history_core("persona", records, 1).request("q6", "v2")
    assert v2[0] == {"role": "system", "content": "persona"}
    assert extra == {}
    assert [m["content"] for m in v2[1:]][-1] == "q6"
    assert len(v2) == 4


def test_upstream_error_mid_stream_ends_with_an_error_end_event(shared: Running) -> None:
    with shared.client() as c:
        cid = new_conversation(c)
        body = {"content": paced("出错", "error=336003;error_after=2;interval=0")}
        events = sse_events(c.post(f"/api/conversations/{cid}/messages", json=body).content)
        end = json.loads(events[-1].data)
        assert events[-1].event == "end"
        assert [e.event for e in events].count("end") == 1
        assert end["end_reason"] == "upstream_error"
        assert end["error"]["code"] == "invalid_argument"  # the client's mistake: ERNIE's code
        assert end["error"]["status"] == 400
        assert end["error"]["type"] == "invalid_request_error"
        answer = c.get(f"/api/conversations/{cid}").json()["messages"][1]
    assert answer["status"] == "partial"
    assert answer["end_reason"] == "upstream_error"
    assert answer["content"] == texts(events)
    assert answer["content"]


def test_upstream_refusal_before_any_text(shared: Running) -> None:
    with shared.client() as c:
        cid = new_conversation(c)
        body = {"content": paced("拒绝", "error=336003")}
        events = sse_events(c.post(f"/api/conversations/{cid}/messages", json=body).content)
        assert [e.event for e in events] == ["start", "end"]
        error = json.loads(events[-1].data)["error"]
        assert (error["code"], error["status"], error["upstream_code"]) == (
            "invalid_argument",
            400,
            "invalid_argument",
        )


def test_a_runaway_answer_is_cut_at_max_answer_chars(make_server: Callable[..., Running]) -> None:
    srv = make_server(max_answer_chars=3000)
    with srv.client() as c:
        cid = new_conversation(c)
        body = {"content": paced("无尽", "endless=1;interval=0")}
        events = sse_events(c.post(f"/api/conversations/{cid}/messages", json=body).content)
    end = json.loads(events[-1].data)
    assert end["end_reason"] == "length"
    assert 3000 < len(texts(events)) < 3100
