"""The usage writer: the records of many ended answers in one store operation, written by the
checkpoint tick, read back only after a flush (``GET /api/usage``, the budgets' first read),
kept while the database is away, written one answer at a time when one answer is refused,
written at shutdown; and a server whose usage is visible through the API as soon as an answer
ends, on both store backends."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path

import httpx
import pytest
from server_helpers import Running, running, wait_for

from wenxin_stream.emulator import ServerHandle
from wenxin_stream.server._checkpoints import Checkpoints
from wenxin_stream.server._metrics import Metrics
from wenxin_stream.server._schema import StoreUnavailableError
from wenxin_stream.server._store import PostgresStore, SQLiteStore, StoreError
from wenxin_stream.server._usage import UsageRecord
from wenxin_stream.server._usage_writer import UsageWriter

Either = SQLiteStore | PostgresStore


def _record(stream: str, attempt: int = 1, key: str = "k_a", tokens: int = 30) -> UsageRecord:
    return UsageRecord(
        key_id=key, model="ernie-4.5-21b-a3b", channel="default",
        at="2026-12-03T04:00:00.000000Z", day="2026-12-03", stream_id=stream, attempt=attempt,
        kind="first", prompt_tokens=10, completion_tokens=tokens - 10, total_tokens=tokens,
        reasoning_tokens=None, cost_nano=45_000, estimated=False,
    )  # fmt: skip


class FakeStore:
    """Records each ``record_usage`` call; ``away`` refuses them as a database that is away;
    a stream id in ``refused`` makes a call holding it fail as a constraint would."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.away = False
        self.refused: set[str] = set()

    async def record_usage(self, records: Sequence[UsageRecord]) -> int:
        if self.away:
            raise StoreUnavailableError("the database is away")
        ids = [f"{r.stream_id}/{r.attempt}" for r in records]
        if any(r.stream_id in self.refused for r in records):
            raise StoreError("UNIQUE constraint failed")
        self.calls.append(ids)
        return len(records)


def _writer(store: FakeStore, **kwargs: int) -> UsageWriter:
    return UsageWriter(store, batched=True, **kwargs)  # type: ignore[arg-type]


async def test_the_records_of_many_answers_are_written_in_one_operation() -> None:
    store = FakeStore()
    writer = _writer(store)
    await writer.record([_record("s_1"), _record("s_1", 2)])
    await writer.record([])
    await writer.record([_record("s_2")])
    assert store.calls == []
    assert writer.pending == 3
    assert await writer.flush() == 3
    assert store.calls == [["s_1/1", "s_1/2", "s_2/1"]]
    assert writer.pending == 0
    assert await writer.flush() == 0  # nothing pending: no operation
    assert len(store.calls) == 1


async def test_an_answer_taken_over_before_the_flush_is_left_to_its_taker() -> None:
    store = FakeStore()
    writer = _writer(store)
    lost = {"s_1": False, "s_2": False}
    await writer.record([_record("s_1")], taken=lambda: lost["s_1"])
    await writer.record([_record("s_2")], taken=lambda: lost["s_2"])
    await writer.record([_record("s_3")])
    lost["s_1"] = True  # fenced after its end: the taker stores what it spent on it
    assert await writer.flush() == 2
    assert store.calls == [["s_2/1", "s_3/1"]]
    assert writer.lost == 0  # not lost: recorded by the instance that took it over


async def test_not_batched_writes_each_answer_when_it_ends() -> None:
    store = FakeStore()
    writer = UsageWriter(store, batched=False)  # type: ignore[arg-type]
    await writer.record([_record("s_1")])
    await writer.record([])
    assert store.calls == [["s_1/1"]]
    assert writer.pending == 0


async def test_a_database_away_keeps_the_records_in_order_until_it_is_back() -> None:
    store = FakeStore()
    writer = _writer(store)
    await writer.record([_record("s_1")])
    store.away = True
    with pytest.raises(StoreUnavailableError):
        await writer.flush()
    await writer.record([_record("s_2")])
    assert writer.pending == 2
    assert writer.lost == 0
    store.away = False
    assert await writer.flush() == 2
    assert store.calls == [["s_1/1", "s_2/1"]]


async def test_at_most_max_pending_records_wait_the_oldest_are_lost_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = FakeStore()
    writer = _writer(store, max_pending=3)
    store.away = True
    with caplog.at_level(logging.ERROR, "wenxin_stream.server"):
        for n in range(5):
            await writer.record([_record(f"s_{n}")])
    assert writer.pending == 3
    assert writer.lost == 2
    assert caplog.text.count("1 usage records lost: more than 3 waited") == 2
    store.away = False
    await writer.flush()
    assert store.calls == [["s_2/1", "s_3/1", "s_4/1"]]


async def test_an_answer_the_store_refuses_does_not_take_the_others_with_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = FakeStore()
    store.refused = {"s_2"}
    writer = _writer(store)
    for stream in ("s_1", "s_2", "s_3"):
        await writer.record([_record(stream)])
    with caplog.at_level(logging.ERROR, "wenxin_stream.server"):
        assert await writer.flush() == 2
    assert store.calls == [["s_1/1"], ["s_3/1"]]
    assert writer.lost == 1
    assert writer.pending == 0
    assert "usage records of s_2" in caplog.text


async def test_a_flush_waits_for_the_one_in_flight() -> None:
    gate = asyncio.Event()
    order: list[str] = []

    class SlowStore(FakeStore):
        async def record_usage(self, records: Sequence[UsageRecord]) -> int:
            order.append("write " + records[0].stream_id)
            await gate.wait()
            order.append("committed " + records[0].stream_id)
            return len(records)

    writer = _writer(SlowStore())
    await writer.record([_record("s_1")])
    first = asyncio.create_task(writer.flush())
    await asyncio.sleep(0)
    second = asyncio.create_task(writer.flush())  # as a reader's would: after the commit
    await asyncio.sleep(0)
    gate.set()
    assert await first == 1
    assert await second == 0
    assert order == ["write s_1", "committed s_1"]


async def test_shutdown_writes_what_is_pending_or_reports_it_lost(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = FakeStore()
    writer = _writer(store)
    await writer.record([_record("s_1")])
    await writer.aclose()
    assert store.calls == [["s_1/1"]]
    await writer.record([_record("s_2")])
    store.away = True
    with caplog.at_level(logging.ERROR, "wenxin_stream.server"):
        await writer.aclose()
    assert writer.lost == 1
    assert writer.pending == 0
    assert "refused 1 usage records to the end" in caplog.text


async def test_the_checkpoint_tick_writes_the_pending_records() -> None:
    store = FakeStore()
    writer = _writer(store)
    checkpoints = Checkpoints(store, Metrics(), interval=0.01, usage=writer)  # type: ignore[arg-type]
    await writer.record([_record("s_1")])
    await writer.record([_record("s_2")])
    checkpoints.start()
    try:
        for _ in range(500):
            if store.calls:
                break
            await asyncio.sleep(0.01)
    finally:
        await checkpoints.aclose()
    assert store.calls[0] == ["s_1/1", "s_2/1"]


async def test_reads_through_the_writer_see_every_ended_answer(store: Either) -> None:
    writer = UsageWriter(store, batched=True)
    await writer.record([_record("s_1", tokens=30), _record("s_1", 2, tokens=12)])
    await writer.record([_record("s_2", key="k_b", tokens=7)])
    assert await store.spent_since("k_a", "2026-12-01") == (0, 0)  # not yet in the store
    assert await writer.spent_since("k_a", "2026-12-01") == (42, 90_000)
    assert writer.pending == 0
    await writer.record([_record("s_3", key="k_b", tokens=5)])
    rows = await writer.usage_rows("2026-12-01", "2026-12-31", "k_b")
    assert [(r.answers, r.requests, r.total_tokens) for r in rows] == [(2, 2, 12)]


def _complete(c: httpx.Client) -> int:
    body = {"model": "ernie-4.5-21b-a3b", "messages": [{"role": "user", "content": "hi"}]}
    r = c.post("/v1/chat/completions", json=body)
    assert r.status_code == 200, r.text
    tokens: int = r.json()["usage"]["total_tokens"]
    return tokens


def test_usage_is_visible_through_the_api_as_soon_as_an_answer_ends(
    make_server: Callable[..., Running],
) -> None:
    srv = make_server(checkpoint_interval=3600.0)  # no tick comes during this test
    with srv.client() as c:
        reported = sum(_complete(c) for _ in range(3))
        # each answer's records are kept when it ends (just after its client saw the end)
        wait_for(lambda: srv.app.usage.pending == 3, timeout=10)
        totals = c.get("/api/usage").json()["totals"]
    assert (totals["answers"], totals["total_tokens"]) == (3, reported)
    assert srv.app.usage.pending == 0


def test_shutdown_stores_the_records_pending(tmp_path: Path, emu: ServerHandle) -> None:
    with running(tmp_path / "data", emu.base_url, checkpoint_interval=3600.0) as srv:
        with srv.client() as c:
            reported = _complete(c) + _complete(c)
        wait_for(lambda: srv.app.usage.pending == 2, timeout=10)
        db = srv.db
    with contextlib.closing(sqlite3.connect(db)) as conn:
        (count, total) = conn.execute(
            "SELECT COUNT(*), SUM(total_tokens) FROM usage_records"
        ).fetchone()
    assert (count, total) == (2, reported)
