"""The watcher (``watch``: disconnect listener and heartbeat in one task) and the heartbeat's
behaviour while a write is stuck."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from wenxin_stream.server._connection import Outlet, heartbeat, watch

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

    async def receive(self) -> dict[str, Any]:
        self.receives += 1
        await self.gone.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: Any) -> None:
        self.sent.append(message)
        if self.block:
            await self.unblock.wait()


async def test_watch_pings_through_silence_and_returns_on_disconnect() -> None:
    peer = Peer()
    outlet = Outlet(peer.send)
    task = asyncio.create_task(watch(peer.receive, outlet, PING, 0.02, 1.0))
    await asyncio.sleep(0.09)
    assert not task.done()
    assert peer.sent.count(PING) >= 2  # the silence was filled
    assert peer.receives >= 2  # the wait for the disconnect was cut and taken up again
    peer.gone.set()
    await asyncio.wait_for(task, 1)  # the disconnect was not lost across the cuts


async def test_watch_returns_when_a_write_is_stuck() -> None:
    peer = Peer()
    outlet = Outlet(peer.send)
    task = asyncio.create_task(watch(peer.receive, outlet, PING, 10.0, 0.05))
    peer.block = True
    writer = asyncio.create_task(outlet.write({"type": "data"}))
    started = time.monotonic()
    await asyncio.wait_for(task, 1)
    assert time.monotonic() - started >= 0.04  # not before the stall timeout
    assert PING not in peer.sent  # no ping while a write is in flight
    writer.cancel()


async def test_watch_ignores_other_messages() -> None:
    messages = [{"type": "http.request", "body": b"", "more_body": False}]
    gone = asyncio.Event()

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop()
        await gone.wait()
        return {"type": "http.disconnect"}

    outlet = Outlet(Peer().send)
    task = asyncio.create_task(watch(receive, outlet, PING, 10.0, 10.0))
    await asyncio.sleep(0.02)
    assert not task.done()
    gone.set()
    await asyncio.wait_for(task, 1)


async def test_a_stuck_write_does_not_make_the_heartbeat_spin() -> None:
    # ping interval shorter than the stall timeout: between the two, the heartbeat used to
    # wake at once, again and again (a busy loop burning a core per stuck client)
    peer = Peer()
    outlet = Outlet(peer.send)
    peer.block = True
    writer = asyncio.create_task(outlet.write({"type": "data"}))
    await asyncio.sleep(0)
    steps = 0
    real = outlet.loop

    class CountingLoop:
        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

        def time(self) -> float:
            nonlocal steps
            steps += 1
            return real.time()

    outlet.loop = CountingLoop()  # type: ignore[assignment]
    await asyncio.wait_for(heartbeat(outlet, PING, 0.01, 0.2), 1)
    assert steps < 20, steps  # a few steps, not thousands
    writer.cancel()
