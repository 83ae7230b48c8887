"""Garbage collection while serving: CPython's cyclic collector off, full collections on a
schedule that avoids busy moments.

Why: the state of every open stream (tasks, futures, log entries, parser buffers) is what the
cyclic collector scans, and it scans it when allocations say so — in the middle of a burst of
stream starts. Measured with ``bench/compare``'s method (ERNIE-paced suite, 1,400 streams, 15 s,
the server alone on one core): p99 chunk lateness 7 ms with the collector off, 53–239 ms with
CPython's default thresholds (700, 10, 10) kept after ``gc.freeze()``, 135 ms with young
collections every 20,000 allocations (their generation-1 scans grew to ~400,000 objects).

Turning it off is safe because the relay makes no cyclic garbage: reference counting frees a
finished stream's objects. ``tests/server/test_gc.py`` runs OpenAI and native streams through
the server with the collector off and checks that a full collection then finds none of the
server's, the SDK's, aiohttp's or asyncio's objects unreachable. Error paths may still make
some (an exception's traceback refers to its frames), so :class:`Collector` runs a full
collection every :data:`CHECK_INTERVAL` seconds while at most :data:`QUIET_STREAMS` streams are
open, and at the latest after :data:`MAX_INTERVAL` seconds whatever the load. Each collection
is counted in ``wenxin_gc_collections_total`` and its pause added to ``wenxin_gc_pause_seconds``
(``/metrics``), so a regression that makes garbage shows up as time spent here. They are
counters of this process; with several worker processes (multiprocess metrics) ``/metrics``
shows their sum over the workers, every worker having its own collector.

**Giving memory back.** What a peak of streams freed stays in the process unless the
allocators return it: glibc keeps freed chunks in its heaps (they are reused, not returned),
and pymalloc frees a 1 MiB arena only once every object in it is gone. So once the load has
fallen (a check finds at most :data:`QUIET_STREAMS` streams open) and the process has grown
by :data:`TRIM_MIN_GROWTH` since the last trim (its resident memory: a peak came and went)
or the last trim gave back that much (the next may give back more: what left since),
:func:`trim_heap` asks glibc to return its free pages (``malloc_trim(0)``: the
free chunks anywhere in the heaps, not only at the top). Never while busy: the call walks the
whole heap with its lock held (up to ~30 ms measured after a peak), and a busy server reuses
what it freed anyway. Each trim is counted in ``wenxin_heap_trims_total`` and
``wenxin_heap_trim_seconds``; ``heap_trim = false`` (``WENXIN_HEAP_TRIM``) turns it off.
Measured by ``bench/memory.py`` (``bench/MEMORY.md``): what remains after a peak is
pymalloc's arenas, each held by a few objects that outlive the peak; ``allocator =
"jemalloc"`` (``server/_allocator.py``) serves the objects from jemalloc instead, and then a
trim is jemalloc's purge of its free pages. Elsewhere than glibc or jemalloc (musl, macOS)
trimming is skipped. A trim also asks the store to give back its own cache (``release``:
SQLite's page cache, which a peak fills to its 2 MiB and which stays full otherwise); that
runs in the store's worker just after, and its pages go back with jemalloc's decay (its
background thread) or glibc's next trim.

With ``wenxin serve --debug`` each full collection also logs what it found, counted by type
and by the code of the frames among it: the way to find where cyclic garbage comes from
(``bench/soak.py --serve-arg=--debug --linger 35``). It keeps the garbage alive for the
count (``gc.DEBUG_SAVEALL``), so it is a diagnosis, not a way to serve.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
from collections import Counter as Counter_
from collections.abc import Awaitable, Callable
from time import perf_counter
from types import FrameType

from ._allocator import running, trimmer
from ._metrics import Counter, Gauge, Metrics

__all__ = [
    "CHECK_INTERVAL",
    "MAX_INTERVAL",
    "QUIET_STREAMS",
    "TRIM_MIN_GROWTH",
    "Collector",
    "resident_bytes",
    "trim_heap",
]

CHECK_INTERVAL = 30.0
"""Seconds between checks whether a full collection may run now."""

QUIET_STREAMS = 50
"""A full collection runs at a check when at most this many streams are open."""

MAX_INTERVAL = 600.0
"""Seconds after which a full collection runs however busy the server is."""

TRIM_MIN_GROWTH = 4 << 20
"""A quiet check trims the C heap when the process has grown by at least this many bytes
since the last trim (or since start)."""

logger = logging.getLogger("wenxin_stream.server")


_TRIM = trimmer()


def resident_bytes() -> int | None:
    """This process's resident memory (``/proc/self/statm``), ``None`` where there is none."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE_SIZE
    except (OSError, ValueError, IndexError):
        return None


_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def trim_heap() -> bool | None:
    """Return the C heap's free pages to the system (glibc's ``malloc_trim(0)``, or
    jemalloc's purge where it serves the process, ``server/_allocator.py``): whether it
    did, ``None`` where the C library cannot."""
    if _TRIM is None:
        return None
    return _TRIM()


class Collector:
    """Owns the cyclic collector of a serving process (see the module docstring)."""

    def __init__(
        self,
        metrics: Metrics,
        open_streams: Callable[[], int],
        *,
        check_interval: float = CHECK_INTERVAL,
        quiet_streams: int = QUIET_STREAMS,
        max_interval: float = MAX_INTERVAL,
        describe: bool = False,
        trim: bool = True,
        trim_min_growth: int = TRIM_MIN_GROWTH,
        resident: Callable[[], int | None] = resident_bytes,
        release: Callable[[], Awaitable[object]] | None = None,
    ) -> None:
        self.open_streams = open_streams
        self.release = release
        """Asks the store to give back its caches when a trim is due (see the module
        docstring)."""
        self._releasing: asyncio.Task[object] | None = None
        self.trim = trim and _TRIM is not None
        """Return the C heap's free pages at quiet checks (:func:`trim_heap`)."""
        self.trim_min_growth = trim_min_growth
        self.resident = resident
        self._resident_after_trim: int | None = None
        self._trim_paid = False
        self.describe = describe
        """Log what each collection found, by type (``wenxin serve --debug``): where cyclic
        garbage comes from."""
        self.check_interval = check_interval
        self.quiet_streams = quiet_streams
        self.max_interval = max_interval
        self.collections = Counter(
            "wenxin_gc_collections_total", "Full garbage collections run by the server."
        )
        self.pause = Counter(
            "wenxin_gc_pause_seconds", "Seconds the server spent in full garbage collections."
        )
        self.trims = Counter("wenxin_heap_trims_total", "Times the server trimmed its C heap.")
        self.trim_seconds = Counter(
            "wenxin_heap_trim_seconds", "Seconds the server spent trimming its C heap."
        )
        for counter in (self.collections, self.pause, self.trims, self.trim_seconds):
            counter.labels()  # shown as 0 before the first collection
            metrics.register(counter)
        self.allocator = Gauge(
            "wenxin_allocator_info",
            "1 for the allocator the server's objects come from (python: pymalloc; jemalloc; "
            "malloc: the C library's).",
            ("allocator",), multiprocess_mode="livemax",
        )  # fmt: skip
        self.allocator.labels(running()).set(1)
        metrics.register(self.allocator)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._last = 0.0
        self._was_enabled = gc.isenabled()

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Freeze what exists now (modules, the app: it lives as long as the process), turn the
        automatic collector off and schedule the checks."""
        gc.freeze()
        gc.disable()
        self._loop = loop
        self._last = loop.time()
        self._resident_after_trim = self.resident()
        self._timer = loop.call_later(self.check_interval, self._check)

    def stop(self) -> None:
        """Cancel the checks and give the collector back its previous state."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._releasing is not None:
            self._releasing.cancel()  # (done by now: one statement in the store's worker)
        if self._was_enabled:
            gc.enable()

    def _check(self) -> None:
        assert self._loop is not None
        now = self._loop.time()
        quiet = self.open_streams() <= self.quiet_streams
        if quiet or now - self._last >= self.max_interval:
            self.collect()
            self._last = self._loop.time()
        if quiet and self.trim:
            self.maybe_trim()
        self._timer = self._loop.call_later(self.check_interval, self._check)

    def maybe_trim(self) -> bool:
        """Trim the C heap if the process has grown by :attr:`trim_min_growth` bytes since
        the last trim or its smallest size since (a peak came and went), or if the last trim
        gave back that much (more may have been freed since: answers leaving their resume
        windows), or if it cannot tell; whether it did."""
        before = self.resident()
        base = self._resident_after_trim
        if before is not None and base is not None and before < base:
            self._resident_after_trim = base = before  # it shrank by itself: grown from here
        if (
            before is not None
            and base is not None
            and before - base < self.trim_min_growth
            and not self._trim_paid
        ):
            return False
        self.release_caches()
        self.trim_heap()
        after = self.resident()
        # what the trim could not return (pymalloc's arenas) is the new base: a server that
        # stays at this size is not trimmed again until it grows once more
        self._resident_after_trim = after
        self._trim_paid = (
            before is not None and after is not None and (before - after >= self.trim_min_growth)
        )
        return True

    def release_caches(self) -> None:
        """Start :attr:`release` (the store's worker runs it), unless the last one still
        runs; a failure is logged, never raised: it only costs memory."""
        if self.release is None or self._loop is None:
            return
        if self._releasing is not None and not self._releasing.done():
            return
        self._releasing = self._loop.create_task(self._release(self.release))

    @staticmethod
    async def _release(release: Callable[[], Awaitable[object]]) -> object:
        try:
            return await release()
        except Exception as exc:
            logger.warning("the store could not release its caches: %s", exc)
            return None

    def trim_heap(self) -> None:
        """Return the C heap's free pages now (see the module docstring), counted."""
        started = perf_counter()
        trim_heap()
        self.trims.inc()
        self.trim_seconds.inc(perf_counter() - started)

    def collect(self) -> int:
        """Run one full collection now; the number of unreachable objects it found."""
        if self.describe:
            return self._collect_described()
        started = perf_counter()
        found = gc.collect()
        seconds = perf_counter() - started
        self.collections.inc()
        self.pause.inc(seconds)
        logger.debug("garbage collection: %d unreachable objects, %.1f ms", found, seconds * 1e3)
        return found

    def _collect_described(self) -> int:
        """A collection that keeps what it found long enough to count it by type."""
        started = perf_counter()
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            found = gc.collect()
            kinds = Counter_(f"{type(o).__module__}.{type(o).__qualname__}" for o in gc.garbage)
            frames = Counter_(
                f"{o.f_code.co_filename.rsplit('/', 2)[-1]}:{o.f_code.co_qualname}"
                for o in gc.garbage
                if isinstance(o, FrameType)
            )
            gc.garbage.clear()
        finally:
            gc.set_debug(0)
        gc.collect()  # what was kept for counting is unreachable again: free it
        seconds = perf_counter() - started
        self.collections.inc()
        self.pause.inc(seconds)
        logger.warning(
            "garbage collection: %d unreachable objects, %.1f ms; most common: %s; frames: %s",
            found,
            seconds * 1e3,
            ", ".join(f"{name} {count}" for name, count in kinds.most_common(12)),
            ", ".join(f"{name} {count}" for name, count in frames.most_common(12)),
        )
        return found
