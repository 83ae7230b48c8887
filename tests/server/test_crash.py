"""The crash suite: a real ``wenxin serve`` process killed (``kill -9``) or stopped (SIGTERM)
while clients stream on every route — native SSE, WebSocket, the OpenAI stream — then what
each client saw and what the store kept.

Each scenario runs once per store (a module fixture: the SQLite file, then PostgreSQL) and the
tests read its outcome: the server is a subprocess with its own data directory, its upstream
the shared emulator, paced by fault directives so that answers take several seconds. Its
``--checkpoint-interval`` is :data:`CHECKPOINT`, so a ``kill -9`` may lose at most that much of
each answer's text, plus a checkpoint in flight; the tests allow :data:`ALLOWANCE` more for a
loaded machine's scheduling (the event loop's tick and the store's commit being late), and no
more.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from psycopg.rows import dict_row
from serve_process import CHECKPOINT, Serve
from server_helpers import paced, wait_for
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from services import Service
from wenxin_stream import SSEDecoder
from wenxin_stream.emulator import ServerHandle

ALLOWANCE = 0.75
"""Seconds of text a ``kill -9`` may lose beyond :data:`CHECKPOINT` on a loaded machine."""

LONG = "interval=0.02;chunks=500"
"""An answer of 10 s: still streaming when the server is stopped."""

STALLED = "interval=0.005;chunks=100;stall_after=40;stall=30"
"""40 chunks at once, then silence: by the kill, every character is long checkpointed."""


@dataclass
class Reception:
    """What one client received, when, and how its stream ended."""

    times: list[float] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)
    parts: list[str] = field(default_factory=list)
    start: dict[str, Any] | None = None
    end: dict[str, Any] | None = None
    finishes: list[str] = field(default_factory=list)  # OpenAI finish_reason values seen
    done: bool = False  # OpenAI `[DONE]`
    close_code: int | None = None  # WebSocket close code received (None: none, a cut)
    cut: str | None = None  # the exception that ended the connection

    def add(self, text: str) -> None:
        self.parts.append(text)
        self.times.append(time.monotonic())
        self.counts.append((self.counts[-1] if self.counts else 0) + len(text))

    @property
    def text(self) -> str:
        return "".join(self.parts)

    def chars_by(self, moment: float) -> int:
        """Characters received at or before ``moment``."""
        got = [n for t, n in zip(self.times, self.counts, strict=True) if t <= moment]
        return got[-1] if got else 0


def _native(url: str, cid: str, content: str, rec: Reception) -> None:
    decoder = SSEDecoder()
    try:
        with (
            httpx.Client(timeout=30) as client,
            client.stream(
                "POST", f"{url}/api/conversations/{cid}/messages", json={"content": content}
            ) as response,
        ):
            for chunk in response.iter_raw():
                for event in decoder.feed(chunk):
                    data = json.loads(event.data)
                    if event.event == "start":
                        rec.start = data
                    elif event.event == "delta":
                        rec.add(data["text"])
                    elif event.event == "end":
                        rec.end = data
    except httpx.HTTPError as exc:
        rec.cut = type(exc).__name__


def _websocket(url: str, content: str, rec: Reception) -> None:
    try:
        with connect(url.replace("http://", "ws://") + "/api/ws", open_timeout=10) as ws:
            ws.send(json.dumps({"type": "ask", "id": "a", "content": content}))
            while True:
                frame = json.loads(ws.recv(timeout=30))
                if frame["type"] == "start":
                    rec.start = frame
                elif frame["type"] == "delta":
                    rec.add(frame["text"])
                elif frame["type"] == "end":
                    rec.end = frame
    except ConnectionClosed as exc:
        rec.cut = type(exc).__name__
        rec.close_code = exc.rcvd.code if exc.rcvd is not None else None


def _openai(url: str, content: str, rec: Reception) -> None:
    decoder = SSEDecoder()
    body = {
        "model": "ernie-lite-8k",
        "stream": True,
        "messages": [{"role": "user", "content": content}],
    }
    try:
        with (
            httpx.Client(timeout=30) as client,
            client.stream("POST", f"{url}/v1/chat/completions", json=body) as response,
        ):
            for chunk in response.iter_raw():
                for event in decoder.feed(chunk):
                    if event.data == "[DONE]":
                        rec.done = True
                        continue
                    data = json.loads(event.data)
                    for choice in data.get("choices", ()):
                        if choice["delta"].get("content"):
                            rec.add(choice["delta"]["content"])
                        if choice.get("finish_reason") is not None:
                            rec.finishes.append(choice["finish_reason"])
                    if "error" in data:
                        rec.end = data
    except httpx.HTTPError as exc:
        rec.cut = type(exc).__name__


def _new_conversation(url: str) -> str:
    r = httpx.post(f"{url}/api/conversations", json={}, timeout=10)
    assert r.status_code == 201, r.text
    cid: str = r.json()["id"]
    return cid


def _thread(target: Any, *args: Any) -> threading.Thread:
    thread = threading.Thread(target=target, args=args, daemon=True)
    thread.start()
    return thread


def _rows(data_dir: Path, database_url: str | None) -> list[dict[str, Any]]:
    """Every stored message, read straight from the database (the SQLite file, or
    PostgreSQL)."""
    query = "SELECT * FROM messages ORDER BY conversation_id, seq"
    if database_url is not None:
        with psycopg.connect(database_url, row_factory=dict_row) as pg:
            return pg.execute(query).fetchall()
    with sqlite3.connect(data_dir / "wenxin.db") as conn:
        conn.row_factory = sqlite3.Row
        rows = conn.execute(query).fetchall()
    return [dict(row) for row in rows]


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest) -> str | None:
    """Each scenario on both stores: the SQLite file (``None``), then a schema of its own on
    the private PostgreSQL — checkpoints and the crash end hold on both."""
    if request.param == "sqlite":
        return None
    service: Service = request.getfixturevalue("postgres_service")
    schema = "crash_" + secrets.token_hex(6)
    with psycopg.connect(service.url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")  # a name of hex digits: nothing to quote
    return f"{service.url}?options=-csearch_path%3D{schema}"


def _store_args(database_url: str | None) -> tuple[str, ...]:
    return () if database_url is None else ("--database-url", database_url)


def _answer(rows: list[dict[str, Any]], message_id: str) -> dict[str, Any]:
    (row,) = [row for row in rows if row["id"] == message_id]
    return row


@dataclass
class Outcome:
    """One scenario's result: each client's reception, the stored rows, the kill's time."""

    native: Reception
    stalled: Reception
    ws: Reception
    openai: Reception
    rows: list[dict[str, Any]]
    stopped_at: float
    exit_status: int | None = None
    asked: int = 0
    api_answer: dict[str, Any] | None = None


def _stream_then(data_dir: Path, upstream: str, stop: str, *args: str) -> Outcome:
    """Serve from ``data_dir``, stream on every route, then ``stop`` the server (``kill``: -9,
    with short exchanges being asked meanwhile; ``stop``: SIGTERM); what the clients saw."""
    server = Serve(data_dir, upstream, *args)
    url = server.url
    native, stalled, ws, openai = Reception(), Reception(), Reception(), Reception()
    threads = [
        _thread(_native, url, _new_conversation(url), paced("长文一", LONG), native),
        _thread(_native, url, _new_conversation(url), paced("长文二", STALLED), stalled),
        _thread(_websocket, url, paced("长文三", LONG), ws),
        _thread(_openai, url, paced("长文四", LONG), openai),
    ]
    asked = [0]
    halt = threading.Event()

    def ask_and_ask() -> None:  # short exchanges, one after another, up to the stop
        cid = _new_conversation(url)
        while not halt.is_set():
            try:
                httpx.post(
                    f"{url}/api/conversations/{cid}/messages",
                    json={"content": paced("短", "interval=0;chunks=2")},
                    timeout=10,
                ).read()
                asked[0] += 1
            except httpx.HTTPError:
                return

    if stop == "kill":
        threads.append(_thread(ask_and_ask))
    status = None
    try:  # every stream well under way: 2.5 s of text for the first one
        wait_for(
            lambda: (
                all(r.parts for r in (native, stalled, ws, openai))
                and time.monotonic() - native.times[0] >= 2.5
                and (stop != "kill" or asked[0] >= 3)
            ),
            timeout=20,
        )
    finally:
        stopped_at = time.monotonic()
        if stop == "kill":
            server.kill()
        else:
            status = server.stop()
        halt.set()
    for thread in threads:
        thread.join(15)
        assert not thread.is_alive()
    return Outcome(native, stalled, ws, openai, [], stopped_at, exit_status=status, asked=asked[0])


@pytest.fixture(scope="module")
def killed(
    tmp_path_factory: pytest.TempPathFactory, emu: ServerHandle, database_url: str | None
) -> Outcome:
    """``kill -9`` mid-stream, then a restart on the same data directory and database."""
    data_dir = tmp_path_factory.mktemp("crash") / "data"
    store = _store_args(database_url)
    outcome = _stream_then(data_dir, emu.base_url, "kill", *store)
    server = Serve(data_dir, emu.base_url, *store)  # the restart marks what the crash cut
    try:
        assert outcome.native.start is not None
        cid = outcome.native.start["conversation_id"]
        outcome.api_answer = httpx.get(f"{server.url}/api/conversations/{cid}", timeout=10).json()
    finally:
        assert server.stop() == 0
    outcome.rows = _rows(data_dir, database_url)
    return outcome


@pytest.fixture(scope="module")
def stopped(
    tmp_path_factory: pytest.TempPathFactory, emu: ServerHandle, database_url: str | None
) -> Outcome:
    """SIGTERM mid-stream with a short ``--shutdown-grace``."""
    data_dir = tmp_path_factory.mktemp("stop") / "data"
    store = _store_args(database_url)
    outcome = _stream_then(data_dir, emu.base_url, "stop", "--shutdown-grace", "0.3", *store)
    outcome.rows = _rows(data_dir, database_url)
    return outcome


def _assert_kept(rec: Reception, row: dict[str, Any], stopped_at: float) -> None:
    """The stored answer of a stream cut by ``kill -9``: partial, ``server_crashed``, its
    text the checkpointed prefix of what the client received, no more than the window
    short of it, its counts set."""
    stored, received = row["content"], rec.text
    assert (row["status"], row["end_reason"]) == ("partial", "server_crashed")
    # a prefix of what the client received (a checkpoint holds the text *generated*, which
    # reaches the client in the event loop's next turn: at a kill landing in between, the
    # store would be one chunk ahead, and still consistent with the client)
    assert received.startswith(stored) or stored.startswith(received)
    assert len(stored) >= rec.chars_by(stopped_at - CHECKPOINT - ALLOWANCE) > 0
    assert row["generated_chars"] == len(stored)
    assert 0 < row["delivered_chars"] <= row["generated_chars"]


def test_kill_keeps_the_checkpointed_text_of_a_native_stream(killed: Outcome) -> None:
    rec = killed.native
    assert rec.end is None  # the client saw a cut, not an end
    assert rec.cut is not None
    assert rec.start is not None
    _assert_kept(rec, _answer(killed.rows, rec.start["message_id"]), killed.stopped_at)
    assert killed.api_answer is not None  # the API shows the same after the restart
    shown = killed.api_answer["messages"][-1]
    assert (shown["status"], shown["end_reason"]) == ("partial", "server_crashed")
    assert shown["content"] == _answer(killed.rows, rec.start["message_id"])["content"]


def test_kill_keeps_every_character_of_a_stream_that_had_paused(killed: Outcome) -> None:
    """40 chunks, then silence: long before the kill every character was checkpointed."""
    rec = killed.stalled
    assert rec.start is not None
    row = _answer(killed.rows, rec.start["message_id"])
    assert (row["status"], row["end_reason"]) == ("partial", "server_crashed")
    assert row["content"] == rec.text
    assert row["generated_chars"] == row["delivered_chars"] == len(rec.text) > 0


def test_kill_keeps_the_checkpointed_text_of_a_websocket_stream(killed: Outcome) -> None:
    rec = killed.ws
    assert rec.end is None
    assert rec.close_code is None  # no close frame: the connection was cut (1006)
    assert rec.start is not None
    _assert_kept(rec, _answer(killed.rows, rec.start["message_id"]), killed.stopped_at)


def test_kill_cuts_the_openai_stream_without_a_finish(killed: Outcome) -> None:
    rec = killed.openai
    assert rec.parts
    assert rec.cut is not None
    assert not rec.done
    assert rec.finishes == []


def test_kill_leaves_no_question_without_its_answer(killed: Outcome) -> None:
    """The question and its answer are stored in one transaction: however the kill fell
    among the short exchanges asked one after another, every question has its answer, and
    after the restart no answer is left ``streaming``."""
    assert killed.asked >= 3
    rows = killed.rows
    by_conversation: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_conversation.setdefault(row["conversation_id"], []).append(row)
    for messages in by_conversation.values():
        roles = [m["role"] for m in messages]
        assert roles == ["user", "assistant"] * (len(roles) // 2), roles
        assert [m["seq"] for m in messages] == list(range(len(messages)))
    assert all(row["status"] != "streaming" for row in rows)
    assert sum(row["end_reason"] == "completed" for row in rows) >= killed.asked


def test_sigterm_ends_native_and_websocket_streams_as_server_shutdown(stopped: Outcome) -> None:
    assert stopped.exit_status == 0
    for rec in (stopped.native, stopped.stalled, stopped.ws):
        assert rec.end is not None
        assert rec.end["end_reason"] == "server_shutdown"
        assert rec.start is not None
        row = _answer(stopped.rows, rec.start["message_id"])
        assert (row["status"], row["end_reason"]) == ("partial", "server_shutdown")
        assert row["content"] == rec.text  # the full text the server had, all sent
        assert row["generated_chars"] == row["delivered_chars"] == len(rec.text) > 0
    assert stopped.ws.close_code == 1012  # then the socket closed: "service restart"


def test_sigterm_does_not_end_the_openai_stream_as_a_normal_finish(stopped: Outcome) -> None:
    # a cut answer is never a normal finish: no finish_reason "stop" (docs/ERRORS.md: an error
    # event with server_shutdown, then [DONE])
    rec = stopped.openai
    assert rec.parts
    assert "stop" not in rec.finishes
    assert rec.end is not None  # the error event
    assert rec.end["error"]["code"] == "server_shutdown"
    assert rec.done  # then [DONE]: the stream itself was not broken, the answer was cut
