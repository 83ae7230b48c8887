"""Why `server/_sqlite.py` is hand-written: our SQLite worker against aiosqlite, one run.

N concurrent answers each make the server's two writes: the question and the empty answer in
one transaction (`add_exchange`), then the finished answer (`update_message`). Ours runs each
operation as one job of its worker thread, and a batch of queued jobs as one transaction (group
commit). The aiosqlite side does the same SQL the obvious way: one connection, a transaction per
write, one thread hop per statement. Wall time and process CPU per answer; 3 rounds, alternating.

    .venv/bin/pip install --target /tmp/aiosqlite-lib aiosqlite
    PYTHONPATH=/tmp/aiosqlite-lib .venv/bin/python bench/sqlite_worker_vs_aiosqlite.py 500
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable

from wenxin_stream.server._store import SQLiteStore

ANSWER = "答" * 300
USAGE = {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}
SCHEMA = (
    "CREATE TABLE messages (id TEXT PRIMARY KEY, conversation_id TEXT, seq INTEGER, role TEXT, "
    "content TEXT, status TEXT, end_reason TEXT, usage TEXT, created_at TEXT)",
    "CREATE TABLE conversations (id TEXT PRIMARY KEY, message_count INTEGER, updated_at TEXT)",
    "INSERT INTO conversations VALUES ('c', 0, '')",
)
INSERT = "INSERT INTO messages VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"


async def ours(path: str, n: int) -> None:
    store = SQLiteStore(path)
    await store.open()
    conv = await store.create_conversation("k", title=None, model="m", system=None)

    async def one(i: int) -> None:
        _, answer = await store.add_exchange("k", conv.id, question=f"q{i}", model="m")
        await store.update_message(
            answer.id, content=ANSWER, status="complete", end_reason="completed", usage=USAGE,
            ttft_ms=1.0, total_ms=2.0, generated_chars=300, delivered_chars=300,
        )  # fmt: skip

    await asyncio.gather(*(one(i) for i in range(n)))
    await store.close()


async def theirs(path: str, n: int) -> None:
    import aiosqlite  # only this benchmark needs it

    db = await aiosqlite.connect(path, isolation_level=None)
    await db.execute("PRAGMA journal_mode=WAL")
    await db.execute("PRAGMA synchronous=NORMAL")
    for statement in SCHEMA:
        await db.execute(statement)
    lock = asyncio.Lock()  # one connection: one transaction at a time

    async def one(i: int) -> None:
        async with lock:
            await db.execute("BEGIN IMMEDIATE")
            cursor = await db.execute("SELECT message_count FROM conversations WHERE id = 'c'")
            row = await cursor.fetchone()
            assert row is not None
            seq = row[0]
            await db.execute(
                INSERT, (f"u{i}", "c", seq, "user", f"q{i}", "complete", None, None, "t")
            )
            await db.execute(INSERT, (f"a{i}", "c", seq + 1, "assistant", "", "streaming", None,
                                      None, "t"))  # fmt: skip
            await db.execute(
                "UPDATE conversations SET message_count = ?, updated_at = ? WHERE id = 'c'",
                (seq + 2, "t"),
            )
            await db.execute("COMMIT")
        async with lock:
            await db.execute("BEGIN IMMEDIATE")
            await db.execute(
                "UPDATE messages SET content = ?, status = ?, end_reason = ?, usage = ? "
                "WHERE id = ?",
                (ANSWER, "complete", "completed", json.dumps(USAGE), f"a{i}"),
            )
            await db.execute("COMMIT")

    await asyncio.gather(*(one(i) for i in range(n)))
    await db.close()


async def main(n: int) -> None:
    sides: tuple[tuple[str, Callable[[str, int], Awaitable[None]]], ...] = (
        ("ours", ours),
        ("aiosqlite", theirs),
    )
    for rnd in range(3):
        for name, run in sides:
            with tempfile.TemporaryDirectory() as directory:
                wall0, cpu0 = time.perf_counter(), time.process_time()
                await run(os.path.join(directory, "db.sqlite"), n)
                wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
            print(
                f"round {rnd} {name:9s} {n} answers: {wall / n * 1e6:6.0f} µs wall, "
                f"{cpu / n * 1e6:6.0f} µs CPU per answer",
                flush=True,
            )


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 500))
