"""Portable SQL plumbing: the dialect, and the connection wrapper every operation runs through.

Theory of operation
===================

The store's operations (``_schema``, and the key statements in ``_keys``) are plain functions
of a :class:`Db`, written once for SQLite and PostgreSQL. :class:`Db` wraps any DB-API 2.0
connection that can ``execute`` directly — :class:`Connection`, a protocol that both
``sqlite3.Connection`` and ``psycopg.Connection`` satisfy — and passes every statement through
its :class:`Dialect` first.

:class:`Dialect` is the one place where the databases differ for our SQL: the parameter marker
(statements are written with ``?``, DB-API's ``qmark`` style; :meth:`Dialect.sql` rewrites them
to ``%s`` for a ``format`` driver such as psycopg) and how a read or write transaction begins
(SQLite's ``BEGIN IMMEDIATE`` takes the write lock up front, so a writer never fails half-way
on a lock upgrade), how schema migrations are serialised between processes, and whether one
statement may chain two writes (PostgreSQL's data-modifying ``WITH``). The
operations are synchronous functions run by a worker thread, so the PostgreSQL store
(``_postgres``) uses a synchronous DB-API driver (psycopg) under the same :class:`Db`; nothing
else in the operations is specific to one database.

**Pipelines.** :meth:`Db.pipeline` sends the statements of its block together and waits once
(psycopg's pipeline mode; a no-op for SQLite, which is in-process): statements whose results
are read only after the block (:meth:`Db.send` hands back their cursors) cost one round trip
to the server between them instead of one each. Run *bare* (no ``BEGIN``, ``_postgres``), the
block is one implicit transaction of PostgreSQL's — a failing statement undoes the block —
and SQLite's worker runs every job inside its batch's transaction.

:func:`transact` runs one operation in its own transaction: the synchronous path that
``wenxin keys`` takes from another process. (The server's own path, many operations per
transaction, is the store's worker.)
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeVar, cast

__all__ = [
    "MIGRATION_LOCK",
    "POSTGRESQL",
    "SQLITE",
    "Connection",
    "Cursor",
    "Db",
    "Dialect",
    "transact",
]

_T = TypeVar("_T")


class Cursor(Protocol):
    """What :class:`Db` reads from a DB-API cursor."""

    @property
    def rowcount(self) -> int:
        """Rows the statement changed."""
        ...

    def fetchone(self) -> Any:
        """The next row, or ``None``."""
        ...

    def fetchall(self) -> list[Any]:
        """The remaining rows."""
        ...


class Connection(Protocol):
    """A DB-API connection with the ``execute`` shortcut (``sqlite3``, ``psycopg``)."""

    def execute(self, sql: str, parameters: Sequence[Any], /) -> Cursor:
        """Execute one statement; its cursor."""
        ...

    def executemany(self, sql: str, parameters: Iterable[Sequence[Any]], /) -> Cursor:
        """Execute one statement once per parameter row; its cursor."""
        ...


@dataclass(frozen=True, slots=True)
class Dialect:
    """What differs between databases for our SQL (see the module docstring).

    ``paramstyle`` is the driver's DB-API parameter style: ``qmark`` (``?``: sqlite3) or
    ``format`` (``%s``: psycopg).
    """

    name: str
    paramstyle: Literal["qmark", "format"]
    begin_read: str
    begin_write: str
    lock_schema: str = ""
    """Statement that serialises schema migrations until the transaction ends ("": the write
    transaction's own lock is enough)."""
    modifying_cte: bool = False
    """Whether a ``WITH`` clause may hold an ``UPDATE … RETURNING`` whose rows the statement
    reads (PostgreSQL): two dependent writes as one statement, one round trip and one
    execution instead of a pipeline of two."""

    def sql(self, text: str) -> str:
        """``text`` with its ``?`` markers in this dialect's style (our SQL has no literal
        question marks, and no ``%`` that a ``format`` driver would misread)."""
        return text if self.paramstyle == "qmark" else text.replace("?", "%s")


SQLITE = Dialect("sqlite", "qmark", "BEGIN", "BEGIN IMMEDIATE")
"""SQLite (the ``sqlite3`` module)."""

MIGRATION_LOCK = 0x77656E78696E  # "wenxin"
"""The PostgreSQL advisory lock key that serialises migrations of one database."""

POSTGRESQL = Dialect(
    "postgresql",
    "format",
    "BEGIN",
    "BEGIN",
    f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK})",
    modifying_cte=True,
)
"""PostgreSQL through psycopg (``_postgres``): migrations hold a transaction-scoped advisory
lock, so several instances starting at once upgrade the schema one after the other."""


class Db:
    """A connection plus its dialect: every statement of an operation passes through here."""

    __slots__ = ("conn", "dialect")

    def __init__(self, conn: Connection, dialect: Dialect) -> None:
        self.conn = conn
        self.dialect = dialect

    def run(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Execute one statement; the number of rows it changed."""
        return self.conn.execute(self.dialect.sql(sql), params).rowcount

    def run_many(self, sql: str, rows: Iterable[Sequence[Any]]) -> int:
        """Execute one statement once per row of parameters (the driver's loop, not ours);
        the number of rows changed in all."""
        return self.conn.executemany(self.dialect.sql(sql), rows).rowcount

    def send(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        """Execute one statement; its cursor, to read once the :meth:`pipeline` block (if
        any) has ended."""
        return self.conn.execute(self.dialect.sql(sql), params)

    def pipeline(self) -> contextlib.AbstractContextManager[Any]:
        """A block whose statements go to the server together (see the module docstring)."""
        pipeline = getattr(self.conn, "pipeline", None)
        return (
            contextlib.nullcontext()
            if pipeline is None
            else cast(contextlib.AbstractContextManager[Any], pipeline())
        )

    def one(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        """The first row of a query, or ``None``."""
        row = self.conn.execute(self.dialect.sql(sql), params).fetchone()
        return cast("tuple[Any, ...] | None", row)

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Every row of a query."""
        return self.conn.execute(self.dialect.sql(sql), params).fetchall()

    def begin(self, *, write: bool) -> None:
        """Begin a transaction (a write one takes the write lock where the database has one)."""
        self.conn.execute(self.dialect.begin_write if write else self.dialect.begin_read, ())

    def lock_schema(self) -> None:
        """Take the dialect's migration lock (held until the transaction ends)."""
        if self.dialect.lock_schema:
            self.conn.execute(self.dialect.lock_schema, ())

    def end(self, *, commit: bool) -> None:
        """Commit or roll back the transaction."""
        self.conn.execute("COMMIT" if commit else "ROLLBACK", ())


def transact(db: Db, op: Callable[[Db], _T], *, write: bool) -> _T:
    """Run ``op`` in its own transaction: committed if it returns, rolled back if it raises."""
    db.begin(write=write)
    try:
        result = op(db)
    except BaseException:
        db.end(commit=False)
        raise
    db.end(commit=True)
    return result
