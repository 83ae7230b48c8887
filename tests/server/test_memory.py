"""What a finished answer keeps while it waits in its resume window (server/_relay.py), and what
the server gives back after a peak (server/_gc.py). Object counts and sizes, never timings:
``bench/memory.py`` measures the bytes (``bench/MEMORY.md``)."""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import os
import sys
import weakref
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from server_helpers import paced, running
from test_serve_relay import FakeUpstream, _ended, _relay, _start
from uvicorn.server import ServerState

from wenxin_stream import RetryPolicy, TextDelta, Timeout
from wenxin_stream._credentials import NoAuth
from wenxin_stream._http_limits import HTTPLimits, LimitedConfig, LimitedHttpToolsProtocol
from wenxin_stream._stream_core import ChatCall, StreamCore
from wenxin_stream.bench._system import read_rss_bytes
from wenxin_stream.emulator import ServerHandle
from wenxin_stream.server._config import ServerConfig
from wenxin_stream.server._gc import Collector, resident_bytes, trim_heap
from wenxin_stream.server._metrics import Metrics
from wenxin_stream.server._relay import Entry, EntryKind, Generation
from wenxin_stream.server._store import SQLiteStore, StoreError


def _log_bytes(entries: list[Entry]) -> int:
    total = 0
    for e in entries:
        total += sys.getsizeof(e) + sys.getsizeof(e.parts) + sum(map(sys.getsizeof, e.parts))
        total += sum(sys.getsizeof(b) for b in (e._json, e._sse) if b is not None)
    return total


def test_the_stream_core_of_each_open_stream_is_slotted() -> None:
    """One ``StreamCore`` per open stream (the SDK's, and the server's upstream stream): its
    ~30 attributes in slots, not an instance dict (which was ~1.4 KB of each stream)."""
    call = ChatCall("v2", "ernie-lite-8k", ({"role": "user", "content": "x"},), {})
    core = StreamCore(
        call, base_url="http://x", auth=NoAuth(), retry=RetryPolicy(), timeout=Timeout()
    )
    assert not hasattr(core, "__dict__")
    assert sys.getsizeof(core) < 400
    core.http_request(None, 0.0)  # an attempt's state has its slots too
    core.begin_body({"x-request-id": "r"})
    assert core.response_headers == {"x-request-id": "r"}


class _Transport(asyncio.Transport):
    def get_extra_info(self, name: str, default: object = None) -> object:
        return {"peername": ("127.0.0.1", 5000), "sockname": ("127.0.0.1", 80)}.get(name)

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass


async def test_a_client_connections_protocol_keeps_one_shared_key_table() -> None:
    """CPython 3.11 shares one key table among a class's instances up to 30 keys; beyond,
    each instance gets a dict of its own (~1.6 KB). uvicorn's protocol sets 27 attributes;
    ours (``_http_limits``) are slots, so every client connection stays under the limit."""

    async def app(scope: object, receive: object, send: object) -> None:
        pass

    config = LimitedConfig(app, HTTPLimits(max_connections=0, max_connections_per_ip=0))
    config.load()
    protocol = LimitedHttpToolsProtocol(config, ServerState(), {}, asyncio.get_running_loop())
    protocol.connection_made(_Transport())
    try:
        assert len(vars(protocol)) <= 30, sorted(vars(protocol))
        assert not any(name.startswith("_") for name in vars(protocol))  # ours: in slots
        assert protocol._address == "127.0.0.1"
    finally:
        protocol.connection_lost(None)


async def test_a_finished_answer_lets_go_of_its_upstream() -> None:
    """The SDK stream (with the upstream connection's parser and buffers behind it) is not
    kept for the resume window: only the log is."""
    relay = _relay(grace=30.0)
    upstream = FakeUpstream([TextDelta("长城"), TextDelta("很长")])
    gone = weakref.ref(upstream)
    gen = _start(relay, upstream)
    del upstream
    gen.begin({"model": "m"})
    await _ended(gen)
    assert relay.find(gen.stream_id, "o") is gen  # still resumable
    assert gone() is None  # freed by reference counting, no collection needed


async def test_a_finished_log_drops_its_frames_and_resumes_exactly() -> None:
    relay = _relay(grace=30.0)
    texts = [f"第{n}段，长城很长。" for n in range(30)]
    gen = _start(relay, FakeUpstream([TextDelta(t) for t in texts]))
    gen.begin({"model": "m"})
    live = relay.attach(gen)
    frames: list[bytes] = []
    while not frames or b"event: end" not in frames[-1]:
        frames += [entry.sse(gen.sse_id) for entry in await live.next_batch()]
    relay.detach(live, gone=False)
    await _ended(gen)
    assert [e.kind for e in gen.entries][-1] is EntryKind.END
    # every encoded frame of the log is dropped once the answer has ended; the text stays
    assert all(e._json is None and e._sse is None for e in gen.entries)
    assert all(len(e.parts) <= 1 for e in gen.entries)
    assert gen.text == "".join(texts)
    shrunk = _log_bytes(gen.entries)
    # a resume after the end encodes the frames again: the same bytes, from any seq
    full = 0
    for after in range(len(frames) - 1):
        sub = relay.attach(gen, after)
        batch = await sub.next_batch()
        assert [entry.sse(gen.sse_id) for entry in batch] == frames[after + 1 :]
        full = max(full, _log_bytes(gen.entries))  # as a live reader leaves it: frames cached
        relay.detach(sub, gone=False)
        assert _log_bytes(gen.entries) == shrunk  # its last reader gone: shrunk again
    assert shrunk < full * 0.6, (shrunk, full)


def test_finished_answers_in_their_window_hold_no_sdk_stream(
    tmp_path: Path, emu: ServerHandle
) -> None:
    """Through the server: ten answers ended and still resumable hold no SDK stream, no
    stream parser and no upstream response (the soak's 1,000 clients keep about as many
    answers in their windows as streams open)."""
    question = paced("讲讲长城", "ttft=0;interval=0.001;chunks=12")
    with running(tmp_path, emu.base_url, resume_grace=60.0) as srv, srv.client() as client:
        for _ in range(10):
            conversation = client.post("/api/conversations", json={}).json()["id"]
            answer = client.post(
                f"/api/conversations/{conversation}/messages", json={"content": question}
            )
            assert b"event: end" in answer.content
        asyncio.run(asyncio.sleep(0.2))  # the generations' ends recorded
        gc.collect()  # only what is reachable counts
        kept = [o for o in gc.get_objects() if isinstance(o, Generation)]
        assert len([g for g in kept if g.end_reason == "completed"]) >= 10
        names = {"AsyncChatStream", "StreamCore", "SSEDecoder", "ClientResponse"}
        held = [type(o).__name__ for o in gc.get_objects() if type(o).__name__ in names]
        assert held == []


async def _until(done: Callable[[], bool]) -> None:
    """Let a started collector's checks (every 10 ms) run until ``done()`` or 2 s."""
    for _ in range(200):
        await asyncio.sleep(0.01)
        if done():
            return


def _serving(collector: Collector, scenario: Callable[[], Awaitable[None]]) -> None:
    """Run ``scenario`` with ``collector`` started (and its checks running), then stop it."""
    was = gc.isenabled()

    async def main() -> None:
        collector.start(asyncio.get_running_loop())
        try:
            await scenario()
        finally:
            collector.stop()

    try:
        asyncio.run(main())
    finally:
        gc.enable() if was else gc.disable()


def test_the_collector_trims_the_c_heap_once_the_load_has_fallen() -> None:
    """glibc keeps freed chunks in its heaps: once the load has fallen after a peak (the
    process has grown since the last trim), a check returns them (``malloc_trim(0)``),
    counted in ``/metrics``; again while trims give back much (answers leaving their resume
    windows free more); never while busy (the call holds the heap's lock for milliseconds),
    nor when the process has not grown since."""
    mib = 2**20
    metrics = Metrics()
    open_streams = [10_000]
    rss = [100 * mib]
    asked: list[int] = []
    after_trims = [120 * mib, 118 * mib, 121 * mib, 104 * mib]  # what each trim leaves

    def resident() -> int:
        asked.append(rss[0])
        return rss[0]

    released: list[int] = []  # the trims counted when the store released its caches

    async def release() -> None:
        released.append(int(collector.trims.labels().value))

    collector = Collector(
        metrics,
        lambda: open_streams[0],
        check_interval=0.01,
        max_interval=3600,
        trim_min_growth=4 * mib,
        resident=resident,
        release=release,
    )
    if not collector.trim:
        pytest.skip("no malloc_trim in this C library")
    real_trim = collector.trim_heap

    def trim_heap() -> None:
        real_trim()
        rss[0] = after_trims.pop(0)

    collector.trim_heap = trim_heap  # type: ignore[method-assign]
    trims = collector.trims.labels()
    checks = collector.collections.labels()

    async def scenario() -> None:
        rss[0] = 164 * mib  # a peak: grown, but busy: never trimmed (nor measured)
        await asyncio.sleep(0.1)  # ~10 checks
        assert (checks.value, trims.value, asked) == (0, 0, [100 * mib])  # (base: at start)

        open_streams[0] = 3  # the load fell: trimmed (−44 MiB), so trimmed again (−2 MiB),
        seen = checks.value  # then not: it has not grown since
        await _until(lambda: checks.value >= seen + 6)
        assert trims.value == 2
        assert rss[0] == 118 * mib
        assert released == [1, 2]  # each trim asked the store (its task runs next); never busy
        text = metrics.render().decode()
        assert "wenxin_heap_trims_total 2" in text
        assert "wenxin_heap_trim_seconds " in text

        rss[0] = 123 * mib  # another peak came and went: +5 MiB since the last trim (which
        # gives back only 2 MiB: not trimmed again)
        await _until(lambda: trims.value >= 3)
        seen = checks.value
        await _until(lambda: checks.value >= seen + 3)
        assert trims.value == 3

        rss[0] = 100 * mib  # it shrank by itself (pymalloc freed arenas): not trimmed, and
        seen = checks.value  # growth counts from here
        await _until(lambda: checks.value >= seen + 3)
        rss[0] = 105 * mib
        await _until(lambda: trims.value >= 4)
        assert trims.value == 4
        await _until(lambda: len(released) >= 4)
        assert released == [1, 2, 3, 4]

    _serving(collector, scenario)


def test_a_store_that_cannot_release_its_caches_does_not_stop_the_trim(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A failing release (a closed store, a database error) is logged; the trim goes on, and
    the next trim asks again."""
    asked: list[int] = []
    sizes = iter([100 << 20, 200 << 20, 100 << 20, 300 << 20, 100 << 20])

    async def release() -> None:
        asked.append(1)
        raise StoreError("the store is not open")

    collector = Collector(
        Metrics(),
        lambda: 0,
        check_interval=0.01,
        resident=lambda: next(sizes, 100 << 20),
        release=release,
    )
    if not collector.trim:
        pytest.skip("no malloc_trim in this C library")
    trims = collector.trims.labels()
    with caplog.at_level("WARNING", logger="wenxin_stream.server"):
        _serving(collector, lambda: _until(lambda: trims.value >= 2 and len(asked) >= 2))
    assert trims.value >= 2
    assert len(asked) >= 2
    assert "the store could not release its caches: the store is not open" in caplog.text


async def test_the_sqlite_store_gives_back_its_page_cache(tmp_path: Path) -> None:
    """What the store's release is for: SQLite keeps up to 2 MiB of pages per connection
    once a load filled its cache (here 800 answers of 3 KB); ``PRAGMA shrink_memory`` hands
    them back. Read through SQLite's own count of its heap, in this process."""
    try:
        lib = ctypes.CDLL(ctypes.util.find_library("sqlite3") or "libsqlite3.so.0")
    except OSError:
        pytest.skip("no SQLite shared library to ask")
    lib.sqlite3_memory_used.restype = ctypes.c_int64
    async with SQLiteStore(tmp_path / "db.sqlite3") as store:
        conv = await store.create_conversation("o", title=None, model="m", system=None)
        before = lib.sqlite3_memory_used()
        for _ in range(800):
            _, answer = await store.add_exchange("o", conv.id, question="问" * 50, model="m")
            await store.update_message(
                answer.id,
                content="答" * 1000,
                status="complete",
                end_reason="stop",
                usage=None,
                ttft_ms=None,
                total_ms=None,
                generated_chars=None,
                delivered_chars=None,
            )
        full = lib.sqlite3_memory_used()
        await store.release_memory()
        released = lib.sqlite3_memory_used()
        _, history = await store.get_history("o", conv.id, last=2)
        assert [m.content for m in history] == ["问" * 50, "答" * 1000]  # still serving
    assert full - before > 1 << 20, (before, full)  # the cache filled
    assert full - released > 1 << 20, (full, released)  # and was given back
    with pytest.raises(StoreError, match="not open"):  # what the collector logs, above
        await store.release_memory()


def test_heap_trimming_can_be_turned_off() -> None:
    asked: list[int] = []

    def resident() -> int:
        asked.append(1)
        return 1 << 30

    collector = Collector(Metrics(), lambda: 0, check_interval=0.01, trim=False, resident=resident)
    _serving(collector, lambda: _until(lambda: collector.collections.labels().value >= 3))
    assert collector.collections.labels().value >= 3  # quiet: collected, but never trimmed
    assert (collector.trims.labels().value, asked) == (0, [1])  # (the base, at start)
    assert ServerConfig().heap_trim is True
    assert ServerConfig.load({}, environ={"WENXIN_HEAP_TRIM": "false"}).heap_trim is False


def test_trimming_returns_freed_c_heap_pages() -> None:
    """What ``trim_heap`` is for, on this C library: 64 MiB freed in the middle of the heap
    (every other 64 KiB block, below glibc's mmap threshold, so that each freed block lies
    between live ones and none joins the heap's top, which ``free`` trims by itself) stay
    resident until trimmed."""
    if trim_heap() is None:  # (also: what earlier tests freed is returned first)
        pytest.skip("no malloc_trim in this C library")
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    empty = read_rss_bytes(os.getpid())
    blocks = [libc.malloc(65536) for _ in range(2049)]
    for block in blocks:
        ctypes.memset(block, 1, 65536)  # resident
    full = read_rss_bytes(os.getpid())
    for block in blocks[1::2]:
        libc.free(block)
    freed = read_rss_bytes(os.getpid())
    resident = resident_bytes()
    assert trim_heap() is True
    trimmed = read_rss_bytes(os.getpid())
    for block in blocks[::2]:
        libc.free(block)
    assert full - empty > 96 * 2**20, (empty, full)  # the pages were faulted in
    assert full - freed < 16 * 2**20, (full, freed)  # free() alone kept them
    assert freed - trimmed > 48 * 2**20, (freed, trimmed)  # the trim gave them back
    # what the collector reads to decide (its own figure, not the benchmark helper's)
    assert resident is not None
    assert abs(resident - freed) < 8 * 2**20, (resident, freed)
