"""Remote resumes: reading answers that other processes produce, from their logs in Redis.

Theory of operation
===================

A client may come back to any instance. When the answer is not this process's (or this
process has already forgotten it), the route opens a :class:`RemoteStream` with
:meth:`LogReader.open`: one pooled round trip reads the answer's metadata and the first id of
its log, so an unknown answer, another owner's answer, an id it never had, or an id already
trimmed is refused (404 / 400 / 410) before any byte of the response, and Redis being down is
a 503.

Then ONE task per process, on ONE dedicated connection (``SharedRedis.dedicated``: a blocking
read never holds a pooled connection), reads for every remote client of the process at once::

    XREAD COUNT n BLOCK ms STREAMS wake:{me} ans:{s_1}:log ans:{s_2}:log …  $ <pos₁> <pos₂> …
        │                                  │
        │ the set changed: a one-entry     └─► each entry → every RemoteStream following that
        │ XADD to wake:{me} ends the block       answer whose cursor is behind it → its queue
        └─► rebuild the command

Several clients of one answer share one position in the command (the earliest of theirs; each
skips what it already has). A follower that reads the ``end`` entry is dropped from the
command; the task ends when nobody follows anything, and starts again with the next
follower.

**Slow clients.** Each :class:`RemoteStream` has a bounded queue: past ``max_pending``
records, consecutive ``delta`` records are merged into one (the seq of the last), as the
relay coalesces for local laggards — event ids then skip, text is never lost or repeated, and
a resume from any id received is exact. A queue still over its bound after merging (many
events of other kinds) cuts that client (it may resume).

**Upkeep.** Between two reads, at most every second, the task also runs the upkeep of what
it follows (``_eventlog_upkeep``): it marks each followed answer as read on another
instance (so that the producer's disconnect policy does not stop it), and for answers whose
log has been silent for half of ``lease_ttl`` it checks that the producer is alive, and ends
the answer in the log with ``server_crashed`` if it is not. The block of one ``XREAD`` is
capped at the upkeep's interval for it.

**Failures.** A failed or timed-out ``XREAD`` (bounded by the block plus the Redis timeout)
cuts every remote client of the process with a 503 error: their connections end without an
``end`` event, so none looks finished, and each may resume. The producer's own clients are
not affected.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from .._aio import stop_task
from ._eventlog_keys import MERGEABLE_KIND, Record, log_key, merge_texts, meta_key, record_of
from ._eventlog_upkeep import Followed, Upkeep
from ._http import HTTPError, not_found
from ._redis import SharedRedis, SharedStateError

__all__ = ["BLOCK_MS", "LogReader", "RemoteStream", "unavailable"]

logger = logging.getLogger("wenxin_stream.server")

BLOCK_MS = 2000
"""How long one ``XREAD`` blocks (ms)."""

READ_COUNT = 512
"""Most entries one ``XREAD`` returns per answer."""

MAX_PENDING = 256
"""Records a remote client's queue holds before deltas are merged."""


def unavailable() -> HTTPError:
    """503: the fleet's shared state cannot be reached (retry shortly)."""
    return HTTPError(
        503,
        "shared_state_unavailable",
        "the shared state of the server fleet (Redis) is unavailable: retry shortly",
        retry_after=1,
        type="server_error",
    )


class RemoteStream:
    """One client's read of an answer produced elsewhere (see the module docstring)."""

    __slots__ = (
        "_waiter",
        "closed",
        "cursor",
        "done",
        "failure",
        "key",
        "max_pending",
        "model",
        "pending",
        "reader",
        "stream_id",
    )

    def __init__(
        self, reader: LogReader, stream_id: str, model: str, after: int, max_pending: int
    ) -> None:
        self.reader = reader
        self.stream_id = stream_id
        self.model = model
        self.key = log_key(reader.shared, stream_id).encode()
        self.cursor = after
        """The seq of the last record queued."""
        self.pending: list[Record] = []
        self.max_pending = max_pending
        self.failure: HTTPError | None = None
        self.done = False
        """The ``end`` record has been queued (or the client had it already)."""
        self.closed = False
        self._waiter: asyncio.Future[None] | None = None

    async def next_batch(self) -> list[Record]:
        """The records queued since the last call (waiting for at least one); an empty list
        once the end has been read.

        Raises:
            HTTPError: this client was cut (Redis failed, or it fell too far behind).
        """
        while not self.pending:
            if self.failure is not None:  # a copy: raising the kept one would make a cycle
                raise self.failure.copy()  # (its traceback → this frame → self → it)
            if self.done:
                return []
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        batch, self.pending = self.pending, []
        return batch

    def close(self) -> None:
        """The client left: stop following (idempotent)."""
        if not self.closed:
            self.closed = True
            self.reader._leave(self)

    def push(self, record: Record) -> None:
        """Queue a record read from Redis (records it has already are skipped, but never an
        end: the end written for a dead producer may skip ids, or come below an id this client
        saw before the producer's last batch was written)."""
        if self.done or (record.seq <= self.cursor and not record.is_end):
            return
        if record.seq != self.cursor + 1 and not record.is_end:  # trimmed while it was behind
            self.fail(HTTPError(410, "resume_expired", "events of this stream were trimmed"))
            return
        self.cursor = max(self.cursor, record.seq)
        pending = self.pending
        pending.append(record)
        if record.is_end:
            self.done = True
        elif len(pending) > self.max_pending:
            self.pending = pending = _coalesce(pending)
            if len(pending) > self.max_pending:
                self.fail(HTTPError(503, "client_too_slow", "the client fell too far behind"))
                return
        self._wake()

    def fail(self, error: HTTPError) -> None:
        """Cut this client with ``error`` (once)."""
        if self.failure is None:
            self.failure = error
            self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


def _coalesce(records: list[Record]) -> list[Record]:
    out: list[Record] = []
    run: list[Record] = []
    for record in records:
        if record.kind == MERGEABLE_KIND:
            run.append(record)
            continue
        if run:
            out.append(merge_texts(run) if len(run) > 1 else run[0])
            run = []
        out.append(record)
    if run:
        out.append(merge_texts(run) if len(run) > 1 else run[0])
    return out


class _Follow:
    __slots__ = ("heard_at", "position", "producer", "stream_id", "streams")

    def __init__(self, stream_id: str, producer: str, position: int, now: float) -> None:
        self.stream_id = stream_id
        self.producer = producer  # the instance id of the process that writes the log
        self.position = position  # the last seq read for this answer (-1: none)
        self.heard_at = now  # when its log last gave an entry (or it was first followed)
        self.streams: set[RemoteStream] = set()


class LogReader:
    """This process's reader of other processes' logs (see the module docstring)."""

    def __init__(
        self,
        shared: SharedRedis,
        *,
        instance: str,
        block_ms: int = BLOCK_MS,
        max_pending: int = MAX_PENDING,
        upkeep: Upkeep | None = None,
    ) -> None:
        self.shared = shared
        self.upkeep = upkeep
        """The markers and crash ends of what is followed (``None``: none kept)."""
        if upkeep is not None:
            block_ms = min(block_ms, max(1, int(upkeep.interval * 1000)))
        self.block_ms = block_ms
        self.max_pending = max_pending
        self.wake_key = shared.key("wake", instance)
        self.reads = 0
        """``XREAD`` calls made."""
        self._follows: dict[bytes, _Follow] = {}
        self._connection: Any = None
        self._task: asyncio.Task[None] | None = None
        self._blocked = False
        self._upkeep_at = 0.0  # when the next upkeep round is due (loop time)

    def __len__(self) -> int:
        """How many answers are followed."""
        return len(self._follows)

    async def open(self, stream_id: str, owner: str, after: int | None) -> RemoteStream:
        """Follow the answer ``stream_id`` for ``owner`` from after seq ``after`` (``None``:
        from the start).

        Raises:
            HTTPError: 404 (unknown, expired or another owner's), 400 (``after`` is not an
                event of it), 410 (``after`` was trimmed), 503 (Redis unavailable).
        """
        shared = self.shared
        pipe = shared.client.pipeline(transaction=False)
        fields = ["owner", "model", "ended", "last", "instance", "crashed"]
        pipe.hmget(meta_key(shared, stream_id), fields)
        pipe.xrange(log_key(shared, stream_id), "-", "+", count=1)
        try:
            (meta_owner, model, ended, last, producer, crashed), first = await shared.call(
                pipe.execute(), "event log open"
            )
        except SharedStateError as exc:
            raise unavailable() from exc
        if meta_owner is None or meta_owner.decode() != owner or not first:
            raise not_found(f"no stream {stream_id!r} (unknown or expired)")
        position = -1 if after is None else after
        name = model.decode() if model else ""
        if crashed == b"1" and position >= int(last):  # ahead of what the dead producer wrote
            return await self._crash_end(stream_id, name, position)
        if ended == b"1" and position > int(last):
            raise HTTPError(
                400,
                "invalid_field",
                "Last-Event-ID is not an event of this stream",
                param="last_event_id",
            )
        if record_of(*first[0]).seq > position + 1:
            raise HTTPError(410, "resume_expired", "the events after Last-Event-ID were trimmed")
        stream = RemoteStream(self, stream_id, name, position, self.max_pending)
        if ended == b"1" and position == int(last):
            stream.done = True  # the client has every event already
            return stream
        follow = self._follows.get(stream.key)
        if follow is None:
            now = asyncio.get_running_loop().time()
            instance = producer.decode() if producer else ""
            follow = self._follows[stream.key] = _Follow(stream_id, instance, position, now)
            self._upkeep_at = 0.0  # mark it as read here at once
        follow.position = min(follow.position, position)
        follow.streams.add(stream)
        await self._kick()
        return stream

    async def _crash_end(self, stream_id: str, model: str, position: int) -> RemoteStream:
        """A stream holding only the crash end of ``stream_id`` (the client is past the log)."""
        try:
            top = await self.shared.call(
                self.shared.client.xrevrange(log_key(self.shared, stream_id), count=1),
                "event log open",
            )
        except SharedStateError as exc:
            raise unavailable() from exc
        stream = RemoteStream(self, stream_id, model, position, self.max_pending)
        stream.closed = True  # never followed
        if top:
            stream.push(record_of(*top[0]))
        stream.done = True
        return stream

    def _leave(self, stream: RemoteStream) -> None:
        follow = self._follows.get(stream.key)
        if follow is not None:
            follow.streams.discard(stream)
            if not follow.streams:
                del self._follows[stream.key]

    async def _kick(self) -> None:
        """Make the task read the new set of streams: start it, or end its block."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="log reader")
        elif self._blocked:
            pipe = self.shared.client.pipeline(transaction=False)
            pipe.xadd(self.wake_key, {b"w": b"1"}, maxlen=1, approximate=False)
            pipe.pexpire(self.wake_key, 60_000)
            with contextlib.suppress(SharedStateError):  # the task will fail the same way
                await self.shared.call(pipe.execute(), "event log wake")

    async def aclose(self) -> None:
        """Stop the task; every remote client is cut."""
        task, self._task = self._task, None
        await stop_task(task)
        self._fail_all(HTTPError(503, "shutting_down", "the server is shutting down"))

    async def _run(self) -> None:
        from redis.exceptions import RedisError

        if self._connection is None:
            self._connection = await self.shared.dedicated()
        connection = self._connection
        limit = self.block_ms / 1000 + self.shared.timeout
        loop = asyncio.get_running_loop()
        while self._follows:
            if self.upkeep is not None and loop.time() >= self._upkeep_at:
                await self._keep_up(self.upkeep, loop.time())
            streams: dict[Any, Any] = {self.wake_key: "$"}
            for key, follow in self._follows.items():
                streams[key] = f"{follow.position}-1" if follow.position >= 0 else "0-0"
            self._blocked = True
            try:
                async with asyncio.timeout(limit):
                    reply = await connection.xread(streams, count=READ_COUNT, block=self.block_ms)
            except (TimeoutError, RedisError, OSError) as exc:
                logger.error("remote resumes cut: Redis read failed: %s", type(exc).__name__)
                self._fail_all(unavailable())
                return
            finally:
                self._blocked = False
            self.reads += 1
            now = loop.time()
            for key, entries in reply or ():
                followed = self._follows.get(key)
                if followed is None:
                    continue  # the wake stream, or nobody follows it any more
                follow = followed
                follow.heard_at = now
                for redis_id, fields in entries:
                    record = record_of(redis_id, fields)
                    follow.position = record.seq
                    for stream in list(follow.streams):
                        stream.push(record)
                    if record.is_end:
                        del self._follows[key]
                        break

    async def _keep_up(self, upkeep: Upkeep, now: float) -> None:
        """One upkeep round for everything followed (a failure waits for the next round)."""
        self._upkeep_at = now + upkeep.interval
        followed = [
            Followed(
                follow.stream_id,
                follow.producer,
                max((stream.cursor for stream in follow.streams), default=follow.position),
                now - follow.heard_at > upkeep.silence,
            )
            for follow in self._follows.values()
        ]
        try:
            await upkeep.run(followed)
        except SharedStateError as exc:
            logger.warning("shared state: remote read upkeep: %s", exc)

    def _fail_all(self, error: HTTPError) -> None:
        follows, self._follows = self._follows, {}
        for follow in follows.values():
            for stream in follow.streams:
                stream.fail(error)
