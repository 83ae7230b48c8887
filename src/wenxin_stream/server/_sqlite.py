"""The SQLite machinery under :class:`~._store.SQLiteStore`: one connection, owned by one
worker thread, running queued jobs in group-committed batches.

Theory of operation
===================

:class:`Worker` opens the connection (:func:`connect`: the file created ``0600`` in a ``0700``
directory before SQLite opens it; WAL, ``synchronous=NORMAL``) in its own thread and is the
only code that ever touches it. A :class:`Job` is an operation — a function of the connection
wrapped in a :class:`~._sql.Db` with the SQLite dialect — plus the future its caller awaits.
The worker takes a job and every job queued behind it (up to :data:`BATCH_LIMIT`), runs them
in one transaction — each in its own ``SAVEPOINT``, so one failing job does not undo the
others, and each job is atomic on its own — commits once, and resolves the batch's futures
with one wake-up per event loop. Separate jobs are never atomic *together*: they may land in
different batches, and a failing one is rolled back alone; what must be written together is
one operation (``_schema.add_exchange``). A job whose caller was cancelled still runs. A
``Job`` whose ``op`` is ``None`` closes the connection and stops the thread.

:func:`translate_error` turns ``sqlite3`` and OS errors into the store's :class:`StoreError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ._schema import StoreError
from ._sql import SQLITE, Db

__all__ = ["BATCH_LIMIT", "Job", "Worker", "connect", "translate_error"]

BATCH_LIMIT = 256
"""Most jobs the worker runs in one transaction."""


def connect(path: str, busy_timeout: float) -> sqlite3.Connection:
    """Open the database file ``path`` (created private, with its directory) in WAL mode, in
    autocommit mode (transactions are begun explicitly); ``":memory:"`` for a private one."""
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
    return conn


def translate_error(exc: BaseException, path: str) -> BaseException:
    """Errors of lower layers become :class:`StoreError`; ours pass through."""
    if isinstance(exc, sqlite3.Error):
        error = StoreError(f"database error ({path}): {exc}")
    elif isinstance(exc, OSError):
        error = StoreError(f"cannot open the database {path}: {exc.strerror or exc}")
    else:
        return exc
    error.__cause__ = exc
    return error


class Job:
    """One operation queued for the worker (``op`` ``None``: close and stop), and the future
    its caller awaits on ``loop``."""

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
        self._conn: sqlite3.Connection | None = None
        self._db: Db | None = None
        self._thread = threading.Thread(target=self._run, name="wenxin-store", daemon=True)
        self.batches = 0
        """Transactions committed (jobs / batches = how much group commit saved)."""
        self.jobs = 0
        """Jobs run."""

    def start(self) -> None:
        """Start the thread (the database is opened by the first job)."""
        self._thread.start()

    def submit(self, job: Job) -> None:
        """Queue a job."""
        self._queue.put(job)

    def join(self) -> None:
        """Wait for the thread to end (after the closing job)."""
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
        if self._conn is not None:
            self._conn.close()
        self._deliver([closing])

    def _execute(self, batch: list[Job]) -> None:
        try:
            if self._conn is None:
                self._conn = connect(self._path, self._busy_timeout)
                self._db = Db(self._conn, SQLITE)
            conn, db = self._conn, self._db
            assert db is not None
            db.begin(write=any(j.write for j in batch))
        except Exception as exc:
            for job in batch:
                job.error = exc
            self._deliver(batch)
            return
        try:
            if len(batch) == 1:
                job = batch[0]
                assert job.op is not None  # only the closing job has none, and it is no batch's
                try:
                    job.result = job.op(db)
                except Exception as exc:
                    job.error = exc
            else:
                for job in batch:
                    assert job.op is not None
                    conn.execute("SAVEPOINT job")
                    try:
                        job.result = job.op(db)
                    except Exception as exc:
                        job.error = exc
                        conn.execute("ROLLBACK TO SAVEPOINT job")
                    conn.execute("RELEASE SAVEPOINT job")
            db.end(commit=not (len(batch) == 1 and batch[0].error is not None))
        except sqlite3.Error as exc:  # the transaction itself failed: nothing was written
            if conn.in_transaction:
                conn.execute("ROLLBACK")
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
