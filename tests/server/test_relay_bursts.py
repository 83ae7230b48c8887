"""Coalescing in the relay's log: a burst keeps its chunks for a reader on its way, and text
piles onto one delta while nobody is about to read it.

A scripted upstream delivers *bursts*: several text deltas yielded back to back without
returning to the event loop, as the SDK does for the events of one upstream read."""

from __future__ import annotations

import asyncio

import pytest
from server_helpers import (
    BurstUpstream,
    PokedWriter,
    burst_relay,
    reader_past_start,
    settle,
    start_bursts,
)

from wenxin_stream.server._relay import EntryKind, Generation, Relay


async def _started() -> tuple[Relay, Generation, BurstUpstream]:
    relay = burst_relay()
    gen, upstream = start_bursts(relay)
    await settle()
    return relay, gen, upstream


def _deltas(gen: Generation) -> list[str]:
    return [e.text for e in gen.entries if e.kind is EntryKind.DELTA]


async def _end(relay: Relay, gen: Generation, upstream: BurstUpstream) -> None:
    upstream.finish()
    await asyncio.wait_for(gen.done, 2)
    assert gen.entries[-1].kind is EntryKind.END
    assert not relay.running


async def test_a_burst_keeps_its_chunks_for_a_waiting_reader() -> None:
    relay, gen, upstream = await _started()
    sub = await reader_past_start(relay, gen)
    reader = asyncio.create_task(sub.next_batch())
    await settle()
    assert not reader.done()  # waiting in next_batch
    upstream.burst("一", "二", "三")
    batch = await asyncio.wait_for(reader, 1)
    assert [e.text for e in batch] == ["一", "二", "三"]  # one entry per chunk
    assert [e.seq for e in batch] == [1, 2, 3]
    assert gen.claimed == 3
    assert gen._woken == 0  # private: the reader arrived, nobody is on the way any more
    await _end(relay, gen, upstream)


async def test_without_a_waiting_reader_a_burst_is_one_delta() -> None:
    relay, gen, upstream = await _started()
    upstream.burst("一", "二", "三")  # nobody attached
    await settle()
    assert _deltas(gen) == ["一二三"]
    upstream.burst("四", "五")  # a second read: still unclaimed, still one delta
    await settle()
    assert _deltas(gen) == ["一二三四五"]
    assert gen.entries[-1].end_offset == 5

    sub = relay.attach(gen)  # attached but not asking: the same
    assert [e.kind for e in await sub.next_batch()] == [EntryKind.START, EntryKind.DELTA]
    upstream.burst("六", "七")
    upstream.burst("八")
    await settle()
    assert _deltas(gen) == ["一二三四五", "六七八"]  # the claimed delta is final
    batch = await sub.next_batch()
    assert [e.text for e in batch] == ["六七八"]
    await _end(relay, gen, upstream)


async def test_a_reader_busy_writing_finds_the_next_bursts_coalesced() -> None:
    relay, gen, upstream = await _started()
    sub = await reader_past_start(relay, gen)
    reader = asyncio.create_task(sub.next_batch())
    await settle()
    upstream.burst("a", "b")
    assert [e.text for e in await asyncio.wait_for(reader, 1)] == ["a", "b"]
    upstream.burst("c", "d")  # the reader is "writing" its batch: not waiting
    upstream.burst("e")
    await settle()
    assert [e.text for e in await sub.next_batch()] == ["cde"]
    await _end(relay, gen, upstream)


async def test_a_woken_reader_cancelled_on_its_way_does_not_stop_coalescing() -> None:
    relay, gen, upstream = await _started()
    sub = await reader_past_start(relay, gen)
    reader = asyncio.create_task(sub.next_batch())
    await settle()
    woken_at_cancel: list[int] = []

    def cancel_reader() -> None:  # woken, but it has not run yet: cancel it on its way
        woken_at_cancel.append(gen._woken)
        reader.cancel()

    upstream.burst("a", "b", then=cancel_reader)
    await asyncio.wait([reader], timeout=1)
    assert reader.cancelled()
    assert woken_at_cancel == [1]  # the premise: it had been woken for the burst
    assert _deltas(gen) == ["a", "b"]  # chunks kept for it...
    # private counter, asserted on purpose: a reader that never arrives must not keep
    # coalescing switched off for the rest of the answer
    assert gen._woken == 0
    upstream.burst("c", "d")
    await settle()
    assert _deltas(gen) == ["a", "bcd"]  # ...and nobody on the way now: coalesced again
    batch = await sub.next_batch()  # the subscription itself is still usable
    assert [e.text for e in batch] == ["a", "bcd"]
    await _end(relay, gen, upstream)


async def test_a_reader_cancelled_while_waiting_leaves_coalescing_on() -> None:
    relay, gen, upstream = await _started()
    sub = await reader_past_start(relay, gen)
    reader = asyncio.create_task(sub.next_batch())
    await settle()
    reader.cancel()  # gone before any text: its waiter is cancelled, never woken
    await asyncio.wait([reader], timeout=1)
    assert reader.cancelled()
    upstream.burst("x", "y", "z")
    await settle()
    assert gen._woken == 0  # private, see above
    assert _deltas(gen) == ["xyz"]
    await _end(relay, gen, upstream)


async def test_several_waiting_readers_each_take_the_whole_burst() -> None:
    relay, gen, upstream = await _started()
    subs = [await reader_past_start(relay, gen) for _ in range(3)]
    readers = [asyncio.create_task(sub.next_batch()) for sub in subs]
    await settle()
    upstream.burst("甲", "乙")
    batches = await asyncio.wait_for(asyncio.gather(*readers), 1)
    assert [[e.text for e in batch] for batch in batches] == [["甲", "乙"]] * 3
    assert batches[0][0] is batches[1][0]  # the same shared entries
    assert gen._woken == 0  # private, see above
    upstream.burst("丙", "丁")  # nobody waiting now
    await settle()
    assert _deltas(gen) == ["甲", "乙", "丙丁"]
    await _end(relay, gen, upstream)


async def test_written_ahead_a_burst_keeps_its_chunks_and_pokes_the_writer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # in a fleet the writer is the reader on its way: each chunk stays one event (a merged one
    # would shift a client's chunk count and timing) until the answer is long enough that its
    # log in Redis must stay under eventlog_maxlen; then one batch's text is one event
    monkeypatch.setattr("wenxin_stream.server._relay.WRITE_AHEAD_COALESCE_AFTER", 6)
    relay = burst_relay()
    writer = PokedWriter()
    relay.log = writer  # type: ignore[assignment]
    gen, upstream = start_bursts(relay)
    assert writer.tracked == [gen]  # tracked from its start
    assert gen.durable == 0
    upstream.burst("一", "二", "三")  # nobody attached, nothing logged yet
    await settle()
    assert _deltas(gen) == ["一", "二", "三"]
    assert writer.pokes == 4  # the start and each chunk
    assert gen.visible == 0  # a client reads only what the writer has logged
    upstream.burst("四", "五", "六", "七")
    await settle()
    assert _deltas(gen) == ["一", "二", "三", "四", "五", "六七"]  # past 6 entries: coalesced
    gen.logged(len(gen.entries))
    assert gen.visible == len(gen.entries)
    await _end(relay, gen, upstream)
