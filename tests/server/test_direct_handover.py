"""The direct hand-over: a stream's only reader, parked in ``next_batch`` with a ``push``, gets
new entries written from the generation's side (no wake-up of its task), and is woken for
what ``push`` refuses; ``Outlet.write_now`` runs ``send`` at once and finishes a write that
has to wait as a task the next write waits for."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from server_helpers import (
    BurstUpstream,
    PokedWriter,
    burst_relay,
    reader_past_start,
    settle,
    start_bursts,
)

from wenxin_stream.server._connection import Outlet
from wenxin_stream.server._relay import Entry, EntryKind, Generation, Subscription


async def _parked() -> tuple[Generation, BurstUpstream, Subscription, list[list[str]]]:
    """A generation past ``start`` whose one reader pushes text (recorded) and refuses the
    rest; the reader's task is parked in ``next_batch``."""
    relay = burst_relay()
    gen, upstream = start_bursts(relay)
    sub = await reader_past_start(relay, gen)
    pushed: list[list[str]] = []
    sub.push = _text_pusher(pushed)
    return gen, upstream, sub, pushed


def _text_pusher(pushed: list[list[str]]) -> Any:
    """A ``push`` that records text batches in ``pushed`` and refuses anything else."""

    def push(batch: list[Entry]) -> bool:
        if any(entry.kind is not EntryKind.DELTA for entry in batch):
            return False
        pushed.append([entry.text for entry in batch])
        return True

    return push


async def test_a_parked_reader_gets_each_burst_pushed_without_waking() -> None:
    gen, upstream, sub, pushed = await _parked()
    reader = asyncio.create_task(sub.next_batch())
    await settle()
    upstream.burst("一", "二", "三")
    await settle()
    assert pushed == [["一", "二", "三"]]  # one push per burst, each chunk its own entry
    assert not reader.done()  # its task was not woken
    assert sub.cursor == 4
    assert gen.claimed == 3  # claimed as a batch handed to a client is
    assert gen.delivered_chars == 3
    upstream.burst("四")
    await settle()
    assert pushed == [["一", "二", "三"], ["四"]]
    assert not reader.done()
    upstream.finish()  # `end` is refused by push: the reader is woken and takes it
    batch = await asyncio.wait_for(reader, 1)
    assert [entry.kind for entry in batch] == [EntryKind.END]
    await asyncio.wait_for(gen.done, 1)
    assert gen._woken == 0  # private: nobody is counted on the way any more


async def test_what_push_refuses_wakes_the_reader_with_the_whole_batch() -> None:
    gen, upstream, sub, _ = await _parked()
    sub.push = lambda batch: False
    reader = asyncio.create_task(sub.next_batch())
    await settle()
    upstream.burst("a", "b")
    batch = await asyncio.wait_for(reader, 1)
    assert [entry.text for entry in batch] == ["a", "b"]
    upstream.finish()
    await asyncio.wait_for(gen.done, 1)


async def test_a_reader_that_left_is_not_pushed_to() -> None:
    gen, upstream, sub, pushed = await _parked()
    reader = asyncio.create_task(sub.next_batch())
    await settle()
    reader.cancel()
    await asyncio.wait([reader], timeout=1)
    upstream.burst("x", "y")
    await settle()
    assert pushed == []
    assert [entry.text for entry in gen.entries[1:]] == ["xy"]  # nobody on the way: coalesced
    upstream.finish()
    await asyncio.wait_for(gen.done, 1)


async def test_a_failing_push_leaves_the_batch_to_the_reader() -> None:
    gen, upstream, sub, _ = await _parked()

    def broken(batch: list[Entry]) -> bool:
        raise ValueError("cannot encode")

    sub.push = broken
    reader = asyncio.create_task(sub.next_batch())
    await settle()
    upstream.burst("a")
    batch = await asyncio.wait_for(reader, 1)
    assert [entry.text for entry in batch] == ["a"]
    upstream.finish()
    await asyncio.wait_for(gen.done, 1)


async def test_written_ahead_entries_are_pushed_in_the_writers_own_call() -> None:
    # in a fleet a client may have an entry once it is in Redis: the writer's word
    # (`logged`) hands it to the parked reader's connection at once, not a turn later
    relay = burst_relay()
    relay.log = PokedWriter()  # type: ignore[assignment]
    gen, upstream = start_bursts(relay)
    gen.logged(1)  # the start is in Redis
    sub = await reader_past_start(relay, gen)
    pushed: list[list[str]] = []
    sub.push = _text_pusher(pushed)
    reader = asyncio.create_task(sub.next_batch())
    await settle()
    upstream.burst("一", "二")
    await settle()
    assert pushed == []  # not in Redis yet: nothing for the client
    gen.logged(len(gen.entries))
    assert pushed == [["一", "二"]]  # within the call: no turn of the loop in between
    assert not reader.done()
    upstream.finish()  # the end is refused by push: the reader is woken and takes it
    batch = await asyncio.wait_for(reader, 1)
    assert [entry.kind for entry in batch] == [EntryKind.END]
    await asyncio.wait_for(gen.done, 1)
    assert gen._woken == 0  # private: nobody is counted on the way any more


class _Sends:
    """An ASGI ``send`` that records bodies; while ``gate`` is set it waits for it first."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.gate: asyncio.Future[None] | None = None
        self.error: Exception | None = None
        self.cancelled = False

    async def __call__(self, message: dict[str, Any]) -> None:
        if self.error is not None:
            raise self.error
        gate = self.gate
        if gate is not None:
            try:
                await gate
            except asyncio.CancelledError:
                self.cancelled = True
                raise
        self.bodies.append(message["body"])


async def test_write_now_writes_at_once_when_send_does_not_wait() -> None:
    sends = _Sends()
    outlet = Outlet(sends)
    outlet.write_now(b"a")
    assert sends.bodies == [b"a"]  # before anything else ran
    assert outlet.idle
    assert outlet.busy_since is None


async def test_a_write_now_that_waits_finishes_before_the_next_write() -> None:
    sends = _Sends()
    outlet = Outlet(sends)
    sends.gate = gate = asyncio.get_running_loop().create_future()
    outlet.write_now(b"first")
    assert sends.bodies == []
    assert not outlet.idle
    assert outlet.busy_since is not None  # a stall watchdog sees it in flight
    sends.gate = None
    second = asyncio.create_task(
        outlet.write({"type": "http.response.body", "body": b"second", "more_body": True})
    )
    await settle()
    assert not second.done()  # waits for the first
    gate.set_result(None)
    await asyncio.wait_for(second, 1)
    assert sends.bodies == [b"first", b"second"]
    assert outlet.idle
    assert outlet.busy_since is None


async def test_a_failed_write_now_fails_the_next_write() -> None:
    sends = _Sends()
    outlet = Outlet(sends)
    sends.error = OSError("gone")
    outlet.write_now(b"a")
    assert outlet.inflight == 0
    sends.error = None
    with pytest.raises(OSError, match="gone"):
        await outlet.write({"type": "http.response.body", "body": b"b", "more_body": True})
    assert sends.bodies == []


async def test_close_stops_a_write_now_that_waits() -> None:
    sends = _Sends()
    outlet = Outlet(sends)
    sends.gate = asyncio.get_running_loop().create_future()
    outlet.write_now(b"a")
    rest = outlet.pending
    assert rest is not None
    await settle()
    outlet.close()
    await asyncio.wait([rest], timeout=1)
    assert rest.cancelled()
    assert sends.cancelled  # the send saw the cancellation at the point it waited
    assert sends.bodies == []
    assert outlet.inflight == 0


async def test_write_now_takes_a_send_that_is_no_coroutine() -> None:
    bodies: list[bytes] = []

    def send(message: dict[str, Any]) -> asyncio.Future[None]:
        bodies.append(message["body"])
        done = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    outlet = Outlet(send)  # type: ignore[arg-type]
    outlet.write_now(b"a")
    await outlet.write({"type": "http.response.body", "body": b"b", "more_body": True})
    assert bodies == [b"a", b"b"]
    assert outlet.idle
