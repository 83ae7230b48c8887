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
- ``size`` threads, one per connection, and an :class:`asyncio.Semaphore` of ``size`` slots on
  the loop's side. :meth:`Runner.call` waits for a slot **at most** ``timeout`` seconds — a pool
  that stays exhausted that long is :class:`~._schema.StoreUnavailableError` (503 with
  ``Retry-After`` at the HTTP edge), never an unbounded queue — then runs the operation on a
  thread in one transaction. The slot is released when the *operation* ends, not when its caller
  does: a caller that is cancelled does not cancel its operation (an answer being saved at
  shutdown is saved), and never lets more than ``size`` operations run.

An operation that is one statement (an answer's final record, a conversation read or created)
is run *bare*: no ``BEGIN`` / ``COMMIT`` around it, since in autocommit mode the statement is
its own transaction — one round trip to the database instead of three, which on a busy relay
core is most of the store's cost per answer (``bench/PROFILE.md``).

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
import concurrent.futures
import contextlib
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
        self._threads: concurrent.futures.ThreadPoolExecutor | None = None
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
        self._threads = concurrent.futures.ThreadPoolExecutor(self.size, "wenxin-postgres")
        self._slots = asyncio.Semaphore(self.size)

    async def close(self) -> None:
        """Let running operations finish, then close the pool. Idempotent."""
        pool, threads = self._pool, self._threads
        self._pool = self._threads = self._slots = None
        if threads is not None:
            await asyncio.to_thread(threads.shutdown, wait=True)
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
        slots, threads = self._slots, self._threads
        if slots is None or threads is None:
            raise StoreError("the store is not open")
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
        try:
            done = asyncio.wrap_future(threads.submit(self._run, op, write, bare))
        except BaseException:
            slots.release()
            raise
        done.add_done_callback(lambda _: self._finished(slots, done))
        return await asyncio.shield(done)  # a cancelled caller leaves its operation running

    def _finished(self, slots: asyncio.Semaphore, done: asyncio.Future[Any]) -> None:
        slots.release()
        self.operations += 1
        if not done.cancelled():
            done.exception()  # retrieved: a cancelled caller's failure is not "never retrieved"

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
