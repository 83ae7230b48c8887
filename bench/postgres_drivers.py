"""Which PostgreSQL driver the store uses: psycopg 3 against asyncpg, on the store's operations.

The store's operations (``server/_schema.py``) are recorded, not rewritten: each one runs once
through a recording ``Db`` on a real connection in a transaction that is rolled back, which
gives the exact statements (and parameters, and the control flow the data chose) that the
store sends. Every driver then replays the same recorded operations, each in one transaction
(``BEGIN`` … ``COMMIT``), with ``CONCURRENCY`` operations in flight over a pool of ``POOL``
connections:

- ``psycopg-threads``: psycopg 3's synchronous driver on the store's own ``_postgres.Runner``
  (a pool of threads and connections, what ``PostgresStore`` runs on);
- ``psycopg-async``: psycopg 3's ``AsyncConnectionPool`` on the event loop;
- ``asyncpg``: asyncpg's pool (``$n`` markers, its statement cache);

plus ``store``: ``PostgresStore`` itself calling the real operations (records built, ids
generated), to show what the store adds over a bare replay.

Operations: ``add_exchange`` (question + empty answer), ``checkpoint`` (one batch of 50
answers), ``update_message`` (an answer's final record), ``list_conversations`` (100 of an
owner's 200), ``find_key``. Per operation: CPU of this process (all threads) per operation
and latency p50 / p99; ``ROUNDS`` rounds, the drivers alternating, median of the rounds.
A private PostgreSQL is started from the installed binaries (``tests/services.py``; fsync
off) and shares the machine's cores with this process. Every run is bounded (``--ops``).

    .venv/bin/pip install asyncpg        # only for this benchmark
    .venv/bin/python bench/postgres_drivers.py [--ops 1000] [--out bench/results]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import psycopg
import psycopg_pool

from services import postgres_server
from wenxin_stream.server import _keys, _postgres, _schema
from wenxin_stream.server._sql import Db
from wenxin_stream.server._store import Checkpoint, PostgresStore, SyncKeyAdmin

POOL = 10
CONCURRENCY = 20
ROUNDS = 3
CONVERSATIONS = 200
BATCH = 50
ANSWER = "流式输出是逐块返回生成结果的方式。" * 20  # ~340 characters, a checkpoint's text
USAGE = {"prompt_tokens": 12, "completion_tokens": 340, "total_tokens": 352}

Statement = tuple[str, str, Any]  # (kind: run | many | one | all, qmark SQL, parameters)
Trace = list[Statement]


class RecordingDb(Db):
    """A ``Db`` that notes every statement (in ``?`` style) before running it."""

    def __init__(self, conn: Any, dialect: Any) -> None:
        super().__init__(conn, dialect)
        self.trace: Trace = []

    def run(self, sql: str, params: Sequence[Any] = ()) -> int:
        self.trace.append(("run", sql, tuple(params)))
        return super().run(sql, params)

    def run_many(self, sql: str, rows: Iterable[Sequence[Any]]) -> int:
        rows = [tuple(r) for r in rows]
        self.trace.append(("many", sql, rows))
        return super().run_many(sql, rows)

    def one(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        self.trace.append(("one", sql, tuple(params)))
        return super().one(sql, params)

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        self.trace.append(("all", sql, tuple(params)))
        return super().all(sql, params)


def record(conn: psycopg.Connection[Any], op: Callable[[Db], object]) -> Trace:
    """The statements ``op`` sends, from a real run that is rolled back."""
    base = _postgres.db_of(conn)
    db = RecordingDb(base.conn, base.dialect)
    db.begin(write=True)
    try:
        op(db)
    finally:
        db.end(commit=False)
    return db.trace


@dataclass
class Workload:
    """Per operation name: the recorded traces, and the real store calls."""

    traces: dict[str, list[Trace]]
    calls: dict[str, list[Callable[[PostgresStore], Awaitable[object]]]]
    fresh: Callable[[], list[Trace]]
    """New ``add_exchange`` traces (their inserts carry new ids): one set per replay."""


def prepare(url: str, n: int) -> Workload:
    """Seed the database (conversations, streaming answers, keys) and record ``n`` of each
    operation (a tenth of ``n`` checkpoint batches)."""
    with SyncKeyAdmin(url) as admin:
        secrets = [admin.create_key(f"k{i}", rpm=None, tpm=None, max_streams=None)[1]
                   for i in range(20)]  # fmt: skip
    conn = psycopg.connect(url, autocommit=True)
    db = _postgres.db_of(conn)
    convs = [_schema.create_conversation(db, "bench", f"t{i}", "m", None)
             for i in range(CONVERSATIONS)]  # fmt: skip
    streaming = [_schema.add_exchange(db, "bench", convs[i % CONVERSATIONS].id, "q", "m")[1].id
                 for i in range(2 * n)]  # fmt: skip
    checkpoint_ids, final_ids = streaming[:n], streaming[n:]
    batches = max(1, n // 10)

    def exchanges() -> list[Trace]:
        with psycopg.connect(url, autocommit=True) as own:
            return [
                record(
                    own,
                    lambda d, i=i: _schema.add_exchange(
                        d, "bench", convs[i % CONVERSATIONS].id, f"question {i}", "m"
                    ),
                )
                for i in range(n)
            ]

    traces: dict[str, list[Trace]] = {
        "add_exchange": [],
        "checkpoint": [
            record(conn, lambda d, b=b: _schema.checkpoint_answers(d, [
                Checkpoint(checkpoint_ids[(b * BATCH + j) % n], ANSWER, 340, 300, 12.5)
                for j in range(BATCH)]))
            for b in range(batches)
        ],
        "update_message": [
            record(conn, lambda d, i=i: _schema.update_message(
                d, final_ids[i], ANSWER, "complete", "completed", USAGE, 12.5, 900.0, 340, 340))
            for i in range(n)
        ],
        "list_conversations": [
            record(conn, lambda d: _schema.list_conversations(d, "bench", 100)) for _ in range(n)
        ],
        "find_key": [
            record(conn, lambda d, i=i: _keys.select_key_by_secret(d, secrets[i % len(secrets)]))
            for i in range(n)
        ],
    }  # fmt: skip
    conn.close()
    calls: dict[str, list[Callable[[PostgresStore], Awaitable[object]]]] = {
        "add_exchange": [
            lambda s, i=i: s.add_exchange("bench", convs[i % CONVERSATIONS].id,
                                          question=f"question {i}", model="m")
            for i in range(n)
        ],
        "checkpoint": [
            lambda s, b=b: s.checkpoint([
                Checkpoint(checkpoint_ids[(b * BATCH + j) % n], ANSWER, 340, 300, 12.5)
                for j in range(BATCH)])
            for b in range(batches)
        ],
        "update_message": [
            lambda s, i=i: s.update_message(
                final_ids[i], content=ANSWER, status="complete", end_reason="completed",
                usage=USAGE, ttft_ms=12.5, total_ms=900.0, generated_chars=340,
                delivered_chars=340)
            for i in range(n)
        ],
        "list_conversations": [
            lambda s: s.list_conversations("bench", limit=100) for _ in range(n)
        ],
        "find_key": [
            lambda s, i=i: s.find_key(secrets[i % len(secrets)]) for i in range(n)
        ],
    }  # fmt: skip
    return Workload(traces, calls, exchanges)


# -- the drivers: each runs one recorded operation in one transaction -------------------------


def _replay_sync(db: Db, trace: Trace) -> None:
    for kind, sql, params in trace:
        if kind == "many":
            db.run_many(sql, params)
        elif kind == "run":
            db.run(sql, params)
        else:
            db.all(sql, params)


def _dollars(sql: str) -> str:
    parts = sql.split("?")
    return "".join(p + (f"${i + 1}" if i < len(parts) - 1 else "") for i, p in enumerate(parts))


class Driver:
    name = ""

    async def open(self, url: str) -> None: ...
    async def close(self) -> None: ...
    async def replay(self, trace: Trace) -> None: ...


class PsycopgThreads(Driver):
    name = "psycopg-threads"

    async def open(self, url: str) -> None:
        self.runner = _postgres.Runner(url, size=POOL, timeout=30)
        await self.runner.open()

    async def close(self) -> None:
        await self.runner.close()

    async def replay(self, trace: Trace) -> None:
        await self.runner.call(lambda db: _replay_sync(db, trace), write=True)


class PsycopgAsync(Driver):
    name = "psycopg-async"

    async def open(self, url: str) -> None:
        self.pool = psycopg_pool.AsyncConnectionPool(
            url, min_size=POOL, max_size=POOL, kwargs={"autocommit": True}, open=False
        )
        await self.pool.open(wait=True)

    async def close(self) -> None:
        await self.pool.close()

    async def replay(self, trace: Trace) -> None:
        async with self.pool.connection() as conn:
            await conn.execute("BEGIN")
            for kind, sql, params in trace:
                text = sql.replace("?", "%s")
                if kind == "many":
                    async with conn.cursor() as cur:
                        await cur.executemany(text, params)
                elif kind == "run":
                    await conn.execute(text, params)
                else:
                    await (await conn.execute(text, params)).fetchall()
            await conn.execute("COMMIT")


class Asyncpg(Driver):
    name = "asyncpg"

    async def open(self, url: str) -> None:
        import asyncpg  # only this benchmark needs it

        self.pool = await asyncpg.create_pool(url, min_size=POOL, max_size=POOL)

    async def close(self) -> None:
        await self.pool.close()

    async def replay(self, trace: Trace) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            for kind, sql, params in trace:
                text = _dollars(sql)
                if kind == "many":
                    await conn.executemany(text, params)
                elif kind == "run":
                    await conn.execute(text, *params)
                else:
                    await conn.fetch(text, *params)


async def _measure(jobs: list[Callable[[], Awaitable[object]]]) -> dict[str, float]:
    """Run ``jobs`` with ``CONCURRENCY`` in flight: CPU µs per job, latency p50/p99 in ms."""
    latencies: list[float] = []
    queue = iter(jobs)

    async def worker() -> None:
        for job in queue:
            started = time.perf_counter()
            await job()
            latencies.append(time.perf_counter() - started)

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    latencies.sort()
    return {
        "cpu_us": cpu / len(jobs) * 1e6,
        "p50_ms": latencies[len(latencies) // 2] * 1e3,
        "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1e3,
        "ops_per_s": len(jobs) / wall,
    }


async def run_driver(url: str, driver: Driver, work: Workload) -> dict[str, dict[str, float]]:
    work.traces["add_exchange"] = await asyncio.to_thread(work.fresh)
    await driver.open(url)
    try:
        return {
            op: await _measure([lambda t=t: driver.replay(t) for t in traces])
            for op, traces in work.traces.items()
        }
    finally:
        await driver.close()


async def run_store(url: str, work: Workload) -> dict[str, dict[str, float]]:
    async with PostgresStore(url, pool_size=POOL, pool_timeout=30) as store:
        return {
            op: await _measure([lambda c=c: c(store) for c in calls])
            for op, calls in work.calls.items()
        }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ops", type=int, default=1000, help="operations of each kind")
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args()
    drivers: list[Driver] = [PsycopgThreads(), PsycopgAsync(), Asyncpg()]
    rounds: dict[str, list[dict[str, dict[str, float]]]] = {}
    with postgres_server("bench") as service:
        work = prepare(service.url, args.ops)
        for r in range(ROUNDS):
            order = drivers[r % len(drivers) :] + drivers[: r % len(drivers)]
            for driver in order:
                rounds.setdefault(driver.name, []).append(
                    asyncio.run(run_driver(service.url, driver, work))
                )
            rounds.setdefault("store", []).append(asyncio.run(run_store(service.url, work)))
            print(f"round {r + 1}/{ROUNDS} done", file=sys.stderr)
    summary = {
        name: {
            op: {k: statistics.median(rr[op][k] for rr in runs) for k in runs[0][op]}
            for op in runs[0]
        }
        for name, runs in rounds.items()
    }
    import asyncpg

    meta = {
        "ops": args.ops, "pool": POOL, "concurrency": CONCURRENCY, "rounds": ROUNDS,
        "checkpoint_batch": BATCH, "psycopg": psycopg.__version__,
        "psycopg_pool": psycopg_pool.__version__, "libpq": psycopg.pq.version(),
        "asyncpg": asyncpg.__version__, "python": sys.version.split()[0],
    }  # fmt: skip
    text = report(summary, meta)
    print(text)
    out = args.out / (time.strftime("%Y%m%d-%H%M%S") + "-postgres-drivers")
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps({"meta": meta, "results": summary}, indent=2))
    (out / "RESULTS.md").write_text(text)
    print(f"written to {out}", file=sys.stderr)
    return 0


def report(summary: dict[str, dict[str, dict[str, float]]], meta: dict[str, Any]) -> str:
    base = summary["psycopg-threads"]
    lines = [
        "# PostgreSQL drivers on the store's operations",
        "",
        "Median of {rounds} rounds; {ops} operations of each kind ({ops_10} checkpoint batches of "
        "{checkpoint_batch}), {concurrency} in flight, pool of {pool}. CPU = this process, all "
        "threads, per operation; ratio = CPU against psycopg-threads in the same run.".format(
            ops_10=max(1, meta["ops"] // 10), **meta
        ),
        "",
        "| operation | driver | CPU µs/op | ratio | p50 ms | p99 ms | ops/s |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for op in base:
        for name, ops in summary.items():
            m = ops[op]
            lines.append(
                f"| {op} | {name} | {m['cpu_us']:.0f} | {m['cpu_us'] / base[op]['cpu_us']:.2f} "
                f"| {m['p50_ms']:.2f} | {m['p99_ms']:.2f} | {m['ops_per_s']:.0f} |"
            )
    lines += ["", "Versions: " + ", ".join(f"{k} {v}" for k, v in meta.items()
                                           if k in ("psycopg", "psycopg_pool", "libpq",
                                                    "asyncpg", "python")), ""]  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
