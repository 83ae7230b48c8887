"""The store of ``wenxin serve``: conversations, messages and API keys behind one protocol.

Theory of operation
===================

:class:`Store` is what the server needs from its database: coroutines that never block the
event loop. Every method is one *operation* of ``_schema`` (a plain function of a
:class:`~._sql.Db`), and :class:`OperationStore` is that mapping, written once: each method
checks its arguments on the caller's side (a bad ``role`` is a :class:`ValueError` at once),
then hands the operation to :meth:`OperationStore._call`, which a concrete store implements
by running it in one transaction somewhere off the loop. So a store for another database is a
new ``_call`` with ``open`` and ``close`` — PostgreSQL's, with a psycopg connection under the
same :class:`~._sql.Db` and dialect, is the next issue's — and the operations do not change.

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

:func:`open_store` turns a database URL into a store (SQLite only, for now).
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import Callable
from types import TracebackType
from typing import Any, Protocol, Self, TypeVar

from . import _keys, _schema
from ._keys import AmbiguousKeyError, KeyRecord
from ._schema import (
    MESSAGE_STATUSES,
    MIGRATIONS,
    ROLES,
    TITLE_LENGTH,
    Checkpoint,
    ConversationNotFoundError,
    ConversationRecord,
    MessageRecord,
    StoreError,
    check_choice,
    default_title,
    new_id,
    utc_now,
)
from ._sql import SQLITE, Db, transact
from ._sqlite import Job, Worker, connect, translate_error

__all__ = [
    "MESSAGE_STATUSES",
    "MIGRATIONS",
    "ROLES",
    "TITLE_LENGTH",
    "AmbiguousKeyError",
    "Checkpoint",
    "ConversationNotFoundError",
    "ConversationRecord",
    "MessageRecord",
    "OperationStore",
    "SQLiteStore",
    "Store",
    "StoreConfigurationError",
    "StoreError",
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

    async def open(self) -> None: ...
    async def close(self) -> None: ...
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
        self, owner: str, conversation_id: str, *, question: str, model: str | None
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
    ) -> None: ...
    async def checkpoint(self, checkpoints: list[Checkpoint]) -> int: ...
    async def mark_streaming_as(self, end_reason: str) -> int: ...
    async def create_key(
        self, name: str, *, rpm: int | None, tpm: int | None, max_streams: int | None
    ) -> tuple[KeyRecord, str]: ...
    async def list_keys(self) -> list[KeyRecord]: ...
    async def revoke_key(self, key_id_or_prefix: str) -> KeyRecord | None: ...
    async def find_key(self, secret: str) -> KeyRecord | None: ...
    async def count_active_keys(self) -> int: ...


class OperationStore:
    """The :class:`Store` methods as operations of ``_schema``, for a subclass that runs
    them (:meth:`_call`), opens and closes (see the module docstring)."""

    async def _call(self, op: Callable[[Db], _T], *, write: bool) -> _T:
        """Run ``op`` in one transaction off the event loop; its result."""
        raise NotImplementedError

    async def create_conversation(
        self, owner: str, *, title: str | None, model: str, system: str | None
    ) -> ConversationRecord:
        """A new, empty conversation (``title`` ``None``: named after the first question)."""
        return await self._call(
            lambda db: _schema.create_conversation(db, owner, title, model, system), write=True
        )

    async def list_conversations(self, owner: str, *, limit: int = 100) -> list[ConversationRecord]:
        """``owner``'s conversations, most recently updated first (``limit`` within 1-1000)."""
        limit = max(1, min(limit, 1000))
        return await self._call(
            lambda db: _schema.list_conversations(db, owner, limit), write=False
        )

    async def get_conversation(self, owner: str, conversation_id: str) -> ConversationRecord | None:
        """The conversation, or ``None`` if it is missing or another owner's."""
        return await self._call(
            lambda db: _schema.get_conversation(db, owner, conversation_id), write=False
        )

    async def get_messages(self, owner: str, conversation_id: str) -> list[MessageRecord]:
        """The messages in order (``[]`` if the conversation is missing or not ``owner``'s)."""
        return await self._call(
            lambda db: _schema.get_messages(db, owner, conversation_id), write=False
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
            lambda db: _schema.set_title(db, owner, conversation_id, title, now), write=True
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
        self, owner: str, conversation_id: str, *, question: str, model: str | None
    ) -> tuple[MessageRecord, MessageRecord]:
        """Append a question (``complete``) and its answer (``streaming``, empty) in one
        transaction: both are stored or neither. The two records, in that order.

        Raises:
            ConversationNotFoundError: no such conversation of ``owner``.
        """
        return await self._call(
            lambda db: _schema.add_exchange(db, owner, conversation_id, question, model),
            write=True,
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
    ) -> None:
        """Record a message's final (or latest) state; no effect if it is gone (its
        conversation was deleted while it streamed)."""
        check_choice("status", status, MESSAGE_STATUSES)
        await self._call(
            lambda db: _schema.update_message(
                db, message_id, content, status, end_reason, usage, ttft_ms, total_ms,
                generated_chars, delivered_chars, extras,
            ),
            write=True,
        )  # fmt: skip

    async def checkpoint(self, checkpoints: list[Checkpoint]) -> int:
        """Write the text so far of answers still streaming, all in one operation (one job,
        one transaction); answers that ended meanwhile keep their final record. How many
        rows were written."""
        return await self._call(lambda db: _schema.checkpoint_answers(db, checkpoints), write=True)

    async def mark_streaming_as(self, end_reason: str) -> int:
        """Every message still ``streaming`` becomes ``partial`` with ``end_reason``, keeping
        its last checkpoint (at start-up: ``server_crashed``; at shutdown, for an answer
        whose final record could not be written: ``server_shutdown``); how many.

        **One server per database.** Every ``streaming`` row is taken to be this server's, so
        a start-up would end the answers another live server is streaming. Several
        instances sharing a database (the scale-out issue) need each streaming row to name
        the instance producing it and a lease that instance renews (the checkpoint tick
        already writes each running answer periodically: it can carry the renewal); a
        start-up, or a sweeper, then ends only rows whose lease expired."""
        return await self._call(lambda db: _schema.mark_streaming_as(db, end_reason), write=True)

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
        return await self._call(lambda db: _keys.select_key_by_secret(db, secret), write=False)

    async def count_active_keys(self) -> int:
        """How many keys are not revoked (none: the server runs in dev mode)."""
        return await self._call(_keys.count_active_keys, write=False)


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

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def _call(self, op: Callable[[Db], _T], *, write: bool) -> _T:
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

    async def open(self) -> None:
        """Start the worker, open the database (creating it) and migrate its schema."""
        if self._worker is not None:
            raise StoreError("the store was already opened")
        path = self.path
        self._worker = Worker(path, self._busy_timeout, lambda exc: translate_error(exc, path))
        self._worker.start()
        try:
            await self._call(_schema.migrate, write=True)
        except BaseException:
            await self.close()
            raise

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


class SyncKeyAdmin:
    """Synchronous key administration for ``wenxin keys``: its own connection, used from
    the calling thread, safe while a server uses the same file (WAL, busy timeout).
    Raises :class:`StoreError` when the database cannot be opened or used."""

    def __init__(self, path: str | os.PathLike[str], *, busy_timeout: float = 5.0) -> None:
        self.path = os.fspath(path)
        try:
            self._conn = connect(self.path, busy_timeout)
        except (OSError, sqlite3.Error) as exc:
            raise translate_error(exc, self.path) from None
        self._db = Db(self._conn, SQLITE)
        try:
            self._run(_schema.migrate, write=True)
        except BaseException:
            self.close()
            raise

    def _run(self, op: Callable[[Db], _T], *, write: bool) -> _T:
        try:
            return transact(self._db, op, write=write)
        except (OSError, sqlite3.Error) as exc:
            raise translate_error(exc, self.path) from None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection."""
        self._conn.close()

    def create_key(
        self,
        name: str,
        *,
        rpm: int | None,
        tpm: int | None,
        max_streams: int | None,
        adopt_from: str | None = None,
    ) -> tuple[KeyRecord, str]:
        """Create a key: its record and its secret (shown once). With ``adopt_from``, the
        conversations of that owner become the new key's, in the same transaction."""
        op = _schema.create_key_op(name, rpm, tpm, max_streams, adopt_from=adopt_from)
        return self._run(op, write=True)

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
        StoreConfigurationError: no path, PostgreSQL (planned), or another scheme.
    """
    text = url.strip()
    scheme, sep, rest = text.partition("://")
    scheme = scheme.lower().split("+")[0]
    if sep and scheme in ("postgresql", "postgres"):
        raise StoreConfigurationError(
            "PostgreSQL support is planned: the schema and SQL are portable (see _schema.py); "
            "use sqlite:///path/to/wenxin.db for now"
        )
    if sep and scheme != "sqlite":
        raise StoreConfigurationError(
            f"unsupported database URL {text.split('://')[0]}://…: use sqlite:///path/to/"
            "wenxin.db or a file path"
        )
    if sep and not rest.startswith("/"):
        raise StoreConfigurationError(f"a SQLite URL is sqlite:///<path>, got {text!r}")
    path = rest[1:] if sep else text
    if not path:
        raise StoreConfigurationError(f"no database path in {url!r}")
    return path


def open_store(url: str) -> SQLiteStore:
    """The store named by ``url`` (see :func:`sqlite_path`), not yet opened.

    Raises:
        StoreConfigurationError: no path, PostgreSQL (planned), or another scheme.
    """
    return SQLiteStore(sqlite_path(url))
