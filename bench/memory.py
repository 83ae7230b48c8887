"""What an open stream and a finished answer cost ``wenxin serve`` in memory, and what the
process gives back after a peak (issue 15 item 3; by hand, not in CI).

Theory of operation
===================

The script starts the emulator (``wenxin emulate``) and ``wenxin serve`` as subprocesses on
loopback, the server pinned to one CPU when ``taskset`` exists. The server runs under this
script's ``--child`` mode: ``wenxin serve`` as usual, plus two signal handlers installed before
it starts (nothing of the server is changed):

- ``SIGUSR1`` writes a *probe* (JSON) to the work directory: RSS and anonymous memory
  (``/proc/self/status``), glibc's ``mallinfo2`` (heap in use and free), pymalloc's arenas and
  blocks (``sys._debugmallocstats``), the event loop's tasks, counts of the relay's objects and
  of the per-connection objects of uvicorn, httptools and aiohttp (``gc.get_objects``), the
  ``sys.getsizeof`` sums of the generations' logs, and — with ``--tracemalloc`` — a
  ``tracemalloc`` snapshot;
- ``SIGUSR2`` calls glibc's ``malloc_trim(0)`` and probes RSS before and after: what trimming
  would give back at that moment.

The run, with ``--streams N`` clients (native SSE route by default, ``--route openai``):

1. **idle**: a few answers to warm up (imports, caches, pools), then the resume window and one
   of the server's quiet collections pass; probe.
2. **open**: N streams paced ``PACE`` (TTFT 0.3 s, then a chunk every 1.5 s, 30 s in all)
   started over ``--ramp`` seconds; once every client has its first text, probe. Per open
   stream = (open − idle) / N.
3. **finished**: the streams end; each client closes its connection at the end. One second
   later (inside the server's resume window, ``--resume-grace``, default 20 s), probe: the
   answers kept for resume. Per finished answer = (finished − idle) / N.
4. **after**: the resume windows end, the server's quiet collection runs (``_gc.CHECK_INTERVAL``
   = 30 s); probe. **trimmed**: ``SIGUSR2``, probe (RSS once glibc has returned its free
   pages). **later**: a minute after the end one more request (the upstream client's
   rate-limit windows keep the last minute's requests until a request prunes them), then the
   next check; probe. The target: back within 20 % of *idle*.

``--linger S`` adds a **latest** probe S seconds after the end (+31 s): whether what stays
goes with time. The server's own trims so far (``wenxin_heap_trims_total``) are read at each
probe.

Results: ``bench/results/memory-<stamp>/`` (``memory.json``, ``summary.md``; with
``--tracemalloc`` the per-stream table by allocation site, from the snapshots' differences,
and the blocks that outlive the peak by site, ``later − idle``). With ``MEMORY_ARENAS=1`` in
the environment the idle, later and latest probes also say what sits in which pymalloc arena
(``arena_pins``: an arena the peak left with a few objects in it, and which objects).
RSS with ``--tracemalloc`` includes tracemalloc's own traces: take RSS figures from a run
without it, allocation sites from a run with it.

    .venv/bin/python bench/memory.py --streams 2000                 # RSS per stream, peak → idle
    .venv/bin/python bench/memory.py --streams 1000 --tracemalloc   # by allocation site
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import gc
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from _servers import add_server_env, env_assignments, sample_value

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PACE = "ttft=0.3;interval=1.5;chunks=20"
QUESTION = "介绍一下长城"
SERVE_ARGS = ("--max-connections-per-ip", "0", "--max-connections", "0")

# -- the child: wenxin serve with probes --------------------------------------------------------

COUNTED = (
    "Generation",
    "Subscription",
    "Entry",
    "Task",
    "Future",
    "TimerHandle",
    "Handle",
    "HttpToolsProtocol",
    "LimitedHttpToolsProtocol",
    "RequestResponseCycle",
    "ResponseHandler",
    "ClientResponse",
    "ClientRequest",
    "HttpResponseParser",
    "Connection",
    "AsyncChatStream",
    "StreamCore",
    "Accumulator",
    "SSEDecoder",
    "Event",
    "coroutine",
    "frame",
    "async_generator",
)


def _malloc_stats() -> dict[str, int]:
    """glibc's ``mallinfo2``: bytes the main and thread arenas hold, in use and free."""

    class MallInfo2(ctypes.Structure):
        _fields_ = [
            (name, ctypes.c_size_t)
            for name in (
                "arena",
                "ordblks",
                "smblks",
                "hblks",
                "hblkhd",
                "usmblks",
                "fsmblks",
                "uordblks",
                "fordblks",
                "keepcost",
            )
        ]

    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = MallInfo2
    info = libc.mallinfo2()
    return {
        "heap_bytes": info.arena,  # sbrk'd + thread arenas
        "mmapped_bytes": info.hblkhd,
        "in_use_bytes": info.uordblks,
        "free_bytes": info.fordblks,
        "top_releasable_bytes": info.keepcost,
    }


def _pymalloc_stats(work: Path) -> dict[str, int]:
    """From ``sys._debugmallocstats`` (written to C's stderr): pymalloc's arenas and blocks."""
    path = work / "pymalloc.txt"
    sys.stderr.flush()
    saved = os.dup(2)
    with open(path, "w") as f:
        os.dup2(f.fileno(), 2)
        try:
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
    text = path.read_text()
    out: dict[str, int] = {}
    for key, pattern in (
        ("arenas_current", r"# arenas allocated current\s*=\s*([\d,]+)"),
        ("arenas_highwater", r"# arenas highwater mark\s*=\s*([\d,]+)"),
        ("allocated_block_bytes", r"# bytes in allocated blocks\s*=\s*([\d,]+)"),
        ("available_block_bytes", r"# bytes in available blocks\s*=\s*([\d,]+)"),
        ("empty_pool_bytes", r"\d+ unused pools \* \d+ bytes\s*=\s*([\d,]+)"),
        ("arena_bytes", r"# bytes lost to arena alignment\s*=\s*([\d,]+)"),
    ):
        found = re.search(pattern, text)
        if found:
            out[key] = int(found.group(1).replace(",", ""))
    return out


def _status() -> dict[str, int]:
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
                out[name] = int(value.split()[0]) * 1024
    return out


POOL_SIZE = 1 << 14
"""CPython 3.11's pymalloc pool (64-bit, radix tree): 16 KiB pools in 1 MiB arenas; each pool's
header holds its arena's index at byte 32 and its size class at byte 36."""


def _mapped() -> list[tuple[int, int]]:
    ranges = []
    with open("/proc/self/maps") as f:
        for line in f:
            span, perms = line.split()[:2]
            if perms.startswith("rw"):
                lo, hi = span.split("-")
                ranges.append((int(lo, 16), int(hi, 16)))
    return sorted(ranges)


class _Storage:
    """A dict's keys or a list's items, counted apart from the container."""

    __slots__ = ("owner",)

    def __init__(self, owner: object) -> None:
        self.owner = owner

    def __repr__(self) -> str:
        return f"storage of {type(self.owner).__qualname__} {repr(self.owner)[:80]}"


def _arena_pins(limit: int = 12) -> dict[str, Any]:
    """Which objects sit in which pymalloc arena: each gc-tracked object and, through the
    untracked ones, what it refers to (strings, numbers, bytes, atomic tuples), by the arena
    index in its pool's header. An arena with a few objects is one the peak left pinned: those
    objects are what keeps it (objects only C code refers to are not seen)."""
    import bisect

    ranges = _mapped()
    starts = [lo for lo, _ in ranges]

    def arena_at(address: int) -> int | None:
        pool = address & ~(POOL_SIZE - 1)
        i = bisect.bisect_right(starts, pool) - 1
        if i < 0 or not (ranges[i][0] <= pool and pool + 40 <= ranges[i][1]):
            return None
        index = ctypes.c_uint.from_address(pool + 32).value
        size_class = ctypes.c_uint.from_address(pool + 36).value
        return index if size_class < 32 and index < 1 << 16 else None

    def arena_of(obj: object) -> int | None:
        return None if sys.getsizeof(obj) > 512 else arena_at(id(obj))

    def storage_of(obj: object) -> int | None:
        """The separate block of a dict's keys (``ma_keys``, byte 32 of the object) or a
        list's items (``ob_item``, byte 24): these move when the container grows or shrinks,
        so a long-lived container resized during the peak keeps its block in a peak arena."""
        kind = type(obj)
        if sys.getsizeof(obj) - 64 > 512:  # (the object's own 48–56 bytes and GC header)
            return None  # from glibc, not pymalloc
        if kind is dict and len(obj) > 0:  # type: ignore[arg-type]
            address = ctypes.c_void_p.from_address(id(obj) + 32).value
        elif kind is list and len(obj) > 0:  # type: ignore[arg-type]
            address = ctypes.c_void_p.from_address(id(obj) + 24).value
        else:
            return None
        return arena_at(address) if address else None

    seen: set[int] = set()
    found: dict[int, list[object]] = {}
    todo = gc.get_objects()
    while todo:  # the tracked objects, and down through what the collector does not track
        o = todo.pop()
        if id(o) in seen or isinstance(o, type):
            continue
        seen.add(id(o))
        arena = arena_of(o)
        if arena is not None:
            found.setdefault(arena, []).append(o)
        arena = storage_of(o)
        if arena is not None:
            found.setdefault(arena, []).append(_Storage(o))
        todo.extend(r for r in gc.get_referents(o) if not gc.is_tracked(r))
    sparse = sorted(found.items(), key=lambda item: len(item[1]))
    out: dict[str, Any] = {"arenas_seen": len(found), "objects_seen": len(seen), "sparse": []}
    for arena, objs in sparse[: limit * 4]:
        kinds = Counter(
            f"{type(o.owner).__qualname__} storage"
            if isinstance(o, _Storage)
            else type(o).__qualname__
            for o in objs
        )
        out["sparse"].append(
            {
                "arena": arena,
                "objects": len(objs),
                "types": kinds.most_common(6),
                "samples": [repr(o)[:100] for o in objs[:3]],
            }
        )
    counts = sorted(len(objs) for objs in found.values())
    out["objects_per_arena"] = counts
    del found, seen
    return out


def _log_bytes(gen: Any) -> int:
    """``sys.getsizeof`` over one generation's log: entries, their parts, data and frames."""
    total = sys.getsizeof(gen.entries)
    for entry in gen.entries:
        total += sys.getsizeof(entry)
        parts = getattr(entry, "parts", None)
        if parts is not None:
            total += sys.getsizeof(parts) + sum(sys.getsizeof(p) for p in parts)
        for name in ("_json", "_sse"):
            value = getattr(entry, name, None)
            if value is not None:
                total += sys.getsizeof(value)
    compact = getattr(gen, "_compact", None)
    if compact is not None:
        total += sum(sys.getsizeof(x) for x in compact)
    return total


def _probe_safely(work: Path, trace: bool) -> None:
    """The SIGUSR1 handler: a probe, whose failure is written to the work directory and never
    raised into whatever server code the signal interrupted (the soak's run 4 counted one
    request's 500 from a probe that raised)."""
    try:
        _probe(work, trace)
    except Exception as exc:
        (work / "probe-error.txt").write_text(f"{type(exc).__name__}: {exc}\n")


def _probe(work: Path, trace: bool) -> None:
    label = (work / "label").read_text().strip()
    started = time.perf_counter()
    from wenxin_stream.server._allocator import running

    out: dict[str, Any] = {"label": label, "status": _status(), "malloc": _malloc_stats()}
    out["allocator"] = running()
    out["pymalloc"] = _pymalloc_stats(work)
    counts: dict[str, int] = dict.fromkeys(COUNTED, 0)
    every: Counter[str] = Counter()
    gens = []
    for obj in gc.get_objects():
        kind = type(obj)
        name = kind.__name__
        every[f"{kind.__module__}.{kind.__qualname__}"] += 1
        if name in counts:
            counts[name] += 1
            if name == "Generation" and hasattr(obj, "entries"):
                gens.append(obj)  # (a signal may land in the middle of its __init__)
    out["objects"] = counts
    out["types"] = every.most_common(300)  # every type the collector tracks, by count
    out["gc_tracked"] = len(gc.get_objects())
    out["gc_frozen"] = gc.get_freeze_count()
    if gens:
        sizes = [_log_bytes(g) for g in gens]
        out["generations"] = {
            "count": len(gens),
            "entries": sum(len(g.entries) for g in gens),
            "log_bytes": sum(sizes),
            "ended": sum(1 for g in gens if g.end_reason is not None),
        }
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        loop = None
    if loop is None:  # a signal handler runs between bytecodes of the loop's thread
        tasks = [o for o in gc.get_objects() if isinstance(o, asyncio.Task) and not o.done()]
        out["tasks"] = len(tasks)
    if label in ("idle", "later", "latest") and os.environ.get("MEMORY_ARENAS"):
        out["arena_pins"] = _arena_pins()
    if trace:
        import tracemalloc

        snapshot = tracemalloc.take_snapshot()
        snapshot.dump(str(work / f"snapshot-{label}.pickle"))
        out["traced_bytes"] = tracemalloc.get_traced_memory()[0]
    out["probe_seconds"] = round(time.perf_counter() - started, 3)
    (work / f"probe-{label}.json").write_text(json.dumps(out, indent=1))


def _trim(work: Path) -> None:
    before = _status()["VmRSS"]
    from wenxin_stream.server._gc import trim_heap

    started = time.perf_counter()
    released = trim_heap()  # glibc's malloc_trim(0), or jemalloc's purge where it runs
    seconds = time.perf_counter() - started
    after = _status()["VmRSS"]
    result = {"rss_before": before, "rss_after": after, "released": released, "seconds": seconds}
    (work / "trim.json").write_text(json.dumps(result))


def _allocator_of(serve: list[str]) -> str:
    """The ``--allocator`` among the server's arguments (``auto``, its default, if none)."""
    for n, arg in enumerate(serve):
        if arg.startswith("--allocator="):
            return arg.split("=", 1)[1]
        if arg == "--allocator" and n + 1 < len(serve):
            return serve[n + 1]
    return os.environ.get("WENXIN_ALLOCATOR", "auto")


def child(work: Path, trace: bool, serve: list[str]) -> int:
    # the allocator `wenxin serve` would choose: the child runs it in-process, where serve
    # never re-executes, so the child re-executes itself (its command line is its own)
    from wenxin_stream.server._allocator import plan, reexec

    env = plan(_allocator_of(serve), os.environ)
    if env is not None:
        reexec(env)
    if trace:
        import tracemalloc

        tracemalloc.start(1)
    signal.signal(signal.SIGUSR1, lambda *_: _probe_safely(work, trace))
    signal.signal(signal.SIGUSR2, lambda *_: _trim(work))
    from wenxin_stream.cli import main

    return main(["serve", *serve])


# -- the parent: processes, clients, probes ----------------------------------------------------


def _start(args: list[str], log: Path, pattern: str, cpu: str | None) -> tuple[Any, str]:
    cmd = [*(["taskset", "-c", cpu] if cpu and shutil.which("taskset") else []), *args]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QIANFAN_", "WENXIN_"))}
    env |= {
        "WENXIN_UPSTREAM_API": "v2",
        "WENXIN_UPSTREAM_BEARER_TOKEN": "bce-v3/ALTAK-memory/x",
        "WENXIN_UPSTREAM_EMULATED": "true",
    }
    if "--child" in args:
        env["WENXIN_UPSTREAM_V2_BASE_URL"] = UPSTREAM[0]
        if SOURCE[0]:  # the server from another tree (a baseline), as bench/compare does
            env["PYTHONPATH"] = SOURCE[0]
        env |= SERVER_ENV
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log.open("w"), env=env)  # noqa: S603
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = re.search(pattern, log.read_text(errors="replace"))
        if found:
            return proc, found.group(1)
        if proc.poll() is not None:
            raise SystemExit(f"{args[:3]} exited: {log.read_text()[-2000:]}")
        time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"{args[:3]} did not start: {log.read_text()[-2000:]}")


UPSTREAM = [""]
CPU: dict[str, float] = {}
"""The server's CPU seconds (user + system) when each probe was asked for."""
SOURCE = [""]
SERVER_ENV: dict[str, str] = {}  # --server-env: the server's alone (an allocator, say)


def _stop(proc: Any) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _probe_server(pid: int, work: Path, label: str) -> dict[str, Any]:
    CPU[label] = _cpu_seconds(pid)  # before the probe's own work
    (work / "label").write_text(label)
    target = work / f"probe-{label}.json"
    target.unlink(missing_ok=True)
    os.kill(pid, signal.SIGUSR1)
    for _ in range(1200):
        await asyncio.sleep(0.05)
        if target.exists():
            try:
                return json.loads(target.read_text())  # type: ignore[no-any-return]
            except json.JSONDecodeError:
                continue  # still being written
    raise SystemExit(f"no probe {label} from the server")


async def _trim_server(pid: int, work: Path) -> dict[str, Any]:
    target = work / "trim.json"
    target.unlink(missing_ok=True)
    os.kill(pid, signal.SIGUSR2)
    for _ in range(600):
        await asyncio.sleep(0.05)
        if target.exists():
            try:
                return json.loads(target.read_text())  # type: ignore[no-any-return]
            except json.JSONDecodeError:
                continue
    raise SystemExit("no trim result from the server")


class Clients:
    """N streaming clients, each one question, its connection closed at the end."""

    def __init__(self, url: str, route: str, pace: str) -> None:
        self.url, self.route, self.pace = url, route, pace
        self.first_text = 0
        self.ended = 0
        self.errors: list[str] = []

    async def one(self, delay: float) -> None:
        import aiohttp

        from wenxin_stream import SSEDecoder

        await asyncio.sleep(delay)
        question = f"{QUESTION} [[wenxin:fault {self.pace}]]"
        connector = aiohttp.TCPConnector(force_close=True)
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=60, sock_read=120)
        seen_text = False
        try:
            async with aiohttp.ClientSession(connector=connector, timeout=timeout) as s:
                if self.route == "native":
                    async with s.post(f"{self.url}/api/conversations", json={}) as r:
                        cid = (await r.json())["id"]
                    request = s.post(
                        f"{self.url}/api/conversations/{cid}/messages", json={"content": question}
                    )
                else:
                    body = {
                        "model": "ernie-lite-8k",
                        "stream": True,
                        "messages": [{"role": "user", "content": question}],
                    }
                    request = s.post(f"{self.url}/v1/chat/completions", json=body)
                decoder = SSEDecoder()
                async with request as r:
                    if r.status != 200:
                        self.errors.append(f"status {r.status}: {(await r.text())[:200]}")
                        return
                    async for chunk in r.content.iter_any():
                        for event in decoder.feed(chunk):
                            if not seen_text and event.event in ("delta", "", None, "message"):
                                seen_text = True
                                self.first_text += 1
                            if event.event == "end" or event.data == "[DONE]":
                                self.ended += 1
                                return
                self.errors.append("no end")
        except Exception as exc:  # counted and reported: a measurement, not a test
            self.errors.append(f"{type(exc).__name__}: {exc}"[:200])


async def _metric(url: str, name: str) -> float:
    import aiohttp

    async with aiohttp.ClientSession() as s, s.get(f"{url}/metrics") as r:
        text = await r.text()
    value = sample_value(text, name)
    return float("nan") if value is None else value


async def run(args: argparse.Namespace, url: str, pid: int, work: Path) -> dict[str, Any]:
    probes: dict[str, Any] = {}
    tasks: dict[str, float] = {}
    trims: dict[str, float] = {}
    trim_seconds: dict[str, float] = {}
    """The server's own trims so far (``_gc.Collector``: only once the load has fallen)."""
    print("[memory] warm-up", flush=True)
    warm = Clients(url, args.route, "ttft=0.05;interval=0.05;chunks=20")
    await asyncio.gather(*(warm.one(i * 0.02) for i in range(50)))
    await asyncio.sleep(args.resume_grace + 32)  # windows gone, a quiet collection has run
    probes["idle"] = await _probe_server(pid, work, "idle")
    tasks["idle"] = await _metric(url, "wenxin_asyncio_tasks")
    trims["idle"] = await _metric(url, "wenxin_heap_trims_total")
    trim_seconds["idle"] = await _metric(url, "wenxin_heap_trim_seconds")
    print(f"[memory] idle RSS {probes['idle']['status']['VmRSS'] / 2**20:.1f} MiB", flush=True)

    clients = Clients(url, args.route, args.pace)
    running = [
        asyncio.create_task(clients.one(args.ramp * i / args.streams)) for i in range(args.streams)
    ]
    deadline = time.monotonic() + args.ramp + 60
    while clients.first_text + len(clients.errors) < args.streams:
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    await asyncio.sleep(1.0)
    in_flight = await _metric(url, "wenxin_streams_in_flight")
    tasks["open"] = await _metric(url, "wenxin_asyncio_tasks")
    trims["open"] = await _metric(url, "wenxin_heap_trims_total")
    trim_seconds["open"] = await _metric(url, "wenxin_heap_trim_seconds")
    probes["open"] = await _probe_server(pid, work, "open")
    print(
        f"[memory] open: {clients.first_text} streams with text, {in_flight:g} in flight, RSS "
        f"{probes['open']['status']['VmRSS'] / 2**20:.1f} MiB, errors {len(clients.errors)}",
        flush=True,
    )
    await asyncio.gather(*running)
    ended_at = time.monotonic()
    await asyncio.sleep(1.0)
    tasks["finished"] = await _metric(url, "wenxin_asyncio_tasks")
    trims["finished"] = await _metric(url, "wenxin_heap_trims_total")
    trim_seconds["finished"] = await _metric(url, "wenxin_heap_trim_seconds")
    probes["finished"] = await _probe_server(pid, work, "finished")
    probe_age = time.monotonic() - ended_at
    print(
        f"[memory] finished: {clients.ended} ended, RSS "
        f"{probes['finished']['status']['VmRSS'] / 2**20:.1f} MiB ({probe_age:.1f} s after)",
        flush=True,
    )
    await asyncio.sleep(max(0.0, args.resume_grace + 32 - (time.monotonic() - ended_at)))
    tasks["after"] = await _metric(url, "wenxin_asyncio_tasks")
    trims["after"] = await _metric(url, "wenxin_heap_trims_total")
    trim_seconds["after"] = await _metric(url, "wenxin_heap_trim_seconds")
    probes["after"] = await _probe_server(pid, work, "after")
    trim = await _trim_server(pid, work)
    probes["trimmed"] = await _probe_server(pid, work, "trimmed")
    print(
        f"[memory] after: RSS {probes['after']['status']['VmRSS'] / 2**20:.1f} MiB, trimmed "
        f"{probes['trimmed']['status']['VmRSS'] / 2**20:.1f} MiB",
        flush=True,
    )
    # the upstream client's rate-limit windows keep a minute of requests; the next request
    # after that minute prunes them, the next check collects and trims
    await asyncio.sleep(max(0.0, 62 - (time.monotonic() - ended_at)))
    one = Clients(url, args.route, "ttft=0.05;interval=0.05;chunks=5")
    await one.one(0)
    await asyncio.sleep(31)
    tasks["later"] = await _metric(url, "wenxin_asyncio_tasks")
    trims["later"] = await _metric(url, "wenxin_heap_trims_total")
    trim_seconds["later"] = await _metric(url, "wenxin_heap_trim_seconds")
    probes["later"] = await _probe_server(pid, work, "later")
    print(f"[memory] later: RSS {probes['later']['status']['VmRSS'] / 2**20:.1f} MiB", flush=True)
    if args.linger > 0:  # what dies later still frees arenas: long timers, pooled connections
        await asyncio.sleep(max(0.0, args.linger - (time.monotonic() - ended_at)))
        await one.one(0)  # (prunes the rate-limit windows once more)
        await asyncio.sleep(31)
        tasks["latest"] = await _metric(url, "wenxin_asyncio_tasks")
        trims["latest"] = await _metric(url, "wenxin_heap_trims_total")
        trim_seconds["latest"] = await _metric(url, "wenxin_heap_trim_seconds")
        probes["latest"] = await _probe_server(pid, work, "latest")
        latest = probes["latest"]["status"]["VmRSS"] / 2**20
        print(f"[memory] latest: RSS {latest:.1f} MiB", flush=True)
    return {
        "probes": probes,
        "tasks": tasks,
        "server_trims": trims,
        "server_trim_seconds": trim_seconds,
        "trim": trim,
        "in_flight_at_open": in_flight,
        "streams_with_text": clients.first_text,
        "streams_ended": clients.ended,
        "errors": clients.errors[:20],
        "error_count": len(clients.errors),
        "finished_probe_seconds_after_end": round(probe_age, 2),
        "cpu_seconds": dict(CPU),
        # the streams' whole life: starts, 20 chunks each, ends (the open probe's own CPU,
        # ~0.1 s, is inside)
        "cpu_ms_per_stream": round((CPU["finished"] - CPU["idle"]) / args.streams * 1e3, 3),
    }


def _sites(
    work: Path, before: str, after: str, n: int, top: int, by_blocks: bool = False
) -> list[dict[str, Any]]:
    import tracemalloc

    a = tracemalloc.Snapshot.load(str(work / f"snapshot-{before}.pickle"))
    b = tracemalloc.Snapshot.load(str(work / f"snapshot-{after}.pickle"))
    stats = b.compare_to(a, "lineno")
    if by_blocks:  # what pins arenas is the number of small blocks, not their bytes
        stats.sort(key=lambda s: -s.count_diff)
    rows = []
    for stat in stats[:top]:
        frame = stat.traceback[0]
        name = frame.filename
        for marker in ("site-packages/", "src/", "lib/python3.11/"):
            if marker in name:
                name = name.split(marker, 1)[1]
                break
        rows.append(
            {
                "site": f"{name}:{frame.lineno}",
                "bytes_per_stream": round(stat.size_diff / n),
                "blocks_per_stream": round(stat.count_diff / n, 2),
            }
        )
    total = sum(s.size_diff for s in stats)
    rows.append({"site": "total", "bytes_per_stream": round(total / n), "blocks_per_stream": 0})
    return rows


def _mib(value: float) -> str:
    return f"{value / 2**20:.1f}"


def summarise(result: dict[str, Any], args: argparse.Namespace) -> str:
    p, n = result["probes"], args.streams

    def rss(label: str) -> float:
        return float(p[label]["status"]["VmRSS"])

    lines = [
        f"# Memory {result['stamp']}",
        "",
        f"`{result['command']}`",
        "",
        f"- {n} streams on the {args.route} route, pace `{args.pace}`, resume grace "
        f"{args.resume_grace} s; {result['streams_with_text']} had text at the open probe "
        f"({result['in_flight_at_open']:g} in flight), {result['streams_ended']} ended, "
        f"{result['error_count']} errors",
        f"- allocator: {p['idle'].get('allocator', '?')} (the server's `--allocator`; with "
        "jemalloc, glibc's and pymalloc's columns below are empty)",
        f"- server CPU per stream (idle → finished probe): {result['cpu_ms_per_stream']} ms",
        f"- per open stream: **{(rss('open') - rss('idle')) / n / 1024:.1f} KiB** RSS "
        f"({(rss('open') - rss('idle')) / n / 1000:.1f} KB)",
        f"- per finished answer in its resume window: "
        f"{(rss('finished') - rss('idle')) / n / 1024:.1f} KiB RSS",
        f"- after the peak: {rss('after') / 2**20:.1f} MiB against {rss('idle') / 2**20:.1f} "
        f"MiB idle (**{rss('after') / rss('idle') - 1:+.1%}**); after a trim (glibc's "
        f"`malloc_trim(0)` or jemalloc's purge): "
        f"{rss('trimmed') / 2**20:.1f} MiB ({rss('trimmed') / rss('idle') - 1:+.1%}; the call "
        f"took {result['trim']['seconds'] * 1e3:.1f} ms); a minute later (the upstream "
        f"client's rate-limit windows pruned by one request, the next check run): "
        f"{rss('later') / 2**20:.1f} MiB (**{rss('later') / rss('idle') - 1:+.1%}**)",
        *(
            [
                f"- {args.linger:g} s after the end (+31 s): {rss('latest') / 2**20:.1f} MiB "
                f"(**{rss('latest') / rss('idle') - 1:+.1%}**)"
            ]
            if "latest" in p
            else []
        ),
        "",
        "| probe | RSS MiB | anon MiB | glibc in use MiB | glibc free MiB | pymalloc arenas "
        "| pymalloc blocks MiB | pymalloc free blocks MiB | tasks | server's trims so far "
        "| generations (ended) | log bytes / gen |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for label in ("idle", "open", "finished", "after", "trimmed", "later", "latest"):
        if label not in p:
            continue
        q = p[label]
        gens = q.get("generations", {})
        per_gen = gens["log_bytes"] / gens["count"] if gens.get("count") else 0
        lines.append(
            f"| {label} | {_mib(q['status']['VmRSS'])} | {_mib(q['status']['RssAnon'])} "
            f"| {_mib(q['malloc']['in_use_bytes'])} | {_mib(q['malloc']['free_bytes'])} "
            f"| {q['pymalloc'].get('arenas_current', 0)} "
            f"| {q['pymalloc'].get('allocated_block_bytes', 0) / 2**20:.1f} "
            f"| {q['pymalloc'].get('available_block_bytes', 0) / 2**20:.1f} "
            f"| {result['tasks'].get(label, float('nan')):g} "
            f"| {result.get('server_trims', {}).get(label, float('nan')):g} "
            f"| {gens.get('count', 0)} ({gens.get('ended', 0)}) | {per_gen:.0f} |"
        )
    lines += ["", "Objects (gc-tracked) per probe:", "", "| type | " + " | ".join(p) + " |"]
    lines.append("|---|" + "--:|" * len(p))
    for name in COUNTED:
        row = [str(p[label]["objects"].get(name, 0)) for label in p]
        if any(v != "0" for v in row):
            lines.append(f"| {name} | " + " | ".join(row) + " |")
    for title, rows in result.get("sites", {}).items():
        lines += ["", f"tracemalloc, {title}:", "", "| site | bytes | blocks |", "|---|--:|--:|"]
        lines += [
            f"| `{r['site']}` | {r['bytes_per_stream']} | {r['blocks_per_stream']} |" for r in rows
        ]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=2000)
    parser.add_argument("--route", choices=("native", "openai"), default="native")
    parser.add_argument("--pace", default=PACE)
    parser.add_argument("--ramp", type=float, default=8.0, help="seconds to start all streams")
    parser.add_argument("--resume-grace", type=float, default=20.0)
    parser.add_argument("--tracemalloc", action="store_true")
    parser.add_argument(
        "--linger",
        type=float,
        default=0.0,
        help="one more probe this many seconds after the end (+31 s; 0: none)",
    )
    parser.add_argument("--top", type=int, default=25, help="allocation sites listed")
    parser.add_argument("--server-cpu", default="0")
    parser.add_argument("--serve-arg", action="append", default=[])
    add_server_env(parser)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument(
        "--src", default="", help="run the server from this source tree (PYTHONPATH; a baseline)"
    )
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args()
    if args.child is not None:
        return child(args.child, args.tracemalloc, [a for a in rest if a != "--"])

    from wenxin_stream.bench._system import raise_fd_limit

    raise_fd_limit()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = args.out / f"memory-{stamp}"
    out.mkdir(parents=True)
    work = Path(tempfile.mkdtemp(prefix="wenxin-memory-"))
    emulate, emu_url = _start(
        [str(BIN / "wenxin"), "emulate", "--port", "0"],
        work / "emulator.log",
        r"listening on (http://127\.0\.0\.1:\d+)",
        None,
    )
    UPSTREAM[0] = emu_url
    SOURCE[0] = str(Path(args.src).resolve()) if args.src else ""
    SERVER_ENV.update(env_assignments(args.server_env))
    serve_cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        str(work),
        *(["--tracemalloc"] if args.tracemalloc else []),
        "--",
        "--port",
        "0",
        "--data-dir",
        str(work / "data"),
        "--resume-grace",
        str(args.resume_grace),
        *SERVE_ARGS,
        *args.serve_arg,
    ]
    try:
        serve, url = _start(
            serve_cmd, work / "serve.log", r"wenxin serve on (http://\S+)", args.server_cpu or None
        )
    except BaseException:
        _stop(emulate)
        raise
    try:
        result = asyncio.run(run(args, url, serve.pid, work))
    finally:
        _stop(serve)
        _stop(emulate)
    result["stamp"] = stamp
    result["command"] = " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])
    result["config"] = {k: str(v) for k, v in vars(args).items()}
    result["loadavg_at_end"] = os.getloadavg()
    if args.tracemalloc:
        result["sites"] = {
            "per open stream (open − idle)": _sites(work, "idle", "open", args.streams, args.top),
            "per finished answer in its window (finished − idle)": _sites(
                work, "idle", "finished", args.streams, args.top
            ),
            # net blocks that outlive the peak: each can keep a pymalloc arena (1 MiB)
            "survivors a minute after the peak, per stream (later − idle)": _sites(
                work, "idle", "later", args.streams, args.top, by_blocks=True
            ),
        }
    (out / "memory.json").write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    text = summarise(result, args)
    (out / "summary.md").write_text(text)
    print(text)
    print(f"[memory] results in {out} (work files in {work})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
