"""The PostgreSQL machinery under :class:`~._store.PostgresStore`: a connection pool, the threads
that run operations on it, bounded waits, and errors that never show a password.

Theory of operation
===================

The store's operations are synchronous functions of a :class:`~._sql.Db` (``_schema``), so
PostgreSQL runs them the way SQLite does — off the event loop, on a thread — through psycopg 3's
synchronous driver with the PostgreSQL dialect. (The driver was chosen by
``bench/postgres_drivers.py``: see ``bench/README.md``.) :class:`Runner` owns

- a ``psycopg_pool.ConnectionPool`` of exactly ``size`` connections (``min_size`` =
  ``max_size``: a fleet's connection count is ``size`` × processes, known in advance), in
  autocommit mode, since every operation begins and ends its own transaction
  (:func:`~._sql.transact`); each connection gets a ``statement_timeout`` so no statement waits
  forever on a lock;
- ``size`` threads, one per connection, taking operations from one queue, each handing its
  outcome back to the loop with one ``call_soon_threadsafe`` (no executor, wrapped future or
  shield: ``ThreadPoolExecutor.submit`` alone was 6 % of the loop's samples on the native
  route, ``bench/PROFILE.md``), and an :class:`asyncio.Semaphore` of ``size`` slots on the
  loop's side. :meth:`Runner.call` waits for a slot **at most** ``timeout`` seconds — a pool
  that stays exhausted that long is :class:`~._schema.StoreUnavailableError` (503 with
  ``Retry-After`` at the HTTP edge), never an unbounded queue — then runs the operation on a
  thread in one transaction. The slot is released when the *operation* ends, not when its caller
  does: a caller that is cancelled does not cancel its operation (an answer being saved at
  shutdown is saved), and never lets more than ``size`` operations run.

An operation that is one statement (an ask's history, its exchange, an answer's final record,
a conversation read or created) is run *bare*: no ``BEGIN`` / ``COMMIT`` around it, since in
autocommit mode the statement is its own transaction — one round trip to the database instead
of three, which on a busy relay core is most of the store's cost per answer
(``bench/PROFILE.md``).

Unlike SQLite's worker, there is no group commit: PostgreSQL commits many transactions in
parallel on its own connections, and a group would make one failing operation's connection
error fail the rest. A checkpoint of many answers is still one operation (``executemany``,
which psycopg sends as one pipeline).

**Errors.** :func:`translate_error` turns psycopg's errors into the store's: a connection that
cannot be made or was lost, a pool that stays empty, or a server shutting down is
:class:`~._schema.StoreUnavailableError` (the client may retry); anything else is
:class:`~._schema.StoreError`. Messages name the database by its URL with the password masked,
and the password's text is scrubbed from the driver's own message too.

**Migrations** run under a transaction-scoped advisory lock (:data:`MIGRATION_LOCK`, taken by
the dialect's ``lock_schema`` statement, see ``_sql``), so instances starting together upgrade
the schema one after the other, never twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

import psycopg
import psycopg_pool

from ._config import mask_url_password
from ._schema import StoreError, StoreUnavailableError
from ._sql import POSTGRESQL, Cursor, Db, transact

__all__ = [
    "STATEMENT_TIMEOUT",
    "Runner",
    "connect",
    "db_of",
    "is_postgres_url",
    "translate_error",
]

_T = TypeVar("_T")

STATEMENT_TIMEOUT = 30.0
"""Seconds any one statement may run (a lock held elsewhere cannot make an operation hang)."""

RETRY_AFTER = 1.0
"""Seconds a client is told to wait after the database was unavailable."""


def is_postgres_url(url: str) -> bool:
    """Whether ``url`` names a PostgreSQL database (``postgresql://`` or ``postgres://``)."""
    scheme, sep, _ = url.strip().partition("://")
    return bool(sep) and scheme.lower() in ("postgresql", "postgres")


def _password(url: str) -> str | None:
    try:
        password = urlsplit(url).password
    except ValueError:
        return None
    return unquote(password) if password else None


def _scrub(text: str, url: str) -> str:
    """``text`` without the URL's password (a driver may echo a connection string)."""
    text = text.replace(url, mask_url_password(url))
    password = _password(url)
    if password:
        text = text.replace(password, "***")
    return text.strip()


def translate_error(exc: BaseException, url: str) -> BaseException:
    """Errors of psycopg and its pool become the store's; others pass through unchanged."""
    where = mask_url_password(url)
    error: StoreError
    if isinstance(exc, psycopg_pool.PoolTimeout):
        error = StoreUnavailableError(
            f"no connection to the database {where} became free in time: {_scrub(str(exc), url)}",
            retry_after=RETRY_AFTER,
        )
    elif isinstance(exc, psycopg.OperationalError | psycopg_pool.PoolClosed):
        error = StoreUnavailableError(
            f"the database {where} is unavailable: {_scrub(str(exc), url)}",
            retry_after=RETRY_AFTER,
        )
    elif isinstance(exc, psycopg.Error):
        error = StoreError(f"database error ({where}): {_scrub(str(exc), url)}")
    else:
        return exc
    return error


def _configure(conn: psycopg.Connection[Any]) -> None:
    conn.execute(f"SET statement_timeout = {int(STATEMENT_TIMEOUT * 1000)}")


def connect(url: str, *, timeout: float = 10.0) -> psycopg.Connection[Any]:
    """One connection in autocommit mode (``wenxin keys``, ``wenxin db``, and the check that
    the database answers before a pool is opened).

    Raises:
        StoreError: the database cannot be reached or refused the connection.
    """
    try:
        conn = psycopg.connect(url, autocommit=True, connect_timeout=max(1, round(timeout)))
        _configure(conn)
    except psycopg.Error as exc:
        raise translate_error(exc, url) from None
    return conn


class _Adapter:
    """A psycopg connection as :class:`~._sql.Connection` (psycopg's connection has no
    ``executemany``; its cursor's does, and reports the rows changed by all of them)."""

    __slots__ = ("_conn",)

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._conn = conn

    def execute(self, sql: str, parameters: Sequence[Any], /) -> Cursor:
        return self._conn.execute(sql, parameters)

    def executemany(self, sql: str, parameters: Iterable[Sequence[Any]], /) -> Cursor:
        cursor = self._conn.cursor()
        cursor.executemany(sql, parameters)
        return cursor

    def pipeline(self) -> contextlib.AbstractContextManager[psycopg.Pipeline]:
        """psycopg's pipeline mode for a block (``Db.pipeline``)."""
        return self._conn.pipeline()


def _join_all(threads: list[threading.Thread]) -> None:
    for thread in threads:
        thread.join()


class _Job:
    """One operation queued for the store's threads, and where its result goes."""

    __slots__ = ("bare", "done", "loop", "op", "runner", "slots", "write")

    def __init__(
        self,
        op: Callable[[Db], Any],
        write: bool,
        bare: bool,
        done: asyncio.Future[Any],
        loop: asyncio.AbstractEventLoop,
        slots: asyncio.Semaphore,
        runner: Runner,
    ) -> None:
        self.op, self.write, self.bare = op, write, bare
        self.done, self.loop, self.slots, self.runner = done, loop, slots, runner

    def finish(self, result: Any, error: BaseException | None) -> None:
        """(On the store's thread.) Hand the outcome to the event loop: one wake-up."""
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
            self.loop.call_soon_threadsafe(self.deliver, result, error)

    def deliver(self, result: Any, error: BaseException | None) -> None:
        """(On the loop.) Free the slot; resolve the caller's future unless it left."""
        self.slots.release()
        self.runner.operations += 1
        done = self.done
        if not done.done():
            if error is None:
                done.set_result(result)
            else:
                done.set_exception(error)


def db_of(conn: psycopg.Connection[Any]) -> Db:
    """``conn`` under the :class:`~._sql.Db` the operations take, with the PostgreSQL
    dialect."""
    return Db(_Adapter(conn), POSTGRESQL)


class Runner:
    """Runs operations in transactions on a pool of ``size`` connections (see the module
    docstring); ``timeout`` bounds every wait for a connection."""

    def __init__(self, url: str, *, size: int, timeout: float) -> None:
        if size < 1 or timeout <= 0:
            raise ValueError("a pool needs at least one connection and a positive timeout")
        self.url = url
        self.size = size
        self.timeout = timeout
        self.operations = 0
        """Operations run (each one transaction)."""
        self.timeouts = 0
        """Operations refused because no connection became free within ``timeout``."""
        self._pool: psycopg_pool.ConnectionPool[Any] | None = None
        self._threads: list[threading.Thread] = []
        self._jobs: queue.SimpleQueue[_Job | None] | None = None
        self._slots: asyncio.Semaphore | None = None

    async def open(self) -> None:
        """Check that the database answers (so a wrong password or host is reported as such,
        not as a pool timeout), then open the pool and its threads.

        Raises:
            StoreError: the database cannot be reached or refused the connection.
        """
        probe = await asyncio.to_thread(connect, self.url, timeout=self.timeout)
        probe.close()
        pool: psycopg_pool.ConnectionPool[Any] = psycopg_pool.ConnectionPool(
            self.url,
            min_size=self.size,
            max_size=self.size,
            kwargs={"autocommit": True, "connect_timeout": max(1, round(self.timeout))},
            configure=_configure,
            timeout=self.timeout,
            name="wenxin-store",
            open=False,
        )
        try:
            await asyncio.to_thread(pool.open, wait=True, timeout=self.timeout)
        except BaseException as exc:
            await asyncio.to_thread(pool.close)
            raise translate_error(exc, self.url) from None
        self._pool = pool
        self._jobs = queue.SimpleQueue()
        self._threads = [
            threading.Thread(
                target=self._work, args=(self._jobs,), name=f"wenxin-postgres-{n}", daemon=True
            )
            for n in range(self.size)
        ]
        for thread in self._threads:
            thread.start()
        self._slots = asyncio.Semaphore(self.size)

    async def close(self) -> None:
        """Let running and queued operations finish, then close the pool. Idempotent."""
        threads, jobs = self._threads, self._jobs
        self._slots = self._jobs = None  # no new operation; the queued ones still run
        if jobs is not None:
            for _ in threads:
                jobs.put(None)  # after the queued operations: each thread ends at one
            await asyncio.to_thread(_join_all, threads)
        pool, self._pool, self._threads = self._pool, None, []
        if pool is not None:
            await asyncio.to_thread(pool.close)

    @property
    def is_open(self) -> bool:
        """Whether :meth:`open` succeeded and :meth:`close` has not been called."""
        return self._pool is not None

    def stats(self) -> dict[str, int]:
        """Counters for metrics: operations run, refused for a full pool, and the pool's own
        (``pool_size``, ``pool_available``, ``requests_waiting``, …; see psycopg_pool)."""
        numbers = {"operations": self.operations, "pool_timeouts": self.timeouts}
        if self._pool is not None:
            numbers.update(self._pool.get_stats())
        return numbers

    async def call(self, op: Callable[[Db], _T], *, write: bool, bare: bool = False) -> _T:
        """Run ``op`` in one transaction on a pooled connection; its result. ``bare``: the
        operation is one statement (or reads that need no common snapshot), so it runs
        without ``BEGIN`` / ``COMMIT`` — in autocommit mode each statement is its own
        transaction — saving the database two round trips.

        Raises:
            StoreUnavailableError: no connection became free within ``timeout``, or the
                database cannot be reached.
            StoreError: the store is not open, or the database failed.
        """
        slots, jobs = self._slots, self._jobs
        if slots is None or jobs is None:
            raise StoreError("the store is not open")
        if slots.locked():  # the bounded wait (a free slot is taken without a timer)
            try:
                async with asyncio.timeout(self.timeout):
                    await slots.acquire()
            except TimeoutError:
                self.timeouts += 1
                raise StoreUnavailableError(
                    f"all {self.size} database connections stayed busy for {self.timeout:g} s "
                    "(raise database_pool_size, or the database is slow)",
                    retry_after=RETRY_AFTER,
                ) from None
        else:
            await slots.acquire()
        if self._jobs is not jobs:  # closed while this one waited for a slot
            slots.release()
            raise StoreError("the store is not open")
        loop = asyncio.get_running_loop()
        done: asyncio.Future[_T] = loop.create_future()
        jobs.put(_Job(op, write, bare, done, loop, slots, self))
        # A cancelled caller cancels only its wait: the operation runs on, and its slot is
        # released when it ends (_Job.deliver), not before.
        return await done

    def _work(self, jobs: queue.SimpleQueue[_Job | None]) -> None:
        """One thread: runs jobs until told to stop, each result handed to its loop."""
        while (job := jobs.get()) is not None:
            try:
                result: Any = self._run(job.op, job.write, job.bare)
            except BaseException as exc:  # delivered to the caller, never lost here
                job.finish(None, exc)
            else:
                job.finish(result, None)
            del job  # not kept alive while waiting for the next one

    def _run(self, op: Callable[[Db], _T], write: bool, bare: bool) -> _T:
        pool = self._pool
        if pool is None:
            raise StoreError("the store is not open")
        try:
            with pool.connection(timeout=self.timeout) as conn:
                db = db_of(conn)
                return op(db) if bare else transact(db, op, write=write)
        except (psycopg.Error, psycopg_pool.PoolTimeout, psycopg_pool.PoolClosed) as exc:
            raise translate_error(exc, self.url) from None
