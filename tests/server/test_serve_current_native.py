"""Today's ERNIE on the native routes: ``reasoning`` / ``search_results`` / ``tool_call`` events
over SSE and the WebSocket, resume replaying them, the stored answer keeping them, and the
history sent back without the reasoning (``docs/SERVER-API.md``)."""

from __future__ import annotations

import json
from typing import Any

from server_helpers import Recorder, Running, new_conversation, sse_events
from websockets.sync.client import connect

from wenxin_stream.emulator import ServerHandle

WEATHER = [
    {
        "type": "function",
        "function": {
            "name": "get_current_weather",
            "description": "获取城市的当前天气",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]
SEARCH = {"enable": True, "enable_trace": True, "enable_citation": True}
PNG = (
    "data:image/png;base64,"
    "iVBORw0KGgoAAAANSUhEUgAAABAAAAAICAIAAAB/FOjAAAAAFElEQVR4nGP4z8BAEiJN9agGIhEAJMZ/gd5KfaIAAAAASUVORK5CYII="
)


def _ask(srv: Running, cid: str, **body: Any) -> list[Any]:
    with srv.client() as c:
        r = c.post(f"/api/conversations/{cid}/messages", json=body)
    assert r.status_code == 200, r.text
    return sse_events(r.content)


def _names(events: list[Any]) -> list[str]:
    """The event names, runs of the same name collapsed."""
    names: list[str] = []
    for event in events:
        if event.event and (not names or names[-1] != event.event):
            names.append(event.event)
    return names


def test_sse_streams_reasoning_before_the_answer_and_stores_it(shared: Running) -> None:
    with shared.client() as c:
        cid = new_conversation(c)
    events = _ask(shared, cid, content="为什么天空是蓝色的?", model="ernie-x1.1")
    assert _names(events) == ["start", "reasoning", "delta", "end"]
    start = json.loads(events[0].data)
    assert start["model"] == "ernie-x1.1"
    reasoning = "".join(json.loads(e.data)["text"] for e in events if e.event == "reasoning")
    text = "".join(json.loads(e.data)["text"] for e in events if e.event == "delta")
    end = json.loads(events[-1].data)
    assert end["reasoning_chars"] == len(reasoning) > 0
    assert [int(e.id.rpartition(":")[2]) for e in events] == list(range(len(events)))
    with shared.client() as c:
        answer = c.get(f"/api/conversations/{cid}").json()["messages"][1]
    assert (answer["content"], answer["reasoning"]) == (text, reasoning)
    assert (answer["search_results"], answer["tool_calls"]) == (None, None)


def test_sse_search_results_come_once_before_the_first_delta(shared: Running) -> None:
    with shared.client() as c:
        cid = new_conversation(c)
    events = _ask(shared, cid, content="今天有什么科技新闻?", model="ernie-5.1", web_search=SEARCH,
                  enable_thinking=False)  # fmt: skip
    assert _names(events) == ["start", "search_results", "delta", "end"]
    [found] = [json.loads(e.data) for e in events if e.event == "search_results"]
    assert [r["index"] for r in found["results"]] == [1, 2, 3]
    text = "".join(json.loads(e.data)["text"] for e in events if e.event == "delta")
    assert "^[1]^" in text
    with shared.client() as c:
        answer = c.get(f"/api/conversations/{cid}").json()["messages"][1]
    assert answer["search_results"] == found["results"]
    assert answer["reasoning"] is None


def test_sse_tool_calls_are_events_and_stored(shared: Running) -> None:
    with shared.client() as c:
        cid = new_conversation(c, model="ernie-5.1")
    events = _ask(shared, cid, content="北京今天的天气怎么样?", tools=WEATHER,
                  enable_thinking=False)  # fmt: skip
    [call] = [json.loads(e.data) for e in events if e.event == "tool_call"]
    assert call["name"] == "get_current_weather"
    assert json.loads(call["arguments"]) == {"city": "北京"}
    assert set(call) == {"id", "name", "arguments"}
    assert json.loads(events[-1].data)["finish_reason"] == "tool_calls"
    with shared.client() as c:
        answer = c.get(f"/api/conversations/{cid}").json()["messages"][1]
    assert answer["tool_calls"] == [call]
    assert answer["status"] == "complete"


def test_sse_image_question_to_a_vision_model(shared: Running) -> None:
    with shared.client() as c:
        cid = new_conversation(c)
    events = _ask(shared, cid, content="这是什么?", model="ernie-4.5-vl-28b-a3b", images=[PNG])
    text = "".join(json.loads(e.data)["text"] for e in events if e.event == "delta")
    assert "16×8" in text
    refused = {
        # a model without vision: the SDK names the image part (after the 2 stored messages)
        "messages[2].content[1]": {"content": "这是什么?", "model": "ernie-x1.1", "images": [PNG]},
        "images": {"content": "x", "images": "no"},
        "enable_thinking": {"content": "x", "model": "ernie-x1.1", "enable_thinking": False},
    }
    with shared.client() as c:
        for param, body in refused.items():
            r = c.post(f"/api/conversations/{cid}/messages", json=body)
            assert (r.status_code, r.json()["error"]["param"]) == (400, param)
        assert len(c.get(f"/api/conversations/{cid}").json()["messages"]) == 2  # nothing stored


def test_resume_replays_reasoning_and_search(shared: Running) -> None:
    with shared.client() as c:
        cid = new_conversation(c)
    events = _ask(shared, cid, content="今天的新闻", model="ernie-5.1", web_search=SEARCH)
    stream_id = json.loads(events[0].data)["stream_id"]
    with shared.client() as c:
        r = c.get(f"/api/streams/{stream_id}", headers={"Last-Event-ID": events[0].id})
    replayed = [e for e in sse_events(r.content) if e.event]
    assert [(e.event, e.id, e.data) for e in replayed] == [
        (e.event, e.id, e.data) for e in events[1:]
    ]
    assert {"reasoning", "search_results"} <= {e.event for e in replayed}


def test_history_sent_upstream_has_no_reasoning(
    make_server: Any, recorded: tuple[Recorder, ServerHandle]
) -> None:
    recorder, emu = recorded
    srv = make_server(upstream=emu.base_url)
    with srv.client() as c:
        cid = new_conversation(c, model="ernie-x1.1", system="你是物理老师")
    first = _ask(srv, cid, content="为什么天空是蓝色的?")
    assert any(e.event == "reasoning" for e in first)
    _ask(srv, cid, content="那晚霞呢?")
    history = recorder.bodies[-1]["messages"]
    assert [m["role"] for m in history] == ["system", "user", "assistant", "user"]
    assert all(set(m) == {"role", "content"} for m in history)
    assert "【模拟思考】" not in json.dumps(history, ensure_ascii=False)


def test_websocket_frames_carry_reasoning_search_and_tools(shared: Running) -> None:
    url = shared.url.replace("http", "ws") + "/api/ws"
    asks = {
        "think": {"content": "为什么天空是蓝色的?", "model": "ernie-x1.1"},
        "search": {"content": "今天的新闻", "model": "ernie-5.1", "web_search": SEARCH,
                   "enable_thinking": False},
        "tool": {"content": "北京今天的天气怎么样?", "model": "ernie-5.1", "tools": WEATHER,
                 "enable_thinking": False},
    }  # fmt: skip
    frames: dict[str, list[dict[str, Any]]] = {rid: [] for rid in asks}
    with connect(url, open_timeout=5) as ws:
        for rid, body in asks.items():
            ws.send(json.dumps({"type": "ask", "id": rid, **body}))
        ended = 0
        while ended < len(asks):
            frame = json.loads(ws.recv(timeout=10))
            frames[frame["id"]].append(frame)
            ended += frame["type"] == "end"
    kinds = {rid: _names([_Named(f["type"]) for f in got]) for rid, got in frames.items()}
    assert kinds["think"] == ["start", "reasoning", "delta", "end"]
    assert kinds["search"] == ["start", "search_results", "delta", "end"]
    assert kinds["tool"] == ["start", "tool_call", "end"]
    [call] = [f for f in frames["tool"] if f["type"] == "tool_call"]
    assert (call["id"], call["name"]) == ("tool", "get_current_weather")
    assert len(call["call_id"]) == 32  # a tool call's own id: "id" is the ask's
    assert frames["think"][-1]["reasoning_chars"] > 0


class _Named:
    def __init__(self, event: str) -> None:
        self.event = event
