"""The SQLite machinery under :class:`~._store.SQLiteStore`: one connection, owned by one
worker thread, running queued jobs in group-committed batches.

Theory of operation
===================

:class:`Worker` opens the connection (:func:`connect`: the file created ``0600`` in a ``0700``
directory before SQLite opens it; WAL, ``synchronous=NORMAL``) in its own thread and is the
only code that ever touches it. A :class:`Job` is a function of the connection (:class:`Db`)
plus the future its caller awaits. The worker takes a job and every job queued behind it (up
to :data:`BATCH_LIMIT`), runs them in one transaction — each in its own ``SAVEPOINT``, so one
failing job does not undo the others — commits once, and resolves the batch's futures with one
wake-up per event loop. A job whose caller was cancelled still runs. A ``Job`` whose ``op`` is
``None`` closes the connection and stops the thread.

:class:`Dialect` is the one place where SQLite and PostgreSQL differ for our SQL (the
parameter marker, how a write transaction begins); :func:`transact` is the synchronous path
(one job, its own transaction) used by ``wenxin keys`` from another process.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import sqlite3
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

__all__ = [
    "BATCH_LIMIT",
    "POSTGRESQL",
    "SQLITE",
    "Db",
    "Dialect",
    "Job",
    "Worker",
    "connect",
    "transact",
]

_T = TypeVar("_T")

BATCH_LIMIT = 256
"""Most jobs the worker runs in one transaction."""


@dataclass(frozen=True, slots=True)
class Dialect:
    """What differs between databases: the parameter marker and how a write begins."""

    name: str
    placeholder: str
    begin_read: str
    begin_write: str

    def sql(self, text: str) -> str:
        """``text`` with its ``?`` markers in this dialect's style (our SQL has no literal
        question marks)."""
        return text if self.placeholder == "?" else text.replace("?", self.placeholder)


SQLITE = Dialect("sqlite", "?", "BEGIN", "BEGIN IMMEDIATE")
POSTGRESQL = Dialect("postgresql", "%s", "BEGIN", "BEGIN")  # for the planned store


class Db:
    """A connection plus its dialect: every statement passes through :meth:`run`."""

    __slots__ = ("conn", "dialect")

    def __init__(self, conn: sqlite3.Connection, dialect: Dialect = SQLITE) -> None:
        self.conn = conn
        self.dialect = dialect

    def run(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Execute one statement; the number of rows it changed."""
        return self.conn.execute(self.dialect.sql(sql), params).rowcount

    def one(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        """The first row of a query, or ``None``."""
        row = self.conn.execute(self.dialect.sql(sql), params).fetchone()
        return cast("tuple[Any, ...] | None", row)

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Every row of a query."""
        return self.conn.execute(self.dialect.sql(sql), params).fetchall()


def connect(path: str, busy_timeout: float) -> Db:
    if path != ":memory:":
        file = Path(path)
        file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.close(os.open(file, os.O_RDWR | os.O_CREAT, 0o600))  # private before SQLite opens it
    conn = sqlite3.connect(path, timeout=busy_timeout, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
    except sqlite3.Error:
        conn.close()
        raise
    return Db(conn)


def transact(db: Db, op: Callable[[Db], _T], *, write: bool) -> _T:
    """Run ``op`` in its own transaction (the synchronous path)."""
    db.conn.execute(db.dialect.begin_write if write else db.dialect.begin_read)
    try:
        result = op(db)
    except BaseException:
        db.conn.execute("ROLLBACK")
        raise
    db.conn.execute("COMMIT")
    return result


class Job:
    __slots__ = ("error", "future", "loop", "op", "result", "write")

    def __init__(
        self,
        op: Callable[[Db], Any] | None,
        write: bool,
        future: asyncio.Future[Any],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.op = op  # None: close the connection and stop
        self.write = write
        self.future = future
        self.loop = loop
        self.result: Any = None
        self.error: BaseException | None = None


class Worker:
    """The thread that owns the connection and runs queued jobs in batches."""

    def __init__(
        self,
        path: str,
        busy_timeout: float,
        translate: Callable[[BaseException], BaseException],
    ) -> None:
        self._path = path
        self._translate = translate  # errors of lower layers → the store's own
        self._busy_timeout = busy_timeout
        self._queue: queue.SimpleQueue[Job] = queue.SimpleQueue()
        self._db: Db | None = None
        self._thread = threading.Thread(target=self._run, name="wenxin-store", daemon=True)
        self.batches = 0
        """Transactions committed (jobs / batches = how much group commit saved)."""
        self.jobs = 0
        """Jobs run."""

    def start(self) -> None:
        self._thread.start()

    def submit(self, job: Job) -> None:
        self._queue.put(job)

    def join(self) -> None:
        self._thread.join()

    def _run(self) -> None:
        closing: Job | None = None
        while closing is None:
            job = self._queue.get()
            batch: list[Job] = []
            while True:
                if job.op is None:
                    closing = job
                    break
                batch.append(job)
                if len(batch) >= BATCH_LIMIT:
                    break
                try:
                    job = self._queue.get_nowait()
                except queue.Empty:
                    break
            if batch:
                self._execute(batch)
        if self._db is not None:
            self._db.conn.close()
        self._deliver([closing])

    def _execute(self, batch: list[Job]) -> None:
        try:
            if self._db is None:
                self._db = connect(self._path, self._busy_timeout)
            db = self._db
            db.conn.execute(
                db.dialect.begin_write if any(j.write for j in batch) else db.dialect.begin_read
            )
        except Exception as exc:
            for job in batch:
                job.error = exc
            self._deliver(batch)
            return
        try:
            if len(batch) == 1:
                job = batch[0]
                try:
                    job.result = job.op(db)  # type: ignore[misc]
                except Exception as exc:
                    job.error = exc
            else:
                for job in batch:
                    db.conn.execute("SAVEPOINT job")
                    try:
                        job.result = job.op(db)  # type: ignore[misc]
                    except Exception as exc:
                        job.error = exc
                        db.conn.execute("ROLLBACK TO SAVEPOINT job")
                    db.conn.execute("RELEASE SAVEPOINT job")
            failed = len(batch) == 1 and batch[0].error is not None
            db.conn.execute("ROLLBACK" if failed else "COMMIT")
        except sqlite3.Error as exc:  # the transaction itself failed: nothing was written
            if db.conn.in_transaction:
                db.conn.execute("ROLLBACK")
            for job in batch:
                job.result, job.error = None, exc
        self.batches += 1
        self.jobs += len(batch)
        self._deliver(batch)

    def _deliver(self, jobs: list[Job]) -> None:
        """Resolve the futures of ``jobs``, one loop wake-up per event loop."""
        by_loop: dict[asyncio.AbstractEventLoop, list[Job]] = {}
        for job in jobs:
            by_loop.setdefault(job.loop, []).append(job)
        for loop, group in by_loop.items():
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting
                loop.call_soon_threadsafe(self._resolve, group)

    def _resolve(self, jobs: list[Job]) -> None:
        for job in jobs:
            if job.future.done():  # the caller was cancelled; the work was still done
                continue
            if job.error is not None:
                job.future.set_exception(self._translate(job.error))
            else:
                job.future.set_result(job.result)
