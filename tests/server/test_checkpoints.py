"""Checkpoints: the text of streaming answers written while they stream, read incrementally
from the relay's log, many answers per store operation; the tick, its failures, its end.

(``test_crash.py`` kills a real server process and restarts it; these run in-process.)"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from server_helpers import (
    BurstUpstream,
    EventReader,
    Running,
    burst_relay,
    new_conversation,
    paced,
    settle,
    start_bursts,
    texts,
    wait_for,
)

from wenxin_stream.server import _checkpoints
from wenxin_stream.server._checkpoints import Checkpoints
from wenxin_stream.server._metrics import Metrics
from wenxin_stream.server._relay import Generation, Relay
from wenxin_stream.server._store import (
    Checkpoint,
    SQLiteStore,
    StoreError,
    StoreUnavailableError,
)


class RecordingStore:
    """Stands in for the store: records each ``checkpoint`` call; fails the first
    ``failures`` of them."""

    def __init__(self, failures: int = 0, *, bug: bool = False) -> None:
        self.calls: list[list[Checkpoint]] = []
        self.failures = failures
        self.bug = bug  # the failures are a bug's (not the store's error)
        self.written = asyncio.Event()

    async def checkpoint(self, checkpoints: list[Checkpoint]) -> int:
        if self.failures:
            self.failures -= 1
            if self.bug:
                raise KeyError("message_id")
            raise StoreError("database is locked")
        self.calls.append(checkpoints)
        self.written.set()
        return len(checkpoints)


async def _generation(relay: Relay) -> tuple[Generation, BurstUpstream]:
    gen, upstream = start_bursts(relay)
    await settle()
    return gen, upstream


async def _tracked_answer(checkpoints: Checkpoints) -> tuple[Generation, BurstUpstream]:
    """An answer under way, tracked as message ``m``, with text (你好) for a tick to write."""
    gen, upstream = await _generation(burst_relay())
    checkpoints.track("m", gen)
    upstream.burst("你好")
    await settle()
    return gen, upstream


async def test_due_reads_the_log_incrementally_and_always_matches_the_text() -> None:
    relay = burst_relay()
    gen, upstream = await _generation(relay)
    checkpoints = Checkpoints(RecordingStore(), Metrics())  # type: ignore[arg-type]
    checkpoints.track("m1", gen)
    assert checkpoints.due() == []  # no text yet
    sub = relay.attach(gen)
    await sub.next_batch()  # past `start`
    for step in range(12):
        if step % 3 == 0:  # a reader claims what is there: the next text opens a new entry
            reader = asyncio.create_task(sub.next_batch())
            await settle()
        upstream.burst(f"第{step}段", "。")  # otherwise piled onto the last, unclaimed delta
        await settle()
        if step % 3 == 0:
            await reader
        [(_, checkpoint)] = checkpoints.due()
        assert checkpoint == Checkpoint(
            "m1", gen.text, gen.generated_chars, gen.delivered_chars, gen.ttft_ms
        )
        assert await checkpoints.flush() == 1
        assert checkpoints.due() == []  # nothing grew since
    assert len(checkpoints) == 1
    checkpoints.forget("m1")
    checkpoints.forget("m1")  # idempotent
    assert len(checkpoints) == 0
    upstream.finish()
    await asyncio.wait_for(gen.done, 2)


async def test_one_store_operation_per_flush_for_every_answer_that_grew() -> None:
    relay = burst_relay()
    store = RecordingStore()
    checkpoints = Checkpoints(store, Metrics())  # type: ignore[arg-type]
    (a, up_a), (b, up_b), (c, up_c) = [await _generation(relay) for _ in range(3)]
    for message_id, gen in (("a", a), ("b", b), ("c", c)):
        checkpoints.track(message_id, gen)
    up_a.burst("甲")
    up_b.burst("乙")
    await settle()
    assert await checkpoints.flush() == 2
    assert [[cp.message_id for cp in call] for call in store.calls] == [["a", "b"]]
    up_b.burst("乙乙")
    await settle()
    assert await checkpoints.flush() == 1
    assert store.calls[-1] == [Checkpoint("b", "乙乙乙", 3, 0, b.ttft_ms)]
    assert await checkpoints.flush() == 0
    assert len(store.calls) == 2  # nothing due: no store operation at all
    up_c.burst("丙")
    await settle()
    c.cancel("cancelled")  # ending: its final record comes next, no more checkpoints
    await settle()
    assert c.ending
    assert checkpoints.due() == []
    for upstream in (up_a, up_b):
        upstream.finish()
    await asyncio.wait_for(asyncio.gather(a.done, b.done, c.done), 2)


async def test_a_tick_writes_a_slice_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_checkpoints, "SLICE", 2)
    relay = burst_relay()
    store = RecordingStore()
    checkpoints = Checkpoints(store, Metrics())  # type: ignore[arg-type]
    running = [await _generation(relay) for _ in range(5)]
    for index, (gen, upstream) in enumerate(running):
        checkpoints.track(f"m{index}", gen)
        upstream.burst("字" * (index + 1))
    await settle()
    assert await checkpoints.flush() == 5
    assert [[cp.message_id for cp in call] for call in store.calls] == [
        ["m0", "m1"],
        ["m2", "m3"],
        ["m4"],
    ]
    for _, upstream in running:
        upstream.finish()
    await asyncio.wait_for(asyncio.gather(*(gen.done for gen, _ in running)), 2)


async def test_a_failed_write_is_written_again_next_time() -> None:
    relay = burst_relay()
    store = RecordingStore(failures=1)
    checkpoints = Checkpoints(store, Metrics())  # type: ignore[arg-type]
    gen, upstream = await _generation(relay)
    checkpoints.track("m", gen)
    upstream.burst("一二三")
    await settle()
    with pytest.raises(StoreError):
        await checkpoints.flush()
    assert await checkpoints.flush() == 1  # not counted as written: written now
    assert store.calls == [[Checkpoint("m", "一二三", 3, 0, gen.ttft_ms)]]
    upstream.finish()
    await asyncio.wait_for(gen.done, 2)


async def test_the_tick_writes_logs_and_counts_failures_and_stops(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = RecordingStore(failures=1)
    metrics = Metrics()
    checkpoints = Checkpoints(store, metrics, interval=0.01)  # type: ignore[arg-type]
    gen, upstream = await _tracked_answer(checkpoints)
    with caplog.at_level(logging.ERROR, "wenxin_stream.server"):
        checkpoints.start()
        checkpoints.start()  # one tick, however often started
        await asyncio.wait_for(store.written.wait(), 5)
    assert store.calls == [[Checkpoint("m", "你好", 2, 0, gen.ttft_ms)]]
    assert "could not checkpoint answers: StoreError: database is locked" in caplog.text
    assert metrics.errors.labels("internal").value == 1
    await checkpoints.aclose()
    await checkpoints.aclose()  # idempotent
    upstream.finish()
    await asyncio.wait_for(gen.done, 2)


class FailingUsage:
    """Stands in for the usage writer: its first ``flush`` fails as a database away does."""

    def __init__(self) -> None:
        self.flushes = 0
        self.flushed = asyncio.Event()

    async def flush(self) -> int:
        self.flushes += 1
        if self.flushes == 1:
            raise StoreUnavailableError("the database is not reachable")
        self.flushed.set()
        return 0


async def test_a_bug_in_a_tick_is_logged_with_its_traceback_and_the_tick_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = RecordingStore(failures=1, bug=True)
    usage = FailingUsage()
    metrics = Metrics()
    checkpoints = Checkpoints(store, metrics, interval=0.01, usage=usage)  # type: ignore[arg-type]
    gen, upstream = await _tracked_answer(checkpoints)
    with caplog.at_level(logging.ERROR, "wenxin_stream.server"):
        checkpoints.start()
        await asyncio.wait_for(store.written.wait(), 5)
        await asyncio.wait_for(usage.flushed.wait(), 5)
    await checkpoints.aclose()
    assert store.calls == [[Checkpoint("m", "你好", 2, 0, gen.ttft_ms)]]  # the next tick wrote
    bugs = [r for r in caplog.records if r.exc_info]
    assert [r.getMessage() for r in bugs] == ["could not checkpoint answers: an unexpected error"]
    assert bugs[0].exc_info is not None
    assert bugs[0].exc_info[0] is KeyError
    # the database away is one line, no traceback
    assert "could not store usage: StoreUnavailableError: the database is not reachable" in (
        caplog.text
    )
    assert metrics.errors.labels("internal").value == 2
    upstream.finish()
    await asyncio.wait_for(gen.done, 2)


async def test_interval_zero_is_off_and_a_negative_one_is_refused() -> None:
    relay = burst_relay()
    checkpoints = Checkpoints(RecordingStore(), Metrics(), interval=0)  # type: ignore[arg-type]
    gen, upstream = await _generation(relay)
    checkpoints.track("m", gen)
    checkpoints.start()
    upstream.burst("你好")
    await settle()
    assert len(checkpoints) == 0
    assert await checkpoints.flush() == 0
    await checkpoints.aclose()
    upstream.finish()
    await asyncio.wait_for(gen.done, 2)
    with pytest.raises(ValueError, match="interval"):
        Checkpoints(RecordingStore(), Metrics(), interval=-1)  # type: ignore[arg-type]


async def test_the_store_writes_checkpoints_only_into_rows_still_streaming(
    tmp_path: Path,
) -> None:
    async with SQLiteStore(tmp_path / "w.db") as store:
        conv = await store.create_conversation("o", title=None, model="m", system=None)
        _, first = await store.add_exchange("o", conv.id, question="q1", model="m")
        _, second = await store.add_exchange("o", conv.id, question="q2", model="m")
        written = await store.checkpoint(
            [Checkpoint(first.id, "半句", 2, 1, 12.5), Checkpoint(second.id, "另", 1, 1, None)]
        )
        assert written == 2
        await store.update_message(
            second.id, content="另一个", status="complete", end_reason="completed",
            usage=None, ttft_ms=3.0, total_ms=9.0, generated_chars=3, delivered_chars=3,
        )  # fmt: skip
        # a checkpoint taken before the final record and landing after it changes nothing
        assert await store.checkpoint([Checkpoint(second.id, "另", 1, 1, None)]) == 0
        assert await store.checkpoint([Checkpoint("m_gone", "x", 1, 1, None)]) == 0
        assert await store.mark_streaming_as("server_crashed") == 1
        messages = await store.get_messages("o", conv.id)
    crashed, done = messages[1], messages[3]
    assert (crashed.status, crashed.end_reason, crashed.content) == (
        "partial",
        "server_crashed",
        "半句",
    )
    assert (crashed.generated_chars, crashed.delivered_chars, crashed.ttft_ms) == (2, 1, 12.5)
    assert (done.status, done.content, done.generated_chars) == ("complete", "另一个", 3)


def _row(db: Path, message_id: str) -> tuple[str, str, int | None] | None:
    with sqlite3.connect(db) as conn:
        row = conn.execute(
            "SELECT status, content, generated_chars FROM messages WHERE id = ?", (message_id,)
        ).fetchone()
    return None if row is None else (row[0], row[1], row[2])


def test_a_served_answer_is_in_the_database_while_it_streams(
    make_server: Callable[..., Running],
) -> None:
    srv = make_server(checkpoint_interval=0.05)
    with srv.client() as c:
        cid = new_conversation(c)
        request = c.build_request(
            "POST",
            f"/api/conversations/{cid}/messages",
            json={"content": paced("长文", "interval=0.02;chunks=100")},
        )
        response = c.send(request, stream=True)
        reader = EventReader(response)
        start = reader.next()
        assert start is not None
        assert start.event == "start"
        message_id = start.data.split('"message_id":"', 1)[1].split('"', 1)[0]

        def checkpointed() -> tuple[str, str, int | None] | None:
            row = _row(srv.db, message_id)
            return row if row is not None and row[0] == "streaming" and row[1] else None

        _, content, generated = wait_for(checkpointed, timeout=10)
        assert generated == len(content)
        rest = reader.rest()
        response.close()
    answer = texts(rest)
    assert answer.startswith(content)  # the checkpoint held a prefix of the answer
    assert len(content) < len(answer)  # taken while it streamed
    assert _row(srv.db, message_id) == ("complete", answer, len(answer))  # the final record
    assert len(srv.app.checkpoints) == 0  # forgotten at the end
