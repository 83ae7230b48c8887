"""``follow``: a stream's relay loop in the request's task, watched by the server's disconnect
signal and one timer (pings through silence, a cut when a write is stuck) — or, under a server
without the signal, by a task waiting in ``receive`` — and ``watch_stall``, the WebSocket's
watchdog. A cancellation from outside still propagates, and nothing is left running,
unretrieved or in a reference cycle."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
import weakref
from typing import Any

import pytest

from wenxin_stream._asgi import DisconnectSignal
from wenxin_stream.server._connection import PING_BODY, Outlet, follow, watch_stall

PING = {"type": "ping"}


class Peer:
    """A fake uvicorn connection: ``receive`` waits for the disconnect (and may be cancelled
    while waiting, as uvicorn's may); ``send`` records and can be made to block."""

    def __init__(self) -> None:
        self.sent: list[Any] = []
        self.gone = asyncio.Event()
        self.unblock = asyncio.Event()
        self.block = False
        self.receives = 0
        self.let_go = 0

    async def receive(self) -> dict[str, Any]:
        self.receives += 1
        try:
            await self.gone.wait()
        except asyncio.CancelledError:
            self.let_go += 1
            raise
        return {"type": "http.disconnect"}

    async def send(self, message: Any) -> None:
        self.sent.append(message)
        if self.block:
            await self.unblock.wait()


class Relay:
    """A relay loop: writes one body, then waits until told to end (or is cancelled)."""

    def __init__(self, outlet: Outlet) -> None:
        self.outlet = outlet
        self.end = asyncio.Event()
        self.cancelled = False

    async def run(self) -> str:
        await self.outlet.write({"type": "http.response.body", "body": b"data: x\n\n"})
        try:
            await self.end.wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        return "ended"


def pings(peer: Peer) -> int:
    return sum(1 for m in peer.sent if m.get("body") == PING_BODY)


def parts() -> tuple[Peer, DisconnectSignal, Outlet, Relay]:
    """A fake connection, its disconnect signal, its outlet and a relay loop writing to it."""
    peer, signal = Peer(), DisconnectSignal()
    outlet = Outlet(peer.send)
    return peer, signal, outlet, Relay(outlet)


async def test_follow_returns_true_when_the_relay_ends_and_takes_no_task() -> None:
    peer, signal, outlet, relay = parts()
    tasks = len(asyncio.all_tasks())
    following = asyncio.create_task(follow(relay.run(), peer.receive, signal, outlet, 10.0, 10.0))
    await asyncio.sleep(0.01)
    assert len(asyncio.all_tasks()) == tasks + 1  # the caller's task only: no watcher task
    relay.end.set()
    assert await asyncio.wait_for(following, 1) is True
    assert peer.receives == 0  # nothing waited in `receive`
    signal.fire()  # after the end: the guard let go of it
    assert not relay.cancelled


async def test_follow_cuts_the_relay_when_the_signal_fires_and_the_caller_goes_on() -> None:
    peer, signal, outlet, relay = parts()

    async def caller() -> tuple[bool, str]:
        gone = not await follow(relay.run(), peer.receive, signal, outlet, 10.0, 10.0)
        await asyncio.sleep(0)  # the cancellation was withdrawn: this task is not cancelled
        return gone, "after"

    task = asyncio.create_task(caller())
    await asyncio.sleep(0.01)
    signal.fire()
    assert await asyncio.wait_for(task, 1) == (True, "after")
    assert relay.cancelled


async def test_follow_with_a_client_already_gone_returns_false_at_once() -> None:
    peer, signal = Peer(), DisconnectSignal()
    signal.fire()
    outlet = Outlet(peer.send)
    relay = Relay(outlet)
    assert await asyncio.wait_for(follow(relay.run(), peer.receive, signal, outlet), 1) is False
    assert relay.cancelled  # at its first wait


async def test_follow_pings_through_silence_from_a_timer() -> None:
    peer, signal, outlet, relay = parts()
    task = asyncio.create_task(follow(relay.run(), peer.receive, signal, outlet, 0.02, 1.0))
    await asyncio.sleep(0.11)
    assert pings(peer) >= 3  # the silence was filled
    assert peer.receives == 0
    relay.end.set()
    assert await asyncio.wait_for(task, 1) is True
    count = pings(peer)
    await asyncio.sleep(0.05)
    assert pings(peer) == count  # the timer stopped with the relay


async def test_follow_cuts_a_client_that_stopped_reading_and_pings_no_one_meanwhile() -> None:
    peer, signal = Peer(), DisconnectSignal()
    outlet = Outlet(peer.send)
    peer.block = True  # the first write never completes
    relay = Relay(outlet)
    started = time.monotonic()
    result = await asyncio.wait_for(
        follow(relay.run(), peer.receive, signal, outlet, 0.01, 0.06), 1
    )
    assert result is False
    assert relay.cancelled is False
    assert time.monotonic() - started >= 0.05  # not before the stall timeout
    assert pings(peer) == 0  # no ping while a write is in flight


async def test_follow_a_stuck_ping_is_a_stall_too() -> None:
    peer, signal, outlet, relay = parts()
    task = asyncio.create_task(follow(relay.run(), peer.receive, signal, outlet, 0.02, 0.06))
    await asyncio.sleep(0.005)
    peer.block = True  # the client stops reading: the next ping waits
    assert await asyncio.wait_for(task, 1) is False
    assert pings(peer) == 1
    outlet.close()


async def test_follow_re_raises_the_relays_error_and_stops_watching() -> None:
    peer, signal = Peer(), DisconnectSignal()
    outlet = Outlet(peer.send)

    async def failing() -> None:
        await asyncio.sleep(0)
        raise ValueError("bug")

    try:
        await follow(failing(), peer.receive, signal, outlet, 0.01, 1.0)
    except ValueError:
        pass
    else:
        raise AssertionError("the error was swallowed")
    await asyncio.sleep(0.03)
    assert pings(peer) == 0  # no timer was left behind
    signal.fire()  # nobody listens any more


async def test_follow_a_relay_that_eats_the_cut_still_reads_as_gone() -> None:
    peer, signal = Peer(), DisconnectSignal()
    outlet = Outlet(peer.send)

    async def stubborn() -> None:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(10)

    async def caller() -> bool:
        gone = not await follow(stubborn(), peer.receive, signal, outlet, 10.0, 10.0)
        await asyncio.sleep(0)  # not cancelled afterwards
        return gone

    task = asyncio.create_task(caller())
    await asyncio.sleep(0.01)
    signal.fire()
    assert await asyncio.wait_for(task, 1) is True


async def test_follow_a_cancellation_from_outside_propagates_even_with_the_cut() -> None:
    for together in (False, True):
        peer, signal = Peer(), DisconnectSignal()
        outlet = Outlet(peer.send)
        relay = Relay(outlet)
        task = asyncio.create_task(follow(relay.run(), peer.receive, signal, outlet, 10.0, 10.0))
        await asyncio.sleep(0.01)
        if together:
            signal.fire()
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        else:
            raise AssertionError(f"the outside cancellation was lost (together={together})")
        assert relay.cancelled


async def test_follow_without_a_signal_waits_in_receive_once_and_pings_from_the_timer() -> None:
    peer = Peer()
    outlet = Outlet(peer.send)
    relay = Relay(outlet)
    task = asyncio.create_task(follow(relay.run(), peer.receive, None, outlet, 0.02, 1.0))
    await asyncio.sleep(0.09)
    assert not task.done()
    assert pings(peer) >= 2  # the silence was filled
    assert peer.receives == 1  # one wait for the disconnect, never cut and taken up again
    peer.gone.set()
    assert await asyncio.wait_for(task, 1) is False
    assert relay.cancelled
    whole = Relay(outlet)
    peer2 = Peer()
    task = asyncio.create_task(follow(whole.run(), peer2.receive, None))
    await asyncio.sleep(0.01)
    whole.end.set()
    assert await asyncio.wait_for(task, 1) is True
    assert peer2.receives == 1
    await asyncio.sleep(0)
    assert peer2.let_go == 1  # the listener was cancelled (not awaited: one loop turn later)


async def test_follow_without_a_signal_cuts_a_client_that_stopped_reading() -> None:
    peer = Peer()
    outlet = Outlet(peer.send)
    relay = Relay(outlet)
    peer.block = True  # the relay's first write sticks
    started = time.monotonic()
    task = asyncio.create_task(follow(relay.run(), peer.receive, None, outlet, 10.0, 0.05))
    assert await asyncio.wait_for(task, 1) is False
    assert time.monotonic() - started >= 0.04  # not before the stall timeout
    assert pings(peer) == 0


async def test_follow_without_a_signal_ignores_other_messages() -> None:
    messages = [{"type": "http.request", "body": b"", "more_body": False}]
    gone = asyncio.Event()

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop()
        await gone.wait()
        return {"type": "http.disconnect"}

    _, _, outlet, relay = parts()
    task = asyncio.create_task(follow(relay.run(), receive, None, outlet, 10.0, 10.0))
    await asyncio.sleep(0.02)
    assert not task.done()
    gone.set()
    assert await asyncio.wait_for(task, 1) is False


async def test_follow_a_failing_receive_cuts_the_relay_and_is_raised() -> None:
    async def receive() -> dict[str, Any]:
        await asyncio.sleep(0.01)
        raise ValueError("receive broke")

    _, _, outlet, relay = parts()
    caller = asyncio.current_task()
    assert caller is not None
    with pytest.raises(ValueError, match="receive broke"):
        await follow(relay.run(), receive, None, outlet, 10.0, 10.0)
    assert relay.cancelled
    assert caller.cancelling() == 0  # the cut was withdrawn


async def test_follow_a_listener_failing_while_let_go_stays_quiet(
    loop_errors: list[dict[str, Any]],
) -> None:
    broke = asyncio.Event()

    async def receive() -> dict[str, Any]:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            broke.set()
            raise RuntimeError("receive broke while being cancelled") from None
        raise AssertionError("unreachable")

    _, _, outlet, relay = parts()
    task = asyncio.create_task(follow(relay.run(), receive, None, outlet, 10.0, 10.0))
    await asyncio.sleep(0.01)
    relay.end.set()
    assert await task is True
    await asyncio.wait_for(broke.wait(), 1)
    await asyncio.sleep(0)
    gc.collect()
    assert loop_errors == []


async def test_follow_without_a_signal_a_cancellation_from_outside_propagates() -> None:
    peer, _, outlet, relay = parts()
    task = asyncio.create_task(follow(relay.run(), peer.receive, None, outlet, 10.0, 10.0))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert relay.cancelled
    # the disconnect and the outside cancellation in the same iteration: it still propagates
    peer, _, outlet, relay = parts()
    task = asyncio.create_task(follow(relay.run(), peer.receive, None, outlet, 10.0, 10.0))
    await asyncio.sleep(0.01)

    def both() -> None:
        peer.gone.set()
        task.cancel()

    asyncio.get_running_loop().call_soon(both)
    with pytest.raises(asyncio.CancelledError):
        await task
    assert task.cancelled()


@pytest.mark.parametrize("who", ["relay", "receive"])
async def test_follow_an_error_leaving_it_makes_no_reference_cycle(
    no_collector: None, who: str
) -> None:
    """A failed connection's task, its error and this frame are freed by reference counts
    alone (the server's cyclic collector runs only when quiet)."""
    peer = Peer()

    async def failing_relay() -> None:
        await asyncio.sleep(0.001)
        raise ValueError("x")

    async def failing_receive() -> dict[str, Any]:
        await asyncio.sleep(0.001)
        raise ValueError("x")

    async def connection() -> None:
        outlet = Outlet(peer.send)
        if who == "relay":
            await follow(failing_relay(), peer.receive, DisconnectSignal(), outlet, 10.0, 10.0)
        else:
            await follow(Relay(outlet).run(), failing_receive, None, outlet, 10.0, 10.0)

    task = asyncio.create_task(connection())
    with pytest.raises(ValueError, match="x"):
        await task
    ref = weakref.ref(task)
    del task
    await asyncio.sleep(0)
    assert ref() is None


async def test_watch_stall_returns_only_when_a_write_is_stuck() -> None:
    peer = Peer()
    outlet = Outlet(peer.send)
    task = asyncio.create_task(watch_stall(outlet, 0.03))
    await asyncio.sleep(0.08)  # silence is no stall, and a watchdog does not ping
    assert not task.done()
    assert peer.sent == []
    peer.block = True
    writer = asyncio.create_task(outlet.write({"type": "data"}))
    started = time.monotonic()
    await asyncio.wait_for(task, 1)
    assert time.monotonic() - started >= 0.02
    writer.cancel()


async def test_a_stuck_write_does_not_make_the_watchdog_or_the_guard_spin() -> None:
    # a stall timeout longer than the ping interval: between the two, the heartbeat once
    # woke at once, again and again (a busy loop burning a core per stuck client)
    peer = Peer()
    peer.block = True
    steps = 0

    def counting(outlet: Outlet) -> None:
        real = outlet.loop

        class CountingLoop:
            def __getattr__(self, name: str) -> Any:
                return getattr(real, name)

            def time(self) -> float:
                nonlocal steps
                steps += 1
                return real.time()

        outlet.loop = CountingLoop()  # type: ignore[assignment]

    outlet = Outlet(peer.send)
    writer = asyncio.create_task(outlet.write({"type": "data"}))
    await asyncio.sleep(0)
    counting(outlet)
    await asyncio.wait_for(watch_stall(outlet, 0.2), 1)
    assert steps < 10, steps  # a few steps, not thousands
    writer.cancel()
    steps = 0
    outlet = Outlet(peer.send)
    relay = Relay(outlet)  # its first write sticks; pings every 0.01 s would be due
    signal = DisconnectSignal()
    task = asyncio.create_task(follow(relay.run(), peer.receive, signal, outlet, 0.01, 0.2))
    await asyncio.sleep(0)
    counting(outlet)  # (once it runs: follow takes its task from the real loop)
    gone = await asyncio.wait_for(task, 1)
    assert gone is False
    assert steps < 60, steps  # a look each ping interval while stuck (~20), not thousands
    assert pings(peer) == 0


async def test_follow_without_an_outlet_watches_only_the_signal() -> None:
    peer, signal = Peer(), DisconnectSignal()
    whole = Relay(Outlet(peer.send))
    task = asyncio.create_task(follow(whole.run(), peer.receive, signal))
    await asyncio.sleep(0.03)
    assert pings(peer) == 0
    assert peer.receives == 0
    signal.fire()
    assert await asyncio.wait_for(task, 1) is False
    assert whole.cancelled


async def test_an_outlet_is_idle_again_once_a_waiting_write_now_has_ended_well() -> None:
    peer = Peer()
    outlet = Outlet(peer.send)
    peer.block = True
    outlet.write_now(b"data: a\n\n")  # the client's buffer is full: the rest runs as a task
    assert not outlet.idle
    peer.unblock.set()
    await asyncio.sleep(0.01)
    assert outlet.idle  # it ended well: nothing left for the next write to wait for
    assert outlet.pending is None

    async def failing(message: Any) -> None:
        await asyncio.sleep(0)
        raise OSError("gone")

    outlet = Outlet(failing)
    outlet.write_now(b"data: b\n\n")
    await asyncio.sleep(0.01)
    assert not outlet.idle  # a failed write stays for the next write to raise
    try:
        await outlet.write({"type": "http.response.body", "body": b"c"})
    except OSError:
        pass
    else:
        raise AssertionError("the failure of the earlier write was lost")
