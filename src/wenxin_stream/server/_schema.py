"""The database of ``wenxin serve``: records, schema, migrations, and the operations on it.

Theory of operation
===================

Everything here is a value or a plain function of a :class:`~._sql.Db`, run inside a
transaction that the caller owns (the store's worker, or ``wenxin keys``); nothing here knows
which database or which thread it runs on.

**Records.** :class:`ConversationRecord` and :class:`MessageRecord` are what the operations
return: frozen rows, with ``usage`` and ``extras`` decoded from their JSON text. ``extras``
(schema 2) holds what today's ERNIE adds to an answer — ``reasoning``, ``search_results``,
``tool_calls`` — or is ``NULL`` when it has none.

**Schema.** Versioned in ``schema_version``; :data:`MIGRATIONS` is a list of steps, step
``n`` bringing the database to version ``n`` (append one to change the schema; never edit a
shipped step). :func:`migrate_step` applies the next pending step, and the caller runs it
once per transaction until it returns ``None`` — so each step commits on its own, and a
failing step leaves the database at the previous version. Every call first takes the
dialect's schema lock (PostgreSQL: an advisory lock held to the end of the transaction;
SQLite: the write lock of ``BEGIN IMMEDIATE``), so instances starting together migrate one
after the other. :func:`schema_version` reads the version without changing anything else. A
database newer than this code is refused (:func:`check_version`).

**Portability.** The SQL is written once, for both SQLite and PostgreSQL: ``TEXT``,
``INTEGER``, ``DOUBLE PRECISION``, ``CREATE … IF NOT EXISTS``, ``LIMIT``, plain subqueries; no
``INSERT OR …``, no ``AUTOINCREMENT``, no ``rowid``; ids are generated here, times are ISO
8601 UTC strings of fixed width (so they sort as text), ``usage`` is JSON text. Parameters are
written as ``?`` and converted by the dialect (``_sql``); related rows are deleted explicitly
rather than through ``ON DELETE CASCADE``.

**Atomic steps.** An operation is the unit the store runs in one transaction (or one savepoint
of a group-committed batch), so what must change together is one operation:
:func:`add_exchange` stores a question and its (streaming, empty) answer together — both or
neither.

**An answer's life in its row.** ``streaming`` and empty when asked; while it streams,
:func:`checkpoint_answers` overwrites its text and character counts (many answers in one
operation, only rows still ``streaming``, so a checkpoint that arrives after the final record
changes nothing); :func:`update_message` writes the final record once; at start-up,
:func:`mark_streaming_as` ends what a crash left ``streaming`` (``server_crashed``), keeping
the last checkpoint.

**Ownership.** Every conversation has an ``owner`` (an API key id, or ``local`` in dev mode);
every query filters by it, and another owner's conversation is indistinguishable from a
missing one (the API answers 404 for both).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

from .._exceptions import WenxinError
from . import _keys
from ._budgets import Budgets
from ._keys import KEYS_TABLE, KeyRecord
from ._sql import Db
from ._usage_sql import USAGE_STEP

__all__ = [
    "MESSAGE_STATUSES",
    "MIGRATIONS",
    "ROLES",
    "TITLE_LENGTH",
    "Checkpoint",
    "ConversationNotFoundError",
    "ConversationRecord",
    "ExchangeConflictError",
    "HistoryMessage",
    "MessageNotFoundError",
    "MessageRecord",
    "StoreError",
    "StoreUnavailableError",
    "add_exchange",
    "add_message",
    "adopt_conversations",
    "check_choice",
    "check_version",
    "checkpoint_answers",
    "count_conversations",
    "create_conversation",
    "create_key_op",
    "default_title",
    "delete_conversation",
    "get_conversation",
    "get_messages",
    "list_conversations",
    "mark_streaming_as",
    "migrate",
    "migrate_step",
    "new_id",
    "replaced_index",
    "revoke_key_op",
    "schema_version",
    "set_title",
    "streaming_producers",
    "take_over_message",
    "update_key_op",
    "update_message",
    "utc_now",
]

MESSAGE_STATUSES = frozenset({"complete", "partial", "streaming"})
"""A message is ``complete``, ``partial`` (ended early: see its ``end_reason``) or still
``streaming``."""

ROLES = frozenset({"user", "assistant", "system"})
"""Roles a stored message may have."""

TITLE_LENGTH = 30
"""An untitled conversation is named after the first characters of its first question."""


def utc_now() -> str:
    """The current time as fixed-width ISO 8601 UTC (``2025-01-31T08:00:00.123456Z``), which
    sorts correctly as text."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def new_id(prefix: str) -> str:
    """A short random url-safe id: ``prefix`` + 16 characters (96 bits)."""
    return prefix + secrets.token_urlsafe(12)


def default_title(question: str) -> str:
    """The title of a conversation named after its first question: whitespace collapsed, at
    most :data:`TITLE_LENGTH` characters, a cut one ending in "…" (so it shows it was cut)."""
    text = " ".join(question.split())
    return text if len(text) <= TITLE_LENGTH else text[: TITLE_LENGTH - 1] + "…"


def check_choice(name: str, value: str, allowed: frozenset[str]) -> None:
    """Raise :class:`ValueError` unless ``value`` is one of ``allowed``."""
    if value not in allowed:
        raise ValueError(f"{name} must be one of {sorted(allowed)}, got {value!r}")


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
    extras: dict[str, Any] | None = None


class HistoryMessage(NamedTuple):
    """A stored message as an ask reads it for the conversation's history (``get_history``):
    only what the history and a replacement need. Its :class:`MessageRecord` would decode
    nine more columns, the usage's JSON among them, for every message of the window at every
    question (about 5 against 1 µs a message, beside the query itself)."""

    id: str
    role: str
    content: str
    status: str
    end_reason: str | None


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """The latest state of an answer still streaming: its text so far, the characters
    generated (``len(content)``) and delivered to a client, its time to first token, and its
    ``extras`` so far (the reasoning, search results and tool calls; ``None``: none)."""

    message_id: str
    content: str
    generated_chars: int
    delivered_chars: int
    ttft_ms: float | None
    extras: dict[str, Any] | None = None


class StoreError(WenxinError):
    """The database failed (cannot be opened, is locked for too long, is corrupt, is newer
    than this code) or the store is not open."""


class StoreUnavailableError(StoreError):
    """The database cannot take the operation now (every pooled connection stayed busy, or
    the server cannot be reached): the request may be retried after ``retry_after`` seconds."""

    def __init__(self, message: str, *, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ConversationNotFoundError(StoreError, LookupError):
    """No conversation with that id belongs to that owner."""


class MessageNotFoundError(StoreError, LookupError):
    """The conversation has no question with that id."""


class ExchangeConflictError(StoreError):
    """The exchange to replace is not the conversation's last, or its answer still streams.

    ``reason`` is ``not_last`` or ``streaming``."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


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
    (  # 2: what today's ERNIE adds to an answer (reasoning, search results, tool calls), JSON
        "ALTER TABLE messages ADD COLUMN extras TEXT",
    ),
    (  # 3: the instance producing a streaming answer (several share one database)
        "ALTER TABLE messages ADD COLUMN producer TEXT",
    ),
    USAGE_STEP,  # 4: usage per upstream request; the keys' budgets (``_usage_sql``)
)
"""Schema steps; step ``n`` brings the database to version ``n``. Append, never edit."""

_CONV = "id, owner, title, model, system, created_at, updated_at, message_count"
_MSG = (
    "id, conversation_id, role, content, status, end_reason, model, usage, ttft_ms, "
    "total_ms, generated_chars, delivered_chars, created_at, extras"
)
_CONV_COLUMNS = len(_CONV.split(", "))
# Statements are built once, from constant column lists: no input ever reaches their text.
_INSERT_CONVERSATION = f"INSERT INTO conversations ({_CONV}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"  # noqa: S608
_SELECT_CONVERSATIONS = f"SELECT {_CONV} FROM conversations WHERE owner = ?"  # noqa: S608
_INSERT_MESSAGE = (
    f"INSERT INTO messages ({_MSG}, seq, producer) "  # noqa: S608
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_MOVE_CONVERSATION = (
    "UPDATE conversations SET message_count = message_count + 2, updated_at = ?, "
    "title = CASE WHEN title = '' THEN ? ELSE title END WHERE id = ? AND owner = ?"
)
_INSERT_EXCHANGE = (
    "INSERT INTO messages "
    "(id, conversation_id, role, content, status, model, created_at, seq, producer) "
    "SELECT ?, id, 'user', ?, 'complete', ?, ?, message_count - 2, NULL "
    "FROM conversations WHERE id = ? AND owner = ? "
    "UNION ALL "
    "SELECT ?, id, 'assistant', '', 'streaming', ?, ?, message_count - 1, ? "
    "FROM conversations WHERE id = ? AND owner = ?"
)
_EXCHANGE_AT_ONCE = (
    f"WITH moved AS ({_MOVE_CONVERSATION} RETURNING id, message_count) "  # noqa: S608
    "INSERT INTO messages "
    "(id, conversation_id, role, content, status, model, created_at, seq, producer) "
    "SELECT ?, id, 'user', ?, 'complete', ?, ?, message_count - 2, NULL FROM moved "
    "UNION ALL "
    "SELECT ?, id, 'assistant', '', 'streaming', ?, ?, message_count - 1, ? FROM moved"
)
""":data:`_MOVE_CONVERSATION` and :data:`_INSERT_EXCHANGE` as one statement, for a dialect
with :attr:`~._sql.Dialect.modifying_cte`: the messages' seqs come from the moved row itself;
two rows inserted, or none when the conversation is not the owner's."""
_SELECT_MESSAGES = f"SELECT {_MSG} FROM messages WHERE conversation_id = ? ORDER BY seq"  # noqa: S608
_HISTORY_COLUMNS = (
    ", ".join(f"c.{name}" for name in _CONV.split(", "))
    + ", "
    + ", ".join(f"m.{name}" for name in HistoryMessage._fields)
)
_SELECT_HISTORY = (
    f"SELECT {_HISTORY_COLUMNS} FROM conversations c "  # noqa: S608
    "LEFT JOIN messages m ON m.conversation_id = c.id "
    "WHERE c.owner = ? AND c.id = ? ORDER BY m.seq"
)
"""A conversation and its messages as one read: a row per message (one row of ``NULL``
message columns for a conversation without any), the conversation's columns first."""
_SELECT_HISTORY_LAST = (
    f"SELECT {_HISTORY_COLUMNS} FROM conversations c "  # noqa: S608
    "LEFT JOIN messages m ON m.conversation_id = c.id AND m.seq >= c.message_count - ? "
    "WHERE c.owner = ? AND c.id = ? ORDER BY m.seq"
)
""":data:`_SELECT_HISTORY` of the last messages only: a message's ``seq`` is its place in
the conversation (:func:`add_exchange`, :func:`_drop_exchange` keep it so), so the last
``n`` are a range of the index on the conversation and ``seq``, which both databases read
alone — where ``ORDER BY seq DESC LIMIT n`` had PostgreSQL sort every message of the
conversation first (1.6 against 0.09 ms for 102 of 2,000)."""
_UPDATE_MESSAGE = (
    "UPDATE messages SET content = ?, status = ?, end_reason = ?, usage = ?, ttft_ms = ?, "
    "total_ms = ?, generated_chars = ?, delivered_chars = ?, extras = ? WHERE id = ?"
)
_CHECKPOINT = (
    "UPDATE messages SET content = ?, generated_chars = ?, delivered_chars = ?, ttft_ms = ?, "
    "extras = ? WHERE id = ? AND status = ?"
)


# -- operations: plain functions of a connection, run inside a transaction -----------------


def ping(db: Db) -> None:
    """A round trip to the database (``/readyz``)."""
    db.one("SELECT 1")


def schema_version(db: Db) -> int:
    """The database's schema version (0: a new database), after taking the schema lock and
    creating the version table if it is missing."""
    db.lock_schema()
    db.run("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    row = db.one("SELECT MAX(version) FROM schema_version")
    return int((row[0] if row else None) or 0)


def check_version(current: int) -> None:
    """Refuse a database newer than this code.

    Raises:
        StoreError: ``current`` is beyond the last step of :data:`MIGRATIONS`.
    """
    if current > len(MIGRATIONS):
        raise StoreError(
            f"the database has schema version {current}, newer than this wenxin-stream "
            f"understands ({len(MIGRATIONS)}); upgrade wenxin-stream"
        )


def migrate_step(db: Db) -> int | None:
    """Apply the next pending schema step (run it in a transaction of its own); the version
    it reached, or ``None`` when the schema was already current.

    Raises:
        StoreError: the database is newer than this code.
    """
    current = schema_version(db)
    check_version(current)
    if current == len(MIGRATIONS):
        return None
    version = current + 1
    for statement in MIGRATIONS[version - 1]:
        db.run(statement)
    db.run("INSERT INTO schema_version (version) VALUES (?)", (version,))
    return version


def migrate(db: Db) -> None:
    """Bring the schema to the current version inside the caller's one transaction (tests
    and tools; the stores commit each step on its own with :func:`migrate_step`).

    Raises:
        StoreError: the database is newer than this code.
    """
    while migrate_step(db) is not None:
        pass


def _message(row: tuple[Any, ...]) -> MessageRecord:
    values = list(row)
    values[7] = None if row[7] is None else json.loads(row[7])  # usage: JSON text
    values[13] = None if row[13] is None else json.loads(row[13])  # extras: JSON text
    return MessageRecord(*values)


def _json_text(value: dict[str, Any] | None) -> str | None:
    return None if value is None else json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def create_conversation(
    db: Db, owner: str, title: str | None, model: str, system: str | None
) -> ConversationRecord:
    """A new, empty conversation."""
    now = utc_now()
    record = ConversationRecord(new_id("c_"), owner, title or "", model, system, now, now, 0)
    values = (record.id, owner, record.title, model, system, now, now, 0)
    db.run(_INSERT_CONVERSATION, values)
    return record


def get_conversation(db: Db, owner: str, cid: str) -> ConversationRecord | None:
    """The conversation, or ``None`` if it is missing or another owner's."""
    row = db.one(_SELECT_CONVERSATIONS + " AND id = ?", (owner, cid))
    return None if row is None else ConversationRecord(*row)


def list_conversations(db: Db, owner: str, limit: int) -> list[ConversationRecord]:
    """``owner``'s conversations, most recently updated first."""
    rows = db.all(
        _SELECT_CONVERSATIONS + " ORDER BY updated_at DESC, id DESC LIMIT ?",
        (owner, limit),
    )
    return [ConversationRecord(*row) for row in rows]


def get_messages(db: Db, owner: str, cid: str) -> list[MessageRecord]:
    """The messages in order (``[]`` if the conversation is missing or another owner's)."""
    if get_conversation(db, owner, cid) is None:
        return []
    rows = db.all(_SELECT_MESSAGES, (cid,))
    return [_message(row) for row in rows]


def get_history(
    db: Db, owner: str, cid: str, last: int | None = None
) -> tuple[ConversationRecord | None, list[HistoryMessage]]:
    """The conversation and its messages in order — only its ``last`` messages when given,
    each as :class:`HistoryMessage` — (``(None, [])`` if it is missing or another owner's).
    One statement, a join (so one snapshot, though an ask needs none: the write that follows
    it checks the conversation again, :func:`add_exchange`): on PostgreSQL one execution and
    round trip, where a pipeline of two SELECTs cost the client as much Python as two
    (``bench/PROFILE.md``)."""
    if last is None:
        rows = db.all(_SELECT_HISTORY, (owner, cid))
    else:
        rows = db.all(_SELECT_HISTORY_LAST, (last, owner, cid))
    if not rows:  # the messages of another owner's conversation are not shown
        return None, []
    conversation = ConversationRecord(*rows[0][:_CONV_COLUMNS])
    if rows[0][_CONV_COLUMNS] is None:  # the join's one row for a conversation with none
        return conversation, []
    make = HistoryMessage._make
    return conversation, [make(row[_CONV_COLUMNS:]) for row in rows]


def add_message(
    db: Db,
    owner: str,
    cid: str,
    role: str,
    content: str,
    model: str | None,
    status: str,
    producer: str | None = None,
) -> MessageRecord:
    """Append a message; the conversation's count, time and (from a first user message)
    title follow. ``producer``: the instance that streams it (for a ``streaming`` answer).

    Raises:
        ConversationNotFoundError: no such conversation of ``owner``.
    """
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
         None, count, producer),
    )  # fmt: skip
    if role == "user" and not title:
        title = default_title(content)
    db.run(
        "UPDATE conversations SET message_count = ?, updated_at = ?, title = ? WHERE id = ?",
        (count + 1, now, title, cid),
    )
    return record


def replaced_index(roles_and_statuses: list[tuple[str, str, str]], question_id: str) -> int:
    """Where the exchange that starts with the question ``question_id`` begins, given the
    conversation's messages in order as ``(id, role, status)``; it must be the last exchange
    (no question after it) and its answer must not be streaming.

    Raises:
        MessageNotFoundError: no question with that id.
        ExchangeConflictError: not the last exchange (``not_last``) or its answer is still
            streaming (``streaming``).
    """
    index = next(
        (i for i, (mid, role, _) in enumerate(roles_and_statuses)
         if mid == question_id and role == "user"),
        None,
    )  # fmt: skip
    if index is None:
        raise MessageNotFoundError(f"no question {question_id!r} in this conversation")
    later = roles_and_statuses[index + 1 :]
    if any(role == "user" for _, role, _ in later):
        raise ExchangeConflictError(
            f"{question_id!r} is not the last question: only the last exchange can be replaced",
            "not_last",
        )
    if any(status == "streaming" for _, _, status in later):
        raise ExchangeConflictError(
            f"the answer to {question_id!r} is still streaming: stop it first", "streaming"
        )
    return index


def _drop_exchange(db: Db, cid: str, question_id: str) -> None:
    """Delete the conversation's last exchange, from the question ``question_id`` on (see
    :func:`replaced_index`); the message count follows."""
    rows = db.all("SELECT id, role, status, seq FROM messages WHERE conversation_id = ? "
                  "ORDER BY seq", (cid,))  # fmt: skip
    index = replaced_index([(r[0], r[1], r[2]) for r in rows], question_id)
    db.run("DELETE FROM messages WHERE conversation_id = ? AND seq >= ?", (cid, rows[index][3]))
    db.run("UPDATE conversations SET message_count = ? WHERE id = ?", (index, cid))


def add_exchange(
    db: Db,
    owner: str,
    cid: str,
    question: str,
    model: str | None,
    replace: str | None = None,
    producer: str | None = None,
) -> tuple[MessageRecord, MessageRecord]:
    """Append a question (``complete``) and its answer (``streaming``, empty, produced by the
    instance ``producer``), in this order: one operation, so both are written or neither. With
    ``replace`` (the id of the last question), that exchange is deleted first, in the same
    operation.

    Raises:
        ConversationNotFoundError: no such conversation of ``owner``.
        MessageNotFoundError, ExchangeConflictError: ``replace`` names no question, or not
            one that can be replaced (:func:`replaced_index`); nothing is changed.
    """
    if replace is not None:
        if get_conversation(db, owner, cid) is None:
            raise ConversationNotFoundError(f"no conversation {cid!r}")
        _drop_exchange(db, cid, replace)
    now = utc_now()
    asked = MessageRecord(
        new_id("m_"), cid, "user", question, "complete", None, model, None, None, None, None,
        None, now,
    )  # fmt: skip
    answer = MessageRecord(
        new_id("m_"), cid, "assistant", "", "streaming", None, model, None, None, None, None,
        None, now,
    )  # fmt: skip
    # The conversation's count, time and (first question) title move first — which also locks
    # its row, so concurrent asks in one conversation take their seqs one after the other —
    # then both messages, their seqs read from the moved count; a conversation that is not
    # the owner's moves nothing and gets no message. On PostgreSQL that is one statement;
    # elsewhere two, sent together (one round trip where there are round trips).
    if db.dialect.modifying_cte:
        inserted = db.run(
            _EXCHANGE_AT_ONCE,
            (now, default_title(question), cid, owner,
             asked.id, question, model, now, answer.id, model, now, producer),
        )  # fmt: skip
        if inserted != 2:
            raise ConversationNotFoundError(f"no conversation {cid!r}")
        return asked, answer
    with db.pipeline():
        moved = db.send(_MOVE_CONVERSATION, (now, default_title(question), cid, owner))
        db.send(
            _INSERT_EXCHANGE,
            (asked.id, question, model, now, cid, owner,
             answer.id, model, now, producer, cid, owner),
        )  # fmt: skip
    if moved.rowcount != 1:
        raise ConversationNotFoundError(f"no conversation {cid!r}")
    return asked, answer


def update_message(
    db: Db,
    message_id: str,
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
) -> int:
    """Record a message's final (or latest) state; no effect if it is gone — nor, with
    ``producer``, if another instance produces it now (it took the answer over: the record
    is fenced). How many rows changed (0 or 1)."""
    values = (content, status, end_reason, _json_text(usage), ttft_ms, total_ms,
              generated_chars, delivered_chars, _json_text(extras), message_id)  # fmt: skip
    if producer is None:
        return db.run(_UPDATE_MESSAGE, values)
    return db.run(_UPDATE_MESSAGE + " AND (producer = ? OR producer IS NULL)", (*values, producer))


def take_over_message(db: Db, message_id: str, producer: str) -> bool:
    """The answer ``message_id`` is produced by ``producer`` from now on (it took the answer
    over from a process that died or stopped): an answer still ``streaming``, or one a sweep,
    the stopping process or the process that lost it ended as ``server_crashed`` /
    ``server_shutdown`` / ``interrupted`` meanwhile (it streams again). Whether it was."""
    changed = db.run(
        "UPDATE messages SET producer = ?, status = ?, end_reason = NULL "
        "WHERE id = ? AND (status = ? OR end_reason IN (?, ?, ?))",
        (producer, "streaming", message_id, "streaming",
         "server_crashed", "server_shutdown", "interrupted"),
    )  # fmt: skip
    return changed > 0


def checkpoint_answers(db: Db, checkpoints: list[Checkpoint]) -> int:
    """Write the latest text and counts of answers still ``streaming``; an answer whose final
    record is written (or that is gone) is left as it is. How many rows were written."""
    return db.run_many(
        _CHECKPOINT,
        [(c.content, c.generated_chars, c.delivered_chars, c.ttft_ms, _json_text(c.extras),
          c.message_id, "streaming")
         for c in checkpoints],
    )  # fmt: skip


def set_title(db: Db, owner: str, cid: str, title: str, now: str) -> bool:
    """Rename a conversation of ``owner``; whether it existed (another owner's is untouched)."""
    changed = db.run(
        "UPDATE conversations SET title = ?, updated_at = ? WHERE id = ? AND owner = ?",
        (title, now, cid, owner),
    )
    return changed > 0


def delete_conversation(db: Db, owner: str, cid: str) -> bool:
    """Delete a conversation of ``owner`` and its messages; whether it existed."""
    if get_conversation(db, owner, cid) is None:
        return False
    db.run("DELETE FROM messages WHERE conversation_id = ?", (cid,))
    return db.run("DELETE FROM conversations WHERE id = ? AND owner = ?", (cid, owner)) > 0


def mark_streaming_as(
    db: Db, end_reason: str, producers: Sequence[str | None] | None = None
) -> int:
    """Messages still ``streaming`` become ``partial`` with ``end_reason``, keeping their last
    checkpoint (text and counts); how many. ``producers``: only the answers of these instances
    (``None`` in it: answers that name none, from before step 3); omitted: every one."""
    if producers is None:
        return db.run(
            "UPDATE messages SET status = ?, end_reason = ? WHERE status = ?",
            ("partial", end_reason, "streaming"),
        )
    changed = 0
    for producer in producers:
        if producer is None:
            changed += db.run(
                "UPDATE messages SET status = ?, end_reason = ? "
                "WHERE status = ? AND producer IS NULL",
                ("partial", end_reason, "streaming"),
            )
        else:
            changed += db.run(
                "UPDATE messages SET status = ?, end_reason = ? WHERE status = ? AND producer = ?",
                ("partial", end_reason, "streaming", producer),
            )
    return changed


def streaming_producers(db: Db) -> list[str | None]:
    """The instances named by answers still ``streaming`` (``None``: answers naming none)."""
    rows = db.all("SELECT DISTINCT producer FROM messages WHERE status = ?", ("streaming",))
    return [row[0] for row in rows]


def count_conversations(db: Db, owner: str) -> int:
    """How many conversations ``owner`` has."""
    row = db.one("SELECT COUNT(*) FROM conversations WHERE owner = ?", (owner,))
    return int(row[0]) if row else 0


def adopt_conversations(db: Db, from_owner: str, to_owner: str) -> int:
    """Hand every conversation of ``from_owner`` to ``to_owner`` (their messages follow: they
    hang off the conversation); how many. One statement, so one transaction's worth."""
    return db.run("UPDATE conversations SET owner = ? WHERE owner = ?", (to_owner, from_owner))


def create_key_op(
    name: str,
    rpm: int | None,
    tpm: int | None,
    max_streams: int | None,
    *,
    adopt_from: str | None = None,
    budgets: Budgets | None = None,
) -> Callable[[Db], tuple[KeyRecord, str]]:
    """The operation that creates a key (arguments checked now: :class:`ValueError`); with
    ``adopt_from``, the same transaction hands that owner's conversations to the new key
    (``wenxin keys create --adopt-local``: the dev-mode conversations, owner ``local``)."""
    name = _keys.check_key_args(name, rpm, tpm, max_streams)
    key_id, now = new_id("k_"), utc_now()

    def create(db: Db) -> tuple[KeyRecord, str]:
        created = _keys.insert_key(
            db,
            name,
            rpm=rpm,
            tpm=tpm,
            max_streams=max_streams,
            key_id=key_id,
            now=now,
            budgets=budgets,
        )
        if adopt_from is not None:
            adopt_conversations(db, adopt_from, key_id)
        return created

    return create


def revoke_key_op(ident: str) -> Callable[[Db], KeyRecord | None]:
    """The operation that revokes the key named by ``ident`` (id, full key or prefix)."""
    now = utc_now()
    return lambda db: _keys.revoke_key_row(db, ident, now=now)


def update_key_op(ident: str, changes: dict[str, int | None]) -> Callable[[Db], KeyRecord | None]:
    """The operation that changes the limits or budgets of the key named by ``ident``
    (arguments checked now: :class:`ValueError`)."""
    unknown = set(changes) - _keys.UPDATABLE
    if unknown:
        raise ValueError(f"cannot change {', '.join(sorted(unknown))} of a key")
    limits = {k: changes.get(k) for k in ("rpm", "tpm", "max_streams")}
    for field, value in limits.items():
        if value is not None and (value <= 0 or value > _keys.MAX_LIMIT):
            raise ValueError(f"{field} must be a whole number from 1 to {_keys.MAX_LIMIT:,}")
    Budgets(**{k.removeprefix("budget_"): v for k, v in changes.items() if k.startswith("budget_")})
    return lambda db: _keys.update_key_row(db, ident, changes)
