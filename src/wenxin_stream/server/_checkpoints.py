"""Checkpoints: the text of answers still being generated, written to the store as they stream.

Theory of operation
===================

An answer's row is written twice in its life — empty when asked, complete when it ends — so a
process that dies in between (``kill -9``, the OOM killer, a power cut) would leave it empty.
:class:`Checkpoints` closes that gap: the answer use case *tracks* each stored answer from the
moment its generation has begun until it ends, and a tick every ``interval`` seconds
(``checkpoint_interval``, default 1 s) writes the text of every tracked answer that grew since
its last checkpoint::

    every interval, for each slice of up to SLICE tracked answers:
        the answers whose text grew ──► Checkpoint(text, counts) … ──► store.checkpoint([…])
        (event loop: the new log entries, one      one job of the store's worker: one
         string per answer)                        transaction, one UPDATE per answer

**The window.** A crash loses at most the text of the last ``interval`` (plus a checkpoint
whose commit was in flight: milliseconds); the tick is paced by ``asyncio.sleep`` after each
write, so a slow store delays the next tick rather than stacking writes. The start-up after a
crash marks the rows left ``streaming`` as ``server_crashed``, keeping this text and its counts
(``Store.mark_streaming_as``).

**The cost is per answer per interval, never per chunk.** The relay's per-chunk path does
nothing for checkpoints: the tick reads each generation's log. Entries before the last never
change (text is only ever appended to the last delta), so each tracked answer keeps the text of
the entries it has already read and reads only new ones: a tick costs one string of the
answer's length per answer that grew, plus one ``UPDATE`` per such answer in the worker — and
the answers of a slice share one operation (SQLite: one transaction, group commit as every
write of the store; PostgreSQL: one pipeline, no ``BEGIN``/``COMMIT`` — each row is a
checkpoint of its own). A
tick works through its answers a slice at a time, waiting for each slice's write, so the event
loop never pauses for all answers at once and other writes are never queued behind a whole
tick.

**Order with the end.** The final record wins whatever the order of writes: the answer use
case forgets an answer before writing its final record, and a checkpoint taken just before
that lands after it changes nothing — the store writes checkpoints only into rows still
``streaming``.

**What is checkpointed** is the text *generated* (as the final record holds), with the
characters generated and delivered so far and the time to first token, and — once a thinking
model has thought — the extras (its reasoning so far; an answer that grows only in reasoning is
checkpointed too); usage is known only at the end. A failed write is logged and counted
(``wenxin_errors_total{kind="internal"}``); the next tick writes again whatever grew since
the last write that succeeded.

**A final record the store refused** (the database away: ``StoreUnavailableError``) is not
lost with the answer: the use case hands its write to :meth:`Checkpoints.defer`, and each tick
first writes the deferred final records, oldest first, stopping at the first that fails — so
when the database comes back, every answer that ended while it was away gets its whole text and
end reason (the row stays ``streaming`` meanwhile, under a producer that is alive, so no sweep
ends it). What is still deferred when the server stops is tried once more and otherwise
reported as lost in the log (the rows keep their last checkpoint).

**Usage records.** The tick also writes the usage records of the answers that ended since
the last one, all in one store operation (``_usage_writer``), after the checkpoints.

**One instance.** The answers tracked are this process's. With several instances sharing a
database (the scale-out issue), the tick is also the natural place to renew a per-row lease
naming the producing instance (see ``Store.mark_streaming_as``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from .._aio import stop_task
from ._metrics import Metrics
from ._relay import EntryKind, Generation
from ._schema import StoreError
from ._store import Checkpoint, Store
from ._usage_writer import UsageWriter

__all__ = ["DEFAULT_INTERVAL", "SLICE", "Checkpoints"]

_DELTA = EntryKind.DELTA

logger = logging.getLogger("wenxin_stream.server")

DEFAULT_INTERVAL = 1.0
"""Seconds between checkpoints (``checkpoint_interval``)."""

SLICE = 200
"""Most answers written by one store operation of a tick: the tick reads this many logs, then
waits for their write, so the event loop never pauses for all answers at once and another
write (a new question) waits behind at most one slice."""


class _Tracked:
    """One answer being checkpointed: its generation, the text of the log entries read so
    far (all but the last, which may still grow), and what its last checkpoint wrote."""

    __slots__ = ("gen", "prefix", "read", "reasoned", "written")

    def __init__(self, gen: Generation) -> None:
        self.gen = gen
        self.read = 0  # entries [0, read) are in `prefix`
        self.prefix = ""
        self.written = 0  # generated characters the last successful checkpoint held
        self.reasoned = 0  # reasoning characters the last successful checkpoint held

    def text(self) -> str:
        """The answer's text now (reads only the entries that are new since the last call)."""
        entries = self.gen.entries
        last = len(entries) - 1
        if last > self.read:
            # a delta's parts are its text in order; other entries are not answer text
            parts = [self.prefix]
            extend = parts.extend
            for entry in entries[self.read : last]:
                if entry.kind is _DELTA:
                    extend(entry.parts)
            self.prefix = "".join(parts)
            self.read = last
        final = entries[last]
        tail = final.parts if final.kind is _DELTA else None
        return "".join([self.prefix, *tail]) if tail else self.prefix


class Checkpoints:
    """Writes the text of tracked answers to ``store`` every ``interval`` seconds (see the
    module docstring); ``interval`` 0 turns checkpoints off (tracking is then free)."""

    def __init__(
        self,
        store: Store,
        metrics: Metrics,
        *,
        interval: float = DEFAULT_INTERVAL,
        usage: UsageWriter | None = None,
    ) -> None:
        if not interval >= 0:
            raise ValueError(f"interval must be >= 0, got {interval!r}")
        self.store = store
        self.usage = usage
        """The ended answers' usage records, written by each tick (``_usage_writer``)."""
        self.metrics = metrics
        self.interval = interval
        self._tracked: dict[str, _Tracked] = {}
        self._deferred: dict[str, Callable[[], Awaitable[None]]] = {}
        self.written_late = 0
        """Final records written after the store had refused them (in total)."""
        self._task: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        """How many answers are tracked."""
        return len(self._tracked)

    def track(self, message_id: str, gen: Generation) -> None:
        """Checkpoint the answer stored as ``message_id`` while ``gen`` (begun) generates it."""
        if self.interval > 0:
            self._tracked[message_id] = _Tracked(gen)

    def forget(self, message_id: str) -> None:
        """The answer is ending: no more checkpoints (its final record follows)."""
        self._tracked.pop(message_id, None)

    def defer(self, message_id: str, write: Callable[[], Awaitable[None]]) -> bool:
        """The final record of ``message_id`` could not be written: ``write`` it on the next
        ticks until the store takes it. ``False`` (nothing kept) when checkpoints are off."""
        if self.interval <= 0:
            return False
        self._deferred[message_id] = write
        return True

    @property
    def deferred(self) -> int:
        """How many final records wait for the store."""
        return len(self._deferred)

    async def write_deferred(self) -> int:
        """Write the deferred final records, oldest first; how many were written.

        Raises:
            StoreError: a write failed (it and the later ones stay deferred).
        """
        written = 0
        for message_id, write in list(self._deferred.items()):
            await write()
            del self._deferred[message_id]
            written += 1
            self.written_late += 1
        if written:
            logger.warning("wrote %d final records the database had refused", written)
        return written

    def due(self) -> list[tuple[_Tracked, Checkpoint]]:
        """A checkpoint of every tracked answer whose text grew since its last one."""
        return self._due(list(self._tracked.items()))

    def _due(self, items: list[tuple[str, _Tracked]]) -> list[tuple[_Tracked, Checkpoint]]:
        out = []
        for message_id, tracked in items:
            gen = tracked.gen
            grew = gen.generated_chars > tracked.written or gen.reasoning_chars > tracked.reasoned
            if grew and not gen.ending:
                text = tracked.text()
                extras = gen.extras() if gen.reasoning_chars else None
                checkpoint = Checkpoint(
                    message_id, text, len(text), gen.delivered_chars, gen.ttft_ms, extras
                )
                out.append((tracked, checkpoint))
        return out

    async def flush(self) -> int:
        """Write every checkpoint that is due, :data:`SLICE` answers per store operation;
        how many were written.

        Raises:
            StoreError: a write failed (the answers of that slice and later ones are not
                counted as written).
        """
        items = list(self._tracked.items())  # answers may end while a slice is written
        written = 0
        for start in range(0, len(items), SLICE):
            due = self._due(items[start : start + SLICE])
            if due:
                await self.store.checkpoint([checkpoint for _, checkpoint in due])
                for tracked, checkpoint in due:
                    tracked.written = checkpoint.generated_chars
                    extras = checkpoint.extras
                    tracked.reasoned = len(extras["reasoning"] or "") if extras else 0
                written += len(due)
        return written

    def start(self) -> None:
        """Start the tick (on the running loop); nothing with ``interval`` 0."""
        if self.interval > 0 and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="checkpoints")

    async def aclose(self) -> None:
        """Stop the tick (a write in flight is finished by the store's worker regardless),
        then try the deferred final records once more; those the store still refuses are
        reported lost."""
        task, self._task = self._task, None
        await stop_task(task)
        if self._deferred:
            try:
                await self.write_deferred()
            except StoreError as exc:
                logger.error(
                    "the database refused %d final records to the end (%s); those answers "
                    "keep their last checkpoint",
                    len(self._deferred),
                    exc,
                )

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self._step("checkpoint answers", self._write)
            if self.usage is not None:  # the answers ended since the last tick, in one operation
                await self._step("store usage", self.usage.flush)

    async def _write(self) -> None:
        await self.write_deferred()
        await self.flush()

    async def _step(self, what: str, step: Callable[[], Awaitable[object]]) -> None:
        """One part of a tick. Its failure is logged and counted, and the tick goes on: the
        next one tries again (a stopped tick would lose every later checkpoint)."""
        try:
            await step()
        except StoreError as exc:  # the database refused or is away (usage records are kept)
            logger.error("could not %s: %s: %s", what, type(exc).__name__, exc)
            self.metrics.error("internal")
        except Exception:  # a bug: its traceback, not one line among the store's failures
            logger.exception("could not %s: an unexpected error", what)
            self.metrics.error("internal")
