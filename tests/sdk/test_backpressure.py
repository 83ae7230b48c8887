"""Backpressure: a slow consumer slows the server down instead of filling the client's memory
(LESSONS 16).

How it is measured
------------------
The emulator runs in a **subprocess** (so this process holds only the client: no shared GIL,
and ``tracemalloc`` sees client memory only) and streams an endless answer as fast as it can
(``endless=1``, no pacing), behind an ASGI wrapper that counts the body bytes the app hands to
uvicorn; ``GET /written`` reports the count. uvicorn stops the app (its ``send`` blocks) while
the socket's write buffer is full, so that count is what the server generated: what the client
consumed plus what sits in buffers (uvicorn's transport, both kernel socket buffers, aiohttp's
``StreamReader``, which pauses reading at about 128 KiB).

1. *Fast phase*: a consumer that never waits reads for 0.5 s; the count grows at the rate the
   server can produce (several MB/s on loopback).
2. *Slow phase*: a new stream whose consumer sleeps 5 ms per event. Once the buffers are full
   (the count grew by at most 128 KiB over 0.3 s — after a fraction of a second; kernel
   autotuning can take the buffers to a few MB on loopback), the count must stay flat for
   one more second: it may grow only by what the consumer took meanwhile (tens of KB), with
   a 256 KiB allowance, and by far less than the fast rate would give. On a loaded machine
   the server can look flat for 0.3 s only because it was starved of CPU; a window that then
   grows past the allowance was a false start, and the search begins again. A server that is
   not held back never goes flat for a whole window, and the test fails after 12 s.
3. Meanwhile ``tracemalloc`` traces this process's Python heap (the client), whose growth
   over the slow phase must stay under 2 MB although the server would otherwise have
   produced many MB in that time. Kernel socket buffers are not Python memory.
"""

from __future__ import annotations

import asyncio
import gc
import subprocess
import sys
import textwrap
import time
import tracemalloc
import urllib.request
from collections.abc import Iterator

import pytest
from sdk_helpers import build_client, credentials, fault

from wenxin_stream import AsyncClient, Client

ENDLESS = fault("背压测试", "endless=1;interval=0")
WINDOW = 1.0
"""Seconds over which the server's output must stay flat once the buffers are full."""
SETTLE_LIMIT = 12.0
"""The server must be held back within this many seconds: flat for 0.3 s, then for
:data:`WINDOW` more."""
ALLOWANCE = 256 * 1024
"""What the server may write in the :data:`WINDOW` after it went flat (the consumer's take)."""
MB = 1 << 20

SERVER = textwrap.dedent(
    """
    import sys
    from wenxin_stream._asgi import send_json
    from wenxin_stream.emulator import EmulatorConfig, create_app, serve_in_thread

    emulator = create_app(EmulatorConfig(ttft=0, interval=0, v2_interval=0))
    written = 0

    async def app(scope, receive, send):
        global written
        if scope["type"] == "http" and scope["path"] == "/written":
            await send_json(send, 200, {"written": written})
            return

        async def counting_send(message):
            global written
            if message["type"] == "http.response.body":
                written += len(message.get("body", b""))
            await send(message)

        await emulator(scope, receive, counting_send)

    handle = serve_in_thread(app)
    print(handle.base_url, flush=True)
    sys.stdin.read()  # until the test closes our stdin
    handle.stop()
    """
)


class CountingServer:
    """The emulator subprocess and its byte count."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url

    @property
    def written(self) -> int:
        url = self.base_url + "/written"
        with urllib.request.urlopen(url, timeout=5) as answer:
            text = answer.read().decode()
        return int(text.split(":")[1].rstrip("}"))


@pytest.fixture(scope="module")
def server() -> Iterator[CountingServer]:
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVER],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        yield CountingServer(proc.stdout.readline().strip())
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def _fast_rate(client: AsyncClient, server: CountingServer) -> float:
    start_bytes, start = server.written, time.monotonic()
    async with client.chat.stream(messages=ENDLESS) as stream:
        async for _ in stream:
            if time.monotonic() - start > 0.5:
                break
    return (server.written - start_bytes) / (time.monotonic() - start)


class Plateau:
    """Samples ``written`` while a slow consumer reads; finds when it stops growing (the
    buffers are full) and how much it grows in the :data:`WINDOW` seconds after that."""

    def __init__(self, server: CountingServer) -> None:
        self.server = server
        self.start = time.monotonic()
        self.start_written = server.written
        self.samples: list[tuple[float, int]] = []
        self.settled_at: float | None = None
        self.settled_written = 0
        self.false_starts = 0
        """Windows that grew past :data:`ALLOWANCE` (the search started again after them)."""

    def sample(self) -> bool:
        """Record the current count; True once the measuring window is over."""
        now = time.monotonic() - self.start
        if self.samples and now - self.samples[-1][0] < 0.05:
            return self._done(now)
        written = self.server.written
        self.samples.append((now, written))
        if self.settled_at is None:
            earlier = [w for t, w in self.samples if t <= now - 0.3]
            if earlier and written - earlier[-1] <= 128 * 1024:
                self.settled_at, self.settled_written = now, written
        return self._done(now)

    def _done(self, now: float) -> bool:
        if self.settled_at is not None and now >= self.settled_at + WINDOW:
            if self.growth <= ALLOWANCE:
                return True
            # it only looked flat (a loaded machine starves the server for a moment before
            # the buffers are full): look for the plateau again
            self.false_starts += 1
            self.settled_at = None
        if self.settled_at is None:
            assert now < SETTLE_LIMIT, f"the server never stopped: {self.samples[-5:]}"
        return False

    @property
    def growth(self) -> int:
        """Bytes written during the window after settling."""
        return self.samples[-1][1] - self.settled_written


async def test_a_slow_async_consumer_holds_the_server_back(server: CountingServer) -> None:
    h = build_client("async", **credentials("v2", server.base_url))
    client = h.client
    assert isinstance(client, AsyncClient)
    fast_rate = await _fast_rate(client, server)

    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        peak_growth = 0
        events = 0
        async with client.chat.stream(messages=ENDLESS) as stream:
            plateau = Plateau(server)
            async for _ in stream:
                events += 1
                await asyncio.sleep(0.005)  # the slow consumer
                if events % 10 == 0:
                    peak_growth = max(peak_growth, tracemalloc.get_traced_memory()[0] - base)
                if plateau.sample():
                    break
        end_written = plateau.samples[-1][1]
    finally:
        tracemalloc.stop()
        await h.close()
    total = end_written - plateau.start_written
    report = (
        f"fast consumer: server wrote {fast_rate / MB:.2f} MB/s; slow consumer: {events} "
        f"events in {time.monotonic() - plateau.start:.1f} s, server wrote {total / MB:.2f} MB, "
        f"flat after {plateau.settled_at:.2f} s, then {plateau.growth / 1024:.0f} KiB in "
        f"{WINDOW} s ({plateau.false_starts} false starts); heap growth peak "
        f"{peak_growth / MB:.2f} MB"
    )
    print(report)
    assert plateau.growth <= ALLOWANCE, report
    assert fast_rate * WINDOW >= 5 * max(plateau.growth, 64 * 1024), report
    assert peak_growth < 2 * MB, report


def test_a_slow_sync_consumer_holds_the_server_back(server: CountingServer) -> None:
    """The sync twin reads the socket only when the consumer asks for the next event."""
    client = Client(environ={}, **credentials("v2", server.base_url))
    with client.chat.stream(messages=ENDLESS) as stream:
        plateau = Plateau(server)
        for _ in stream:
            time.sleep(0.005)
            if plateau.sample():
                break
    client.close()
    assert plateau.growth <= ALLOWANCE, plateau.samples
