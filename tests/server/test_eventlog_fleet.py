"""Two instances sharing one Redis: an answer started on A is resumed on B (SSE Last-Event-ID
and the WebSocket ``resume`` frame) while it streams and after it ended, with nothing lost or
repeated; a cancel on B stops it on A; nothing is left in Redis after the resume window; Redis
going down mid-stream leaves A's stream whole and makes B answer 503 without hanging."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import redis
from server_helpers import (
    EventReader,
    Running,
    new_conversation,
    paced,
    seqs,
    sse_events,
    texts,
    wait_for,
)
from websockets.sync.client import connect

from services import Service, redis_server
from wenxin_stream import ServerSentEvent


@pytest.fixture
def fleet(
    make_server: Callable[..., Running], redis_service: Service
) -> Callable[..., tuple[Running, Running]]:
    def start(url: str = redis_service.url, **overrides: Any) -> tuple[Running, Running]:
        values = {"redis_url": url, "resume_grace": 5.0, **overrides}
        return make_server(**values), make_server(**values)

    return start


def _ask(c: httpx.Client, cid: str, content: str) -> tuple[httpx.Response, EventReader]:
    request = c.build_request(
        "POST", f"/api/conversations/{cid}/messages", json={"content": content}
    )
    response = c.send(request, stream=True)
    return response, EventReader(response)


def _first(reader: EventReader, count: int) -> list[ServerSentEvent]:
    events = [reader.next() for _ in range(count)]
    return [e for e in events if e is not None]


def _stream_id(events: list[ServerSentEvent]) -> str:
    sid: str = json.loads(events[0].data)["stream_id"]
    return sid


def _whole(srv: Running, sid: str) -> list[ServerSentEvent]:
    with srv.client() as c:
        r = c.get(f"/api/streams/{sid}")
        assert r.status_code == 200, r.text
        return sse_events(r.content)


def test_sse_resume_on_another_instance_mid_stream_and_after_the_end(
    fleet: Callable[..., tuple[Running, Running]],
) -> None:
    a, b = fleet()
    with a.client() as ca, b.client() as cb:
        cid = new_conversation(ca)
        response, reader = _ask(ca, cid, paced("跨实例", "interval=0.02;chunks=60"))
        got = _first(reader, 6)
        response.close()  # the connection to A breaks; the client comes back through B
        sid = _stream_id(got)
        with cb.stream("GET", f"/api/streams/{sid}", headers={"Last-Event-ID": got[-1].id}) as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            remote = EventReader(r)
            middle = _first(remote, 3)  # still streaming: B follows A's log live
            response.close()
            rest = remote.rest()
        events = got + middle + rest
    assert events[-1].event == "end"
    assert json.loads(events[-1].data)["end_reason"] == "completed"
    ids = seqs(events)
    assert ids == sorted(set(ids))  # nothing repeated, in order
    assert ids[: len(got)] == list(range(len(got)))
    # nothing lost: the text equals the whole answer, read from A, and from B after the end
    on_a = _whole(a, sid)
    assert texts(events) == texts(on_a)
    assert len(texts(on_a)) > 20
    on_b = _whole(b, sid)
    assert [(e.event, e.data) for e in on_b] == [(e.event, e.data) for e in on_a]
    assert seqs(on_b) == seqs(on_a) == list(range(len(on_a)))
    with httpx.Client(base_url=b.url, timeout=10) as cb:
        # a resume from any id is exact on B too; the last id leaves nothing to send
        tail = sse_events(cb.get(f"/api/streams/{sid}?last_event_id=3").content)
        assert seqs(tail) == list(range(4, len(on_a)))
        end = on_a[-1].id
        assert (
            sse_events(cb.get(f"/api/streams/{sid}", headers={"Last-Event-ID": end}).content) == []
        )
        beyond = cb.get(f"/api/streams/{sid}?last_event_id={len(on_a)}")
        assert beyond.status_code == 400
        assert cb.get("/api/streams/s_000000000000000000000000").status_code == 404


def test_websocket_resume_on_another_instance(
    fleet: Callable[..., tuple[Running, Running]],
) -> None:
    a, b = fleet()

    def frames(ws: Any, until: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
        out = []
        while True:
            frame = json.loads(ws.recv(timeout=10))
            out.append(frame)
            if until(frame):
                return out

    url_a, url_b = (s.url.replace("http://", "ws://") + "/api/ws" for s in (a, b))
    with connect(url_a, open_timeout=5) as ws:
        ws.send(
            json.dumps(
                {"type": "ask", "id": "q", "content": paced("问", "interval=0.02;chunks=50")}
            )
        )
        got = frames(ws, lambda f: f["type"] == "delta" and f["seq"] >= 4)
    sid = got[0]["stream_id"]
    last = got[-1]["seq"]
    with connect(url_b, open_timeout=5) as ws:
        ws.send(json.dumps({"type": "resume", "id": "r", "stream_id": sid, "last_seq": last}))
        rest = frames(ws, lambda f: f["type"] in ("end", "error"))
    assert rest[-1]["type"] == "end"
    assert all(f["id"] == "r" for f in rest)
    deltas = [f for f in got + rest if f["type"] == "delta"]
    ids = [f["seq"] for f in deltas]
    assert ids == sorted(set(ids))
    assert "".join(f["text"] for f in deltas) == texts(_whole(a, sid))
    # unknown streams and bad seqs are error frames; the socket stays open
    with connect(url_b, open_timeout=5) as ws:
        ws.send(json.dumps({"type": "resume", "id": "x", "stream_id": "s_nope"}))
        assert json.loads(ws.recv(timeout=5))["code"] == "not_found"
        ws.send(json.dumps({"type": "resume", "id": "y", "stream_id": sid, "last_seq": "1"}))
        assert json.loads(ws.recv(timeout=5))["param"] == "last_seq"


def test_cancel_on_another_instance_stops_the_answer_on_the_producer(
    fleet: Callable[..., tuple[Running, Running]],
) -> None:
    a, b = fleet()
    with a.client() as ca, b.client() as cb:
        cid = new_conversation(ca)
        response, reader = _ask(ca, cid, paced("取消", "interval=0.05;chunks=400"))
        got = _first(reader, 3)
        sid = _stream_id(got)
        wait_for(
            lambda: len(b.app.eventlog.reader) == 0 and a.app.eventlog.cancels.subscribed.is_set()
        )  # type: ignore[union-attr]
        time.sleep(0.05)  # the start is in Redis (written within 20 ms)
        r = cb.post(f"/api/streams/{sid}/cancel")
        assert r.status_code == 202
        assert r.json() == {"stream_id": sid, "status": "cancelling"}
        rest = reader.rest()
        response.close()
        assert rest[-1].event == "end"
        assert json.loads(rest[-1].data)["end_reason"] == "cancelled"
        assert len(seqs(got + rest)) < 100  # stopped long before the 400 chunks
        # the end is seen on B: "ended", and B's resume ends with the same end event
        wait_for(lambda: cb.post(f"/api/streams/{sid}/cancel").json()["status"] == "ended")
        assert _whole(b, sid)[-1].data == rest[-1].data
        assert cb.post("/api/streams/s_nope/cancel").status_code == 404


@pytest.fixture
def private_redis() -> Iterator[Service]:
    with redis_server() as service:
        yield service


def test_nothing_is_left_in_redis_after_the_resume_window(
    fleet: Callable[..., tuple[Running, Running]], private_redis: Service
) -> None:
    db = redis.Redis.from_url(private_redis.url)
    a, _b = fleet(private_redis.url, resume_window=2.0)
    writer = a.app.eventlog.writer  # type: ignore[union-attr]

    def answer(c: httpx.Client, count: int) -> list[bytes]:
        cid = new_conversation(c)
        for index in range(count):
            c.post(f"/api/conversations/{cid}/messages", json={"content": f"问{index}"})
        wait_for(lambda: len(writer) == 0)  # every end written
        keys: list[bytes] = db.keys("*ans:*")
        assert len(keys) == 2 * count  # a log and its metadata per answer
        return keys

    with a.client() as ca:
        # round 1 warms up (the servers' pooled connections, Redis's own tables); rounds 2–4
        # must each leave Redis as round 1 did
        used = []
        for _ in range(4):
            keys = answer(ca, 10)
            # the ends are written: every key expires with the window (not the live TTL)
            assert all(0 < db.pttl(key) <= 2000 for key in keys)
            wait_for(lambda: db.dbsize() == 0, timeout=5)
            used.append(db.info("memory")["used_memory"])
    print("used_memory after each round:", used)
    assert max(used[1:]) <= used[0] + 64 * 1024
    db.close()


def test_redis_down_mid_stream(
    fleet: Callable[..., tuple[Running, Running]], private_redis: Service
) -> None:
    a, b = fleet(private_redis.url, redis_timeout=0.5)
    with a.client() as ca, b.client() as cb:
        cid = new_conversation(ca)
        response, reader = _ask(ca, cid, paced("断开", "interval=0.02;chunks=60"))
        got = _first(reader, 4)
        sid = _stream_id(got)
        with cb.stream("GET", f"/api/streams/{sid}", headers={"Last-Event-ID": got[-1].id}) as r:
            remote = EventReader(r)
            assert _first(remote, 1)
            private_redis.process.kill()
            private_redis.process.wait()
            began = time.monotonic()
            cut = remote.rest()  # B's client is cut: no end event, and no hang
            assert time.monotonic() - began < 5
        assert all(e.event != "end" for e in cut)
        rest = reader.rest()  # A's own client gets the whole answer
        response.close()
        events = got + rest
        assert events[-1].event == "end"
        assert json.loads(events[-1].data)["end_reason"] == "completed"
        assert seqs(events) == list(range(len(events)))
        r = cb.get(f"/api/streams/{sid}", headers={"Last-Event-ID": got[-1].id})
        assert r.status_code == 503
        assert r.headers["retry-after"] == "1"
        assert cb.post(f"/api/streams/{sid}/cancel").status_code == 503
