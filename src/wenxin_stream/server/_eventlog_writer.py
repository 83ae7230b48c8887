"""The batched writer of the per-answer event logs: one task per process, one pipeline per batch.

Theory of operation
===================

Every answer this process produces is *tracked* (:meth:`LogWriter.track`) from its start to
its end. Per chunk the relay appends to its in-process log as it always did and *pokes* the
writer (:meth:`LogWriter.poke`: the answer's id into a set, and a future set if the writer is
idle). ONE task per process sends a batch as soon as something is pending and the previous
batch is back — but never sooner than ``interval`` (10 ms) after the previous batch started —
so the batches grow with the load instead of the round trips: a quiet answer's event reaches
Redis one round trip after it arrived, and under load Redis sees at most ``1 / interval``
pipelines a second. For a batch the task asks each answer poked since the last one (and,
once every ``IDLE_CHECK``, every tracked answer: renewals) for the events that are final and
not yet written
(:meth:`Source.log_records`: this *seals* the answer's last delta, so text arriving later goes
into a new event — events never change once written), and sends them all, for every answer,
in ONE pipeline (``transaction=False``)::

    as soon as anything is pending (and the last batch is back, and interval has passed):
      pipeline ─► [CREATE meta + lease (token 1), …, PEXPIRE log/meta live_ttl] (a new answer)
                  [one APPEND script: per log, its token checked, then
                   XADD log <seq>-1 MAXLEN ~ maxlen k <kind> d <json> …          (new events)
                   HSET meta ended 1 last <seq>, PEXPIRE window, lease released] (an ended one)

So Redis sees at most ``1 / interval`` pipelines a second (100) whatever the chunk rate, and
a chunk costs its share of one pipeline (``bench/redis_eventlog_cost.py``) — the lesson of
LibreChat and Open WebUI, whose per-chunk Redis calls cost 16–50 % of their relays. The
cadence matters because the relay is write-ahead (below): a client of the producer waits for
its events' batch, so a fixed 20 ms tick after each round trip (the first design) made every
chunk up to ~25 ms late, and under load the ticks fell behind the chunks
(``bench/RESULTS-REDIS.md``, run 4). While answers are tracked but quiet, the task still wakes
once a second (``IDLE_CHECK``) for the keys' renewal.

**Fencing and write-ahead** (``_answer_leases``). The script refuses the events (and the
end) of an answer whose fencing token in Redis is not the one its source holds — another
process took the answer over — and answers which; the writer drops those answers and tells
each (:meth:`Source.fenced`). After each batch, every answer written is told how many of its
events are in Redis (:meth:`Source.logged`): in a fleet the relay lets its clients read only
those, so nothing a client has is missing from the log.

**Expiry.** A stream's keys get their expiry ONCE when created (``live_ttl``: long enough for
any answer) and once more at the end (``window``, the resume window); never per write, so
a stream can never be kept alive by its own writes (what filled Dify's Redis). Only an answer
still running after half its ``live_ttl`` gets it renewed, once per half. The log is bounded
by ``MAXLEN ~ maxlen`` as well.

**Failures.** A failed pipeline (Redis down, slow: ``SharedRedis.call`` bounds it) is logged
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
from ._answer_leases import CREATE_SCRIPT, DEFAULT_ANSWER_LEASE_TTL, AnswerLeases
from ._eventlog_keys import Record, log_key, meta_key
from ._metrics import Metrics
from ._redis import SharedRedis, SharedStateError, is_noscript

__all__ = ["FLUSH_INTERVAL", "LIVE_TTL", "LogWriter", "Source"]

logger = logging.getLogger("wenxin_stream.server")

FLUSH_INTERVAL = 0.01
"""Seconds at least between the starts of two batches (a batch goes as soon as the previous
one is back and this has passed): bounds the pipelines a second, not the latency of a quiet
answer. A pipeline is dear (redis-py's pipeline and its connection hand-back: roughly 0.5–1 ms
of the relay's CPU): at 5 ms, 93 ERNIE-paced native streams (about one chunk a batch) cost
~50 % more server CPU than the old 20 ms tick; at 10 ms about as much as the tick, with half
its lateness (``bench/RESULTS-REDIS.md``, run 5)."""

IDLE_CHECK = 1.0
"""Seconds between the task's wake-ups while answers are tracked but nothing is pending (the
keys' renewal, and answers given up after a long outage)."""

LIVE_TTL = 3600.0
"""Seconds a running answer's keys live before renewal: far longer than any answer."""

RETRY = 1.0
"""Seconds before the next attempt after a failed pipeline."""

_DUPLICATE = "equal or smaller than the target stream top item"

APPEND_SCRIPT = """
local n = tonumber(ARGV[2])
local ok, out = {}, {''}
for j = 1, n do
  local token = redis.call('HGET', KEYS[n + j], 'token')
  ok[j] = token == ARGV[1 + 3 * j]
  if not ok[j] then
    out[#out + 1] = j
  end
end
for i = 4 + 3 * n, #ARGV, 4 do
  local j = tonumber(ARGV[i])
  if ok[j] then
    local r = redis.pcall('XADD', KEYS[j], 'MAXLEN', '~', ARGV[1], ARGV[i + 1],
                          'k', ARGV[i + 2], 'd', ARGV[i + 3])
    if type(r) == 'table' and r.err and not string.find(r.err, 'equal or smaller')
       and out[1] == '' then
      out[1] = r.err
    end
  end
end
for j = 1, n do
  local last = ARGV[2 + 3 * j]
  if ok[j] and last ~= '' then
    redis.call('HSET', KEYS[n + j], 'ended', '1', 'last', last)
    redis.call('PEXPIRE', KEYS[j], ARGV[3])
    redis.call('PEXPIRE', KEYS[n + j], ARGV[3])
    redis.call('ZREM', KEYS[2 * n + 1], ARGV[3 + 3 * j])
  end
end
return out
"""
"""Every new event of a batch, of every answer, in ONE command, **fenced**: ``KEYS`` the
logs, then their metadata, then the answer lease set (``_answer_leases``); ``ARGV``
``maxlen``, the number of logs, the resume window (ms), then per log (its writer's fencing
token, the seq of its ``end`` or ``''``, its stream id), then (log index, id, kind, data) per
event. The events of a log whose metadata holds another token are refused whole (a takeover
gave the answer to another process), and an answer that ends here is marked ended (and its
lease released) only under its token. Answers ``{first refusal or '', fenced log indices…}``.
One command rather than an ``XADD`` per event keeps the client's cost per event to four
arguments: redis-py's own work per command cost ~16 µs an event
(``bench/redis_eventlog_cost.py``)."""


class Source(Protocol):
    """An answer the writer logs (the relay's ``Generation``)."""

    stream_id: str
    owner: str
    model: str
    token: int
    """The fencing token its producer holds (``_answer_leases``)."""
    request: bytes | None
    """What it asked (JSON), for a taker to continue it; ``None``: never taken over."""

    def log_records(self, start: int) -> list[Record]:
        """The final events from seq ``start`` on, sealing the last one."""
        ...

    def logged(self, count: int) -> None:
        """Events ``[0, count)`` are in Redis (its local clients may have them now)."""
        ...

    def fenced(self) -> None:
        """Another process holds the answer now: this one must stop producing it."""
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
        leases: AnswerLeases | None = None,
    ) -> None:
        self.shared = shared
        if leases is None:  # (not `or`: an AnswerLeases holding nothing is falsy)
            leases = AnswerLeases(shared, instance=instance, ttl=DEFAULT_ANSWER_LEASE_TTL)
        self.leases = leases
        """The answers' leases: taken when an answer's log is created, forgotten at its end."""
        self.metrics = metrics
        self.instance = instance
        self.window = window
        self.maxlen = maxlen
        self.interval = interval
        self.live_ttl = live_ttl
        self.pipelines = 0
        """Pipelines sent (successful or not)."""
        self.records = 0
        """Events written."""
        self.failures = 0
        """Pipelines that failed."""
        self._tracked: dict[str, _Tracked] = {}
        self._pending = False  # poked since the last batch started
        self._poked: set[str] = set()  # the answers poked since then
        self._scanned = 0.0  # when every tracked answer was last looked at
        self._wake: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._failing = False
        self._sha: str | None = None  # APPEND_SCRIPT's, once loaded
        self._create: Any = None  # CREATE_SCRIPT, registered
        self.fenced = 0
        """Answers whose writes were refused because another process took them over."""

    def __len__(self) -> int:
        """How many answers are tracked (running, or ended and not yet written)."""
        return len(self._tracked)

    # -- called by the relay ----------------------------------------------------------------

    def poke(self, stream_id: str | None = None) -> None:
        """The tracked answer ``stream_id`` has something new to write: it goes with the next
        batch (at once when no batch is in flight). Called per event: a set's ``add`` and,
        when the task is idle, a future. ``None``: look at every tracked answer."""
        self._pending = True
        if stream_id is None:
            self._scanned = 0.0
        else:
            self._poked.add(stream_id)
        wake = self._wake
        if wake is not None and not wake.done():
            wake.set_result(None)

    def track(self, source: Source) -> None:
        """Log ``source`` from now on (it has just started)."""
        self._tracked[source.stream_id] = _Tracked(source, log_key(self.shared, source.stream_id))
        self.poke(source.stream_id)

    def adopt(self, source: Source, written: int) -> None:
        """Log ``source`` from now on: an answer taken over from another process, whose
        events ``[0, written)`` are in Redis already (its lease is held)."""
        tracked = _Tracked(source, log_key(self.shared, source.stream_id))
        tracked.written = written
        tracked.created = True
        tracked.renew_at = asyncio.get_running_loop().time() + self.live_ttl / 2
        self._tracked[source.stream_id] = tracked
        source.logged(written)
        self.poke(source.stream_id)

    def lose(self, stream_ids: list[str]) -> None:
        """The answers ``stream_ids`` are no longer this process's (their lease was lost):
        nothing more of them is written, and each is told (:meth:`Source.fenced`)."""
        for stream_id in stream_ids:
            tracked = self._tracked.pop(stream_id, None)
            if tracked is not None:
                self.fenced += 1
                tracked.source.fenced()

    def finish(self, source: Source) -> None:
        """``source`` ended: its last events, the ended marker and the resume window's expiry
        go out with the next batch."""
        tracked = self._tracked.get(source.stream_id)
        if tracked is not None and not tracked.ended:
            tracked.ended = True
            tracked.ended_at = asyncio.get_running_loop().time()
            self.poke(source.stream_id)

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
        started = -self.interval
        while True:
            if not self._pending:
                await self._idle(loop)
            wait = started + self.interval - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)  # what arrives meanwhile joins this batch
            started = loop.time()
            self._pending = False
            try:
                await self.flush(poked_only=True)
            except SharedStateError as exc:
                self.poke()  # what it held is still pending
                if not self._failing:
                    logger.error("could not write the event logs to Redis: %s", exc)
                self._failing = True
                self.metrics.error("shared_state")
                await asyncio.sleep(RETRY)
            else:
                if self._failing:
                    logger.warning("the event logs are written to Redis again")
                self._failing = False

    async def _idle(self, loop: asyncio.AbstractEventLoop) -> None:
        """Wait for a poke; while answers are tracked, for ``IDLE_CHECK`` seconds at most."""
        wake = self._wake = loop.create_future()
        timer = loop.call_later(IDLE_CHECK, self.poke) if self._tracked else None
        try:
            await wake
        finally:
            self._wake = None
            if timer is not None:
                timer.cancel()

    async def flush(self, *, poked_only: bool = False) -> int:
        """Send everything pending in one pipeline; how many events it held. ``poked_only``
        (the task's batches): look only at the answers poked since the last batch, and at
        every answer once every ``IDLE_CHECK`` seconds.

        Raises:
            SharedStateError: the pipeline failed (what it held stays pending).
        """
        if not self._tracked:
            return 0
        client = self.shared.client
        if self._sha is None:
            self._sha = await self.shared.call(client.script_load(APPEND_SCRIPT), "SCRIPT LOAD")
        now = asyncio.get_running_loop().time()
        poked, self._poked = self._poked, set()
        if not poked_only or now - self._scanned >= IDLE_CHECK:  # renewals, give-ups too
            self._scanned = now
            candidates = list(self._tracked.values())
        else:  # only the answers with something new: a batch costs what changed
            candidates = [t for s in poked if (t := self._tracked.get(s)) is not None]
        logs: list[_Tracked] = []
        lasts: list[Record] = []  # the last record of each of `logs`
        events: list[Any] = []
        batch: list[tuple[_Tracked, int, bool]] = []
        for tracked in candidates:
            if tracked.ended and now - tracked.ended_at > self.window:
                del self._tracked[tracked.source.stream_id]  # given up: it would have expired
                self.leases.forget(tracked.source.stream_id)
                continue
            records = tracked.source.log_records(tracked.written)
            if not tracked.created and not records:
                if tracked.ended:  # ended before its first event (the request failed)
                    del self._tracked[tracked.source.stream_id]
                continue
            if records or tracked.ended or now >= tracked.renew_at:
                if records:
                    logs.append(tracked)
                    lasts.append(records[-1])
                    index = b"%d" % len(logs)
                    for record in records:
                        events += (index, b"%d-1" % record.seq, record.kind, record.data)
                batch.append((tracked, len(records), tracked.ended))
        if not batch:
            return 0
        pipe = client.pipeline(transaction=False)
        for tracked, _, _ in batch:  # first: the script checks the token they create
            if not tracked.created:
                await self._queue_create(pipe, tracked)
        if logs:  # before the expiries below: they need the keys to exist
            keys = [t.log for t in logs] + [meta_key(self.shared, t.source.stream_id) for t in logs]
            argv: list[Any] = [self.maxlen, len(logs), int(self.window * 1000)]
            for t, record in zip(logs, lasts, strict=True):
                last = b"%d" % record.seq if t.ended and record.is_end else b""
                argv += (t.source.token, last, t.source.stream_id)
            pipe.evalsha(self._sha, len(keys) + 1, *keys, self.leases.key, *argv, *events)
        for tracked, count, _ in batch:
            self._queue(pipe, tracked, count, now)
        self.pipelines += 1
        try:
            results = await self.shared.call(pipe.execute(raise_on_error=False), "event log batch")
        except SharedStateError:
            self.failures += 1
            raise
        creates = sum(1 for t, _, _ in batch if not t.created)
        appended = results[creates] if logs else None
        if is_noscript(appended):
            self._sha = None  # Redis restarted: load it again, send the batch again
            self.failures += 1
            raise SharedStateError("event log batch: the script was not loaded")
        fenced = self._check(results, appended)
        lost = {logs[j - 1].source.stream_id for j in fenced}
        written = 0
        for tracked, count, ended in batch:  # `ended` as queued: it may end meanwhile
            source = tracked.source
            if source.stream_id in lost:
                continue
            tracked.written += count
            written += count
            if not tracked.created:
                tracked.created = True
                tracked.renew_at = now + self.live_ttl / 2
                if source.request is not None:
                    self.leases.hold(source.stream_id, source.token)
            elif now >= tracked.renew_at:
                tracked.renew_at = now + self.live_ttl / 2
            if ended:
                self._tracked.pop(source.stream_id, None)
                self.leases.forget(source.stream_id)
            source.logged(tracked.written)
        if lost:
            for stream_id in lost:
                self.leases.forget(stream_id)
            self.lose(sorted(lost))
        self.records += written
        return written

    async def _queue_create(self, pipe: Any, tracked: _Tracked) -> None:
        """The command that creates an answer's metadata and takes its lease."""
        if self._create is None:
            self._create = self.shared.client.register_script(CREATE_SCRIPT)
        source = tracked.source
        args = [
            "",
            self.leases.ttl,
            source.stream_id,
            self.instance,
            source.owner,
            source.model,
            source.request or b"",
        ]
        keys = [meta_key(self.shared, source.stream_id), self.leases.key]
        await self._create(keys=keys, args=args, client=pipe)

    def _queue(self, pipe: Any, tracked: _Tracked, count: int, now: float) -> None:
        """The expiry commands of one answer (its events and end are in the script)."""
        if tracked.ended:
            return  # the script set the window's expiry, under the answer's token
        if not tracked.created or now >= tracked.renew_at:
            ttl = int(self.live_ttl * 1000)
            pipe.pexpire(tracked.log, ttl)
            pipe.pexpire(meta_key(self.shared, tracked.source.stream_id), ttl)

    def _check(self, results: list[Any], appended: Any) -> list[int]:
        """Log the first refusal of the batch; the indices of the logs it fenced."""
        fenced: list[int] = []
        for result in results:
            if result is appended and isinstance(result, list):
                refusal, fenced = result[0], [int(j) for j in result[1:]]
                if not refusal:
                    continue
                result = SharedStateError(refusal.decode("utf-8", "replace"))
            if isinstance(result, Exception) and _DUPLICATE not in str(result):
                self.metrics.error("shared_state")
                logger.error(
                    "Redis refused an event log write: %s: %s", type(result).__name__, result
                )
                break
        return fenced
