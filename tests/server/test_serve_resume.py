"""Resume, cancel and the disconnect policy, observed from the client AND from the upstream."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable

import httpx
import pytest
from server_helpers import (
    EventReader,
    Probe,
    Running,
    new_conversation,
    paced,
    seqs,
    sse_events,
    texts,
    wait_for,
)

from wenxin_stream.emulator import ServerHandle


def _ask(c: httpx.Client, cid: str, content: str) -> tuple[httpx.Response, EventReader]:
    request = c.build_request(
        "POST", f"/api/conversations/{cid}/messages", json={"content": content}
    )
    response = c.send(request, stream=True)
    return response, EventReader(response)


def _stored(srv: Running, cid: str) -> dict[str, object]:
    with srv.client() as c:
        answer: dict[str, object] = c.get(f"/api/conversations/{cid}").json()["messages"][-1]
    return answer


@pytest.mark.parametrize("how", ["header", "query"])
def test_resume_after_a_broken_connection_loses_and_repeats_nothing(
    make_server: Callable[..., Running], how: str
) -> None:
    srv = make_server(resume_grace=3.0)
    with srv.client() as c:
        cid = new_conversation(c)
        response, reader = _ask(c, cid, paced("续传", "interval=0.01;chunks=60"))
        first = [reader.next() for _ in range(5)]
        response.close()  # the connection breaks after 5 events
        got = [e for e in first if e is not None]
        sid = json.loads(got[0].data)["stream_id"]
        last = got[-1].id
        time.sleep(0.15)  # generation goes on meanwhile
        if how == "header":
            r = c.get(f"/api/streams/{sid}", headers={"Last-Event-ID": last})
        else:
            r = c.get(f"/api/streams/{sid}", params={"last_event_id": last.rsplit(":", 1)[1]})
        assert r.status_code == 200
        assert r.headers["x-accel-buffering"] == "no"
        rest = sse_events(r.content)
    events = got + rest
    assert seqs(events) == list(range(len(events)))  # nothing lost, nothing repeated
    assert rest[-1].event == "end"
    stored = wait_for(lambda: (a := _stored(srv, cid))["status"] != "streaming" and a)
    assert texts(events) == stored["content"]
    assert stored["status"] == "complete"
    assert stored["delivered_chars"] == stored["generated_chars"]


def test_resume_errors(make_server: Callable[..., Running]) -> None:
    srv = make_server(resume_grace=0.3)
    with srv.client() as c:
        assert c.get("/api/streams/s_nope").status_code == 404
        cid = new_conversation(c)
        r = c.post(f"/api/conversations/{cid}/messages", json={"content": "短"})
        sid = json.loads(r.text.split("data: ", 1)[1].split("\n", 1)[0])["stream_id"]
        bad = c.get(f"/api/streams/{sid}", headers={"Last-Event-ID": "s_other:1"})
        assert bad.status_code == 400
        assert bad.json()["error"]["param"] == "last_event_id"
        assert c.get(f"/api/streams/{sid}", params={"last_event_id": "999"}).status_code == 400
        again = c.get(f"/api/streams/{sid}", headers={"Last-Event-ID": f"{sid}:0"})
        assert again.status_code == 200
        assert again.text.count("event: end") == 1
        wait_for(lambda: c.get(f"/api/streams/{sid}").status_code == 404, timeout=3)  # expired


def test_cancel_route_stops_the_stream(make_server: Callable[..., Running]) -> None:
    srv = make_server()
    with srv.client() as c:
        cid = new_conversation(c)
        response, reader = _ask(c, cid, paced("取消", "endless=1;interval=0.005"))
        start = reader.next()
        assert start is not None
        sid = json.loads(start.data)["stream_id"]
        assert reader.next() is not None
        r = c.post(f"/api/streams/{sid}/cancel")
        assert r.status_code == 202
        assert r.json()["stream_id"] == sid
        rest = reader.rest()
        response.close()
    end = json.loads(rest[-1].data)
    assert rest[-1].event == "end"
    assert end["end_reason"] == "cancelled"
    stored = wait_for(lambda: (a := _stored(srv, cid))["status"] != "streaming" and a)
    assert stored["status"] == "partial"
    assert stored["end_reason"] == "cancelled"


def test_client_disconnect_closes_the_upstream_within_a_second(
    make_server: Callable[..., Running], probed_emu: tuple[Probe, ServerHandle]
) -> None:
    probe, emu = probed_emu
    srv = make_server(upstream=emu.base_url, resume_grace=0.0)
    with srv.client() as c:
        cid = new_conversation(c)
        response, reader = _ask(c, cid, paced("无尽", "endless=1;interval=0.005"))
        for _ in range(4):
            assert reader.next() is not None
        assert probe.open == 1  # the emulator is streaming the endless answer
        gone = time.monotonic()
        response.close()
        wait_for(lambda: probe.open == 0, timeout=1.0)  # the upstream connection closed
        closed_after = probe.closed_at[-1] - gone
    assert closed_after < 1.0
    stored = wait_for(lambda: (a := _stored(srv, cid))["status"] != "streaming" and a)
    assert stored["status"] == "partial"
    assert stored["end_reason"] == "client_disconnected"
    generated = stored["generated_chars"]
    assert isinstance(generated, int)
    assert generated == len(str(stored["content"]))
    assert 0 < stored["delivered_chars"] <= generated  # type: ignore[operator]
    time.sleep(0.2)
    assert _stored(srv, cid)["generated_chars"] == generated  # it stopped growing


def test_grace_window_keeps_the_upstream_then_cancels(
    make_server: Callable[..., Running], probed_emu: tuple[Probe, ServerHandle]
) -> None:
    probe, emu = probed_emu
    srv = make_server(upstream=emu.base_url, resume_grace=0.5)
    with srv.client() as c:
        cid = new_conversation(c)
        response, reader = _ask(c, cid, paced("无尽", "endless=1;interval=0.005"))
        assert reader.next() is not None
        gone = time.monotonic()
        response.close()
        time.sleep(0.25)
        assert probe.open == 1  # still generating: a client may come back
        wait_for(lambda: probe.open == 0, timeout=2.0)
    assert 0.45 < probe.closed_at[-1] - gone < 1.5
    assert wait_for(lambda: _stored(srv, cid)["end_reason"]) == "client_disconnected"


def test_drain_policy_reads_to_the_end_and_records_what_was_delivered(
    make_server: Callable[..., Running],
) -> None:
    srv = make_server(on_disconnect="drain", resume_grace=0.0)
    with srv.client() as c:
        cid = new_conversation(c)
        response, reader = _ask(c, cid, paced("排空", "interval=0.01;chunks=40"))
        for _ in range(3):
            assert reader.next() is not None
        response.close()
    stored = wait_for(lambda: (a := _stored(srv, cid))["status"] != "streaming" and a, timeout=5)
    assert stored["status"] == "complete"
    assert stored["end_reason"] == "completed"
    delivered, generated = stored["delivered_chars"], stored["generated_chars"]
    assert isinstance(delivered, int)
    assert isinstance(generated, int)
    assert 0 < delivered < generated == len(str(stored["content"]))
    with sqlite3.connect(srv.db) as db:
        (usage,) = db.execute("SELECT usage FROM messages WHERE role = 'assistant'").fetchone()
    assert json.loads(usage)["completion_tokens"] > 0  # accounted for
