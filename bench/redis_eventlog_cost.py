"""What the per-answer event log in Redis costs (`server/_eventlog*.py`), in one run.

1. **Relay CPU per 1,000 chunks, log off vs on**: G generations stream C chunks each through
   the relay (a scripted upstream pacing one chunk every ``--pace`` ms, one subscriber each
   encoding every entry as its SSE frame, as the SSE route does); process CPU per chunk.
   ``off``: no Redis; ``on``: every answer also written by the batched writer (20 ms) to a
   private ``redis-server`` started here. Alternating, ``--rounds`` rounds; the ratio on/off of
   the medians is the figure (target ≤ 1.25).
2. **Redis CPU per chunk**: ``used_cpu_user + used_cpu_sys`` of ``INFO cpu`` over an ``on``
   run, per chunk; batches and ``XADD`` calls from ``INFO commandstats``.
3. **Redis memory per open answer**: ``used_memory`` with N answers of C chunks written and
   not ended, minus the baseline, per answer.

    .venv/bin/python bench/redis_eventlog_cost.py --json bench/results/redis_eventlog_cost.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from _servers import PacedUpstream

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

TEXT = "流式输出的每一段文字，"  # 11 characters a chunk


async def _run(
    generations: int, chunks: int, pace: float, url: str | None, end: bool = True
) -> dict[str, Any]:
    from wenxin_stream.server._eventlog_writer import LogWriter
    from wenxin_stream.server._metrics import Metrics
    from wenxin_stream.server._redis import SharedRedis
    from wenxin_stream.server._relay import EntryKind, Relay

    relay = Relay(Metrics(), on_disconnect="cancel", resume_grace=0.0, max_answer_chars=10**7)
    shared = writer = None
    if url is not None:
        shared = SharedRedis(url, timeout=2.0)
        await shared.open()
        writer = LogWriter(shared, Metrics(), instance="bench", window=30.0, maxlen=10_000)
        relay.log = writer
        writer.start()

    async def noop(gen: Any) -> None:
        pass

    async def read(sub: Any) -> None:
        while True:
            batch = await sub.next_batch()
            for entry in batch:
                entry.sse(b"s:")
            if batch[-1].kind is EntryKind.END:
                return

    started = time.process_time()
    readers = []
    for _ in range(generations):
        gen = relay.start(
            PacedUpstream(chunks, TEXT, pace),  # type: ignore[arg-type]
            owner="o",
            model="m",
            received_at=0.0,
            on_end=noop,
        )
        gen.begin({"model": "m"})
        readers.append(asyncio.ensure_future(read(relay.attach(gen))))
    await asyncio.gather(*readers)
    if writer is not None:
        while len(writer):  # noqa: ASYNC110 (the writer's own state)
            await asyncio.sleep(0.005)
    cpu = time.process_time() - started
    out = {"cpu_per_1000_chunks_ms": cpu / (generations * chunks) * 1e6}
    if writer is not None and shared is not None:
        # (trees before the one-call batch named them pipelines)
        batches = getattr(writer, "batches", None) or getattr(writer, "pipelines", 0)
        out.update(batches=batches, records=writer.records)
        await writer.aclose()
        await shared.close()
    return out


def _redis_cpu(db: Any) -> float:
    info = db.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


async def _memory_per_answer(db: Any, url: str, answers: int, chunks: int) -> float:
    """used_memory per answer with ``answers`` answers of ``chunks`` chunks open."""
    from wenxin_stream.server._eventlog_keys import Record
    from wenxin_stream.server._eventlog_writer import LogWriter
    from wenxin_stream.server._metrics import Metrics
    from wenxin_stream.server._redis import SharedRedis

    class Open:
        def __init__(self, index: int) -> None:
            self.stream_id = f"s_{index:024x}"
            self.owner, self.model = "k_0123456789ab", "ernie-4.5-turbo-128k"
            data = json.dumps({"text": TEXT}, ensure_ascii=False).encode()
            start = json.dumps({"stream_id": self.stream_id, "model": self.model}).encode()
            self.records = [Record(0, b"start", start)] + [
                Record(i, b"delta", data) for i in range(1, chunks + 1)
            ]
            self.token, self.request = 1, None  # not under an answer lease

        def log_records(self, start: int) -> list[Record]:
            return self.records[start:]

        def logged(self, count: int) -> None:
            pass

        def fenced(self) -> None:
            pass

    db.flushall()
    baseline = db.info("memory")["used_memory"]
    shared = SharedRedis(url, timeout=5.0)
    await shared.open()
    writer = LogWriter(shared, Metrics(), instance="bench", window=30.0, maxlen=10_000)
    for index in range(answers):
        writer.track(Open(index))
    await writer.flush()
    await shared.close()
    used = db.info("memory")["used_memory"]
    db.flushall()
    return (used - baseline) / answers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generations", type=int, default=200)
    parser.add_argument("--chunks", type=int, default=100)
    parser.add_argument("--pace", type=float, default=0.02, help="seconds between chunks")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    import redis

    from services import redis_server

    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    off: list[float] = []
    on: list[float] = []
    redis_cpu: list[float] = []
    runs: list[dict[str, Any]] = []
    with redis_server() as service:
        db = redis.Redis.from_url(service.url)
        for _ in range(args.rounds):
            off.append(
                asyncio.run(_run(args.generations, args.chunks, args.pace, None))[
                    "cpu_per_1000_chunks_ms"
                ]
            )
            db.config_resetstat()
            before = _redis_cpu(db)
            result = asyncio.run(_run(args.generations, args.chunks, args.pace, service.url))
            redis_cpu.append((_redis_cpu(db) - before) / (args.generations * args.chunks) * 1e6)
            result["commandstats"] = {
                k: v["calls"] for k, v in db.info("commandstats").items() if "calls" in v
            }
            on.append(result["cpu_per_1000_chunks_ms"])
            runs.append(result)
            db.flushall()
        memory = asyncio.run(_memory_per_answer(db, service.url, 1000, 64))
        db.close()
    report = {
        "generations": args.generations,
        "chunks": args.chunks,
        "pace_s": args.pace,
        "relay_cpu_ms_per_1000_chunks": {"off": off, "on": on},
        "ratio_on_off": statistics.median(on) / statistics.median(off),
        "redis_cpu_us_per_chunk": redis_cpu,
        "redis_memory_bytes_per_open_answer_64_chunks": memory,
        "runs_on": runs,
    }
    print(json.dumps(report, indent=2, ensure_ascii=False))
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
