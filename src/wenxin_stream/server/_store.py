"""Conversations, messages and API keys of ``wenxin serve``, in SQLite (PostgreSQL-ready).

Theory of operation
===================

**One thread owns the database.** :class:`SQLiteStore` opens one ``sqlite3`` connection in
one dedicated worker thread (the machinery is in ``_sqlite``) and never touches it from
anywhere else. Every async method wraps
its work in a small function of the connection, queues it, and awaits a future; the event loop
never waits for the disk. The worker takes a job and, in the same breath, every job queued
behind it (up to ``_sqlite.BATCH_LIMIT``), runs them in **one transaction** (each in its own
``SAVEPOINT``, so one failing job does not undo the others), commits once, then resolves all
their futures with a single wake-up of the loop. Many concurrent streams therefore share
commits instead of queueing for one commit each (group commit), and the loop is woken once per
batch, not once per job. A job whose awaiting task was cancelled still runs: an answer being
saved at shutdown is saved.

**Files and concurrency.** The database runs in WAL mode with ``synchronous=NORMAL`` (a commit
is durable once the WAL is synced at checkpoint; a power cut may lose the last commits, never
corrupt the file) and a busy timeout, so ``wenxin keys`` (:class:`SyncKeyAdmin`, another
process) can create and revoke keys while the server runs: readers never block, writers wait
for each other for at most ``busy_timeout`` seconds. The data directory is created ``0700``
and the database file ``0600`` (SQLite gives its ``-wal`` and ``-shm`` files the same mode).

**Schema.** Created on open, versioned in ``schema_version``; :data:`MIGRATIONS` is a list of
steps applied in order (append one to change the schema; never edit a shipped step). A
database newer than this code is refused.

**Portability.** The SQL is written once, for both SQLite and PostgreSQL: ``TEXT``,
``INTEGER``, ``DOUBLE PRECISION``, ``CREATE … IF NOT EXISTS``, ``LIMIT``, plain subqueries; no
``INSERT OR …``, no ``AUTOINCREMENT``, no ``rowid``; ids are generated here, times are ISO
8601 UTC strings of fixed width (so they sort as text), ``usage`` is JSON text. Parameters are
written as ``?`` and converted by ``_sqlite.Dialect.sql`` (the one place); related rows are
deleted explicitly rather than through ``ON DELETE CASCADE``. A PostgreSQL store would be a
second worker (an asyncpg/psycopg pool) over the same SQL and the same operation functions.

**Ownership.** Every conversation has an ``owner`` (an API key id, or ``local`` in dev mode);
every query filters by it, and another owner's conversation is indistinguishable from a
missing one (the API answers 404 for both).
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Protocol, Self, TypeVar

from .._exceptions import WenxinError
from . import _keys
from ._keys import KEYS_TABLE, AmbiguousKeyError, KeyRecord
from ._sqlite import Db, Job, Worker, connect, transact

__all__ = [
    "MESSAGE_STATUSES",
    "MIGRATIONS",
    "ROLES",
    "TITLE_LENGTH",
    "AmbiguousKeyError",
    "ConversationNotFoundError",
    "ConversationRecord",
    "MessageRecord",
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

MESSAGE_STATUSES = frozenset({"complete", "partial", "streaming"})
"""A message is ``complete``, ``partial`` (ended early: see its ``end_reason``) or still
``streaming``."""

ROLES = frozenset({"user", "assistant", "system"})
"""Roles a stored message may have."""

TITLE_LENGTH = 30
"""An untitled conversation is named after the first characters of its first question."""

_T = TypeVar("_T")


def utc_now() -> str:
    """The current time as fixed-width ISO 8601 UTC (``2025-01-31T08:00:00.123456Z``), which
    sorts correctly as text."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def new_id(prefix: str) -> str:
    """A short random url-safe id: ``prefix`` + 16 characters (96 bits)."""
    return prefix + secrets.token_urlsafe(12)


def default_title(question: str) -> str:
    """The title of a conversation named after its first question: its first
    :data:`TITLE_LENGTH` characters, whitespace collapsed."""
    return " ".join(question.split())[:TITLE_LENGTH]


# -- records and errors ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConversationRecord:
    """A conversation: ``owner`` is the API key id (``local`` in dev mode); ``title`` is
    empty until set or taken from the first question; times are ISO 8601 UTC."""

    id: str
    owner: str
    title: str
    model: str
    system: str | None
    created_at: str
    updated_at: str
    message_count: int


@dataclass(frozen=True, slots=True)
class MessageRecord:
    """A message. ``status`` is one of :data:`MESSAGE_STATUSES`; an assistant answer also
    records why it ended, its usage, timings and how many characters were generated by
    ERNIE and delivered to the client."""

    id: str
    conversation_id: str
    role: str
    content: str
    status: str
    end_reason: str | None
    model: str | None
    usage: dict[str, int] | None
    ttft_ms: float | None
    total_ms: float | None
    generated_chars: int | None
    delivered_chars: int | None
    created_at: str


class StoreError(WenxinError):
    """The database failed (cannot be opened, is locked for too long, is corrupt, is newer
    than this code) or the store is not open."""


class StoreConfigurationError(StoreError, ValueError):
    """The store URL names no store this version can open."""


class ConversationNotFoundError(StoreError, LookupError):
    """No conversation with that id belongs to that owner."""


class Store(Protocol):
    """What the server needs from its database. Every method is a coroutine that never
    blocks the event loop; see :class:`SQLiteStore` for the details of each."""

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
    async def set_title(self, owner: str, conversation_id: str, title: str) -> None: ...
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
    ) -> None: ...
    async def mark_streaming_as(self, end_reason: str) -> int: ...
    async def create_key(
        self, name: str, *, rpm: int | None, tpm: int | None, max_streams: int | None
    ) -> tuple[KeyRecord, str]: ...
    async def list_keys(self) -> list[KeyRecord]: ...
    async def revoke_key(self, key_id_or_prefix: str) -> KeyRecord | None: ...
    async def find_key(self, secret: str) -> KeyRecord | None: ...
    async def count_active_keys(self) -> int: ...


# -- SQL: one text for SQLite and PostgreSQL --------------------------------------------------


MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (  # 1: keys, conversations, messages
        KEYS_TABLE,
        """CREATE TABLE conversations (
            id TEXT PRIMARY KEY, owner TEXT NOT NULL, title TEXT NOT NULL, model TEXT NOT NULL,
            system TEXT, created_at TEXT NOT NULL, updated_at TEXT NOT NULL,
            message_count INTEGER NOT NULL)""",
        "CREATE INDEX conversations_by_owner ON conversations (owner, updated_at)",
        """CREATE TABLE messages (
            id TEXT PRIMARY KEY, conversation_id TEXT NOT NULL REFERENCES conversations (id),
            seq INTEGER NOT NULL, role TEXT NOT NULL, content TEXT NOT NULL,
            status TEXT NOT NULL, end_reason TEXT, model TEXT, usage TEXT,
            ttft_ms DOUBLE PRECISION, total_ms DOUBLE PRECISION, generated_chars INTEGER,
            delivered_chars INTEGER, created_at TEXT NOT NULL)""",
        "CREATE INDEX messages_by_conversation ON messages (conversation_id, seq)",
        "CREATE INDEX messages_by_status ON messages (status)",
    ),
)
"""Schema steps; step ``n`` brings the database to version ``n``. Append, never edit."""

_CONV = "id, owner, title, model, system, created_at, updated_at, message_count"
_MSG = (
    "id, conversation_id, role, content, status, end_reason, model, usage, ttft_ms, "
    "total_ms, generated_chars, delivered_chars, created_at"
)
# Statements are built once, from constant column lists: no input ever reaches their text.
_INSERT_CONVERSATION = f"INSERT INTO conversations ({_CONV}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"  # noqa: S608
_SELECT_CONVERSATIONS = f"SELECT {_CONV} FROM conversations WHERE owner = ?"  # noqa: S608
_INSERT_MESSAGE = (
    f"INSERT INTO messages ({_MSG}, seq) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"  # noqa: S608
)
_SELECT_MESSAGES = f"SELECT {_MSG} FROM messages WHERE conversation_id = ? ORDER BY seq"  # noqa: S608


# -- operations: plain functions of a connection, run inside a transaction -----------------


def _migrate(db: Db) -> None:
    db.run("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    row = db.one("SELECT MAX(version) FROM schema_version")
    current = (row[0] if row else None) or 0
    if current > len(MIGRATIONS):
        raise StoreError(
            f"the database has schema version {current}, newer than this wenxin-stream "
            f"understands ({len(MIGRATIONS)}); upgrade wenxin-stream"
        )
    for version in range(current + 1, len(MIGRATIONS) + 1):
        for statement in MIGRATIONS[version - 1]:
            db.run(statement)
        db.run("INSERT INTO schema_version (version) VALUES (?)", (version,))


def _message(row: tuple[Any, ...]) -> MessageRecord:
    values = list(row)
    values[7] = None if row[7] is None else json.loads(row[7])  # usage: JSON text
    return MessageRecord(*values)


def _create_conversation(
    db: Db, owner: str, title: str | None, model: str, system: str | None
) -> ConversationRecord:
    now = utc_now()
    record = ConversationRecord(new_id("c_"), owner, title or "", model, system, now, now, 0)
    values = (record.id, owner, record.title, model, system, now, now, 0)
    db.run(_INSERT_CONVERSATION, values)
    return record


def _get_conversation(db: Db, owner: str, cid: str) -> ConversationRecord | None:
    row = db.one(_SELECT_CONVERSATIONS + " AND id = ?", (owner, cid))
    return None if row is None else ConversationRecord(*row)


def _add_message(
    db: Db, owner: str, cid: str, role: str, content: str, model: str | None, status: str
) -> MessageRecord:
    row = db.one(
        "SELECT title, message_count FROM conversations WHERE id = ? AND owner = ?", (cid, owner)
    )
    if row is None:
        raise ConversationNotFoundError(f"no conversation {cid!r}")
    title, count = row
    now = utc_now()
    record = MessageRecord(
        new_id("m_"), cid, role, content, status, None, model, None, None, None, None, None, now
    )
    db.run(
        _INSERT_MESSAGE,
        (record.id, cid, role, content, status, None, model, None, None, None, None, None, now,
         count),
    )  # fmt: skip
    if role == "user" and not title:
        title = default_title(content)
    db.run(
        "UPDATE conversations SET message_count = ?, updated_at = ?, title = ? WHERE id = ?",
        (count + 1, now, title, cid),
    )
    return record


def _list_conversations(db: Db, owner: str, limit: int) -> list[ConversationRecord]:
    rows = db.all(
        _SELECT_CONVERSATIONS + " ORDER BY updated_at DESC, id DESC LIMIT ?",
        (owner, limit),
    )
    return [ConversationRecord(*row) for row in rows]


def _get_messages(db: Db, owner: str, cid: str) -> list[MessageRecord]:
    if _get_conversation(db, owner, cid) is None:
        return []
    rows = db.all(_SELECT_MESSAGES, (cid,))
    return [_message(row) for row in rows]


_UPDATE_MESSAGE = (
    "UPDATE messages SET content = ?, status = ?, end_reason = ?, usage = ?, ttft_ms = ?, "
    "total_ms = ?, generated_chars = ?, delivered_chars = ? WHERE id = ?"
)


def _delete_conversation(db: Db, owner: str, cid: str) -> bool:
    if _get_conversation(db, owner, cid) is None:
        return False
    db.run("DELETE FROM messages WHERE conversation_id = ?", (cid,))
    return db.run("DELETE FROM conversations WHERE id = ? AND owner = ?", (cid, owner)) > 0


# -- the SQLite connection and its worker thread ---------------------------------------------


def _translate(exc: BaseException, path: str) -> BaseException:
    """Errors of lower layers become :class:`StoreError`; ours pass through."""
    if isinstance(exc, sqlite3.Error):
        error = StoreError(f"database error ({path}): {exc}")
    elif isinstance(exc, OSError):
        error = StoreError(f"cannot open the database {path}: {exc.strerror or exc}")
    else:
        return exc
    error.__cause__ = exc
    return error


# -- the stores ------------------------------------------------------------------------------


def _check_choice(name: str, value: str, allowed: frozenset[str]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {sorted(allowed)}, got {value!r}")


def _create_key_op(
    name: str, rpm: int | None, tpm: int | None, max_streams: int | None
) -> Callable[[Db], tuple[KeyRecord, str]]:
    name = _keys.check_key_args(name, rpm, tpm, max_streams)
    key_id, now = new_id("k_"), utc_now()
    return lambda db: _keys.insert_key(
        db, name, rpm=rpm, tpm=tpm, max_streams=max_streams, key_id=key_id, now=now
    )


def _revoke_key_op(ident: str) -> Callable[[Db], KeyRecord | None]:
    now = utc_now()
    return lambda db: _keys.revoke_key_row(db, ident, now=now)


class SQLiteStore:
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
        self._worker = Worker(self.path, self._busy_timeout, lambda exc: _translate(exc, self.path))
        self._worker.start()
        try:
            await self._call(_migrate, write=True)
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

    async def create_conversation(
        self, owner: str, *, title: str | None, model: str, system: str | None
    ) -> ConversationRecord:
        """A new, empty conversation (``title`` ``None``: named after the first question)."""
        return await self._call(
            lambda db: _create_conversation(db, owner, title, model, system), write=True
        )

    async def list_conversations(self, owner: str, *, limit: int = 100) -> list[ConversationRecord]:
        """``owner``'s conversations, most recently updated first (``limit`` within 1-1000)."""
        limit = max(1, min(limit, 1000))
        return await self._call(lambda db: _list_conversations(db, owner, limit), write=False)

    async def get_conversation(self, owner: str, conversation_id: str) -> ConversationRecord | None:
        """The conversation, or ``None`` if it is missing or another owner's."""
        return await self._call(
            lambda db: _get_conversation(db, owner, conversation_id), write=False
        )

    async def get_messages(self, owner: str, conversation_id: str) -> list[MessageRecord]:
        """The messages in order (``[]`` if the conversation is missing or not ``owner``'s)."""
        return await self._call(lambda db: _get_messages(db, owner, conversation_id), write=False)

    async def delete_conversation(self, owner: str, conversation_id: str) -> bool:
        """Delete the conversation and its messages; whether it existed and was ``owner``'s."""
        return await self._call(
            lambda db: _delete_conversation(db, owner, conversation_id), write=True
        )

    async def set_title(self, owner: str, conversation_id: str, title: str) -> None:
        """Rename the conversation (no effect if it is missing or another owner's)."""
        now = utc_now()
        await self._call(
            lambda db: db.run(
                "UPDATE conversations SET title = ?, updated_at = ? WHERE id = ? AND owner = ?",
                (title, now, conversation_id, owner),
            ),
            write=True,
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
        _check_choice("role", role, ROLES)
        _check_choice("status", status, MESSAGE_STATUSES)
        return await self._call(
            lambda db: _add_message(db, owner, conversation_id, role, content, model, status),
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
    ) -> None:
        """Record a message's final (or latest) state; no effect if it is gone (its
        conversation was deleted while it streamed)."""
        _check_choice("status", status, MESSAGE_STATUSES)
        usage_text = None if usage is None else json.dumps(usage, separators=(",", ":"))
        values = (content, status, end_reason, usage_text, ttft_ms, total_ms, generated_chars,
                  delivered_chars, message_id)  # fmt: skip
        await self._call(lambda db: db.run(_UPDATE_MESSAGE, values), write=True)

    async def mark_streaming_as(self, end_reason: str) -> int:
        """Every message still ``streaming`` becomes ``partial`` with ``end_reason`` (at
        start-up after a crash, at shutdown); how many. Assumes one server per database."""
        return await self._call(
            lambda db: db.run(
                "UPDATE messages SET status = ?, end_reason = ? WHERE status = ?",
                ("partial", end_reason, "streaming"),
            ),
            write=True,
        )

    async def create_key(
        self, name: str, *, rpm: int | None, tpm: int | None, max_streams: int | None
    ) -> tuple[KeyRecord, str]:
        """Create an API key: its record and its secret, which is never available again."""
        return await self._call(_create_key_op(name, rpm, tpm, max_streams), write=True)

    async def list_keys(self) -> list[KeyRecord]:
        """Every key (revoked ones too), oldest first."""
        return await self._call(_keys.select_keys, write=False)

    async def revoke_key(self, key_id_or_prefix: str) -> KeyRecord | None:
        """Revoke a key by id, full key or display prefix; ``None`` if nothing matches."""
        return await self._call(_revoke_key_op(key_id_or_prefix), write=True)

    async def find_key(self, secret: str) -> KeyRecord | None:
        """The active key ``secret`` (by its SHA-256), else ``None``."""
        return await self._call(lambda db: _keys.select_key_by_secret(db, secret), write=False)

    async def count_active_keys(self) -> int:
        """How many keys are not revoked (none: the server runs in dev mode)."""
        return await self._call(_keys.count_active_keys, write=False)


class SyncKeyAdmin:
    """Synchronous key administration for ``wenxin keys``: its own connection, used from
    the calling thread, safe while a server uses the same file (WAL, busy timeout).
    Raises :class:`StoreError` when the database cannot be opened or used."""

    def __init__(self, path: str | os.PathLike[str], *, busy_timeout: float = 5.0) -> None:
        self.path = os.fspath(path)
        try:
            self._db = connect(self.path, busy_timeout)
        except (OSError, sqlite3.Error) as exc:
            raise _translate(exc, self.path) from None
        try:
            self._run(_migrate, write=True)
        except BaseException:
            self.close()
            raise

    def _run(self, op: Callable[[Db], _T], *, write: bool) -> _T:
        try:
            return transact(self._db, op, write=write)
        except (OSError, sqlite3.Error) as exc:
            raise _translate(exc, self.path) from None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection."""
        self._db.conn.close()

    def create_key(
        self, name: str, *, rpm: int | None, tpm: int | None, max_streams: int | None
    ) -> tuple[KeyRecord, str]:
        """Create a key: its record and its secret (shown once)."""
        return self._run(_create_key_op(name, rpm, tpm, max_streams), write=True)

    def list_keys(self) -> list[KeyRecord]:
        """Every key, oldest first."""
        return self._run(_keys.select_keys, write=False)

    def revoke_key(self, key_id_or_prefix: str) -> KeyRecord | None:
        """Revoke a key by id, full key or display prefix; ``None`` if nothing matches."""
        return self._run(_revoke_key_op(key_id_or_prefix), write=True)

    def resolve_key(self, key_id_or_prefix: str) -> KeyRecord | None:
        """The key named by an id, full key or display prefix, without changing it."""
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
            "PostgreSQL support is planned: the schema and SQL are portable (see _store.py); "
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
