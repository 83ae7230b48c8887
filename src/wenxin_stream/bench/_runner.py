"""One load run: N workers, each looping "open a stream, read it to the end", then the result.

Theory of operation
===================

Timeline of a run (all times wall-clock seconds from ``t0``)::

    0 ──ramp──▶ every worker has started          (worker i starts at i × ramp / N)
    0 ──warmup──▶ measurement window opens         (streams started earlier are not measured)
    0 ──duration──▶ load ends: no new streams      (or: --requests streams have been started
                    and finished, or --time-limit)
      ──drain──▶ streams still open are cut        (counted as cut_at_end, not as failures)

Each worker owns one keep-alive :class:`~._client.Connection` and loops: reconnect if needed,
``target.prepare`` (native conversations), write the request, await the one future that
resolves when the stream ends. All per-chunk work happens in the connection's callbacks
(:mod:`._client`, :mod:`._recorder`), so a worker wakes once per stream. Loops are bounded:
by ``--requests`` tickets or the duration, and by ``time_limit``; a worker backs off
(exponentially, up to 1 s) after failed connects and briefly after failed streams.

One ticker task runs every 0.5 s and notes how late it woke up (the event loop's lag): it
samples the ``--pid`` processes, enforces the stream
timeouts (no content within ``ttft_timeout``, nothing received for ``idle_timeout``) by
aborting the connection, and once a second prints the progress line (elapsed, open streams,
completed, errors, chunks/s, p99 lateness over the last second, our CPU).

Counters, this process's CPU time and its run-queue wait are snapshotted when the measurement
window opens and when the load ends; throughput and the client's cost (CPU, CPU per 1,000
chunks, time spent waiting for a CPU, the worst event-loop lag) are their differences over the
window.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from ._client import Connection
from ._stats import (
    ClientCost,
    Collector,
    RunResult,
    Throughput,
    lateness_method,
    percentile,
    quantile_points,
    summarize,
)
from ._system import ProcSampler, read_cpu_wait_ns
from ._targets import SetupError, Target

__all__ = ["LoadRun", "LoadSpec", "loop_factory", "run_load"]

TICK = 0.5
"""Seconds between ticker rounds (process sampling, timeouts); progress prints every 2."""


@dataclass(frozen=True, slots=True)
class LoadSpec:
    """How much load, for how long (see the module docstring for the timeline)."""

    concurrency: int
    duration: float = 30.0
    requests: int | None = None
    ramp: float = 2.0
    warmup: float = 0.0
    drain: float = 30.0
    time_limit: float = 3600.0
    connect_timeout: float = 10.0
    ttft_timeout: float = 60.0
    idle_timeout: float = 30.0
    error_backoff: float = 0.05

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if self.requests is not None and self.requests < 1:
            raise ValueError("requests must be at least 1")
        if self.requests is None and not 0 <= self.warmup < self.duration:
            raise ValueError("warmup must be shorter than the duration")
        if min(self.ramp, self.warmup, self.drain) < 0 or self.time_limit <= 0:
            raise ValueError("times must not be negative")


@dataclass(slots=True)
class _Snapshot:
    t: float
    cpu: float
    chunks: int
    completed: int
    tokens: int
    cpu_wait_ns: int | None


@dataclass(slots=True)
class LoadRun:
    """One run of :class:`LoadSpec` against a :class:`~._targets.Target`."""

    target: Target
    spec: LoadSpec
    samplers: Sequence[ProcSampler] = ()
    progress: TextIO | None = None
    event_loop: str = "asyncio"
    col: Collector = field(default_factory=Collector)
    active: dict[Connection, Any] = field(default_factory=dict)
    stopping: bool = False
    t0: float = 0.0
    measure_from: float = 0.0
    max_open: int = 0
    lags: list[tuple[float, float]] = field(default_factory=list)  # (time, seconds late)
    _tickets: int | None = None
    _next_question: int = 0
    _start: _Snapshot | None = None
    _end: _Snapshot | None = None
    _marks: tuple[float, int, int, int, float] = (0.0, 0, 0, 0, 0.0)

    def _snapshot(self) -> _Snapshot:
        c = self.col
        return _Snapshot(
            time.time(),
            time.process_time(),
            c.all_chunks,
            c.all_completed,
            c.all_tokens,
            read_cpu_wait_ns(),
        )

    def _open_window(self) -> None:
        if self._start is None and not self.stopping:
            self._start = self._snapshot()

    async def _open(self) -> Connection:
        ep = self.target.endpoint
        return await Connection.open(
            ep.host, ep.port, tls=ep.tls(), timeout=self.spec.connect_timeout
        )

    async def run(self) -> RunResult:
        """Run the load and return its result.

        Raises:
            SetupError: the target's one-time setup (v1 OAuth token) failed.
        """
        spec = self.spec
        await self.target.setup(self._open)
        loop = asyncio.get_running_loop()
        self._tickets = spec.requests
        self.t0 = time.time()
        self.measure_from = self.t0 + spec.warmup
        self._marks = (self.t0, 0, 0, 0, time.process_time())
        if spec.warmup > 0:
            loop.call_later(spec.warmup, self._open_window)
        else:
            self._open_window()
        workers = [asyncio.create_task(self._worker(i)) for i in range(spec.concurrency)]
        ticker = asyncio.create_task(self._ticker())
        try:
            if spec.requests is None:
                await asyncio.wait(workers, timeout=min(spec.duration, spec.time_limit))
            else:
                await asyncio.wait(workers, timeout=spec.time_limit)
            self._end = self._snapshot()
            self.stopping = True
            pending = {w for w in workers if not w.done()}
            if pending:
                _, pending = await asyncio.wait(pending, timeout=spec.drain)
            if pending:
                for conn in list(self.active):
                    conn.abort("cut_at_end", "still open when the drain time ran out")
                _, pending = await asyncio.wait(pending, timeout=5.0)
                for task in pending:  # pragma: no cover - a worker stuck outside a stream
                    task.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
        finally:
            ticker.cancel()
            await asyncio.gather(ticker, return_exceptions=True)
        for task in workers:
            if not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]  # a bug: let it show
        return self._result()

    def _next_ticket(self) -> bool:
        if self.stopping:
            return False
        if self._tickets is not None:
            if self._tickets <= 0:
                return False
            self._tickets -= 1
        return True

    async def _worker(self, index: int) -> None:
        spec = self.spec
        col = self.col
        pacing = self.target.config.pacing
        if index and spec.ramp:
            await asyncio.sleep(spec.ramp * index / spec.concurrency)
        conn: Connection | None = None
        state: dict[str, Any] = {}
        connect_failures = 0
        try:
            while self._next_ticket():
                if conn is None or not conn.reusable:
                    if conn is not None:
                        conn.close()
                        conn = None
                    try:
                        conn = await self._open()
                        connect_failures = 0
                    except (OSError, TimeoutError) as exc:
                        self._count_failure("connect_error", str(exc) or type(exc).__name__)
                        connect_failures += 1
                        await asyncio.sleep(min(1.0, spec.error_backoff * 2**connect_failures))
                        continue
                try:
                    await self.target.prepare(conn, state)
                except SetupError as exc:
                    self._count_failure(exc.reason, exc.detail)
                    await asyncio.sleep(spec.error_backoff)
                    continue
                n = self._next_question
                self._next_question = n + 1
                request = self.target.request(n, state)
                now = time.time()
                measured = now >= self.measure_from and self._start is not None
                if measured:
                    col.started += 1
                recorder = self.target.recorder(col, now, pacing, measured)
                future = conn.send(request, recorder)
                self.active[conn] = recorder
                try:
                    await future
                finally:
                    del self.active[conn]
                if recorder.failed:
                    await asyncio.sleep(spec.error_backoff)
        finally:
            if conn is not None:
                conn.close(reset=True)

    def _count_failure(self, reason: str, detail: str) -> None:
        measured = time.time() >= self.measure_from and self._start is not None
        if measured:
            self.col.started += 1
        self.col.fail(reason, detail, measured=measured)

    async def _ticker(self) -> None:
        rounds = 0
        while True:
            before = time.monotonic()
            await asyncio.sleep(TICK)
            rounds += 1
            now = time.time()
            self.lags.append((now, max(0.0, time.monotonic() - before - TICK)))
            for sampler in self.samplers:
                sampler.sample(now)
            self._enforce_timeouts(now)
            self.max_open = max(self.max_open, len(self.active))
            if rounds % 2 == 0 and self.progress is not None:
                print(self._progress_line(now), file=self.progress, flush=True)

    def _enforce_timeouts(self, now: float) -> None:
        spec = self.spec
        for conn, rec in list(self.active.items()):
            if rec.n == 0 and not rec.ended_ok:
                if now - rec.t_send > spec.ttft_timeout:
                    conn.abort("timeout", f"no content within {spec.ttft_timeout:g} s")
            elif now - conn.last_activity > spec.idle_timeout:
                conn.abort("timeout", f"nothing received for {spec.idle_timeout:g} s")

    def _progress_line(self, now: float) -> str:
        col = self.col
        t_mark, chunks_mark, late_mark, warm_mark, cpu_mark = self._marks
        cpu = time.process_time()
        span = max(now - t_mark, 1e-9)
        tail = col.lateness[late_mark:].tolist() + col.warm_lateness[warm_mark:].tolist()
        self._marks = (now, col.all_chunks, len(col.lateness), len(col.warm_lateness), cpu)
        if len(tail) > 20000:
            tail = tail[:: len(tail) // 20000]
        p99 = f"{percentile(sorted(tail), 99) * 1000:7.1f} ms" if tail else "      - ms"
        return (
            f"[{now - self.t0:6.1f}s] open {len(self.active):6d}  done {col.all_completed:8d}  "
            f"err {col.all_failed:6d}  {(col.all_chunks - chunks_mark) / span:9.0f} chunks/s  "
            f"p99 late {p99}  cpu {(cpu - cpu_mark) / span * 100:3.0f}%"
        )

    def _result(self) -> RunResult:
        col = self.col
        end = self._end or self._snapshot()
        start = self._start or end
        window = max(end.t - start.t, 1e-9)
        chunks = end.chunks - start.chunks
        cpu = end.cpu - start.cpu
        lags = [lag for t, lag in self.lags if start.t <= t <= end.t + TICK]
        wait = None
        if start.cpu_wait_ns is not None and end.cpu_wait_ns is not None:
            wait = round((end.cpu_wait_ns - start.cpu_wait_ns) / 1e9 / window * 100, 1)
        completed = col.completed
        failed = col.failed
        pacing = self.target.config.pacing
        return RunResult(
            concurrency=self.spec.concurrency,
            window_s=round(end.t - start.t, 3),
            streams_started=col.started,
            streams_completed=completed,
            streams_failed=failed,
            streams_cut_at_end=col.cut_at_end,
            failures=dict(sorted(col.failures.items())),
            error_samples=col.error_samples,
            error_rate=round(failed / (completed + failed), 6) if completed + failed else 0.0,
            chunks_received=col.chunks,
            chunks_expected_per_stream=pacing.chunks if pacing else None,
            chunks_lost=col.chunks_lost,
            streams_with_loss=col.streams_with_loss,
            ttft_ms=summarize(col.ttft),
            lateness_ms=summarize(col.lateness),
            lateness_method=lateness_method(col.late_by_stamp, col.late_by_schedule),
            lateness_chunks={"stamp": col.late_by_stamp, "schedule": col.late_by_schedule},
            gap_ms=summarize(col.gaps),
            total_ms=summarize(col.total),
            behind_schedule_ms=summarize(col.behind),
            throughput=Throughput(
                streams_per_s=round((end.completed - start.completed) / window, 2),
                chunks_per_s=round(chunks / window, 1),
                tokens_per_s=(
                    round((end.tokens - start.tokens) / window, 1)
                    if col.streams_with_usage
                    else None
                ),
            ),
            client=ClientCost(
                cpu_s=round(cpu, 3),
                wall_s=round(window, 3),
                cpu_percent=round(cpu / window * 100, 1),
                cpu_ms_per_1000_chunks=round(cpu * 1e6 / chunks, 2) if chunks else None,
                event_loop=self.event_loop,
                max_open_streams=self.max_open,
                loop_lag_max_ms=round(max(lags) * 1000, 1) if lags else None,
                cpu_wait_percent=wait,
            ),
            processes=[s.stats(start.t, end.t) for s in self.samplers],
            cdf={
                "ttft_ms": quantile_points(col.ttft),
                "lateness_ms": quantile_points(col.lateness),
                "gap_ms": quantile_points(col.gaps),
                "total_ms": quantile_points(col.total),
                "behind_schedule_ms": quantile_points(col.behind),
            },
        )


def loop_factory(use_uvloop: bool) -> tuple[Callable[[], asyncio.AbstractEventLoop] | None, str]:
    """The event-loop factory to run with (uvloop when wanted and installed) and its name."""
    if use_uvloop:
        try:
            import uvloop
        except ImportError:  # pragma: no cover - uvloop is in the server extra
            return None, "asyncio"
        version = getattr(uvloop, "__version__", "?")
        return uvloop.new_event_loop, f"uvloop {version}"
    return None, "asyncio"


async def run_load(
    target: Target,
    spec: LoadSpec,
    *,
    samplers: Sequence[ProcSampler] = (),
    progress: TextIO | None = None,
    event_loop: str = "asyncio",
) -> RunResult:
    """Run ``spec`` against ``target`` once (see :class:`LoadRun`)."""
    for sampler in samplers:
        sampler.sample(time.time())
    run = LoadRun(target, spec, samplers, progress, event_loop)
    return await run.run()
