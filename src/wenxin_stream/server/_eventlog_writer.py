"""The batched writer of the per-answer event logs: one task per process, one command per batch.

Theory of operation
===================

Every answer this process produces is *tracked* (:meth:`LogWriter.track`) from its start to
its end. Nothing happens per chunk: the relay appends to its in-process log as it always did,
and ONE task per process wakes every ``interval`` (20 ms) while any answer is tracked, asks
each tracked answer for the events that are final and not yet written
(:meth:`Source.log_records`: this *seals* the answer's last delta, so text arriving later goes
into a new event — events never change once written; an answer with no new event since the
last batch is passed over by :meth:`Source.log_pending`, a length check, which at ERNIE's
pace is 19 batches in 20), and sends them all, for every answer, in ONE command::

    every interval, if anything is pending, ONE script call (EVALSHA) doing, per answer:
      [XADD log <seq>-1 MAXLEN ~ maxlen k <kind> d <json>] …     (its new events)
      [HSET meta owner … instance … model …, PEXPIRE log/meta live_ttl]  (a new answer)
      [HSET meta ended 1 last <seq>, PEXPIRE log/meta window]    (an ended one)

So Redis sees at most ``1 / interval`` commands a second (50) whatever the chunk rate and
however many answers start or end, and a chunk costs its share of one command
(``bench/redis_eventlog_cost.py``) — the lesson of
LibreChat and Open WebUI, whose per-chunk Redis calls cost 16–50 % of their relays.

**Expiry.** A stream's keys get their expiry ONCE when created (``live_ttl``: long enough for
any answer) and once more at the end (``window``, the resume window); never per write, so
a stream can never be kept alive by its own writes (what filled Dify's Redis). Only an answer
still running after half its ``live_ttl`` gets it renewed, once per half. The log is bounded
by ``MAXLEN ~ maxlen`` as well.

**Failures.** A failed batch (Redis down, slow: ``SharedRedis.call`` bounds it) is logged
(once per outage) and counted; the answers keep streaming locally, their unwritten events stay
pending and are sent by the next attempt, ``retry`` seconds later. Entry ids are explicit, so
an attempt that was partly applied before it failed can be repeated: Redis refuses the ids it
already holds and the writer ignores exactly those refusals. An answer that ended and still
could not be written after ``window`` seconds is given up (its log would have expired by
then anyway).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Protocol

from .._aio import stop_task
from ._eventlog_keys import Record, log_key, meta_key
from ._metrics import Metrics
from ._redis import SharedRedis, SharedStateError

__all__ = ["FLUSH_INTERVAL", "LIVE_TTL", "LogWriter", "Source"]

logger = logging.getLogger("wenxin_stream.server")

FLUSH_INTERVAL = 0.02
"""Seconds between batches: the most a remote reader waits behind the producer's own."""

LIVE_TTL = 3600.0
"""Seconds a running answer's keys live before renewal: far longer than any answer."""

RETRY = 1.0
"""Seconds before the next attempt after a failed batch."""

_DUPLICATE = "equal or smaller than the target stream top item"

APPEND_SCRIPT = """
local refused = false
local maxlen, instance = ARGV[1], ARGV[2]
local i, k = 3, 1
while i <= #ARGV do
  local log, meta = KEYS[k], KEYS[k + 1]
  local create, last, ttl, n = ARGV[i], ARGV[i + 3], ARGV[i + 4], tonumber(ARGV[i + 5])
  local owner, model = ARGV[i + 1], ARGV[i + 2]
  k, i = k + 2, i + 6
  for _ = 1, n do
    local ok = redis.pcall('XADD', log, 'MAXLEN', '~', maxlen,
                           ARGV[i], 'k', ARGV[i + 1], 'd', ARGV[i + 2])
    if type(ok) == 'table' and ok.err and not string.find(ok.err, 'equal or smaller') then
      refused = ok.err
    end
    i = i + 3
  end
  if create == '1' then
    redis.call('HSET', meta, 'owner', owner, 'instance', instance, 'model', model)
  end
  if last ~= '' then
    redis.call('HSET', meta, 'ended', '1', 'last', last)
  end
  if ttl ~= '' then
    redis.call('PEXPIRE', log, ttl)
    redis.call('PEXPIRE', meta, ttl)
  end
end
return refused
"""
"""A whole batch, every answer, in ONE command: ``KEYS`` each answer's log and metadata,
``ARGV`` ``maxlen`` and the instance, then per answer ``create`` (``1``: write its metadata),
``owner``, ``model``, ``last`` (its last seq once it ended, else empty), ``ttl`` (ms, empty:
leave the expiry), the number of new events and (id, kind, data) for each; answers the first
refusal other than an id Redis already holds (``nil``: none). One command, not a pipeline
of an ``XADD`` per event plus metadata and expiry commands: redis-py's own work per command
cost ~16 µs (``bench/redis_eventlog_cost.py``), and releasing a pipeline's connection costs
a task (an ``asyncio.shield``) per batch (``bench/PROFILE.md``)."""


class Source(Protocol):
    """An answer the writer logs (the relay's ``Generation``)."""

    stream_id: str
    owner: str
    model: str

    def log_records(self, start: int) -> list[Record]:
        """The final events from seq ``start`` on, sealing the last one."""
        ...

    def log_pending(self, start: int) -> bool:
        """Whether there is an event at seq ``start`` or later (nothing is built)."""
        ...


class _Tracked:
    __slots__ = ("created", "ended", "ended_at", "log", "renew_at", "source", "written")

    def __init__(self, source: Source, log: str) -> None:
        self.source = source
        self.log = log  # its log's key
        self.written = 0  # events [0, written) are in Redis
        self.created = False
        self.ended = False
        self.ended_at = 0.0
        self.renew_at = 0.0


class LogWriter:
    """Writes the event logs of this process's answers in batches (see the module docstring)."""

    def __init__(
        self,
        shared: SharedRedis,
        metrics: Metrics,
        *,
        instance: str,
        window: float,
        maxlen: int,
        interval: float = FLUSH_INTERVAL,
        live_ttl: float = LIVE_TTL,
    ) -> None:
        self.shared = shared
        self.metrics = metrics
        self.instance = instance
        self.window = window
        self.maxlen = maxlen
        self.interval = interval
        self.live_ttl = live_ttl
        self.pipelines = 0
        """Batches sent, one script call each (successful or not)."""
        self.records = 0
        """Events written."""
        self.failures = 0
        """Batches that failed."""
        self._tracked: dict[str, _Tracked] = {}
        self._wake: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._failing = False
        self._sha: str | None = None  # APPEND_SCRIPT's, once loaded

    def __len__(self) -> int:
        """How many answers are tracked (running, or ended and not yet written)."""
        return len(self._tracked)

    # -- called by the relay ----------------------------------------------------------------

    def track(self, source: Source) -> None:
        """Log ``source`` from now on (it has just started)."""
        self._tracked[source.stream_id] = _Tracked(source, log_key(self.shared, source.stream_id))
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    def finish(self, source: Source) -> None:
        """``source`` ended: its last events, the ended marker and the resume window's expiry
        go out with the next batch."""
        tracked = self._tracked.get(source.stream_id)
        if tracked is not None and not tracked.ended:
            tracked.ended = True
            tracked.ended_at = asyncio.get_running_loop().time()

    # -- the task ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start the writer task on the running loop."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="event log")

    async def aclose(self) -> None:
        """Write what is pending (bounded by the Redis timeout), then stop the task."""
        task, self._task = self._task, None
        await stop_task(task)
        with contextlib.suppress(SharedStateError):
            await self.flush()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._tracked:
                self._wake = loop.create_future()
                await self._wake
                self._wake = None
            await asyncio.sleep(self.interval)
            try:
                await self.flush()
            except SharedStateError as exc:
                if not self._failing:
                    logger.error("could not write the event logs to Redis: %s", exc)
                self._failing = True
                self.metrics.error("shared_state")
                await asyncio.sleep(RETRY)
            else:
                if self._failing:
                    logger.warning("the event logs are written to Redis again")
                self._failing = False

    async def flush(self) -> int:
        """Send everything pending in one script call; how many events it held.

        Raises:
            SharedStateError: the call failed (what it held stays pending).
        """
        if not self._tracked:
            return 0
        client = self.shared.client
        if self._sha is None:
            self._sha = await self.shared.call(client.script_load(APPEND_SCRIPT), "SCRIPT LOAD")
        now = asyncio.get_running_loop().time()
        keys: list[str] = []
        argv: list[Any] = [self.maxlen, self.instance]
        batch: list[tuple[_Tracked, int, bool]] = []
        for tracked in list(self._tracked.values()):
            if tracked.ended and now - tracked.ended_at > self.window:
                del self._tracked[tracked.source.stream_id]  # given up: it would have expired
                continue
            source = tracked.source
            if (
                tracked.created
                and not tracked.ended
                and now < tracked.renew_at
                and not source.log_pending(tracked.written)
            ):
                continue  # most ticks of a paced answer: nothing new, nothing built
            records = source.log_records(tracked.written)
            if not tracked.created and not records:
                if tracked.ended:  # ended before its first event (the request failed)
                    del self._tracked[tracked.source.stream_id]
                continue
            if records or tracked.ended or now >= tracked.renew_at:
                keys += (tracked.log, meta_key(self.shared, source.stream_id))
                argv += self._header(tracked, len(records), now)
                for record in records:
                    argv += (b"%d-1" % record.seq, record.kind, record.data)
                batch.append((tracked, len(records), tracked.ended))
        if not batch:
            return 0
        self.pipelines += 1
        try:
            result = await self.shared.call(
                client.evalsha(self._sha, len(keys), *keys, *argv), "event log batch"
            )
        except SharedStateError as exc:
            self.failures += 1
            if "NoScriptError" in str(exc) or "NOSCRIPT" in str(exc):
                self._sha = None  # Redis restarted: load it again, send the batch again
            raise
        self._check(result)
        written = 0
        for tracked, count, ended in batch:  # `ended` as queued: it may end meanwhile
            tracked.written += count
            written += count
            if not tracked.created:
                tracked.created = True
                tracked.renew_at = now + self.live_ttl / 2
            elif now >= tracked.renew_at:
                tracked.renew_at = now + self.live_ttl / 2
            if ended:
                self._tracked.pop(tracked.source.stream_id, None)
        self.records += written
        return written

    def _header(self, tracked: _Tracked, count: int, now: float) -> tuple[Any, ...]:
        """One answer's part of the script's ``ARGV`` before its events: whether to write its
        metadata, its owner and model, its last seq if it ended, its new expiry (ms) if any,
        and how many events follow."""
        source = tracked.source
        last = b"%d" % (tracked.written + count - 1) if tracked.ended else b""
        if tracked.ended:
            ttl = b"%d" % int(self.window * 1000)
        elif not tracked.created or now >= tracked.renew_at:
            ttl = b"%d" % int(self.live_ttl * 1000)
        else:
            ttl = b""
        create = b"0" if tracked.created else b"1"
        return (create, source.owner, source.model, last, ttl, count)

    def _check(self, result: Any) -> None:
        if isinstance(result, bytes):  # the script's first refusal
            message = result.decode("utf-8", "replace")
            if _DUPLICATE not in message:
                self.metrics.error("shared_state")
                logger.error("Redis refused an event log write: %s", message)
