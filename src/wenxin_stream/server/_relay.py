"""The generation registry: one task per answer, an event log per stream, subscribers that come
and go.

Theory of operation
===================

An answer is generated ONCE, by a :class:`Generation` task that the :class:`Relay` owns (not
the request that asked for it), and fanned out to any number of :class:`Subscription` s::

                 ┌──── Generation task (one per answer) ───────────────────────┐
    ERNIE ──────►│ SDK stream → TextDelta … → append to the log → wake readers │
                 │ end: settle limits, persist, append `end`, metrics          │
                 └──────────────────────────────┬──────────────────────────────┘
                                                │ log: [start, delta, delta, …, end]
                                                │       seq 0    1      2         n
                          ┌─────────────────────┼─────────────────────┐
                          ▼                     ▼                     ▼
                    Subscription          Subscription          Subscription
                    cursor=7              cursor=3 (lags)       resume: from
                                                                Last-Event-ID+1

The connection side (the outlet, the heartbeat, the watcher, and the race of each connection's
relay loop against them) is drawn and lives in ``_connection``.

**The log.** Entries are numbered by their index (``seq``) and never change once *claimed*
(handed to some subscriber's ``send``) or *sealed* (written to the event log in Redis, when
``redis_url`` is set: ``_eventlog``, which reads this log in batches). Text arriving while
the last entry is an unclaimed (and unsealed) delta is appended to it (up to
:data:`MAX_DELTA_CHARS`) unless a reader has been woken for it and is on its way (then it
takes both entries in one batch, one write: a burst of chunks from one upstream read keeps
its chunks), so a lagging or absent reader finds a few larger deltas instead of many small
ones — coalescing happens in the shared log, ids stay
gap-free for everybody, and resume from any id a client has seen is exact. SSE frames are
encoded once per entry and the same bytes go to every subscriber. The log is bounded by the
answer (``max_answer_chars`` stops a runaway one); a subscriber holds only a cursor. Entries
are of an :class:`EntryKind` (``start``, ``delta``, ``end``: the SSE event names), and frames
are made by the one SSE encoder, ``_sse.encode_event_bytes``.

**One reader, one wake-up.** A chunk wakes the generation's task (its upstream read). A
reader woken for it would be a second task step per chunk; so the only reader of an answer,
while it waits with a ``push`` (the SSE and OpenAI routes set one), is not woken: the burst's
entries are handed to its connection from one ``call_soon`` callback and written from there
(:class:`Subscription`, "Direct hand-over"). Everything else — the ``end``, several readers,
a write that had to wait — wakes readers as drawn above.

**Write-ahead in a fleet.** With the event log in Redis, a subscriber reads only the entries
the writer has already written (:attr:`Generation.durable`; each new event pokes the writer,
which wakes the readers after its batch): no client ever holds an event the log lacks, so an
instance that takes the answer over (``_takeover``) continues exactly after what every client
saw. It costs one Redis round trip (up to the writer's 10 ms spacing under load) before an
event reaches the producer's own clients. Text is not coalesced then (the writer, poked, is
the reader on its way): each upstream chunk stays one event, as a client following the answer
closely would have it — up to :data:`WRITE_AHEAD_COALESCE_AFTER` events, after which the text
of one batch is coalesced so the log stays under its ``eventlog_maxlen``. An answer taken
over by another process while this one still runs it (it froze, or lost Redis) is *lost*
(:meth:`Generation.fenced`): its upstream stops, its clients get an empty batch (cut, no
``end``: they resume from the log) and nothing is recorded here.

**Time to first token.** (Timings use ``time.perf_counter``: uvloop's ``loop.time()`` counts
whole milliseconds.) Headers (and ``start``) go out at once; the upstream request is sent
before the database writes of the request finish; a text delta wakes its readers immediately
and is never held. The server's own part is measured from the first text event's arrival to
its hand-over to the first subscriber's ``send``, plus request handling before the upstream
call.

**Disconnects.** When the last subscriber leaves before the end, the generation's grace timer
starts (``resume_grace``; :meth:`Generation.start_grace`); a subscriber that attaches in time
stops it. When it fires, the relay's policy applies: ``cancel`` stops the upstream (end reason
``client_disconnected``), ``drain`` lets it run to its end for accounting. In a fleet
(``remote_readers`` set: ``_eventlog``), ``cancel`` first asks whether a client of another
instance reads the answer from Redis: then the timer is armed again for as long as that
mark lives, and the policy applies once it has lapsed (the client left there too). Finished streams
stay resumable for the grace time too. The timer is the generation's own: the relay starts
and stops it through methods, and the end of the generation stops it.

**Shutdown.** :meth:`Relay.shutdown` refuses new generations, waits up to the grace for the
running ones, then stops the rest with ``server_shutdown`` (each still persists and sends its
``end``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import Enum
from json.encoder import encode_basestring
from time import perf_counter
from typing import Any

from .._accumulate import Accumulator
from .._asgi import json_bytes
from .._async_client import AsyncChatStream
from .._events import (
    EndReason,
    FinishEvent,
    ReasoningDelta,
    SearchInfoEvent,
    SearchResult,
    TextDelta,
    ToolCallDelta,
    Usage,
    UsageEvent,
)
from .._exceptions import APITimeoutError, ClientRateLimitTimeout, WenxinError
from .._sse import encode_event_bytes
from .._stream_core import AttemptUsage
from ._channel_config import DEFAULT_CHANNEL
from ._errors import FINISHED_REASONS, cut_error, forget_traceback, upstream_failure
from ._eventlog_keys import Record
from ._eventlog_writer import LogWriter
from ._failover import FailoverStream, UpstreamRequest
from ._http import HTTPError
from ._metrics import Metrics
from ._redis import SharedStateError

__all__ = [
    "FINISHED_REASONS",
    "MAX_DELTA_CHARS",
    "Entry",
    "EntryKind",
    "Generation",
    "Relay",
    "Subscription",
    "usage_dict",
]

logger = logging.getLogger("wenxin_stream.server")


class EntryKind(Enum):
    """What an entry of the log is; the value is its SSE event name (and WebSocket frame
    type)."""

    START = b"start"
    DELTA = b"delta"
    REASONING = b"reasoning"
    SEARCH_RESULTS = b"search_results"
    TOOL_CALL = b"tool_call"
    END = b"end"


# Per-entry paths compare kinds with `is` against these module globals: on CPython 3.11 each
# `EntryKind.DELTA` is a metaclass attribute lookup, several times slower than a global.
_START, _DELTA, _END = EntryKind.START, EntryKind.DELTA, EntryKind.END
_REASONING, _SEARCH, _TOOL_CALL = EntryKind.REASONING, EntryKind.SEARCH_RESULTS, EntryKind.TOOL_CALL

WRITE_AHEAD_COALESCE_AFTER = 2000
"""Written ahead (a fleet), an answer's text is coalesced only past this many events, so a very
long answer of tiny chunks stays far below the event log's ``eventlog_maxlen`` (10,000)."""

MAX_DELTA_CHARS = 16384
"""Coalescing stops at this many characters: a new delta starts (frames stay small enough for
any client's line limit)."""


_FAILED_REASONS = frozenset({"upstream_error", "incomplete", "timed_out"})
"""End reasons of an upstream request that failed (the others that do not finish: it was
stopped)."""

RECHECK_MARGIN = 0.05
"""Seconds after the "read elsewhere" mark would lapse that the producer looks again."""


class Entry:
    """One event of a stream's log (see the module docstring)."""

    __slots__ = ("_json", "_sse", "data", "end_offset", "kind", "parts", "seq", "size")

    def __init__(
        self,
        seq: int,
        kind: EntryKind,
        *,
        parts: list[str] | None = None,
        data: dict[str, Any] | None = None,
        end_offset: int = 0,
    ) -> None:
        self.seq = seq
        self.kind = kind
        self.parts = parts if parts is not None else []
        self.data = data
        self.end_offset = end_offset
        self.size = 0  # characters of a delta
        self._json: bytes | None = None
        self._sse: bytes | None = None

    @property
    def text(self) -> str:
        """The delta's text."""
        parts = self.parts
        if len(parts) != 1:
            self.parts = parts = ["".join(parts)]
        return parts[0]

    def json(self) -> bytes:
        """The event's data as compact JSON (cached: call only once claimed)."""
        if self._json is None:
            kind = self.kind
            if kind is _DELTA or kind is _REASONING:  # a JSON string: no encoder object
                self._json = b'{"text":' + encode_basestring(self.text).encode() + b"}"
            else:
                self._json = json_bytes(self.data)
        return self._json

    @classmethod
    def logged(cls, record: Record, end_offset: int) -> Entry:
        """The entry of an event read back from the event log (a taken-over answer)."""
        kind = EntryKind(record.kind)
        data = json.loads(record.data)
        if kind is _DELTA or kind is _REASONING:
            entry = cls(record.seq, kind, parts=[data["text"]], end_offset=end_offset)
            entry.size = len(data["text"])
        else:
            entry = cls(record.seq, kind, data=data, end_offset=end_offset)
        entry._json = record.data
        return entry

    def sse(self, id_prefix: bytes) -> bytes:
        """The event as an SSE frame, encoded once; its id is ``id_prefix`` + its seq."""
        if self._sse is None:
            # `_value_` is the member's value without the `value` descriptor's cost
            self._sse = encode_event_bytes(
                self.json(), self.kind._value_, b"%b%d" % (id_prefix, self.seq)
            )
        return self._sse


class _Stop(Exception):
    """The answer passed ``max_answer_chars``."""


@dataclass(frozen=True, slots=True)
class _Spent:
    """What an answer's records need of its upstream stream once that is let go."""

    requests: list[UpstreamRequest] | None
    ledger: list[tuple[str, AttemptUsage]]
    channels: list[str]

    @staticmethod
    def ledger_of(upstream: AsyncChatStream | FailoverStream) -> list[tuple[str, AttemptUsage]]:
        """Each upstream request's cost and channel (``default`` without channels)."""
        if isinstance(upstream, FailoverStream):
            return upstream.usage_ledger
        return [(DEFAULT_CHANNEL, attempt) for attempt in upstream.attempt_usages]

    @classmethod
    def of(cls, upstream: AsyncChatStream | FailoverStream) -> _Spent:
        if isinstance(upstream, FailoverStream):
            return cls(list(upstream.requests), upstream.usage_ledger, upstream.channels)
        return cls(None, cls.ledger_of(upstream), [])


class Generation:
    """One answer being generated; fans out through its log. Created by :meth:`Relay.start`."""

    # Slotted: one per open stream and per answer in its resume window, ~40 attributes (an
    # instance dict cost ~1.6 KB of them; bench/memory.py).
    __slots__ = (
        "_begun",
        "_calls",
        "_cancel_reason",
        "_direct_due",
        "_early",
        "_ended",
        "_final",
        "_finalizing",
        "_grace_timer",
        "_parked",
        "_upstream",
        "_waiters",
        "_woken",
        "claimed",
        "delivered_chars",
        "done",
        "durable",
        "end_data",
        "end_reason",
        "ended_at",
        "entries",
        "failure",
        "finish_reason",
        "first_sent_at",
        "first_text_at",
        "generated_chars",
        "grace",
        "last_text_at",
        "loop",
        "lost",
        "model",
        "on_end",
        "owner",
        "reasoning_chars",
        "received_at",
        "relay",
        "request",
        "sealed",
        "search_results",
        "sse_id",
        "start_data",
        "stream_id",
        "subscribers",
        "task",
        "token",
        "tool_calls",
        "upstream_at",
        "usage",
    )

    def __init__(
        self,
        relay: Relay,
        upstream: AsyncChatStream | FailoverStream,
        *,
        owner: str,
        model: str,
        grace: float,
        received_at: float,
        on_end: Callable[[Generation], Awaitable[None]],
        stream_id: str | None = None,
        write_ahead: bool = False,
    ) -> None:
        self.relay = relay
        self.loop = asyncio.get_running_loop()
        self.stream_id = stream_id or "s_" + secrets.token_hex(12)
        self.sse_id = self.stream_id.encode() + b":"
        """What the SSE id of each event starts with (``<stream_id>:``, then the seq)."""
        self.owner = owner
        self.model = model
        self.grace = grace
        self.on_end = on_end
        self.entries: list[Entry] = []
        self.claimed = -1
        self.sealed = -1
        """Entries up to here never change: claimed, or written to the event log in Redis."""
        self.durable: int | None = 0 if write_ahead else None
        """With the event log in Redis (write-ahead): how many entries are in Redis — all a
        client may read (``None``: no event log, every entry may be read at once)."""
        self.token = 1
        """The fencing token this process holds the answer with (``_answer_leases``)."""
        self.request: bytes | None = None
        """What the answer asked (JSON), for a process that takes it over (``_takeover``)."""
        self.lost = False
        """Another process took the answer over: this one stopped, records nothing, and its
        clients were cut (they resume from the log)."""
        self.subscribers = 0
        self.generated_chars = 0
        self.delivered_chars = 0
        self.received_at = received_at
        self.upstream_at = perf_counter()
        self.first_text_at: float | None = None
        self.first_sent_at: float | None = None
        self.last_text_at = 0.0
        self.ended_at: float | None = None
        self.end_reason: str | None = None
        self.finish_reason: str | None = None
        self.usage: Usage | None = None
        self.failure: HTTPError | None = None
        """Why the answer did not finish, as our API answers it (``_errors``); ``None`` when
        it finished, was cancelled by its client or lost its client."""
        self.end_data: dict[str, Any] = {}
        self.start_data: dict[str, Any] = {}
        self.done = self.loop.create_future()
        self._upstream: AsyncChatStream | FailoverStream | None = upstream
        """The SDK stream (and through it the upstream connection's parser and buffers):
        dropped at the end, as the answer's resume window needs only the log."""
        self._ended: _Spent | None = None
        """What the answer's records need of the upstream once it is dropped: its requests
        (with channels), what each cost, the channels that served it."""
        self.reasoning_chars = 0
        self.search_results: list[dict[str, Any]] | None = None
        """The web-search sources of the answer (sent once), or ``None``."""
        self.tool_calls: list[dict[str, Any]] = []
        """The answer's complete tool calls (``id``, ``name``, ``arguments``), in order."""
        self._calls: Accumulator | None = None  # tool-call fragments not yet complete
        self._early: list[tuple[EntryKind, Any]] = []  # what arrived before `begin`
        self._begun = self.loop.create_future()
        self._waiters: list[asyncio.Future[None]] = []
        self._woken = 0  # readers woken for new entries that have not yet taken them
        self._parked: Subscription | None = None  # the one reader waiting with a `push`
        self._direct_due = False  # a hand-over to it is scheduled (`_direct`)
        self._cancel_reason: str | None = None
        self._finalizing = False
        self._grace_timer: asyncio.TimerHandle | None = None
        self._final: asyncio.Task[None] | None = None
        self.task = self.loop.create_task(self._run(), name=f"generation {self.stream_id}")
        self.task.add_done_callback(self._task_done)

    # -- lifecycle, called by request handlers -------------------------------------------------

    def begin(self, start_data: dict[str, Any], end_data: dict[str, Any] | None = None) -> None:
        """Append the ``start`` event (seq 0) with ``start_data``; text that arrived early
        follows as deltas. ``end_data`` is merged into the ``end`` event."""
        self.start_data = start_data
        self.end_data = end_data or {}
        self.entries.append(Entry(0, _START, data=start_data))
        early, self._early = self._early, []
        offset = self.generated_chars - sum(len(value) for kind, value in early if kind is _DELTA)
        for kind, value in early:
            if kind is _DELTA:
                offset += len(value)
                self._place(value, offset)
            elif kind is _REASONING:
                self._place(value, offset, _REASONING)
            else:
                self._add(kind, value)
        if not self._begun.done():
            self._begun.set_result(True)
        self._notify()

    def adopt(
        self, records: list[Record], start_data: dict[str, Any], end_data: dict[str, Any]
    ) -> None:
        """Begin as the continuation of an answer taken over from another process: the
        events ``records`` (read back from its log) are this log's first entries."""
        self.start_data, self.end_data = start_data, end_data
        for record in records:
            entry = Entry.logged(record, self.generated_chars)
            if entry.kind is _DELTA:
                self.generated_chars += entry.size
                entry.end_offset = self.generated_chars
            elif entry.kind is _REASONING:
                self.reasoning_chars += entry.size
            elif entry.kind is _TOOL_CALL and entry.data is not None:
                self.tool_calls.append(entry.data)
            elif entry.kind is _SEARCH and entry.data is not None:
                self.search_results = entry.data.get("results")
            self.entries.append(entry)
        self.sealed = self.claimed = len(self.entries) - 1
        self.delivered_chars = self.generated_chars
        self.first_sent_at = perf_counter()  # its time to first token was the first producer's
        if not self._begun.done():
            self._begun.set_result(True)

    def fenced(self) -> None:
        """Another process holds the answer now (``_eventlog_writer``): stop the upstream,
        cut this process's clients (no ``end``: they resume from the log, where the taker
        continues it), record nothing."""
        if self.lost:
            return
        self.lost = True
        self.relay.streams.pop(self.stream_id, None)
        self._wake()
        self.cancel("taken_over")

    def logged(self, count: int) -> None:
        """Entries ``[0, count)`` are in Redis: clients may read them (write-ahead)."""
        if self.durable is not None and count > self.durable:
            self.durable = count
            self._wake(at_once=True)  # they are all in the log: nothing more to wait for

    @property
    def visible(self) -> int:
        """How many entries a client may read now."""
        durable = self.durable
        return len(self.entries) if durable is None else durable

    def abort(self) -> None:
        """The request failed before :meth:`begin`: stop quietly, persist nothing."""
        if not self._begun.done():
            self._begun.set_result(False)
        self.cancel("cancelled")

    def cancel(self, reason: str) -> None:
        """Stop the upstream now; the answer ends with ``reason`` (no effect once ending)."""
        if not self._finalizing and not self.task.done():
            self._cancel_reason = reason
            self.task.cancel()

    @property
    def text(self) -> str:
        """All text generated so far."""
        return self._joined(_DELTA)

    def extras(self) -> dict[str, Any] | None:
        """What the answer has besides its text, as stored (``None``: nothing): its
        ``reasoning``, ``search_results`` and ``tool_calls``, each ``None`` when absent, and
        with channels the ``channels`` that served it, in order."""
        channels = self.channels
        if not (self.reasoning_chars or self.search_results or self.tool_calls or channels):
            return None
        extras: dict[str, Any] = {
            "reasoning": self.reasoning or None,
            "search_results": self.search_results,
            "tool_calls": self.tool_calls or None,
        }
        if channels:
            extras["channels"] = channels
        return extras

    @property
    def upstream_requests(self) -> list[UpstreamRequest]:
        """Every upstream request of the answer (channel, upstream model, outcome, usage,
        characters, whether it continued the answer), in order — for spend per channel,
        each request counted once. Without configured channels: one request on the implicit
        channel ``default`` (the SDK's retries before any text generated nothing), its
        outcome set once the answer has ended."""
        upstream = self._upstream
        if isinstance(upstream, FailoverStream):
            return upstream.requests
        if self._ended is not None and self._ended.requests is not None:
            return self._ended.requests
        reason, failure = self.end_reason, self.failure
        outcome = None
        if reason in FINISHED_REASONS:
            outcome = "ok"
        elif reason in _FAILED_REASONS:
            status = 0 if failure is None else failure.status
            outcome = (
                "busy" if status == 429 else "client_error" if 400 <= status < 500 else "failed"
            )
        elif reason is not None:
            outcome = "cancelled"
        return [
            UpstreamRequest(
                DEFAULT_CHANNEL,
                self.model,
                outcome=outcome,
                usage=self.usage,
                chars=self.generated_chars,
            )
        ]

    @property
    def channels(self) -> list[str]:
        """The channels that served (part of) the answer, in order (empty without
        configured channels)."""
        upstream = self._upstream
        if isinstance(upstream, FailoverStream):
            return upstream.channels
        return self._ended.channels if self._ended is not None else []

    @property
    def reasoning(self) -> str:
        """All thinking (reasoning) text generated so far."""
        return self._joined(_REASONING)

    def _joined(self, kind: EntryKind) -> str:
        early = [value for k, value in self._early if k is kind]
        return "".join(early) + "".join([e.text for e in self.entries if e.kind is kind])

    @property
    def ending(self) -> bool:
        """Whether the answer is ending or has ended (its end is being recorded)."""
        return self._finalizing

    # -- the grace timer, started and stopped by the relay --------------------------------------

    def start_grace(
        self, expired: Callable[[Generation], None], delay: float | None = None
    ) -> None:
        """No subscriber is left: call ``expired(self)`` once ``delay`` (default ``grace``)
        seconds have passed (at once without a grace time), unless :meth:`stop_grace` comes
        first or the answer ends."""
        self.stop_grace()
        if delay is None and self.grace <= 0:
            expired(self)
        else:
            wait = self.grace if delay is None else delay
            self._grace_timer = self.loop.call_later(wait, self._grace_over, expired)

    @property
    def grace_pending(self) -> bool:
        """Whether the grace timer is running."""
        return self._grace_timer is not None

    def stop_grace(self) -> None:
        """A subscriber came back (or the answer ended): the grace timer stops."""
        if self._grace_timer is not None:
            self._grace_timer.cancel()
            self._grace_timer = None

    def _grace_over(self, expired: Callable[[Generation], None]) -> None:
        self._grace_timer = None
        expired(self)

    # -- the log ---------------------------------------------------------------------------

    def _notify(self) -> None:
        if self.durable is None:
            self._wake()
        else:  # write-ahead: the writer sends it, then wakes the readers (`logged`)
            log = self.relay.log
            if log is not None:
                log.poke(self.stream_id)

    def _wake(self, *, at_once: bool = False) -> None:
        """New entries may be read: the readers are woken, or the one parked reader's
        connection takes them (:meth:`_direct`) — at the loop's next turn, once the burst
        that called is in the log, or ``at_once`` (the writer's word that entries are in
        Redis: in a fleet that saves every chunk one turn of the loop)."""
        waiters = self._waiters
        if not waiters:
            return
        if (
            self._parked is not None
            and len(waiters) == 1
            and self.subscribers == 1
            and not self.lost
        ):  # the one reader's connection takes the entries from here: no task wakes
            if not self._direct_due:
                self._direct_due = True
                self._woken += 1  # on its way, as a woken reader: a burst keeps its chunks
                if at_once:
                    self._direct()
                else:
                    self.loop.call_soon(self._direct)
            return
        self._release()

    def _release(self) -> None:
        waiters = self._waiters
        if waiters:
            self._waiters = []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)
                    self._woken += 1

    def _direct(self) -> None:
        """The direct hand-over (see :class:`Subscription`), once the burst that called for
        it is in the log: the parked reader's ``push`` writes the new entries; if it cannot
        (an ``end``, a write in flight…) or the reader left meanwhile, it is woken."""
        self._direct_due = False
        self._woken -= 1
        sub = self._parked
        if sub is not None and len(self._waiters) == 1 and self.subscribers == 1:
            try:
                if not self._waiters[0].done() and sub.take():
                    return
            except Exception:  # noqa: S110 - the reader meets it again on its own path
                pass
        self._release()

    async def wait_beyond(self, cursor: int) -> None:
        """Return once the log holds an entry at ``cursor`` (or later) that a client may
        read, or the answer was lost to another process."""
        while cursor >= self.visible and not self.lost:
            await self.wait(None)

    async def wait(self, sub: Subscription | None) -> None:
        """Wait once: until new entries are visible or the answer is lost. ``sub``, when it
        has a ``push`` and is the only reader, is parked meanwhile: new entries go straight
        to its connection and this wait goes on."""
        waiter = self.loop.create_future()
        self._waiters.append(waiter)
        if sub is not None and sub.push is not None:
            self._parked = sub
        try:
            await waiter
        finally:
            if self._parked is sub:
                self._parked = None
            if waiter.done() and not waiter.cancelled():
                self._woken -= 1  # woken by _notify: no longer on its way

    def claim(self, last: int) -> None:
        """Entries up to ``last`` are being handed to a client: they are final from now on."""
        if last <= self.claimed:
            return
        self.claimed = last
        if last > self.sealed:
            self.sealed = last
        entry = self.entries[last]
        self.delivered_chars = max(self.delivered_chars, entry.end_offset)
        if self.first_sent_at is None and self.first_text_at is not None:
            self.first_sent_at = now = perf_counter()
            metrics = self.relay.metrics
            metrics.observe_ttft(
                "server", (self.upstream_at - self.received_at) + (now - self.first_text_at)
            )
            metrics.observe_ttft("total", now - self.received_at)

    def _append_text(self, text: str) -> None:
        now = perf_counter()
        if self.first_text_at is None:
            self.first_text_at = now
            self.relay.metrics.observe_ttft("upstream", now - self.upstream_at)
        else:
            self.relay.metrics.observe_chunk_gap(now - self.last_text_at)
        self.last_text_at = now
        self.generated_chars += len(text)
        if not self.entries:
            self._early.append((_DELTA, text))
        else:
            self._place(text, self.generated_chars)
            self._notify()
        if self.generated_chars + self.reasoning_chars > self.relay.max_answer_chars:
            raise _Stop

    def _append_reasoning(self, text: str) -> None:
        """Thinking text: its own entries (``reasoning``), coalesced like deltas; it is not
        answer text (``generated_chars`` counts only the answer)."""
        self.reasoning_chars += len(text)
        if not self.entries:
            self._early.append((_REASONING, text))
        else:
            self._place(text, self.generated_chars, _REASONING)
            self._notify()
        if self.generated_chars + self.reasoning_chars > self.relay.max_answer_chars:
            raise _Stop

    def _append_search(self, results: tuple[SearchResult, ...]) -> None:
        """The web-search sources: one ``search_results`` entry, the first time they come."""
        if self.search_results is not None or not results:
            return
        self.search_results = [{"index": r.index, "url": r.url, "title": r.title} for r in results]
        data = {"results": self.search_results}
        if not self.entries:
            self._early.append((_SEARCH, data))
        else:
            self._add(_SEARCH, data)
            self._notify()

    def _append_tool_fragment(self, event: ToolCallDelta) -> None:
        """A tool-call fragment: merged by the SDK's own fold until the calls are complete."""
        if self._calls is None:
            self._calls = Accumulator()
        self._calls.add(event)

    def _complete_tool_calls(self) -> None:
        """The answer finished: each assembled tool call becomes one ``tool_call`` entry."""
        calls, self._calls = self._calls, None
        if calls is None:
            return
        for call in calls.result().tool_calls:
            data = {"id": call.id, "name": call.name, "arguments": call.arguments}
            self.tool_calls.append(data)
            if not self.entries:
                self._early.append((_TOOL_CALL, data))
            else:
                self._add(_TOOL_CALL, data)
        self._notify()

    def _add(self, kind: EntryKind, data: dict[str, Any]) -> None:
        """Put an event that is not text into the log. Search results go before the last
        delta while nobody has it yet, so they come before (or with) the text citing them."""
        entries = self.entries
        last = entries[-1]
        entry = Entry(len(entries), kind, data=data, end_offset=self.generated_chars)
        if kind is _SEARCH and last.kind is _DELTA and last.seq > self.sealed:
            entry.seq, entry.end_offset = last.seq, last.end_offset - last.size
            last.seq += 1
            entries.insert(entry.seq, entry)
        else:
            entries.append(entry)

    def _place(self, text: str, end_offset: int, kind: EntryKind = _DELTA) -> None:
        """Put text into the log: onto the last entry of its kind while it is unclaimed and
        not full."""
        last = self.entries[-1]
        if (
            last.kind is kind
            and last.seq > self.sealed
            and not self._woken
            # write-ahead: the writer, poked, is the reader on its way — until the answer is
            # long enough that its log in Redis must stay under `eventlog_maxlen`
            and (self.durable is None or len(self.entries) > WRITE_AHEAD_COALESCE_AFTER)
            and last.size < MAX_DELTA_CHARS
        ):
            last.parts.append(text)
            last.size += len(text)
            last.end_offset = end_offset
        else:
            entry = Entry(len(self.entries), kind, parts=[text], end_offset=end_offset)
            entry.size = len(text)
            self.entries.append(entry)

    def shrink_log(self) -> None:
        """The answer is ending and nobody reads it: from now on its log serves only resumes
        (and the event log's last write), so each entry keeps its text as one string and
        drops its encoded JSON and SSE frame, made again if a resume asks. Called at the end
        when no subscriber is attached, else when the last one leaves (``Relay.detach``)."""
        for entry in self.entries:
            entry._json = entry._sse = None
            if len(entry.parts) > 1:
                entry.parts = ["".join(entry.parts)]

    def log_records(self, start: int) -> list[Record]:
        """The entries from seq ``start`` on for the event log in Redis, sealed (the last
        delta takes no more text: later text makes a new entry)."""
        entries = self.entries
        if not entries:
            return []
        self.sealed = entries[-1].seq
        return [Record(e.seq, e.kind._value_, e.json()) for e in entries[start:]]

    # -- the task --------------------------------------------------------------------------

    async def _run(self) -> None:
        reason: str | None = None
        assert self._upstream is not None
        try:
            async with self._upstream as stream:
                async for event in stream:
                    match event:  # the events the answer is made of; the rest pass by
                        case TextDelta(text=text):
                            if text:
                                self._append_text(text)
                        case ReasoningDelta(text=text):
                            if text:
                                self._append_reasoning(text)
                        case FinishEvent(reason=reason):
                            self.finish_reason = reason.value
                            self._complete_tool_calls()
                        case UsageEvent(usage=usage):
                            self.usage = usage
                        case ToolCallDelta():
                            self._append_tool_fragment(event)
                        case SearchInfoEvent(results=results):
                            self._append_search(results)
            reason = (stream.end_reason or EndReason.COMPLETED).value
            if reason in FINISHED_REASONS:
                self._complete_tool_calls()  # no finish_reason came: the end completes them
        except _Stop:
            reason, self.finish_reason = "length", "length"
        except asyncio.CancelledError:
            if self._cancel_reason is None:
                raise  # not ours (the loop is closing)
            reason = self._cancel_reason
        except WenxinError as exc:
            reason = self._upstream_failed(exc)
            # The SDK keeps a stream's error (its parser's and its core's: a repeated read
            # raises it again), so the error's traceback — this frame and with it the whole
            # generation — would live in a reference cycle until a full collection. It is
            # handled here for good: drop the frames.
            forget_traceback(exc)
        except Exception as exc:  # a bug: never leave a stream without its end
            logger.error(
                "internal error in %s: %s: %s",
                self.stream_id,
                type(exc).__name__,
                exc,
                exc_info=exc if self.relay.debug else None,
            )
            self.relay.metrics.error("internal")
            reason = "incomplete"
            self.failure = HTTPError(500, "internal_error", "internal error")
            forget_traceback(exc)
        await self._finalize(reason)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if not self._finalizing:  # cancelled before it ever ran: end it all the same
            reason = self._cancel_reason or "server_shutdown"
            self._final = self.loop.create_task(self._finalize(reason))

    def _upstream_failed(self, exc: WenxinError) -> str:
        reason = (exc.end_reason or EndReason.UPSTREAM_ERROR).value
        self.relay.metrics.error("timeout" if isinstance(exc, APITimeoutError) else "upstream")
        if isinstance(exc, ClientRateLimitTimeout):  # nothing timed out: ERNIE is rate limited
            reason = EndReason.UPSTREAM_ERROR.value
        self.failure = upstream_failure(exc, pause=self.relay.upstream_pause())
        return reason

    @property
    def error(self) -> dict[str, Any] | None:
        """The failure as it goes in-band (:meth:`HTTPError.event`), or ``None``."""
        return None if self.failure is None else self.failure.event()

    @property
    def error_status(self) -> int:
        """The HTTP status of the failure (``0``: none)."""
        return 0 if self.failure is None else self.failure.status

    async def _finalize(self, reason: str) -> None:
        self._finalizing = True
        upstream, self._upstream = self._upstream, None  # closed (or never opened)
        if upstream is not None:  # what the records need of it; the rest is let go
            try:
                self._ended = _Spent.of(upstream)
            except Exception as exc:  # a bug: the answer must end all the same
                logger.error("could not keep the spend of %s: %r", self.stream_id, exc)
                self.relay.metrics.error("internal")
        self.stop_grace()
        begun = await self._begun
        if self._woken:  # let readers woken for entries (or a hand-over due) claim them
            for _ in range(2):
                await asyncio.sleep(0)
        now = perf_counter()
        self.ended_at = now
        self.end_reason = reason
        if self.failure is None and reason in ("server_shutdown", "interrupted"):
            self.failure = cut_error(reason)  # a cut never looks finished, on any route
        relay = self.relay
        if begun:
            try:
                await self.on_end(self)
            except Exception as exc:
                logger.error(
                    "could not record the end of %s: %s: %s",
                    self.stream_id,
                    type(exc).__name__,
                    exc,
                )
                relay.metrics.error("internal")
        if begun and not self.lost:
            data: dict[str, Any] = {
                "end_reason": reason,
                "finish_reason": self.finish_reason,
                "usage": usage_dict(self.usage),
                "ttft_ms": self.ttft_ms,
                "total_ms": self.total_ms,
                "reasoning_chars": self.reasoning_chars,
                **self.end_data,
            }
            if self.failure is not None:
                data["error"] = self.failure.event()
            self.entries.append(
                Entry(len(self.entries), _END, data=data, end_offset=self.generated_chars)
            )
            self._notify()
            if not self.subscribers:
                self.shrink_log()
        relay.metrics.stream_ended(reason)
        relay.metrics.observe_duration("upstream", now - self.upstream_at)
        relay.metrics.observe_duration("total", now - self.received_at)
        relay.metrics.chars(self.generated_chars, self.delivered_chars)
        if self.usage is not None:
            relay.metrics.tokens(self.usage.prompt_tokens, self.usage.completion_tokens)
        relay.finished(self)
        if not self.done.done():
            self.done.set_result(None)

    @property
    def usage_ledger(self) -> list[tuple[str, AttemptUsage]]:
        """What each upstream request of the answer cost and on which channel (the SDK's
        ledger: one entry per request that generated something; complete once the answer has
        ended). Without configured channels every request is the implicit ``default``'s."""
        upstream = self._upstream
        if upstream is None:
            return self._ended.ledger if self._ended is not None else []
        return _Spent.ledger_of(upstream)

    @property
    def total_ms(self) -> float | None:
        """From the request's arrival to the end (ms); ``None`` while running."""
        if self.ended_at is None:
            return None
        return round((self.ended_at - self.received_at) * 1000, 1)

    @property
    def ttft_ms(self) -> float | None:
        """Time to first token as the client saw it (ms), else as the upstream gave it."""
        first = self.first_sent_at or self.first_text_at
        return None if first is None else round((first - self.received_at) * 1000, 1)


def usage_dict(usage: Usage | None) -> dict[str, int] | None:
    """Usage as the API shows it."""
    if usage is None:
        return None
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }


class Subscription:
    """A reader of one generation's log, from ``cursor`` on. Close it when leaving.

    **Direct hand-over.** A connection that can write a batch without its own task sets
    :attr:`push`. While it is the answer's only reader and waits in :meth:`next_batch`, it
    is *parked*: new entries are not a reason to wake its task; once the generation's
    current burst is in the log (one ``call_soon`` callback, not a task step), ``push`` gets
    them, claimed, and starts their write at once (``_connection.Outlet.write_now``), and the
    reader waits on. So a chunk wakes one task (the generation's, for the upstream read)
    instead of two. ``push`` returns ``False`` for what it does not write that way (the
    ``end``, a first write, a write still in flight): then the reader is woken and takes the
    batch as usual."""

    __slots__ = ("closed", "cursor", "gen", "push", "sent")

    def __init__(self, gen: Generation, cursor: int) -> None:
        self.gen = gen
        self.cursor = cursor
        self.sent = cursor  # where the batch handed out last began
        self.closed = False
        self.push: Callable[[list[Entry]], bool] | None = None
        """Writes a batch from the generation's side, or returns ``False`` (see above)."""

    async def next_batch(self) -> list[Entry]:
        """Every entry after the cursor that a client may read (waiting for at least one);
        they are claimed. Empty: the answer was taken over by another process, and this
        client is cut (no ``end``; it may resume from the log).

        Asking for the next batch means the last one was sent: when this is the answer's
        only reader, the last batch's encoded frames are dropped (a later reader, a resume,
        encodes them again), so an open stream holds its text, not three copies of it."""
        gen = self.gen
        if gen.subscribers == 1:
            entries = gen.entries
            for index in range(self.sent, self.cursor):
                entry = entries[index]
                entry._json = entry._sse = None
        self.sent = self.cursor
        visible = gen.visible
        while self.cursor >= visible:  # (`push` may move the cursor while this waits)
            if gen.lost:  # lost to another process: this client is cut
                return []
            await gen.wait(self)
            visible = gen.visible
        batch = gen.entries[self.cursor : visible]
        self.cursor += len(batch)
        gen.claim(batch[-1].seq)
        return batch

    def take(self) -> bool:
        """The direct hand-over (see the class): ``push`` the new entries; whether it did
        (the reader stays parked). Called by the generation only."""
        gen = self.gen
        if gen.lost or self.push is None:
            return False
        visible = gen.visible
        if self.cursor >= visible:
            return True  # nothing new for this reader
        batch = gen.entries[self.cursor : visible]
        if not self.push(batch):
            return False
        self.cursor = self.sent = visible
        gen.claim(batch[-1].seq)
        for entry in batch:  # written, by the only reader: as `next_batch` drops them
            entry._json = entry._sse = None
        return True


class Relay:
    """The registry of generations: start, find, attach/detach, grace timers, shutdown."""

    def __init__(
        self,
        metrics: Metrics,
        *,
        on_disconnect: str,
        resume_grace: float,
        max_answer_chars: int,
        debug: bool = False,
    ) -> None:
        self.metrics = metrics
        self.on_disconnect = on_disconnect
        self.resume_grace = resume_grace
        self.max_answer_chars = max_answer_chars
        self.debug = debug
        self.streams: dict[str, Generation] = {}
        self.running: set[Generation] = set()
        self.accepting = True
        self.log: LogWriter | None = None
        """With ``redis_url``: the event log every resumable answer is also written to."""
        self.remote_readers: Callable[[str], Awaitable[float]] | None = None
        """With ``redis_url``: how many more seconds an answer is marked as read by a client
        of another instance (``0``: not), asked before ``cancel`` applies."""
        self._checks: set[asyncio.Task[None]] = set()
        self.upstream_pause: Callable[[], float] = lambda: 0.0
        """How long the upstream client now holds every request (seconds; set once the
        upstream exists): the ``Retry-After`` of a rate limit ERNIE gave none for."""

    def start(
        self,
        upstream: AsyncChatStream | FailoverStream,
        *,
        owner: str,
        model: str,
        received_at: float,
        on_end: Callable[[Generation], Awaitable[None]],
        resumable: bool = True,
    ) -> Generation:
        """Start generating (the upstream request goes out now); call ``begin`` next."""
        grace = self.resume_grace if resumable else 0.0
        gen = Generation(
            self,
            upstream,
            owner=owner,
            model=model,
            grace=grace,
            received_at=received_at,
            on_end=on_end,
            write_ahead=resumable and self.log is not None,
        )
        if resumable:
            self.streams[gen.stream_id] = gen
            if self.log is not None:
                self.log.track(gen)
        self.running.add(gen)
        self.metrics.stream_started()
        return gen

    def adopt(
        self,
        upstream: Any,
        *,
        stream_id: str,
        owner: str,
        model: str,
        token: int,
        records: list[Record],
        on_end: Callable[[Generation], Awaitable[None]],
    ) -> Generation:
        """Continue an answer taken over from another process (``_takeover``): the
        generation keeps its stream id, starts with the events ``records`` already logged
        (the ``start`` event first), and writes on under ``token``. ``upstream`` is the
        continuation's stream (an ``AsyncChatStream`` or what behaves as one)."""
        if self.log is None:
            raise RuntimeError("taking an answer over needs the event log")
        gen = Generation(
            self,
            upstream,
            owner=owner,
            model=model,
            grace=self.resume_grace,
            received_at=perf_counter(),
            on_end=on_end,
            stream_id=stream_id,
            write_ahead=True,
        )
        gen.token = token
        start = json.loads(records[0].data) if records else {}
        message_id = start.get("message_id")
        gen.adopt(records, start, {"message_id": message_id} if message_id else {})
        self.streams[stream_id] = gen
        self.log.adopt(gen, len(records))
        self.running.add(gen)
        self.metrics.stream_started()
        return gen

    async def hand_over(self) -> list[str]:
        """In a fleet: let another instance take over every running answer that may be
        (its lease held here) instead of cutting it — its logged events written first, then
        this process lets it go (its clients are cut without an ``end`` and resume
        elsewhere; nothing is recorded here) and gives its lease up at once (claimable at the
        next claim round). The stream ids handed over."""
        log = self.log
        if log is None:
            return []
        handed = [
            gen.stream_id
            for gen in self.running
            if not gen.ending and log.leases.token(gen.stream_id) == gen.token
        ]
        if not handed:
            return []
        with contextlib.suppress(SharedStateError):
            await log.flush()  # what it has generated so far is continued, not generated again
        log.lose(handed)
        try:
            given = await log.leases.hand_over(handed)
        except SharedStateError as exc:  # they expire within the lease's TTL anyway
            logger.warning("shared state: answers not handed over at once: %s", exc)
        else:
            logger.warning("%d running answers handed over to the fleet", given)
        return handed

    def find(self, stream_id: str, owner: str) -> Generation | None:
        """The stream ``stream_id`` if it exists, is still resumable and belongs to ``owner``."""
        gen = self.streams.get(stream_id)
        return gen if gen is not None and gen.owner == owner else None

    def cancel(self, stream_id: str) -> None:
        """Cancel the running answer ``stream_id`` (a cancel from another instance)."""
        gen = self.streams.get(stream_id)
        if gen is not None:
            gen.cancel("cancelled")

    def attach(self, gen: Generation, after: int = -1) -> Subscription:
        """A new subscription that reads the events after seq ``after``."""
        gen.subscribers += 1
        gen.stop_grace()
        return Subscription(gen, after + 1)

    def detach(self, sub: Subscription, *, gone: bool) -> None:
        """The subscriber left: ``gone`` if the client vanished or stalled (the disconnect
        policy may apply), not if it finished or the server is stopping."""
        if sub.closed:
            return
        sub.closed = True
        gen = sub.gen
        gen.subscribers -= 1
        if gen.subscribers == 0 and gen.end_reason is not None:
            gen.shrink_log()  # its last reader has left an ended answer: resumes only
        if gone and gen.subscribers == 0 and gen.end_reason is None and not gen.ending:
            gen.start_grace(self._grace_expired)

    def _grace_expired(self, gen: Generation) -> None:
        if gen.subscribers or self.on_disconnect != "cancel":
            return
        probe = self.remote_readers
        if probe is None or gen.grace <= 0:  # nobody elsewhere can read it
            gen.cancel("client_disconnected")
            return
        task = gen.loop.create_task(self._cancel_unless_read_elsewhere(gen, probe))
        self._checks.add(task)
        task.add_done_callback(self._checks.discard)

    async def _cancel_unless_read_elsewhere(
        self, gen: Generation, probe: Callable[[str], Awaitable[float]]
    ) -> None:
        left = await probe(gen.stream_id)
        if gen.subscribers or gen.ending or gen.grace_pending:
            return  # a client came back meanwhile (if it left again, its own timer decides)
        if left > 0:
            gen.start_grace(self._grace_expired, left + RECHECK_MARGIN)
        else:
            gen.cancel("client_disconnected")

    def finished(self, gen: Generation) -> None:
        """A generation ended: keep it resumable for the grace time, then forget it."""
        self.running.discard(gen)
        if self.log is not None:
            self.log.finish(gen)
        if gen.stream_id in self.streams:
            if gen.grace > 0:
                gen.loop.call_later(gen.grace, self.streams.pop, gen.stream_id, None)
            else:
                self.streams.pop(gen.stream_id, None)

    async def shutdown(self, grace: float, admitting: Awaitable[None] | None = None) -> None:
        """Refuse new work (once ``admitting`` is done, if given: at most ``grace`` s), wait up
        to ``grace`` s from the call for running answers, hand the rest over to another
        instance of the fleet (:meth:`hand_over`), stop what remains — except answers taken
        meanwhile (requests a proxy had already sent on kept-alive connections) that nobody
        took over: each gets the whole grace from its start, as the others got it from the
        call, and is stopped at its end."""
        began = perf_counter()
        if admitting is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(admitting), grace)
        self.accepting = False
        pending = [gen.done for gen in self.running]
        if pending:
            await asyncio.wait(pending, timeout=max(0.0, began + grace - perf_counter()))
        await self.hand_over()
        late = sorted(
            (gen for gen in self.running if gen.received_at > began),
            key=lambda gen: gen.received_at,
        )
        for gen in self.running.difference(late):
            gen.cancel("server_shutdown")
        for gen in late:  # in the order their graces end
            left = gen.received_at + grace - perf_counter()
            if left > 0 and not gen.done.done():
                await asyncio.wait([gen.done], timeout=left)
            gen.cancel("server_shutdown")
        pending = [gen.done for gen in self.running]
        if pending:
            await asyncio.wait(pending, timeout=5.0)
