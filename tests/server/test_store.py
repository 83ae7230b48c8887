"""The store on both backends — SQLite and PostgreSQL (a private server, ``postgres_url``):
schema, conversations, messages, checkpoints, keys, ownership, concurrency, migrations, URLs;
then what is SQLite's own (files, WAL, group commit, locks)."""

from __future__ import annotations

import asyncio
import sqlite3
import stat
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import pytest

from wenxin_stream.server import _schema, _sql, _sqlite, _store
from wenxin_stream.server._keys import AmbiguousKeyError, hash_key, looks_like_key
from wenxin_stream.server._store import (
    Checkpoint,
    ConversationNotFoundError,
    ExchangeConflictError,
    HistoryMessage,
    MessageNotFoundError,
    MessageRecord,
    PostgresStore,
    SQLiteStore,
    StoreConfigurationError,
    StoreError,
    SyncDatabase,
    SyncKeyAdmin,
    default_title,
    open_store,
    sqlite_path,
    utc_now,
)


@pytest.fixture
async def store(database: str) -> AsyncIterator[SQLiteStore | PostgresStore]:
    """A store open on ``database`` (conftest: both backends), with a pool of 4."""
    async with open_store(database, pool_size=4) as s:
        yield s


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    async with SQLiteStore(tmp_path / "data" / "wenxin.db") as s:
        yield s


Either = SQLiteStore | PostgresStore


async def test_open_creates_private_files_and_schema(tmp_path: Path) -> None:
    path = tmp_path / "data" / "wenxin.db"
    async with SQLiteStore(path) as s:
        assert await s.count_active_keys() == 0
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        versions = conn.execute("SELECT version FROM schema_version").fetchall()
        assert versions == [(step,) for step in range(1, len(_schema.MIGRATIONS) + 1)]
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert {"api_keys", "conversations", "messages", "schema_version"} <= tables
    finally:
        conn.close()


async def test_conversation_lifecycle(store: Either) -> None:
    conv = await store.create_conversation(
        "k_a", title=None, model="ernie-lite-8k", system="Be brief"
    )
    assert conv.id.startswith("c_")
    assert len(conv.id) == 18
    assert (conv.title, conv.message_count, conv.system) == ("", 0, "Be brief")
    assert conv.created_at.endswith("Z")
    assert conv.created_at == conv.updated_at
    assert await store.get_conversation("k_a", conv.id) == conv
    assert await store.get_messages("k_a", conv.id) == []

    question = await store.add_message(
        "k_a", conv.id, role="user", content="  什么是\n 流式  输出？" + "啊" * 40, model=None
    )
    answer = await store.add_message(
        "k_a", conv.id, role="assistant", content="", model="ernie-lite-8k", status="streaming"
    )
    assert question.id.startswith("m_")
    assert question.status == "complete"
    await store.update_message(
        answer.id, content="流式输出是……", status="partial", end_reason="client_disconnected",
        usage={"prompt_tokens": 4, "completion_tokens": 9, "total_tokens": 13},
        ttft_ms=512.25, total_ms=3120.5, generated_chars=40, delivered_chars=12,
    )  # fmt: skip
    updated = await store.get_conversation("k_a", conv.id)
    assert updated is not None
    assert updated.message_count == 2
    # Cut at 30 characters, the cut shown by an ellipsis.
    assert (
        updated.title == default_title(question.content) == ("什么是 流式 输出？" + "啊" * 19 + "…")
    )
    assert default_title(" 正好 " + "啊" * 27) == "正好 " + "啊" * 27  # 30: not cut
    assert updated.updated_at >= conv.updated_at
    first, second = await store.get_messages("k_a", conv.id)
    assert first == question
    assert (second.content, second.status, second.end_reason) == (
        "流式输出是……",
        "partial",
        "client_disconnected",
    )
    assert second.usage == {"prompt_tokens": 4, "completion_tokens": 9, "total_tokens": 13}
    assert (second.ttft_ms, second.total_ms) == (512.25, 3120.5)
    assert (second.generated_chars, second.delivered_chars, second.model) == (
        40,
        12,
        "ernie-lite-8k",
    )

    await store.set_title("k_a", conv.id, "Streaming")
    renamed = await store.get_conversation("k_a", conv.id)
    assert renamed is not None
    assert renamed.title == "Streaming"
    await store.add_message("k_a", conv.id, role="user", content="again", model=None)
    again = await store.get_conversation("k_a", conv.id)
    assert again is not None
    assert again.title == "Streaming"

    assert await store.delete_conversation("k_a", conv.id) is True
    assert await store.get_conversation("k_a", conv.id) is None
    assert await store.get_messages("k_a", conv.id) == []
    assert await store.delete_conversation("k_a", conv.id) is False


async def test_an_exchange_is_stored_whole(store: Either) -> None:
    conv = await store.create_conversation("o", title=None, model="m", system=None)
    question, answer = await store.add_exchange("o", conv.id, question="为什么？", model="m")
    assert (question.role, question.content, question.status) == ("user", "为什么？", "complete")
    assert (answer.role, answer.content, answer.status) == ("assistant", "", "streaming")
    assert await store.get_messages("o", conv.id) == [question, answer]
    updated = await store.get_conversation("o", conv.id)
    assert updated is not None
    assert (updated.message_count, updated.title) == (2, "为什么？")
    with pytest.raises(ConversationNotFoundError):
        await store.add_exchange("someone else", conv.id, question="x", model=None)
    assert len(await store.get_messages("o", conv.id)) == 2


async def test_concurrent_exchanges_in_one_conversation_take_distinct_seqs(store: Either) -> None:
    """Asks racing in one conversation (several pool connections on PostgreSQL): each
    exchange moves the count first, which locks the row, so their seqs never collide and
    the count is every message."""
    conv = await store.create_conversation("o", title=None, model="m", system=None)
    pairs = await asyncio.gather(
        *(store.add_exchange("o", conv.id, question=f"q{i}", model="m") for i in range(12))
    )
    messages = await store.get_messages("o", conv.id)
    assert len(messages) == 24
    assert {m.id for m in messages} == {m.id for pair in pairs for m in pair}
    for i in range(0, 24, 2):  # each question followed by its own answer
        question, answer = messages[i], messages[i + 1]
        assert (question.role, answer.role) == ("user", "assistant")
        assert any(pair == (question, answer) for pair in pairs)
    conv_now, history = await store.get_history("o", conv.id)
    assert conv_now is not None
    assert (conv_now.message_count, history) == (24, _as_history(messages))
    assert conv_now.title == messages[0].content  # the first question named it


def _as_history(messages: Iterable[MessageRecord]) -> list[HistoryMessage]:
    """Full records as ``get_history`` reads them: what a history needs of each."""
    return [HistoryMessage(m.id, m.role, m.content, m.status, m.end_reason) for m in messages]


class _CountingConnection:
    """A store's connection that keeps the text of every statement sent through it."""

    def __init__(self, conn: _sql.Connection) -> None:
        self.conn, self.statements = conn, list[str]()

    def execute(self, sql: str, parameters: Sequence[Any], /) -> _sql.Cursor:
        self.statements.append(sql)
        return self.conn.execute(sql, parameters)

    def executemany(self, sql: str, parameters: Iterable[Sequence[Any]], /) -> _sql.Cursor:
        self.statements.append(sql)
        return self.conn.executemany(sql, parameters)

    def pipeline(self) -> Any:
        return _sql.Db(self.conn, _sql.SQLITE).pipeline()  # the wrapped one's, if it has one


async def _statements_of(store: Either, op: Callable[[_sql.Db], object]) -> list[str]:
    def counted(db: _sql.Db) -> list[str]:
        counting = _CountingConnection(db.conn)
        op(_sql.Db(counting, db.dialect))
        return counting.statements

    return await store._call(counted, write=True, bare=True)


async def test_an_asks_reads_and_its_exchange_are_one_statement_each(store: Either) -> None:
    """The native route's hot operations send as few statements as the database allows: the
    history is one join on both; the exchange one data-modifying WITH on PostgreSQL (each
    statement there costs the client its own Python, pipelined or not)."""
    conv = await store.create_conversation("o", title=None, model="m", system=None)
    read = await _statements_of(store, lambda db: _schema.get_history(db, "o", conv.id))
    assert len(read) == 1
    written = await _statements_of(
        store, lambda db: _schema.add_exchange(db, "o", conv.id, "q", "m", producer="p")
    )
    modifying_cte = isinstance(store, PostgresStore)
    assert len(written) == (1 if modifying_cte else 2)
    _, history = await store.get_history("o", conv.id)
    assert [(m.role, m.status) for m in history] == [
        ("user", "complete"),
        ("assistant", "streaming"),
    ]
    rows = await store._call(lambda db: db.all("SELECT seq, producer FROM messages"), write=False)
    assert sorted(tuple(row) for row in rows) == [(0, None), (1, "p")]
    with pytest.raises(ConversationNotFoundError):  # another owner's: nothing moved or added
        await store._call(
            lambda db: _schema.add_exchange(db, "x", conv.id, "q", "m"), write=True, bare=True
        )
    after = await store.get_conversation("o", conv.id)
    assert after is not None
    assert after.message_count == 2


async def test_history_is_the_owners_only(store: Either) -> None:
    conv = await store.create_conversation("o", title=None, model="m", system="sys")
    asked, answered = await store.add_exchange("o", conv.id, question="q", model="m")
    got, history = await store.get_history("o", conv.id)
    assert got is not None
    assert (got.id, got.system, history) == (conv.id, "sys", _as_history([asked, answered]))
    await store.update_message(
        answered.id, content="a", status="partial", end_reason="client_disconnected",
        usage={"total_tokens": 3}, ttft_ms=1.0, total_ms=2.0, generated_chars=1,
        delivered_chars=1,
    )  # fmt: skip
    _, history = await store.get_history("o", conv.id)
    assert history == _as_history(await store.get_messages("o", conv.id))
    assert history[1] == (answered.id, "assistant", "a", "partial", "client_disconnected")
    assert await store.get_history("someone else", conv.id) == (None, [])
    assert await store.get_history("o", "c_missing") == (None, [])


async def test_the_history_read_can_stop_at_the_last_messages(store: Either) -> None:
    conv = await store.create_conversation("o", title=None, model="m", system="sys")
    got, history = await store.get_history("o", conv.id, last=4)
    assert got is not None
    assert (got.id, history) == (conv.id, [])  # no message yet: the conversation alone
    exchanges = [await store.add_exchange("o", conv.id, question=f"q{i}", model="m")
                 for i in range(5)]  # fmt: skip
    everything = _as_history([m for pair in exchanges for m in pair])
    got, last4 = await store.get_history("o", conv.id, last=4)
    assert got is not None
    assert got.system == "sys"
    assert last4 == everything[-4:]  # the newest, in order
    assert (await store.get_history("o", conv.id, last=3))[1] == everything[-3:]
    assert (await store.get_history("o", conv.id, last=99))[1] == everything
    assert (await store.get_history("o", conv.id))[1] == everything
    assert (await store.get_history("o", conv.id, last=0))[1] == []
    assert await store.get_history("someone else", conv.id, last=4) == (None, [])
    with pytest.raises(ValueError, match="negative"):
        await store.get_history("o", conv.id, last=-1)
    # a replaced exchange leaves the places as they were: the window follows
    await store.update_message(
        exchanges[-1][1].id, content="a", status="complete", end_reason="completed",
        usage=None, ttft_ms=None, total_ms=None, generated_chars=None, delivered_chars=None,
    )  # fmt: skip
    again = await store.add_exchange(
        "o", conv.id, question="again", model="m", replace=exchanges[-1][0].id
    )
    assert (await store.get_history("o", conv.id, last=4))[1] == [
        *everything[-4:-2],
        *_as_history(again),
    ]


async def test_an_exchange_replaces_the_last_one_in_one_operation(store: SQLiteStore) -> None:
    conv = await store.create_conversation("o", title=None, model="m", system=None)
    q1, a1 = await store.add_exchange("o", conv.id, question="苹果", model="m")
    await store.update_message(a1.id, content="红的", status="complete", end_reason="completed",
                               usage=None, ttft_ms=None, total_ms=None, generated_chars=2,
                               delivered_chars=2)  # fmt: skip
    q2, a2 = await store.add_exchange("o", conv.id, question="香蕉", model="m")
    # Its answer still streams: not replaceable yet; nothing changes.
    with pytest.raises(ExchangeConflictError) as streaming:
        await store.add_exchange("o", conv.id, question="橙子", model="m", replace=q2.id)
    assert streaming.value.reason == "streaming"
    await store.update_message(a2.id, content="黄", status="partial", end_reason="cancelled",
                               usage=None, ttft_ms=None, total_ms=None, generated_chars=1,
                               delivered_chars=1)  # fmt: skip
    # Only the last question; never an answer's id, another owner's or an unknown one.
    with pytest.raises(ExchangeConflictError) as earlier:
        await store.add_exchange("o", conv.id, question="橙子", model="m", replace=q1.id)
    assert earlier.value.reason == "not_last"
    for wrong in (a2.id, "m_nope"):
        with pytest.raises(MessageNotFoundError):
            await store.add_exchange("o", conv.id, question="橙子", model="m", replace=wrong)
    with pytest.raises(ConversationNotFoundError):
        await store.add_exchange("other", conv.id, question="橙子", model="m", replace=q2.id)
    assert [m.id for m in await store.get_messages("o", conv.id)] == [q1.id, a1.id, q2.id, a2.id]

    q3, a3 = await store.add_exchange("o", conv.id, question="橙子", model="m", replace=q2.id)
    messages = await store.get_messages("o", conv.id)
    assert [(m.id, m.content) for m in messages] == [
        (q1.id, "苹果"), (a1.id, "红的"), (q3.id, "橙子"), (a3.id, ""),
    ]  # fmt: skip
    updated = await store.get_conversation("o", conv.id)
    assert updated is not None
    assert (updated.message_count, updated.title) == (4, "苹果")
    # The first exchange is the last one once it is alone.
    await store.update_message(a3.id, content="", status="partial", end_reason="error",
                               usage=None, ttft_ms=None, total_ms=None, generated_chars=0,
                               delivered_chars=0)  # fmt: skip
    q4, _ = await store.add_exchange("o", conv.id, question="梨", model="m", replace=q3.id)
    assert [m.content for m in await store.get_messages("o", conv.id)] == ["苹果", "红的", "梨", ""]
    assert q4.id not in (q1.id, q2.id, q3.id)


async def test_a_half_written_exchange_is_rolled_back(
    sqlite_store: SQLiteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The messages' insert fails after the conversation's count and title moved: nothing is
    kept, alone in its transaction or inside a batch (its savepoint) whose other jobs land."""
    conv = await sqlite_store.create_conversation("o", title=None, model="m", system=None)
    broken = _schema._INSERT_EXCHANGE.replace("INTO messages", "INTO no_such_table")
    monkeypatch.setattr(_schema, "_INSERT_EXCHANGE", broken)
    with pytest.raises(StoreError, match="no_such_table"):
        await sqlite_store.add_exchange("o", conv.id, question="lost", model=None)
    gate = threading.Event()
    busy = asyncio.ensure_future(sqlite_store._call(lambda db: gate.wait(5), write=False))
    await asyncio.sleep(0.05)  # the worker is held inside that job: the next three queue up
    jobs, transactions = sqlite_store.stats
    batch = asyncio.gather(
        sqlite_store.add_message("o", conv.id, role="user", content="kept", model=None),
        sqlite_store.add_exchange("o", conv.id, question="lost too", model=None),
        sqlite_store.add_message("o", conv.id, role="user", content="kept too", model=None),
        return_exceptions=True,
    )
    await asyncio.sleep(0.05)
    gate.set()
    await busy
    results = await batch
    assert sqlite_store.stats == (
        jobs + 4,
        transactions + 2,
    )  # the held job, then one batch of three
    assert isinstance(results[1], StoreError)
    messages = await sqlite_store.get_messages("o", conv.id)
    assert [m.content for m in messages] == ["kept", "kept too"]
    got = await sqlite_store.get_conversation("o", conv.id)
    assert got is not None
    assert (got.message_count, got.title) == (2, "kept")  # "lost" never named it


async def test_explicit_title_is_kept(store: Either) -> None:
    conv = await store.create_conversation("o", title="Mine", model="m", system=None)
    await store.add_message("o", conv.id, role="user", content="question", model=None)
    got = await store.get_conversation("o", conv.id)
    assert got is not None
    assert got.title == "Mine"


async def test_owners_are_isolated(store: Either) -> None:
    conv = await store.create_conversation("alice", title="secret", model="m", system=None)
    await store.add_message("alice", conv.id, role="user", content="hi", model=None)
    assert await store.get_conversation("bob", conv.id) is None
    assert await store.get_messages("bob", conv.id) == []
    assert await store.list_conversations("bob") == []
    assert await store.delete_conversation("bob", conv.id) is False
    with pytest.raises(ConversationNotFoundError):
        await store.add_message("bob", conv.id, role="user", content="x", model=None)
    await store.set_title("bob", conv.id, "hijacked")
    still = await store.get_conversation("alice", conv.id)
    assert still is not None
    assert still.title == "secret"
    assert still.message_count == 1


async def test_list_newest_first_with_limit(store: Either) -> None:
    convs = [
        await store.create_conversation("o", title=f"t{i}", model="m", system=None)
        for i in range(5)
    ]
    await store.add_message("o", convs[1].id, role="user", content="bump", model=None)
    listed = await store.list_conversations("o")
    assert [c.id for c in listed] == [convs[i].id for i in (1, 4, 3, 2, 0)]
    assert [c.id for c in await store.list_conversations("o", limit=2)] == [
        convs[1].id, convs[4].id
    ]  # fmt: skip
    assert len(await store.list_conversations("o", limit=0)) == 1  # clamped to at least one


async def test_rejects_unknown_role_and_status(store: Either) -> None:
    conv = await store.create_conversation("o", title=None, model="m", system=None)
    with pytest.raises(ValueError, match="role"):
        await store.add_message("o", conv.id, role="tool", content="x", model=None)
    with pytest.raises(ValueError, match="status"):
        await store.add_message("o", conv.id, role="user", content="x", model=None, status="ok")
    with pytest.raises(ValueError, match="status"):
        await store.update_message(
            "m_x", content="", status="done", end_reason=None, usage=None, ttft_ms=None,
            total_ms=None, generated_chars=None, delivered_chars=None,
        )  # fmt: skip


async def test_update_of_a_deleted_message_is_a_no_op(store: Either) -> None:
    conv = await store.create_conversation("o", title=None, model="m", system=None)
    msg = await store.add_message("o", conv.id, role="assistant", content="", model="m",
                                  status="streaming")  # fmt: skip
    await store.delete_conversation("o", conv.id)
    await store.update_message(
        msg.id, content="late", status="complete", end_reason="completed", usage=None,
        ttft_ms=None, total_ms=None, generated_chars=None, delivered_chars=None,
    )  # fmt: skip
    assert await store.get_messages("o", conv.id) == []


async def test_mark_streaming_as(store: Either) -> None:
    conv = await store.create_conversation("o", title=None, model="m", system=None)
    for status in ("streaming", "streaming", "complete"):
        await store.add_message("o", conv.id, role="assistant", content="x", model="m",
                                status=status)  # fmt: skip
    assert await store.mark_streaming_as("server_shutdown") == 2
    messages = await store.get_messages("o", conv.id)
    assert [(m.status, m.end_reason) for m in messages] == [
        ("partial", "server_shutdown"), ("partial", "server_shutdown"), ("complete", None)
    ]  # fmt: skip
    assert await store.mark_streaming_as("server_shutdown") == 0


async def test_keys(store: Either, tmp_path: Path) -> None:
    record, secret = await store.create_key("ci", rpm=60, tpm=None, max_streams=2)
    assert looks_like_key(secret)
    assert record.prefix == secret[3:11]
    assert record.id.startswith("k_")
    assert record.active
    assert (record.rpm, record.tpm, record.max_streams) == (60, None, 2)
    assert await store.find_key(secret) == record
    assert await store.find_key(secret[:-1] + ("A" if secret[-1] != "A" else "B")) is None
    other, other_secret = await store.create_key(" web ", rpm=None, tpm=None, max_streams=None)
    assert other.name == "web"
    assert [k.id for k in await store.list_keys()] == [record.id, other.id]
    assert await store.count_active_keys() == 2

    revoked = await store.revoke_key(record.id)
    assert revoked is not None
    assert revoked.revoked_at is not None
    assert await store.find_key(secret) is None
    assert await store.count_active_keys() == 1
    again = await store.revoke_key(record.id)
    assert again is not None
    assert again.revoked_at == revoked.revoked_at
    assert await store.revoke_key("k_nope") is None
    by_prefix = await store.revoke_key(f"wx-{other.prefix}…")
    assert by_prefix is not None
    assert by_prefix.id == other.id
    assert await store.find_key(other_secret) is None

    # only the hash is stored: the secret appears nowhere in the database
    if isinstance(store, SQLiteStore):
        raw = b"".join(p.read_bytes() for p in (tmp_path / "data").iterdir())
    else:
        rows = await store._call(lambda db: db.all("SELECT * FROM api_keys"), write=False)
        raw = repr(rows).encode()
    assert secret.encode() not in raw
    assert other_secret.encode() not in raw
    assert hash_key(secret).encode() in raw


async def test_revoke_by_full_key_and_ambiguous_prefix(
    store: Either, monkeypatch: pytest.MonkeyPatch
) -> None:
    from wenxin_stream.server import _keys

    made = iter(["wx-SAMEPREF" + "a" * 32, "wx-SAMEPREF" + "b" * 32])
    monkeypatch.setattr(_keys, "generate_key", lambda: next(made))
    one, secret_one = await store.create_key("one", rpm=None, tpm=None, max_streams=None)
    two, _ = await store.create_key("two", rpm=None, tpm=None, max_streams=None)
    with pytest.raises(AmbiguousKeyError, match=one.id):
        await store.revoke_key("SAMEPREF")
    revoked = await store.revoke_key(secret_one)
    assert revoked is not None
    assert revoked.id == one.id
    # now the prefix prefers the active key
    last = await store.revoke_key("wx-SAME")
    assert last is not None
    assert last.id == two.id
    assert await store.revoke_key("wx-SA") is None  # prefixes need 4+ characters


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"name": " "}, "name"),
        ({"name": "a\nb"}, "name"),
        ({"name": "x" * 201}, "name"),
        ({"name": "n", "rpm": 0}, "rpm"),
        ({"name": "n", "max_streams": -1}, "max_streams"),
    ],
)
async def test_key_arguments_are_checked(
    store: Either, kwargs: dict[str, object], match: str
) -> None:
    args: dict[str, object] = {"rpm": None, "tpm": None, "max_streams": None, **kwargs}
    with pytest.raises(ValueError, match=match):
        await store.create_key(**args)  # type: ignore[arg-type]
    assert await store.list_keys() == []


async def test_sync_admin_alongside_a_running_store(database: str) -> None:
    async with open_store(database) as store:
        with SyncKeyAdmin(database) as admin:  # another connection, as `wenxin keys` would be
            record, secret = admin.create_key("cli", rpm=None, tpm=5000, max_streams=None)
            assert await store.find_key(secret) == record
            assert admin.resolve_key(record.id) == record
            assert admin.revoke_key(record.id) is not None
            assert admin.count_active_keys() == 0
            assert admin.list_keys()[0].revoked_at is not None
        assert await store.find_key(secret) is None


async def test_data_survives_reopen(database: str) -> None:
    async with open_store(database) as store:
        conv = await store.create_conversation("o", title="kept", model="m", system=None)
        await store.add_message("o", conv.id, role="user", content="q", model=None)
    async with open_store(database) as store:
        assert (await store.get_conversation("o", conv.id)) is not None
        assert len(await store.get_messages("o", conv.id)) == 1


async def test_concurrent_writes_are_batched_and_all_land(store: Either) -> None:
    convs = [
        await store.create_conversation(f"o{i % 10}", title=None, model="m", system=None)
        for i in range(100)
    ]

    async def stream(conv: _store.ConversationRecord) -> None:
        for n in range(10):
            msg = await store.add_message(conv.owner, conv.id, role="assistant", content="",
                                          model="m", status="streaming")  # fmt: skip
            await store.update_message(
                msg.id, content=f"answer {n}", status="complete", end_reason="completed",
                usage={"total_tokens": n}, ttft_ms=1.0, total_ms=2.0, generated_chars=8,
                delivered_chars=8,
            )  # fmt: skip

    jobs_before, transactions_before = store.stats
    await asyncio.wait_for(asyncio.gather(*(stream(c) for c in convs)), 30)
    jobs, transactions = store.stats
    assert jobs - jobs_before == 2000
    if isinstance(store, SQLiteStore):
        assert transactions - transactions_before < 2000  # group commit shared transactions
    for conv in convs[:5]:
        messages = await store.get_messages(conv.owner, conv.id)
        assert [m.content for m in messages] == [f"answer {n}" for n in range(10)]
        assert all(m.status == "complete" for m in messages)


async def test_a_failing_job_does_not_undo_its_batch(store: Either) -> None:
    conv = await store.create_conversation("o", title=None, model="m", system=None)
    results = await asyncio.gather(
        *(
            store.add_message(
                "o", conv.id if i % 2 else "c_missing", role="user", content=str(i), model=None
            )
            for i in range(40)
        ),
        return_exceptions=True,
    )
    failures = [r for r in results if isinstance(r, BaseException)]
    assert len(failures) == 20
    assert all(isinstance(f, ConversationNotFoundError) for f in failures)
    assert len(await store.get_messages("o", conv.id)) == 20


async def test_work_of_a_cancelled_caller_still_lands(store: Either) -> None:
    conv = await store.create_conversation("o", title=None, model="m", system=None)
    task = asyncio.ensure_future(
        store.add_message("o", conv.id, role="user", content="saved anyway", model=None)
    )
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # SQLite: queued behind it, so it runs after it; PostgreSQL: in parallel, so poll
    for _ in range(500):
        messages = await store.get_messages("o", conv.id)
        if messages or isinstance(store, SQLiteStore):
            break
        await asyncio.sleep(0.01)
    assert [m.content for m in messages] == ["saved anyway"]


async def test_lifecycle_errors(database: str) -> None:
    store = open_store(database)
    with pytest.raises(StoreError, match="not open"):
        await store.list_keys()
    await store.open()
    with pytest.raises(StoreError, match="already"):
        await store.open()
    await store.close()
    await store.close()  # idempotent
    with pytest.raises(StoreError, match="not open"):
        await store.list_keys()


async def test_open_failures_are_store_errors(tmp_path: Path) -> None:
    (tmp_path / "dir.db").mkdir()
    with pytest.raises(StoreError, match="cannot open"):
        await SQLiteStore(tmp_path / "dir.db").open()
    (tmp_path / "garbage.db").write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match="database error"):
        await SQLiteStore(tmp_path / "garbage.db").open()
    with pytest.raises(StoreError, match="cannot open"):
        SyncKeyAdmin(tmp_path / "dir.db")


async def test_a_newer_schema_is_refused(database: str) -> None:
    async with open_store(database):
        pass
    with SyncDatabase(database) as db:
        db._run(lambda d: d.run("INSERT INTO schema_version (version) VALUES (99)"), write=True)
        assert db.schema_version() == 99
        with pytest.raises(StoreError, match="schema version 99, newer"):
            db.upgrade()
    for migrate in (True, False):
        with pytest.raises(StoreError, match="schema version 99, newer"):
            await open_store(database).open(migrate=migrate)
    with pytest.raises(StoreError, match="schema version 99"):
        SyncKeyAdmin(database)


async def test_migrations_run_one_step_per_transaction(
    database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new database is upgraded step by step; with ``migrate=False`` an out-of-date schema
    is refused and left alone; a failing step keeps the steps before it."""
    shipped = len(_schema.MIGRATIONS)
    with pytest.raises(StoreError, match=rf"version 0 .* needs {shipped}: run `wenxin db upgrade`"):
        await open_store(database).open(migrate=False)
    with SyncDatabase(database) as db:
        assert db.schema_version() == 0  # refusing changed nothing
    extra = ("CREATE TABLE later_step (id TEXT PRIMARY KEY)",)
    broken = ("CREATE TABLE broken_step (id TEXT PRIMARY KEY)", "SELECT * FROM missing_table")
    monkeypatch.setattr(_schema, "MIGRATIONS", (*_schema.MIGRATIONS, extra, broken))
    monkeypatch.setattr(_store, "MIGRATIONS", _schema.MIGRATIONS)
    reached: list[int] = []
    with SyncDatabase(database) as db, pytest.raises(StoreError, match="missing_table"):
        db.upgrade(on_step=reached.append)
    assert reached == list(range(1, shipped + 2))  # the broken step failed: rolled back alone
    with SyncDatabase(database) as db:
        assert db.schema_version() == shipped + 1
        assert db._run(lambda d: d.all("SELECT id FROM later_step"), write=False) == []
    monkeypatch.setattr(_schema, "MIGRATIONS", (*_schema.MIGRATIONS[: shipped + 1],))
    monkeypatch.setattr(_store, "MIGRATIONS", _schema.MIGRATIONS)
    async with open_store(database) as store:  # now current: opens without migrating
        assert await store.count_active_keys() == 0


async def test_an_exchange_is_rolled_back_whole(
    store: Either, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The messages' insert fails after the conversation's count and title moved (one
    transaction on both backends; one statement on PostgreSQL): nothing of it is kept."""
    conv = await store.create_conversation("o", title=None, model="m", system=None)
    for name in ("_INSERT_EXCHANGE", "_EXCHANGE_AT_ONCE"):  # SQLite's, PostgreSQL's
        broken = getattr(_schema, name).replace("INTO messages", "INTO no_such_table")
        monkeypatch.setattr(_schema, name, broken)
    with pytest.raises(StoreError, match="no_such_table"):
        await store.add_exchange("o", conv.id, question="lost", model=None)
    assert await store.get_messages("o", conv.id) == []
    got = await store.get_conversation("o", conv.id)
    assert got is not None
    assert (got.message_count, got.title) == (0, "")


async def test_checkpoints_write_only_streaming_answers(store: Either) -> None:
    conv = await store.create_conversation("o", title=None, model="m", system=None)
    answers = [(await store.add_exchange("o", conv.id, question=f"q{i}", model="m"))[1]
               for i in range(3)]  # fmt: skip
    await store.update_message(
        answers[2].id, content="final", status="complete", end_reason="completed", usage=None,
        ttft_ms=1.0, total_ms=2.0, generated_chars=5, delivered_chars=5,
    )  # fmt: skip
    written = await store.checkpoint(
        [Checkpoint(a.id, f"so far {i}", 8, 4, 1.5) for i, a in enumerate(answers)]
        + [Checkpoint("m_gone", "x", 1, 1, None)]
    )
    assert written == 2
    messages = {m.id: m for m in await store.get_messages("o", conv.id)}
    assert [messages[a.id].content for a in answers] == ["so far 0", "so far 1", "final"]
    first = messages[answers[0].id]
    assert (first.status, first.generated_chars, first.delivered_chars, first.ttft_ms) == (
        "streaming", 8, 4, 1.5,
    )  # fmt: skip
    assert await store.checkpoint([]) == 0


async def test_memory_database() -> None:
    async with open_store(":memory:") as store:
        conv = await store.create_conversation("o", title=None, model="m", system=None)
        assert await store.get_conversation("o", conv.id) == conv


def test_open_store_urls(tmp_path: Path) -> None:
    assert open_store(f"sqlite:///{tmp_path}/a.db").path == f"{tmp_path}/a.db"  # sqlite:////abs
    assert open_store("sqlite:///data/wenxin.db").path == "data/wenxin.db"  # relative
    assert open_store(str(tmp_path / "b.db")).path == str(tmp_path / "b.db")
    for url in ("postgresql://user:pw@db/wenxin", "postgres://u@h:5433/d?sslmode=disable"):
        chosen = open_store(url, pool_size=3, pool_timeout=0.5)
        assert isinstance(chosen, PostgresStore)  # not opened: nothing connects yet
        assert "pw" not in repr(chosen)
    with pytest.raises(StoreConfigurationError, match="chooses the driver") as exc:
        open_store("postgres+asyncpg://u:secret@h/d")
    assert "secret" not in str(exc.value)
    with pytest.raises(StoreConfigurationError, match="not a SQLite file") as exc:
        sqlite_path("postgresql://u:secret@h/d")
    assert "secret" not in str(exc.value)
    with pytest.raises(StoreConfigurationError, match="unsupported"):
        open_store("mysql://u:p@h/d")
    with pytest.raises(StoreConfigurationError, match="sqlite:///"):
        open_store("sqlite://relative.db")
    for empty in ("", "  ", "sqlite:///"):
        with pytest.raises(StoreConfigurationError, match="no database path"):
            open_store(empty)


def _conforms(store: Either) -> _store.Store:
    return store  # mypy checks that SQLiteStore implements the Store protocol


def test_helpers() -> None:
    assert isinstance(_conforms(SQLiteStore(":memory:")), SQLiteStore)
    now = utc_now()
    assert len(now) == 27
    assert now[10] == "T"
    assert now.endswith("Z")
    assert default_title("  a \n b  ") == "a b"
    assert _sql.SQLITE.sql("a = ? AND b = ?") == "a = ? AND b = ?"
    assert _sql.POSTGRESQL.sql("a = ? AND b = ?") == "a = %s AND b = %s"


async def test_a_locked_database_fails_cleanly_and_reads_go_on(tmp_path: Path) -> None:
    path = tmp_path / "w.db"
    async with SQLiteStore(path, busy_timeout=0.05) as store:
        conv = await store.create_conversation("o", title=None, model="m", system=None)
        holder = sqlite3.connect(path, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        try:
            with pytest.raises(StoreError, match="locked"):
                await store.add_message("o", conv.id, role="user", content="x", model=None)
            assert await store.get_conversation("o", conv.id) == conv  # WAL: readers go on
            with pytest.raises(StoreError, match="locked"):
                SyncKeyAdmin(path, busy_timeout=0.05)
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        with SyncKeyAdmin(path, busy_timeout=0.05) as admin:
            holder = sqlite3.connect(path, isolation_level=None)
            holder.execute("BEGIN IMMEDIATE")
            try:
                with pytest.raises(StoreError, match="locked"):
                    admin.create_key("x", rpm=None, tpm=None, max_streams=None)
            finally:
                holder.execute("ROLLBACK")
                holder.close()
            assert admin.list_keys() == []


async def test_a_failed_commit_fails_the_whole_batch(sqlite_store: SQLiteStore) -> None:
    def sabotage(db: _sql.Db) -> None:
        db.conn.execute("COMMIT")  # ends the worker's transaction behind its back

    with pytest.raises(StoreError, match="database error"):
        await sqlite_store._call(sabotage, write=True)
    assert await sqlite_store.count_active_keys() == 0  # the worker carries on


async def test_batches_are_bounded(
    sqlite_store: SQLiteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_sqlite, "BATCH_LIMIT", 4)
    jobs, transactions = sqlite_store.stats
    await asyncio.gather(*(sqlite_store.count_active_keys() for _ in range(40)))
    new_jobs, new_transactions = sqlite_store.stats
    assert new_jobs - jobs == 40
    assert new_transactions - transactions >= 10


async def test_only_the_named_producers_answers_are_ended(store: Either) -> None:
    """Several instances share one database: ending one instance's streaming answers (its
    shutdown, or the sweep of a dead one) leaves every other instance's running answers alone."""
    conv = await store.create_conversation("o", title=None, model="m", system=None)
    _, mine = await store.add_exchange("o", conv.id, question="a", model=None, producer="A")
    _, theirs = await store.add_exchange("o", conv.id, question="b", model=None, producer="B")
    _, legacy = await store.add_exchange("o", conv.id, question="c", model=None)
    assert sorted(await store.streaming_producers(), key=str) == sorted(["A", "B", None], key=str)
    assert await store.mark_streaming_as("server_shutdown", ["A"]) == 1
    assert await store.mark_streaming_as("server_crashed", [None]) == 1
    status = {m.id: (m.status, m.end_reason) for m in await store.get_messages("o", conv.id)}
    assert status[mine.id] == ("partial", "server_shutdown")
    assert status[legacy.id] == ("partial", "server_crashed")
    assert status[theirs.id] == ("streaming", None)
    assert await store.streaming_producers() == ["B"]
    assert await store.mark_streaming_as("server_crashed") == 1  # omitted: every one


async def test_a_key_limit_beyond_32_bits_is_refused_alike_on_both_backends(store: Either) -> None:
    """PostgreSQL's INTEGER is 32 bits (it answered "integer out of range" for a TPM of 10^10
    while SQLite took it): both refuse it, by name, before the database sees it."""
    with pytest.raises(ValueError, match="tpm must be at most 2,147,483,647"):
        await store.create_key("big", rpm=None, tpm=10**10, max_streams=None)
    record, _ = await store.create_key("big", rpm=None, tpm=2**31 - 1, max_streams=None)
    assert record.tpm == 2**31 - 1
