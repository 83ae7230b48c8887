"""What is PostgreSQL's own in the store: the bounded pool, migrations from several processes at
once, passwords kept out of errors and logs, and `wenxin serve` on PostgreSQL end to end."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from server_helpers import Running, new_conversation, sse_events

from services import Service, free_port
from wenxin_stream.server import _postgres, _schema
from wenxin_stream.server._store import (
    PostgresStore,
    StoreError,
    StoreUnavailableError,
    SyncDatabase,
    SyncKeyAdmin,
    open_store,
)


async def test_an_exhausted_pool_is_a_bounded_wait_then_unavailable(postgres_url: str) -> None:
    async with PostgresStore(postgres_url, pool_size=1, pool_timeout=0.2) as store:
        held = asyncio.ensure_future(
            store._call(lambda db: db.one("SELECT pg_sleep(1.0)"), write=False)
        )
        await asyncio.sleep(0.05)  # the one connection is busy for a second
        started = time.monotonic()
        with pytest.raises(StoreUnavailableError, match="all 1 database connections") as exc:
            await store.count_active_keys()
        assert time.monotonic() - started < 0.9  # refused after pool_timeout, not after the hold
        assert exc.value.retry_after >= 1
        await held
        assert await store.count_active_keys() == 0  # free again
        stats = store.pool_stats()
        assert stats["pool_timeouts"] == 1
        assert stats["pool_size"] == 1


async def test_a_cancelled_caller_does_not_free_its_connection_early(postgres_url: str) -> None:
    """The slot is held until the operation ends, so at most ``pool_size`` ever run."""
    async with PostgresStore(postgres_url, pool_size=1, pool_timeout=0.2) as store:
        held = asyncio.ensure_future(
            store._call(lambda db: db.one("SELECT pg_sleep(0.6)"), write=False)
        )
        await asyncio.sleep(0.05)
        held.cancel()
        with pytest.raises(StoreUnavailableError):
            await store.count_active_keys()
        await asyncio.sleep(0.6)
        assert await store.count_active_keys() == 0


async def test_a_cancelled_callers_write_still_lands_and_close_waits_for_it(
    postgres_url: str,
) -> None:
    """Cancelling the caller cancels only its wait: the queued operation runs (an answer
    being saved at shutdown is saved), failures reach their callers, and close() finishes
    what was queued before the threads stop."""
    store = PostgresStore(postgres_url, pool_size=2, pool_timeout=2.0)
    await store.open()
    conv = await store.create_conversation("o", title=None, model="m", system=None)

    def slow_rename(db: Any) -> int:
        db.one("SELECT pg_sleep(0.3)")
        return db.run("UPDATE conversations SET title = ? WHERE id = ?", ("kept", conv.id))

    waiting = asyncio.ensure_future(store._call(slow_rename, write=True))
    await asyncio.sleep(0.05)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    with pytest.raises(StoreError, match="no_such_table"):
        await store._call(lambda db: db.all("SELECT * FROM no_such_table"), write=False)
    queued = [asyncio.ensure_future(store.list_conversations("o")) for _ in range(6)]
    await asyncio.sleep(0)  # one is queued behind the slow rename; five wait for a slot
    await store.close()
    results = await asyncio.gather(*queued, return_exceptions=True)
    assert len(results[0]) == 1  # queued before the close: run
    for late in results[1:]:  # still waiting for a slot at the close: refused, never hung
        assert isinstance(late, StoreError)
        assert "not open" in str(late)
    async with PostgresStore(postgres_url) as again:
        got = await again.get_conversation("o", conv.id)
    assert got is not None
    assert got.title == "kept"


_MIGRATE = """
import sys, time
from wenxin_stream.server import _schema, _sql
from wenxin_stream.server._store import SyncDatabase

# a slow second step, which would apply twice without the lock (no DDL to trip over)
slow = ("SELECT pg_sleep(0.5)", "UPDATE conversations SET title = title")
_schema.MIGRATIONS = (*_schema.MIGRATIONS, slow)
if sys.argv[3] == "nolock":
    _sql.Db.lock_schema = lambda db: None
with SyncDatabase(sys.argv[1]) as db:  # connected first: only the upgrade is timed
    while time.time() < float(sys.argv[2]):
        time.sleep(0.005)
    print(db.upgrade())
"""


def _migrate_twice(url: str, mode: str) -> list[subprocess.CompletedProcess[str]]:
    start = f"{time.time() + 2.0:.3f}"  # both processes begin at this instant
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _MIGRATE, url, start, mode],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    done = []
    for proc in procs:
        out, err = proc.communicate(timeout=30)
        done.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return done


def test_two_processes_migrating_at_once_apply_each_step_once(postgres_url: str) -> None:
    done = _migrate_twice(postgres_url, "lock")
    assert [d.returncode for d in done] == [0, 0], [d.stderr for d in done]
    applied = [v for d in done for v in json.loads(d.stdout)]  # who did which step varies
    steps = list(range(1, len(_schema.MIGRATIONS) + 2))  # the shipped ones and the slow one
    assert sorted(applied) == steps
    with SyncDatabase(postgres_url) as db:
        rows = db._run(lambda d: d.all("SELECT version FROM schema_version"), write=False)
    assert sorted(rows) == [(step,) for step in steps]


def test_without_the_schema_lock_the_race_is_real(postgres_url: str) -> None:
    """The control for the test above: a database at the shipped version, both processes
    starting at once without the lock, both apply the slow step."""
    shipped = len(_schema.MIGRATIONS)
    with SyncDatabase(postgres_url) as db:
        assert db.upgrade() == list(range(1, shipped + 1))
    done = _migrate_twice(postgres_url, "nolock")
    with SyncDatabase(postgres_url) as db:
        rows = db._run(lambda d: d.all("SELECT version FROM schema_version"), write=False)
    assert [d.stdout.strip() for d in done] == [f"[{shipped + 1}]"] * 2
    assert sorted(rows) == [(step,) for step in range(1, shipped + 1)] + [(shipped + 1,)] * 2


async def test_passwords_never_show_in_errors_or_logs(
    postgres_service: Service, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    nowhere = f"postgresql://wenxin:s3cr3t-pw@127.0.0.1:{free_port()}/wenxin"
    no_database = postgres_service.url.replace("wenxin@", "wenxin:s3cr3t-pw@") + "_missing"
    for url, error in ((nowhere, StoreUnavailableError), (no_database, StoreError)):
        with pytest.raises(error) as exc:
            await PostgresStore(url, pool_timeout=2).open()
        text = str(exc.value)
        assert "s3cr3t-pw" not in text
        assert "wenxin:***@127.0.0.1" in text
        assert exc.value.__cause__ is None
        assert exc.value.__suppress_context__
        with pytest.raises(error) as sync_exc:
            SyncKeyAdmin(url)
        assert "s3cr3t-pw" not in str(sync_exc.value)
        assert "s3cr3t-pw" not in repr(open_store(url))
    assert "s3cr3t-pw" not in caplog.text
    scrubbed = _postgres.translate_error(
        _postgres.psycopg.OperationalError(f"cannot use {nowhere} (password s3cr3t-pw)"), nowhere
    )
    assert "s3cr3t-pw" not in str(scrubbed)


async def test_the_store_must_be_open(postgres_url: str) -> None:
    store = PostgresStore(postgres_url)
    with pytest.raises(StoreError, match="not open"):
        await store.list_keys()
    await store.open()
    with pytest.raises(StoreError, match="already"):
        await store.open()
    await store.close()
    await store.close()
    with pytest.raises(StoreError, match="not open"):
        await store.list_keys()


def test_serve_on_postgres_answers_a_full_exchange(
    make_server: Callable[..., Running], postgres_url: str, tmp_path: Path
) -> None:
    """`wenxin serve --database-url postgresql://…`: an exchange streams and is stored in
    PostgreSQL, where `wenxin keys` (another connection) sees the same database."""
    srv = make_server(database_url=postgres_url, database_pool_size=3)
    assert isinstance(srv.app.store, PostgresStore)
    with srv.client() as c:
        cid = new_conversation(c)
        r = c.post(f"/api/conversations/{cid}/messages", json={"content": "介绍一下长城"})
        assert r.status_code == 200
        events = sse_events(r.content)
        assert events[0].event == "start"
        assert events[-1].event == "end"
        end = json.loads(events[-1].data)
        assert end["end_reason"] == "completed"
        text = "".join(json.loads(e.data)["text"] for e in events if e.event == "delta")
        conv = c.get(f"/api/conversations/{cid}").json()
    user, answer = conv["messages"]
    assert (user["content"], answer["status"], answer["content"]) == (
        "介绍一下长城",
        "complete",
        text,
    )
    assert not (tmp_path / "data0" / "wenxin.db").exists()  # nothing went to SQLite
    with SyncDatabase(postgres_url) as db:
        stored = db._run(
            lambda d: d.one("SELECT content, status FROM messages WHERE id = ?", (answer["id"],)),
            write=False,
        )
    assert stored == (text, "complete")


def test_an_unavailable_database_is_503_with_retry_after(
    make_server: Callable[..., Running], monkeypatch: pytest.MonkeyPatch
) -> None:
    srv = make_server()

    async def busy(*args: object, **kwargs: object) -> None:
        raise StoreUnavailableError("all 10 database connections stayed busy", retry_after=2.0)

    monkeypatch.setattr(srv.app.store, "list_conversations", busy)
    with srv.client() as c:
        r = c.get("/api/conversations")
    assert r.status_code == 503
    assert r.headers["retry-after"] == "2"
    assert r.json()["error"]["code"] == "database_unavailable"
