"""The store of ``wenxin serve``: conversations, messages and API keys behind one protocol.

Theory of operation
===================

:class:`Store` is what the server needs from its database: coroutines that never block the
event loop. Every method is one *operation* of ``_schema`` (a plain function of a
:class:`~._sql.Db`), and :class:`OperationStore` is that mapping, written once: each method
checks its arguments on the caller's side (a bad ``role`` is a :class:`ValueError` at once),
then hands the operation to :meth:`OperationStore._call`, which a concrete store implements
by running it in one transaction somewhere off the loop. So a store for another database is a
new ``_call`` with ``open`` and ``close``, and the operations do not change.

**SQLite.** :class:`SQLiteStore` runs operations on one connection owned by one worker thread
(``_sqlite.Worker``): the loop queues a job and awaits a future; the worker group-commits
whatever is queued (one transaction, a ``SAVEPOINT`` per job) and wakes the loop once per
batch. Many concurrent streams therefore share commits instead of queueing for one commit
each. Each operation is atomic; separate operations are not atomic together (they may land in
different batches), so what must be written together is one operation
(:meth:`Store.add_exchange`). A job whose awaiting task was cancelled still runs: an answer
being saved at shutdown is saved.

**Files and concurrency.** The database runs in WAL mode with ``synchronous=NORMAL`` (a commit
is durable once the WAL is synced at checkpoint; a power cut may lose the last commits, never
corrupt the file) and a busy timeout, so ``wenxin keys`` (:class:`SyncKeyAdmin`, another
process) can create and revoke keys while the server runs: readers never block, writers wait
for each other for at most ``busy_timeout`` seconds. The data directory is created ``0700``
and the database file ``0600`` (SQLite gives its ``-wal`` and ``-shm`` files the same mode).

**PostgreSQL.** :class:`PostgresStore` runs each operation in its own transaction on a pool
of ``pool_size`` connections (``_postgres.Runner``): a wait for a connection is bounded by
``pool_timeout`` and ends in :class:`StoreUnavailableError` (503 with ``Retry-After`` at the
HTTP edge). Several instances can share the database; see ``Store.mark_streaming_as`` for the
one assumption that does not hold yet.

**Schema.** Opening a store brings the schema up to date one step per transaction
(``_schema.migrate_step``, serialised between processes), or, with ``migrate=False``, only
checks that it is current and refuses to run otherwise (``wenxin db upgrade`` then applies
it). :class:`SyncDatabase` is the synchronous access of ``wenxin db``; :class:`SyncKeyAdmin`
adds the key operations of ``wenxin keys``. Both take a file path or a database URL.

:func:`open_store` turns a database URL into a store: ``postgresql://…`` (or
``postgres://…``) is PostgreSQL, ``sqlite:///path`` or a plain path SQLite.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any, Protocol, Self, TypeVar

from . import _keys, _postgres, _schema, _usage_sql
from ._budgets import Budgets
from ._config import mask_url_password
from ._keys import AmbiguousKeyError, KeyRecord
from ._schema import (
    MESSAGE_STATUSES,
    MIGRATIONS,
    ROLES,
    TITLE_LENGTH,
    Checkpoint,
    ConversationNotFoundError,
    ConversationRecord,
    ExchangeConflictError,
    HistoryMessage,
    MessageNotFoundError,
    MessageRecord,
    StoreError,
    StoreUnavailableError,
    check_choice,
    default_title,
    new_id,
    utc_now,
)
from ._sql import SQLITE, Db, transact
from ._sqlite import Job, Worker, connect, translate_error
from ._usage import UsageRecord
from ._usage_sql import UsageRow

DEFAULT_POOL_SIZE = 10
"""Connections of one process's PostgreSQL pool, unless configured."""
DEFAULT_POOL_TIMEOUT = 5.0
"""Seconds an operation waits for a pooled connection, unless configured."""

__all__ = [
    "MESSAGE_STATUSES",
    "MIGRATIONS",
    "ROLES",
    "TITLE_LENGTH",
    "AmbiguousKeyError",
    "Checkpoint",
    "ConversationNotFoundError",
    "ConversationRecord",
    "ExchangeConflictError",
    "HistoryMessage",
    "MessageNotFoundError",
    "MessageRecord",
    "OperationStore",
    "PostgresStore",
    "SQLiteStore",
    "Store",
    "StoreConfigurationError",
    "StoreError",
    "StoreUnavailableError",
    "SyncDatabase",
    "SyncKeyAdmin",
    "default_title",
    "new_id",
    "open_store",
    "sqlite_path",
    "utc_now",
]

_T = TypeVar("_T")


class StoreConfigurationError(StoreError, ValueError):
    """The store URL names no store this version can open."""


class Store(Protocol):
    """What the server needs from its database. Every method is a coroutine that never
    blocks the event loop; see :class:`OperationStore` for the details of each."""

    async def open(self, *, migrate: bool = True) -> None: ...
    async def close(self) -> None: ...
    async def release_memory(self) -> None: ...
    async def create_conversation(
        self, owner: str, *, title: str | None, model: str, system: str | None
    ) -> ConversationRecord: ...
    async def list_conversations(
        self, owner: str, *, limit: int = 100
    ) -> list[ConversationRecord]: ...
    async def get_conversation(
        self, owner: str, conversation_id: str
    ) -> ConversationRecord | None: ...
    async def get_messages(self, owner: str, conversation_id: str) -> list[MessageRecord]: ...
    async def get_history(
        self, owner: str, conversation_id: str, *, last: int | None = None
    ) -> tuple[ConversationRecord | None, list[HistoryMessage]]: ...
    async def delete_conversation(self, owner: str, conversation_id: str) -> bool: ...
    async def set_title(self, owner: str, conversation_id: str, title: str) -> bool: ...
    async def add_message(
        self,
        owner: str,
        conversation_id: str,
        *,
        role: str,
        content: str,
        model: str | None,
        status: str = "complete",
    ) -> MessageRecord: ...
    async def add_exchange(
        self,
        owner: str,
        conversation_id: str,
        *,
        question: str,
        model: str | None,
        replace: str | None = None,
        producer: str | None = None,
    ) -> tuple[MessageRecord, MessageRecord]: ...
    async def update_message(
        self,
        message_id: str,
        *,
        content: str,
        status: str,
        end_reason: str | None,
        usage: dict[str, int] | None,
        ttft_ms: float | None,
        total_ms: float | None,
        generated_chars: int | None,
        delivered_chars: int | None,
        extras: dict[str, Any] | None = None,
        producer: str | None = None,
    ) -> None: ...
    async def take_over_message(self, message_id: str, producer: str) -> bool: ...
    async def checkpoint(self, checkpoints: list[Checkpoint]) -> int: ...
    async def mark_streaming_as(
        self, end_reason: str, producers: Sequence[str | None] | None = None
    ) -> int: ...
    async def streaming_producers(self) -> list[str | None]: ...
    async def create_key(
        self, name: str, *, rpm: int | None, tpm: int | None, max_streams: int | None
    ) -> tuple[KeyRecord, str]: ...
    async def list_keys(self) -> list[KeyRecord]: ...
    async def revoke_key(self, key_id_or_prefix: str) -> KeyRecord | None: ...
    async def find_key(self, secret: str) -> KeyRecord | None: ...
    async def count_active_keys(self) -> int: ...
    async def ping(self) -> None: ...
    async def record_usage(self, records: Sequence[UsageRecord]) -> int: ...
    async def record_taken_over_usage(
        self, estimate: UsageRecord, records: Sequence[UsageRecord]
    ) -> int: ...
    async def spent_since(self, key_id: str, first_day: str) -> tuple[int, int]: ...
    async def usage_rows(
        self, first_day: str, last_day: str, key_id: str | None = None
    ) -> list[UsageRow]: ...


class OperationStore:
    """The :class:`Store` methods as operations of ``_schema``, for a subclass that runs
    them (:meth:`_call`), opens and closes (see the module docstring)."""

    async def _call(self, op: Callable[[Db], _T], *, write: bool, bare: bool = False) -> _T:
        """Run ``op`` in one transaction off the event loop; its result. ``bare``: ``op``
        is one statement, or reads needing no common snapshot, so a database that commits
        each statement on its own may run it without a transaction around it (PostgreSQL:
        one round trip instead of three); SQLite's worker runs every job in its batch's
        transaction regardless."""
        raise NotImplementedError

    async def open(self, *, migrate: bool = True) -> None:
        """Connect and prepare the schema (the subclass's)."""
        raise NotImplementedError

    async def close(self) -> None:
        """Finish the queued work and disconnect (the subclass's). Idempotent."""
        raise NotImplementedError

    async def release_memory(self) -> None:
        """Give back what the database driver caches in this process, once a peak has
        passed (``server/_gc.py``); nothing by default."""

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def _prepare_schema(self, migrate: bool) -> None:
        """Bring the schema up to date, one step per transaction (``migrate``), or refuse a
        database whose schema is not current."""
        if migrate:
            while await self._call(_schema.migrate_step, write=True) is not None:
                pass
        else:
            require_current(await self._call(_schema.schema_version, write=True))

    async def create_conversation(
        self, owner: str, *, title: str | None, model: str, system: str | None
    ) -> ConversationRecord:
        """A new, empty conversation (``title`` ``None``: named after the first question)."""
        return await self._call(
            lambda db: _schema.create_conversation(db, owner, title, model, system),
            write=True,
            bare=True,
        )

    async def list_conversations(self, owner: str, *, limit: int = 100) -> list[ConversationRecord]:
        """``owner``'s conversations, most recently updated first (``limit`` within 1-1000)."""
        limit = max(1, min(limit, 1000))
        return await self._call(
            lambda db: _schema.list_conversations(db, owner, limit), write=False, bare=True
        )

    async def get_conversation(self, owner: str, conversation_id: str) -> ConversationRecord | None:
        """The conversation, or ``None`` if it is missing or another owner's."""
        return await self._call(
            lambda db: _schema.get_conversation(db, owner, conversation_id),
            write=False,
            bare=True,
        )

    async def get_messages(self, owner: str, conversation_id: str) -> list[MessageRecord]:
        """The messages in order (``[]`` if the conversation is missing or not ``owner``'s)."""
        return await self._call(
            lambda db: _schema.get_messages(db, owner, conversation_id), write=False
        )

    async def get_history(
        self, owner: str, conversation_id: str, *, last: int | None = None
    ) -> tuple[ConversationRecord | None, list[HistoryMessage]]:
        """The conversation and its messages in order (its ``last`` messages when given, as
        much of each as a history needs), in one operation (``(None, [])`` if it is missing or
        not ``owner``'s): what an ask reads before it is sent.

        Raises:
            ValueError: a negative ``last``.
        """
        if last is not None and last < 0:
            raise ValueError("last must not be negative")
        return await self._call(
            lambda db: _schema.get_history(db, owner, conversation_id, last),
            write=False,
            bare=True,
        )

    async def delete_conversation(self, owner: str, conversation_id: str) -> bool:
        """Delete the conversation and its messages; whether it existed and was ``owner``'s."""
        return await self._call(
            lambda db: _schema.delete_conversation(db, owner, conversation_id), write=True
        )

    async def set_title(self, owner: str, conversation_id: str, title: str) -> bool:
        """Rename the conversation; whether it existed and was ``owner``'s (no effect
        otherwise)."""
        now = utc_now()
        return await self._call(
            lambda db: _schema.set_title(db, owner, conversation_id, title, now),
            write=True,
            bare=True,
        )

    async def add_message(
        self,
        owner: str,
        conversation_id: str,
        *,
        role: str,
        content: str,
        model: str | None,
        status: str = "complete",
    ) -> MessageRecord:
        """Append a message (the conversation's ``updated_at`` and ``message_count`` follow;
        an untitled conversation is named after its first user message).

        Raises:
            ConversationNotFoundError: no such conversation of ``owner``.
            ValueError: an unknown ``role`` or ``status``.
        """
        check_choice("role", role, ROLES)
        check_choice("status", status, MESSAGE_STATUSES)
        return await self._call(
            lambda db: _schema.add_message(
                db, owner, conversation_id, role, content, model, status
            ),
            write=True,
        )

    async def add_exchange(
        self,
        owner: str,
        conversation_id: str,
        *,
        question: str,
        model: str | None,
        replace: str | None = None,
        producer: str | None = None,
    ) -> tuple[MessageRecord, MessageRecord]:
        """Append a question (``complete``) and its answer (``streaming``, empty, produced by
        the instance ``producer``) in one transaction: both are stored or neither. The two
        records, in that order. With ``replace`` (the id of the last question), that question
        and its answer are deleted in the same transaction (regenerate, retry, edit).

        Raises:
            ConversationNotFoundError: no such conversation of ``owner``.
            MessageNotFoundError: ``replace`` names no question of the conversation.
            ExchangeConflictError: ``replace`` is not the last question, or its answer is
                still streaming.
        """
        return await self._call(
            lambda db: _schema.add_exchange(
                db, owner, conversation_id, question, model, replace, producer
            ),
            write=True,
            # without a replace, one pipeline: atomic on its own (PostgreSQL's implicit
            # transaction of a pipeline); a replace reads and decides, in a transaction
            bare=replace is None,
        )

    async def update_message(
        self,
        message_id: str,
        *,
        content: str,
        status: str,
        end_reason: str | None,
        usage: dict[str, int] | None,
        ttft_ms: float | None,
        total_ms: float | None,
        generated_chars: int | None,
        delivered_chars: int | None,
        extras: dict[str, Any] | None = None,
        producer: str | None = None,
    ) -> None:
        """Record a message's final (or latest) state; no effect if it is gone (its
        conversation was deleted while it streamed), nor, with ``producer``, if another
        instance took the answer over (fenced)."""
        check_choice("status", status, MESSAGE_STATUSES)
        await self._call(
            lambda db: _schema.update_message(
                db, message_id, content, status, end_reason, usage, ttft_ms, total_ms,
                generated_chars, delivered_chars, extras, producer,
            ),
            write=True,
            bare=True,
        )  # fmt: skip

    async def take_over_message(self, message_id: str, producer: str) -> bool:
        """The streaming answer ``message_id`` is produced by ``producer`` from now on (a
        takeover; see ``_schema.take_over_message``); whether it was."""
        return await self._call(
            lambda db: _schema.take_over_message(db, message_id, producer), write=True
        )

    async def checkpoint(self, checkpoints: list[Checkpoint]) -> int:
        """Write the text so far of answers still streaming, all in one operation (SQLite: one
        job of a batch's transaction; PostgreSQL: one pipeline, each row committed on its
        own); answers that ended meanwhile keep their final record. How many rows were
        written."""
        # bare: each row is a checkpoint of its own (one that fails is written again by the
        # next tick), and psycopg sends the rows as one pipeline
        return await self._call(
            lambda db: _schema.checkpoint_answers(db, checkpoints), write=True, bare=True
        )

    async def mark_streaming_as(
        self, end_reason: str, producers: Sequence[str | None] | None = None
    ) -> int:
        """Messages still ``streaming`` become ``partial`` with ``end_reason``, keeping their
        last checkpoint (at start-up: ``server_crashed``; at shutdown, for an answer whose
        final record could not be written: ``server_shutdown``); how many.

        ``producers`` limits it to the answers of those instances (each streaming answer
        names its producer): a server shutting down ends only its own, and with several
        instances sharing the database only the answers of instances that are gone are
        ended as crashed (``Server`` asks the fleet's Redis who is alive). Omitted: every
        streaming answer — right only for one server per database."""
        return await self._call(
            lambda db: _schema.mark_streaming_as(db, end_reason, producers), write=True
        )

    async def streaming_producers(self) -> list[str | None]:
        """The instances named by answers still ``streaming``."""
        return await self._call(_schema.streaming_producers, write=False)

    async def create_key(
        self, name: str, *, rpm: int | None, tpm: int | None, max_streams: int | None
    ) -> tuple[KeyRecord, str]:
        """Create an API key: its record and its secret, which is never available again."""
        return await self._call(_schema.create_key_op(name, rpm, tpm, max_streams), write=True)

    async def list_keys(self) -> list[KeyRecord]:
        """Every key (revoked ones too), oldest first."""
        return await self._call(_keys.select_keys, write=False)

    async def revoke_key(self, key_id_or_prefix: str) -> KeyRecord | None:
        """Revoke a key by id, full key or display prefix; ``None`` if nothing matches."""
        return await self._call(_schema.revoke_key_op(key_id_or_prefix), write=True)

    async def find_key(self, secret: str) -> KeyRecord | None:
        """The active key ``secret`` (by its SHA-256), else ``None``."""
        return await self._call(
            lambda db: _keys.select_key_by_secret(db, secret), write=False, bare=True
        )

    async def count_active_keys(self) -> int:
        """How many keys are not revoked (none: the server runs in dev mode)."""
        return await self._call(_keys.count_active_keys, write=False)

    async def ping(self) -> None:
        """One round trip to the database (``/readyz``).

        Raises:
            StoreUnavailableError: it does not answer (PostgreSQL away, its pool exhausted).
        """
        await self._call(_schema.ping, write=False)

    async def record_usage(self, records: Sequence[UsageRecord]) -> int:
        """Store the usage records of upstream requests — of one answer, or of every answer
        that ended in a checkpoint interval (``_usage_writer``) — in one transaction."""
        rows = list(records)
        return await self._call(lambda db: _usage_sql.insert_usage(db, rows), write=True)

    async def record_taken_over_usage(
        self, estimate: UsageRecord, records: Sequence[UsageRecord]
    ) -> int:
        """Store a taker's usage rows of an answer, its ``estimate`` of the earlier instances'
        spend only if none of them stored rows (``_usage_sql.insert_taken_over``; one
        transaction)."""
        rows = list(records)
        return await self._call(
            lambda db: _usage_sql.insert_taken_over(db, estimate, rows), write=True
        )

    async def spent_since(self, key_id: str, first_day: str) -> tuple[int, int]:
        """(tokens, nano-CNY) ``key_id`` spent from Beijing day ``first_day`` on."""
        return await self._call(
            lambda db: _usage_sql.spent_since(db, key_id, first_day), write=False
        )

    async def usage_rows(
        self, first_day: str, last_day: str, key_id: str | None = None
    ) -> list[UsageRow]:
        """Usage grouped by Beijing day, key, model and channel (``_usage_sql.usage_rows``)."""
        return await self._call(
            lambda db: _usage_sql.usage_rows(db, first_day, last_day, key_id), write=False
        )


def _shrink_memory(db: Db) -> None:
    db.conn.execute("PRAGMA shrink_memory", ())


class SQLiteStore(OperationStore):
    """The :class:`Store` over one SQLite file (see the module docstring).

    ``path`` is the database file (created with its directory) or ``":memory:"``;
    ``busy_timeout`` is how long a write waits for another process's (``wenxin keys``).
    Use ``async with SQLiteStore(path) as store`` or call :meth:`open` / :meth:`close`.
    Methods raise :class:`StoreError` when the database fails or the store is not open.
    """

    def __init__(self, path: str | os.PathLike[str], *, busy_timeout: float = 5.0) -> None:
        self.path = os.fspath(path)
        self._busy_timeout = busy_timeout
        self._worker: Worker | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"SQLiteStore({self.path!r})"

    async def _call(self, op: Callable[[Db], _T], *, write: bool, bare: bool = False) -> _T:
        worker = self._worker
        if worker is None or self._closed:
            raise StoreError("the store is not open")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[_T] = loop.create_future()
        worker.submit(Job(op, write, future, loop))
        return await future

    @property
    def stats(self) -> tuple[int, int]:
        """``(jobs, transactions)`` run so far: how much group commit saved."""
        return (0, 0) if self._worker is None else (self._worker.jobs, self._worker.batches)

    async def open(self, *, migrate: bool = True) -> None:
        """Start the worker, open the database (creating it) and migrate its schema (or, with
        ``migrate`` false, refuse a schema that is not current)."""
        if self._worker is not None:
            raise StoreError("the store was already opened")
        path = self.path
        self._worker = Worker(path, self._busy_timeout, lambda exc: translate_error(exc, path))
        self._worker.start()
        try:
            await self._prepare_schema(migrate)
        except BaseException:
            await self.close()
            raise

    async def release_memory(self) -> None:
        """Empty the connection's page cache (``PRAGMA shrink_memory``). The cache fills to
        its size (SQLite's default, 2 MiB) under load and keeps it; after a peak those pages
        are memory the process does not get back otherwise (``bench/MEMORY.md``). The next
        reads come from the file, most likely in the system's cache."""
        await self._call(_shrink_memory, write=False)

    async def close(self) -> None:
        """Finish the queued work, close the database and stop the worker. Idempotent."""
        worker = self._worker
        if worker is None or self._closed:
            return
        self._closed = True
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        worker.submit(Job(None, False, done, loop))
        await asyncio.shield(done)
        worker.join()  # it delivered its last result and is returning: no real wait


class PostgresStore(OperationStore):
    """The :class:`Store` over a PostgreSQL database (see the module docstring).

    ``url`` is a libpq URL (``postgresql://user:password@host:port/db?options``);
    ``pool_size`` connections are opened at :meth:`open` and ``pool_timeout`` bounds every
    wait for one. Methods raise :class:`StoreUnavailableError` when no connection became
    free in time or the database cannot be reached, :class:`StoreError` when it fails.
    """

    def __init__(
        self,
        url: str,
        *,
        pool_size: int = DEFAULT_POOL_SIZE,
        pool_timeout: float = DEFAULT_POOL_TIMEOUT,
    ) -> None:
        self.url = url
        self._runner = _postgres.Runner(url, size=pool_size, timeout=pool_timeout)
        self._closed = False

    def __repr__(self) -> str:
        return f"PostgresStore({mask_url_password(self.url)!r})"

    async def _call(self, op: Callable[[Db], _T], *, write: bool, bare: bool = False) -> _T:
        if self._closed:
            raise StoreError("the store is not open")
        return await self._runner.call(op, write=write, bare=bare)

    @property
    def stats(self) -> tuple[int, int]:
        """``(operations, transactions)`` run so far (the same here: one transaction each)."""
        return (self._runner.operations, self._runner.operations)

    def pool_stats(self) -> dict[str, int]:
        """The pool's counters (see ``_postgres.Runner.stats``), for metrics."""
        return self._runner.stats()

    async def open(self, *, migrate: bool = True) -> None:
        """Connect, open the pool and migrate the schema (or, with ``migrate`` false, refuse
        a schema that is not current)."""
        if self._runner.is_open or self._closed:
            raise StoreError("the store was already opened")
        await self._runner.open()
        try:
            await self._prepare_schema(migrate)
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """Let running operations finish and close the pool. Idempotent."""
        if self._closed:
            return
        self._closed = True
        await self._runner.close()


def require_current(current: int) -> None:
    """Refuse a schema that is not exactly this code's (``--migrate off``).

    Raises:
        StoreError: the database is newer than this code, or needs ``wenxin db upgrade``.
    """
    _schema.check_version(current)
    if current < len(MIGRATIONS):
        raise StoreError(
            f"the database has schema version {current} and this wenxin-stream needs "
            f"{len(MIGRATIONS)}: run `wenxin db upgrade` (or start with --migrate auto)"
        )


class SyncDatabase:
    """One synchronous connection to the store's database, used from the calling thread:
    ``wenxin db``, and the base of :class:`SyncKeyAdmin`. ``database`` is a file path or a
    database URL (see :func:`open_store`); ``timeout`` is SQLite's busy timeout, or the
    connect timeout of PostgreSQL. Nothing is migrated on open.

    Raises :class:`StoreError` when the database cannot be opened or used.
    """

    def __init__(self, database: str | os.PathLike[str], *, busy_timeout: float = 5.0) -> None:
        text = os.fspath(database)
        self._translate: Callable[[BaseException], BaseException]
        if _postgres.is_postgres_url(text):
            self.path: str | None = None
            self.location = mask_url_password(text)
            """Where the database is, for messages (a URL's password masked)."""
            self._translate = lambda exc: _postgres.translate_error(exc, text)
            conn = _postgres.connect(text, timeout=busy_timeout)
            self._close: Callable[[], None] = conn.close
            self._db = _postgres.db_of(conn)
        else:
            path = sqlite_path(text)
            self.path = self.location = path
            self._translate = lambda exc: translate_error(exc, path)
            try:
                sqlite = connect(path, busy_timeout)
            except (OSError, sqlite3.Error) as exc:
                raise translate_error(exc, path) from None
            self._close = sqlite.close
            self._db = Db(sqlite, SQLITE)

    def _run(self, op: Callable[[Db], _T], *, write: bool) -> _T:
        try:
            return transact(self._db, op, write=write)
        except Exception as exc:
            error = self._translate(exc)
            if error is exc:
                raise
            raise error from None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection."""
        self._close()

    def schema_version(self) -> int:
        """The database's schema version (0: new); :data:`MIGRATIONS` has the code's."""
        return self._run(_schema.schema_version, write=True)

    def upgrade(self, on_step: Callable[[int], None] | None = None) -> list[int]:
        """Apply every pending schema step, each in its own transaction; the versions reached,
        in order (``on_step`` is told each as it commits).

        Raises:
            StoreError: the database is newer than this code, or a step failed (the database
                stays at the last step that committed).
        """
        done: list[int] = []
        while (version := self._run(_schema.migrate_step, write=True)) is not None:
            done.append(version)
            if on_step is not None:
                on_step(version)
        return done


class SyncKeyAdmin(SyncDatabase):
    """Synchronous key administration for ``wenxin keys``: its own connection, used from
    the calling thread, safe while a server uses the same database (SQLite: WAL and a busy
    timeout). The schema is brought up to date on open.
    Raises :class:`StoreError` when the database cannot be opened or used."""

    def __init__(self, database: str | os.PathLike[str], *, busy_timeout: float = 5.0) -> None:
        super().__init__(database, busy_timeout=busy_timeout)
        try:
            self.upgrade()
        except BaseException:
            self.close()
            raise

    def create_key(
        self,
        name: str,
        *,
        rpm: int | None,
        tpm: int | None,
        max_streams: int | None,
        adopt_from: str | None = None,
        budgets: Budgets | None = None,
    ) -> tuple[KeyRecord, str]:
        """Create a key: its record and its secret (shown once). With ``adopt_from``, the
        conversations of that owner become the new key's, in the same transaction."""
        op = _schema.create_key_op(
            name, rpm, tpm, max_streams, adopt_from=adopt_from, budgets=budgets
        )
        return self._run(op, write=True)

    def update_key(self, key_id_or_prefix: str, changes: dict[str, int | None]) -> KeyRecord | None:
        """Change a key's limits or budgets (``None``: unset); the new record, ``None`` if
        nothing matches (a revoked key comes back unchanged)."""
        return self._run(_schema.update_key_op(key_id_or_prefix, changes), write=True)

    def usage_rows(
        self, first_day: str, last_day: str, key_id: str | None = None
    ) -> list[UsageRow]:
        """Usage grouped by Beijing day, key, model and channel."""
        return self._run(
            lambda db: _usage_sql.usage_rows(db, first_day, last_day, key_id), write=False
        )

    def count_conversations(self, owner: str) -> int:
        """How many conversations ``owner`` has (``local``: the dev-mode ones)."""
        return self._run(lambda db: _schema.count_conversations(db, owner), write=False)

    def list_keys(self) -> list[KeyRecord]:
        """Every key, oldest first."""
        return self._run(_keys.select_keys, write=False)

    def revoke_key(self, key_id_or_prefix: str) -> KeyRecord | None:
        """Revoke a key by id, full key, name or display prefix; ``None`` if nothing
        matches."""
        return self._run(_schema.revoke_key_op(key_id_or_prefix), write=True)

    def resolve_key(self, key_id_or_prefix: str) -> KeyRecord | None:
        """The key named by an id, full key, name or display prefix, without changing it."""
        return self._run(lambda db: _keys.resolve_key_row(db, key_id_or_prefix), write=False)

    def count_active_keys(self) -> int:
        """How many keys are not revoked."""
        return self._run(_keys.count_active_keys, write=False)


def sqlite_path(url: str) -> str:
    """The SQLite file a database URL names. SQLite URLs follow SQLAlchemy's convention,
    ``sqlite:///`` + the path: ``sqlite:///data/wenxin.db`` is relative,
    ``sqlite:////srv/wenxin.db`` absolute; a URL without a scheme is a plain file path.

    Raises:
        StoreConfigurationError: no path, a PostgreSQL URL (no file), or another scheme.
    """
    text = url.strip()
    scheme, sep, rest = text.partition("://")
    scheme = scheme.lower().split("+")[0]
    if sep and scheme in ("postgresql", "postgres"):
        if "+" in text.partition("://")[0]:
            raise StoreConfigurationError(
                "name a PostgreSQL database as postgresql://user:password@host:port/database "
                "(wenxin-stream chooses the driver itself)"
            )
        raise StoreConfigurationError(
            f"{mask_url_password(text)} is a PostgreSQL database, not a SQLite file"
        )
    if sep and scheme != "sqlite":
        raise StoreConfigurationError(
            f"unsupported database URL {text.split('://')[0]}://…: use sqlite:///path/to/"
            "wenxin.db, a file path, or postgresql://user:password@host:port/database"
        )
    if sep and not rest.startswith("/"):
        raise StoreConfigurationError(f"a SQLite URL is sqlite:///<path>, got {text!r}")
    path = rest[1:] if sep else text
    if not path:
        raise StoreConfigurationError(f"no database path in {url!r}")
    return path


def open_store(
    url: str,
    *,
    pool_size: int = DEFAULT_POOL_SIZE,
    pool_timeout: float = DEFAULT_POOL_TIMEOUT,
) -> SQLiteStore | PostgresStore:
    """The store named by ``url``, not yet opened: ``postgresql://…`` (or ``postgres://…``)
    is a :class:`PostgresStore` with a pool of ``pool_size`` connections and waits bounded by
    ``pool_timeout``; anything else names a SQLite file (see :func:`sqlite_path`).

    Raises:
        StoreConfigurationError: no path, or an unsupported scheme (``postgres+asyncpg://``
            included: the driver is psycopg's, chosen here).
    """
    if _postgres.is_postgres_url(url):
        return PostgresStore(url.strip(), pool_size=pool_size, pool_timeout=pool_timeout)
    return SQLiteStore(sqlite_path(url))
