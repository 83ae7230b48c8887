"""The batched writer of the per-answer event logs: one task per process, one command per batch.

Theory of operation
===================

Every answer this process produces is *tracked* (:meth:`LogWriter.track`) from its start to
its end. Per chunk the relay appends to its in-process log as it always did and *pokes* the
writer (:meth:`LogWriter.poke`: the answer's id into a set, and a future set if the writer is
idle). ONE task per process sends a batch as soon as something is pending and the previous
batch is back — but never sooner than ``interval`` (5 ms) after the previous batch started —
so the batches grow with the load instead of the round trips: a quiet answer's event reaches
Redis one round trip after it arrived, and under load Redis sees at most ``1 / interval``
batches a second. For a batch the task asks each answer poked since the last one (and,
once every ``IDLE_CHECK``, every tracked answer: renewals) for the events that are final and
not yet written
(:meth:`Source.log_records`: this *seals* the answer's last delta, so text arriving later goes
into a new event — events never change once written), and sends them all, for every answer,
in ONE script call (:data:`BATCH_SCRIPT`)::

    as soon as anything is pending (and the last batch is back, and interval has passed):
      EVALSHA batch ─► per new answer: its meta created, its lease taken (token 1)
                       per log: its token checked, then
                         XADD log <seq>-1 MAXLEN ~ maxlen k <kind> d <json> …   (new events)
                         HSET meta ended 1 last <seq>, PEXPIRE window, lease released (ended)
                         or PEXPIRE log/meta live_ttl                 (new, or renewal due)

So Redis sees at most ``1 / interval`` commands a second (100) whatever the chunk rate, and
a chunk costs its share of one command (``bench/redis_eventlog_cost.py``) — the lesson of
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

**Failures.** A failed batch (Redis down, slow: ``SharedRedis.call`` bounds it) is logged
(once per outage) and counted; the answers keep streaming locally, their unwritten events stay
pending and are sent by the next attempt, ``retry`` seconds later. Entry ids are explicit, so
an attempt that was partly applied before it failed can be repeated: Redis refuses the ids it
already holds and the writer ignores exactly those refusals. Two kinds of answer are
*stranded* by an outage, given up, and their local clients cut like those of a lost answer
(:meth:`Source.fenced`: no ``end``, so the cut never looks finished): one that ended and still
could not be written after ``window`` seconds (its log would have expired by then anyway), and
one whose log could not be created for an answer lease's TTL since the first try (admitted
in the moment between Redis going away and the process noticing it: without a log no
instance can resume, cancel or take it over, and in a fleet its clients read only what is
logged — they would wait for ever). An answer whose log exists is cut by its lease instead
(``_leases``: not renewed for the TTL).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from .._aio import stop_task
from ._answer_leases import DEFAULT_ANSWER_LEASE_TTL, AnswerLeases
from ._eventlog_keys import Record, log_key
from ._leases import CLOCK_LUA
from ._metrics import Metrics
from ._redis import SharedRedis, SharedStateError

__all__ = ["FLUSH_INTERVAL", "LIVE_TTL", "LogWriter", "Source"]

logger = logging.getLogger("wenxin_stream.server")

FLUSH_INTERVAL = 0.005
"""Seconds at least between the starts of two batches (a batch goes as soon as the previous
one is back and this has passed): bounds the batches a second, not the latency of a quiet
answer. Under a steady load nearly every event waits for it, so it is most of the write-ahead
latency; a batch is one script call, so a shorter interval costs little CPU until it is so
short that a batch carries a single event. ``bench/profile_serve.py``, native route with
Redis + PostgreSQL, fast suite, alternating rounds (2026-12-04, `bench/PROFILE.md`): 5 ms
against 10 ms at 120 streams, chunk lateness p50 7.2–7.7 against 11.1–12.9 ms and p99
13.3–14.4 against 18.6–32.6 ms for the same CPU per chunk (105 against 99–118 ms per 1,000);
2 ms and no spacing at all cost 10–25 % more CPU at 175 streams and were later, not sooner.
(With one pipeline per answer, the first design, 5 ms had cost ~50 % more CPU than a 20 ms
tick: ``bench/RESULTS-REDIS.md``, run 5.)"""

IDLE_CHECK = 1.0
"""Seconds between the task's wake-ups while answers are tracked but nothing is pending (the
keys' renewal, and answers given up after a long outage)."""

LIVE_TTL = 3600.0
"""Seconds a running answer's keys live before renewal: far longer than any answer."""

RETRY = 1.0
"""Seconds before the next attempt after a failed batch."""

BATCH_SCRIPT = (
    CLOCK_LUA
    + """
local maxlen, n, window, live = ARGV[2], tonumber(ARGV[3]), ARGV[4], ARGV[5]
local lease_ttl, instance, head, tail = tonumber(ARGV[6]), ARGV[7], ARGV[8], ARGV[9]
local creates, leases = tonumber(ARGV[10]), KEYS[1]
local sid, log, meta, last, due, ok, body = {}, {}, {}, {}, {}, {}, {}
local out = {''}
for j = 1, n do
  local s = ARGV[10 + j]
  local nl = string.find(s, '\\n', 1, true)
  local token
  token, last[j], due[j], sid[j] = string.match(string.sub(s, 1, nl - 1),
                                                '^(%d+) (%S+) (%d) (%S+)$')
  log[j] = head .. sid[j] .. tail .. 'log'
  meta[j] = head .. sid[j] .. tail .. 'meta'
  body[j] = nl + 1
  ok[j] = token
end
for i = 11 + n, 10 + n + 4 * creates, 4 do
  local j = tonumber(ARGV[i])
  redis.call('HSET', meta[j], 'owner', ARGV[i + 1], 'model', ARGV[i + 2])
  if redis.call('HSETNX', meta[j], 'token', '1') == 1 then
    redis.call('HSET', meta[j], 'instance', instance)
    if ARGV[i + 3] ~= '' then
      redis.call('HSET', meta[j], 'request', ARGV[i + 3])
      redis.call('ZADD', leases, 'NX', now + lease_ttl, sid[j])
    end
  end
end
for j = 1, n do
  ok[j] = redis.call('HGET', meta[j], 'token') == ok[j]
  if not ok[j] then
    out[#out + 1] = j
  else
    local s, at = ARGV[10 + j], body[j]
    while at <= #s do
      local nl = string.find(s, '\\n', at, true)
      local seq, kind, size = string.match(string.sub(s, at, nl - 1), '^(%d+) (%S+) (%d+)$')
      at = nl + 1 + tonumber(size)
      local r = redis.pcall('XADD', log[j], 'MAXLEN', '~', maxlen, seq .. '-1',
                            'k', kind, 'd', string.sub(s, nl + 1, at - 1))
      if type(r) == 'table' and r.err and not string.find(r.err, 'equal or smaller')
         and out[1] == '' then
        out[1] = r.err
      end
    end
    if last[j] ~= '-' then
      redis.call('HSET', meta[j], 'ended', '1', 'last', last[j])
      redis.call('PEXPIRE', log[j], window)
      redis.call('PEXPIRE', meta[j], window)
      redis.call('ZREM', leases, sid[j])
    elseif due[j] == '1' then
      redis.call('PEXPIRE', log[j], live)
      redis.call('PEXPIRE', meta[j], live)
    end
  end
end
return out
"""
)
"""A whole batch of the writer, for every answer in it, in ONE command, **fenced**. ``KEYS``:
the answer lease set (``_answer_leases``). ``ARGV``: now (``''``: Redis's clock),
``maxlen``, the number of logs ``n``, the resume window and the live expiry (ms), the lease
TTL (s), this instance, the two parts of an answer's key around its stream id
(``<prefix>ans:{`` and ``}:``), the number of answers created; then ONE argument per log
(:func:`_log_argument`): a line ``<token> <seq of its end, or -> <1: live expiry due, or 0>
<stream id>``, then per event a line ``<seq> <kind> <length of data>`` and the data; then per
answer created (its log's index, owner, model, request or ``''``).

In order: each new answer's metadata is created and its lease taken (token 1) — once: a
batch sent again changes nothing a takeover may have changed since; the events of a log
whose metadata holds another token are refused whole (a takeover gave the answer to another
process); an answer that ends here is marked ended, given the resume window's expiry and its
lease released, and a running one due for it gets the live expiry — both only under its
token. Answers ``{first refusal or '', fenced log indices…}``.

One command per batch, one argument per answer, the answers' keys made in the script:
redis-py encodes each argument of a command in Python (``pack_command``: about 1 µs an
argument), which was most of the writer's cost with four arguments an event and six an answer
(``bench/redis_eventlog_cost.py``; ``bench/PROFILE.md``). The keys are the stream id's
hash-tagged ones, so like the lease set this assumes one Redis, not a Cluster
(docs/SCALING.md)."""


def _log_argument(tracked: _Tracked, records: list[Record], ended: bool, now: float) -> bytes:
    """An answer's part of :data:`BATCH_SCRIPT`: its head line, then its events."""
    source = tracked.source
    ends = ended and records and records[-1].is_end
    due = not ended and (not tracked.created or now >= tracked.renew_at)
    parts = [
        b"%d %b %b %b\n"
        % (
            source.token,
            b"%d" % records[-1].seq if ends else b"-",
            b"1" if due else b"0",
            source.stream_id.encode(),
        )
    ]
    parts += [b"%d %b %d\n%b" % (r.seq, r.kind, len(r.data), r.data) for r in records]
    return b"".join(parts)


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
    __slots__ = ("created", "ended", "ended_at", "renew_at", "source", "tried_at", "written")

    def __init__(self, source: Source) -> None:
        self.source = source
        self.written = 0  # events [0, written) are in Redis
        self.created = False
        self.tried_at: float | None = None  # (loop time) the first batch that tried to create it
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
        self.batches = 0
        """Batches sent (one script call each, successful or not)."""
        self.records = 0
        """Events written."""
        self.failures = 0
        """Batches that failed."""
        self._tracked: dict[str, _Tracked] = {}
        self._pending = False  # poked since the last batch started
        self._pending_since = 0.0  # (monotonic) when, first
        self.on_batch: Callable[[float], None] | None = None
        """Told, per batch the task sent and Redis took, the seconds from its first pending
        event to the reply (``_redis_metrics``: ``wenxin_eventlog_write_wait_seconds``)."""
        self._poked: set[str] = set()  # the answers poked since then
        self._scanned = 0.0  # when every tracked answer was last looked at
        self._wake: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._failing = False
        self._sha: str | None = None  # BATCH_SCRIPT's, once loaded
        head, _, tail = log_key(shared, "\x00").partition("\x00")
        self._key_parts = (head, tail.removesuffix("log"))  # an answer's keys around its id
        self.fenced = 0
        """Answers whose writes were refused because another process took them over."""
        self.stranded = 0
        """Answers given up because Redis took none of their writes (see the module
        docstring), their clients cut."""

    def __len__(self) -> int:
        """How many answers are tracked (running, or ended and not yet written)."""
        return len(self._tracked)

    # -- called by the relay ----------------------------------------------------------------

    def poke(self, stream_id: str | None = None) -> None:
        """The tracked answer ``stream_id`` has something new to write: it goes with the next
        batch (at once when no batch is in flight). Called per event: a set's ``add`` and,
        when the task is idle, a future. ``None``: look at every tracked answer."""
        if not self._pending:
            self._pending = True
            self._pending_since = time.monotonic()
        if stream_id is None:
            self._scanned = 0.0
        else:
            self._poked.add(stream_id)
        wake = self._wake
        if wake is not None and not wake.done():
            wake.set_result(None)

    def track(self, source: Source) -> None:
        """Log ``source`` from now on (it has just started)."""
        self._tracked[source.stream_id] = _Tracked(source)
        self.poke(source.stream_id)

    def adopt(self, source: Source, written: int) -> None:
        """Log ``source`` from now on: an answer taken over from another process, whose
        events ``[0, written)`` are in Redis already (its lease is held)."""
        tracked = _Tracked(source)
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
            since, batches = self._pending_since, self.batches
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
                if self.batches == batches:
                    continue  # nothing was sent (all given up, say): Redis may still be away
                if self.on_batch is not None:
                    self.on_batch(time.monotonic() - since)
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
        """Send everything pending in one script call; how many events it held. ``poked_only``
        (the task's batches): look only at the answers poked since the last batch, and at
        every answer once every ``IDLE_CHECK`` seconds.

        Raises:
            SharedStateError: the batch failed (what it held stays pending).
        """
        if not self._tracked:
            return 0
        now = asyncio.get_running_loop().time()
        poked, self._poked = self._poked, set()
        if not poked_only or now - self._scanned >= IDLE_CHECK:  # renewals, give-ups too
            self._scanned = now
            candidates = list(self._tracked.values())
        else:  # only the answers with something new: a batch costs what changed
            candidates = [t for s in poked if (t := self._tracked.get(s)) is not None]
        batch: list[tuple[_Tracked, list[Record], bool]] = []
        stranded: list[_Tracked] = []
        for tracked in candidates:
            if (tracked.ended and now - tracked.ended_at > self.window) or (
                tracked.tried_at is not None and now - tracked.tried_at > self.leases.ttl
            ):
                stranded.append(tracked)
                continue
            records = tracked.source.log_records(tracked.written)
            if not tracked.created and not records:
                if tracked.ended:  # ended before its first event (the request failed)
                    del self._tracked[tracked.source.stream_id]
                continue
            if records or tracked.ended or now >= tracked.renew_at:
                batch.append((tracked, records, tracked.ended))
                if not tracked.created and tracked.tried_at is None:
                    tracked.tried_at = now
        if stranded:
            self._strand(stranded)
        if not batch:
            return 0
        if self._sha is None:
            load = self.shared.client.script_load(BATCH_SCRIPT)
            self._sha = await self.shared.call(load, "SCRIPT LOAD")
        self.batches += 1
        try:
            reply = await self.shared.call(self._send(batch, now), "event log batch")
        except SharedStateError:
            self.failures += 1
            raise
        if reply is None:
            self._sha = None  # Redis restarted: load it again, send the batch again
            self.failures += 1
            raise SharedStateError("event log batch: the script was not loaded")
        lost = {batch[j - 1][0].source.stream_id for j in self._check(reply)}
        written = 0
        for tracked, records, ended in batch:  # `ended` as sent: it may end meanwhile
            source = tracked.source
            if source.stream_id in lost:
                continue
            count = len(records)
            tracked.written += count
            written += count
            if not tracked.created:
                tracked.created = True
                tracked.tried_at = None
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

    def _strand(self, stranded: list[_Tracked]) -> None:
        """Give up ``stranded`` (see the module docstring): nothing more of them is written,
        and their clients are cut."""
        logger.warning(
            "answers given up, their clients cut: Redis took no write of theirs in time (%d)",
            len(stranded),
        )
        for tracked in stranded:
            stream_id = tracked.source.stream_id
            del self._tracked[stream_id]
            self.leases.forget(stream_id)
            self.stranded += 1
            tracked.source.fenced()

    async def _send(self, batch: list[tuple[_Tracked, list[Record], bool]], now: float) -> Any:
        """Send ``batch`` as one :data:`BATCH_SCRIPT` call; its reply, or ``None`` when Redis
        no longer holds the script (``NOSCRIPT``)."""
        from redis.exceptions import NoScriptError

        logs: list[bytes] = []
        creates: list[Any] = []
        for index, (tracked, records, ended) in enumerate(batch, 1):
            logs.append(_log_argument(tracked, records, ended, now))
            if not tracked.created:
                source = tracked.source
                creates += (index, source.owner, source.model, source.request or b"")
        argv = [
            b"",
            self.maxlen,
            len(batch),
            int(self.window * 1000),
            int(self.live_ttl * 1000),
            self.leases.ttl,
            self.instance,
            *self._key_parts,
            len(creates) // 4,
        ]
        try:
            return await self.shared.client.evalsha(
                self._sha, 1, self.leases.key, *argv, *logs, *creates
            )
        except NoScriptError:
            return None

    def _check(self, reply: Any) -> list[int]:
        """Log the batch's first refusal; the indices of the logs it fenced."""
        refusal, fenced = reply[0], [int(j) for j in reply[1:]]
        if refusal:
            self.metrics.error("shared_state")
            logger.error("Redis refused an event log write: %s", refusal.decode("utf-8", "replace"))
        return fenced
