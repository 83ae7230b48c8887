"""CPU per answer of the store's work on the native route, SQLite against PostgreSQL.

One answer on the native route costs the store (`server/_answers.py`): the ask's reads
(`get_history`, or before it `get_conversation` + `get_messages`), the exchange
(`add_exchange`), ``--checkpoints`` checkpoint rows (the tick writes every growing answer
once a second: an ERNIE-paced answer of 5.3 s is in about 5 ticks) and the final record
(`update_message`). This runs that sequence for ``--answers`` answers, ``--concurrency`` at a
time, in conversations of ``--turns`` questions (as `wenxin bench --target native` does), and
reports the process's CPU (the event loop's and the store's threads', from
``time.process_time``) per answer, for each backend, in alternating rounds; the best round
counts (the least disturbed by other work on a shared machine).

    .venv/bin/python bench/store_answer_cost.py --rounds 3
    PYTHONPATH=/tmp/base/src .venv/bin/python bench/store_answer_cost.py   # another tree

The PostgreSQL server is the tests' own (`tests/services.py`), on the same machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from services import postgres_server  # noqa: E402
from wenxin_stream.server._store import Checkpoint, open_store  # noqa: E402


async def one_answer(store: Any, owner: str, conv_id: str, checkpoints: int) -> None:
    if hasattr(store, "get_history"):
        await store.get_history(owner, conv_id)
    else:
        await asyncio.gather(
            store.get_conversation(owner, conv_id), store.get_messages(owner, conv_id)
        )
    _, answer = await store.add_exchange(owner, conv_id, question="你好" * 20, model="m")
    text = ""
    for _ in range(checkpoints):
        text += "一句话。" * 10
        await store.checkpoint([Checkpoint(answer.id, text, len(text), len(text), 500.0)])
    await store.update_message(
        answer.id, content=text, status="complete", end_reason="completed",
        usage={"prompt_tokens": 10, "completion_tokens": 100, "total_tokens": 110},
        ttft_ms=500.0, total_ms=5300.0, generated_chars=len(text), delivered_chars=len(text),
    )  # fmt: skip


async def run(
    url: str, answers: int, concurrency: int, turns: int, checkpoints: int, pool: int
) -> float:
    async with open_store(url, pool_size=pool) as store:
        owner = "bench"

        async def worker(count: int) -> None:
            conv = None
            for i in range(count):
                if i % turns == 0:
                    conv = await store.create_conversation(owner, title=None, model="m",
                                                           system=None)  # fmt: skip
                assert conv is not None
                await one_answer(store, owner, conv.id, checkpoints)

        await worker(turns)  # warm: connections, statements prepared
        cpu0 = time.process_time()
        await asyncio.gather(*(worker(answers // concurrency) for _ in range(concurrency)))
        return (time.process_time() - cpu0) * 1e6 / (answers // concurrency * concurrency)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--answers", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--turns", type=int, default=10)
    parser.add_argument("--checkpoints", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pool", type=int, default=10, help="PostgreSQL pool size")
    parser.add_argument("--cpu", type=int, help="run on this CPU (after starting PostgreSQL)")
    parser.add_argument("--out", help="write the figures as JSON here")
    args = parser.parse_args()
    results: dict[str, list[float]] = {"sqlite": [], "postgresql": []}
    with postgres_server() as pg, tempfile.TemporaryDirectory() as tmp:
        if args.cpu is not None:  # this process alone on that core; PostgreSQL is not pinned
            os.sched_setaffinity(0, {args.cpu})
        for r in range(args.rounds):
            for backend in ("sqlite", "postgresql") if r % 2 == 0 else ("postgresql", "sqlite"):
                url = pg.url if backend == "postgresql" else str(Path(tmp) / f"r{r}.db")
                us = asyncio.run(
                    run(
                        url, args.answers, args.concurrency, args.turns, args.checkpoints, args.pool
                    )
                )
                results[backend].append(round(us, 1))
                print(f"round {r + 1} {backend}: {us:.0f} µs CPU per answer", flush=True)
    best = {k: min(v) for k, v in results.items()}
    print(json.dumps({"best_us_per_answer": best, "rounds": results}))
    if args.out:
        Path(args.out).write_text(json.dumps({"best": best, "rounds": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
