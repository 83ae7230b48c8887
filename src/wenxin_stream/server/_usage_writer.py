"""The usage records of ended answers, written to the store many answers at a time.

Theory of operation
===================

Every answer ends with its usage records (``_usage``: one row per upstream request). Written
one answer at a time, that is one store operation — one wake-up of the store's worker thread,
one transaction — per answer, the largest part of the store's cost of a start on the OpenAI
route. :class:`UsageWriter` keeps them instead, and the checkpoint tick (``_checkpoints``,
every ``checkpoint_interval``) writes all that are pending in **one** operation::

    answer ends ──► UsageWriter.record(records)        (event loop: a list append)
    tick        ──► UsageWriter.flush() ──► store.record_usage([… every pending answer …])

**Nothing reads them late.** Every reader of the usage table in this process goes through the
writer, which flushes first: ``GET /api/usage`` (:meth:`usage_rows`, :meth:`spent_since`) and
the budgets' first read of a period (:meth:`spent_since`, ``_budgets``). A flush waits for one
already writing (a lock), so a read never runs between a write's start and its commit. The
budgets never wait for the tick: an answer's hold is settled in memory when it ends.
Shutdown writes what is pending after the running answers have ended (:meth:`aclose`).

**The window.** A crash (``kill -9``) loses the records of the answers that ended since the
last tick — at most ``checkpoint_interval`` of them; their messages keep their usage (the final
record holds it), and the budgets reload the period's spend from the store, so a key may spend
that much again. ``wenxin usage`` (the CLI reads the database itself) and another instance
sharing the database see records up to one tick late. With checkpoints off (``interval`` 0)
each answer's records are written when it ends, as before.

**Failure.** A batch that the database refuses because it is away
(``StoreUnavailableError``) stays pending, oldest first, and the next tick writes it again (at
most :data:`MAX_PENDING` records are kept; older ones are dropped and logged as lost). Any
other refusal (an answer's request recorded twice — a bug) would lose the whole batch, so the
batch is written again one answer at a time, and only the answers refused are logged and lost.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

from ._schema import StoreError, StoreUnavailableError
from ._store import Store
from ._usage import UsageRecord
from ._usage_sql import UsageRow

__all__ = ["MAX_PENDING", "UsageWriter"]

logger = logging.getLogger("wenxin_stream.server")

MAX_PENDING = 100_000
"""Most usage records kept while the database is away (about 30 MB)."""


class _Ended(list[UsageRecord]):
    """One ended answer's usage records, and whether another instance has taken it over."""

    __slots__ = ("taken",)

    def __init__(self, records: Sequence[UsageRecord], taken: Callable[[], bool] | None) -> None:
        super().__init__(records)
        self.taken = taken

    def was_taken(self) -> bool:
        if self.taken is None or not self.taken():
            return False
        logger.info("usage of %s not stored here: its taker records it", self[0].stream_id)
        return True


class UsageWriter:
    """Stores the usage records of ended answers, ``batched`` (see the module docstring) or
    one answer at a time."""

    def __init__(self, store: Store, *, batched: bool, max_pending: int = MAX_PENDING) -> None:
        self.store = store
        self.batched = batched
        self.max_pending = max_pending
        self._pending: list[_Ended] = []  # one per answer, oldest first
        self._count = 0  # records in `_pending`
        self._lock = asyncio.Lock()
        self.lost = 0
        """Records dropped (in total): over :data:`MAX_PENDING`, or refused by the store."""

    @property
    def pending(self) -> int:
        """How many records wait for the next flush."""
        return self._count

    async def record(
        self, records: Sequence[UsageRecord], *, taken: Callable[[], bool] | None = None
    ) -> None:
        """An answer ended with ``records``: kept for the next flush when batched, else
        stored now (one transaction). ``taken()`` true at the flush: another instance took
        the answer over meanwhile (its producer learnt it after the end), and the taker
        records what this process spent on it — these records are dropped, not counted twice.

        Raises:
            StoreError: not batched, and the store refused them.
        """
        if not records:
            return
        if not self.batched:
            await self.store.record_usage(records)
            return
        self._pending.append(_Ended(records, taken))
        self._count += len(records)
        self._bound()

    async def flush(self) -> int:
        """Store every pending record in one store operation (after any flush in flight);
        how many were stored.

        Raises:
            StoreUnavailableError: the database is away (the records stay pending).
        """
        async with self._lock:
            batch, self._pending, self._count = self._pending, [], 0
            batch = [answer for answer in batch if not answer.was_taken()]
            if not batch:
                return 0
            try:
                return await self.store.record_usage([r for answer in batch for r in answer])
            except StoreUnavailableError:
                self._pending[:0] = batch  # before what ended meanwhile: oldest first
                self._count += sum(len(answer) for answer in batch)
                self._bound()
                raise
            except StoreError:
                return await self._one_by_one(batch)

    async def _one_by_one(self, batch: list[_Ended]) -> int:
        stored = 0
        for i, answer in enumerate(batch):
            try:
                stored += await self.store.record_usage(answer)
            except StoreUnavailableError:  # away now: this one and the rest wait again
                rest = batch[i:]
                self._pending[:0] = rest
                self._count += sum(len(a) for a in rest)
                self._bound()
                raise
            except StoreError as exc:
                self.lost += len(answer)
                logger.error(
                    "the store refused the usage records of %s (%s): %d records lost",
                    answer[0].stream_id,
                    exc,
                    len(answer),
                )
        return stored

    def _bound(self) -> None:
        dropped = 0
        while self._count > self.max_pending and len(self._pending) > 1:
            oldest = self._pending.pop(0)
            self._count -= len(oldest)
            dropped += len(oldest)
        if dropped:
            self.lost += dropped
            logger.error(
                "%d usage records lost: more than %d waited for the database",
                dropped,
                self.max_pending,
            )

    async def spent_since(self, key_id: str, first_day: str) -> tuple[int, int]:
        """The store's ``spent_since``, after a flush (``_budgets``' first read of a
        period, ``GET /api/usage``)."""
        await self.flush()
        return await self.store.spent_since(key_id, first_day)

    async def usage_rows(
        self, first_day: str, last_day: str, key_id: str | None = None
    ) -> list[UsageRow]:
        """The store's ``usage_rows``, after a flush (``GET /api/usage``)."""
        await self.flush()
        return await self.store.usage_rows(first_day, last_day, key_id)

    async def aclose(self) -> None:
        """Write what is pending (shutdown: after the running answers ended); what the store
        refuses is reported lost in the log."""
        try:
            await self.flush()
        except StoreError as exc:
            self.lost += self._count
            logger.error(
                "the database refused %d usage records to the end (%s): they are lost",
                self._count,
                exc,
            )
            self._pending, self._count = [], 0
