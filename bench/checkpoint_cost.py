"""What checkpoints cost (`server/_checkpoints.py`), and that the relay's per-chunk path did not
change, in one run.

1. **Per chunk**: G generations stream C chunks each through the relay (a scripted upstream,
   one subscriber each encoding every entry as its SSE frame, as the SSE route does); process
   CPU per chunk. Three configurations, alternating, ``--rounds`` rounds: ``main`` (the relay of
   ``--baseline-src``, e.g. ``git archive main`` unpacked, in a subprocess), ``off`` (this
   tree, no checkpoints), ``on`` (this tree, every answer stored and checkpointed every
   ``--interval`` seconds into a real SQLite store: the tick's cost lands in the figure).
2. **Per answer per tick**: N answers of L characters tracked, each ``--growth`` chunks
   (log entries) longer than at the previous tick (20: ERNIE's pace for a 1 s interval); the
   loop's part (``due()``: reading the new entries, building the text) and the store's part
   (``store.checkpoint`` writing N rows, awaited; the loop idle meanwhile), per answer.

    mkdir -p /tmp/base && git archive main src | tar -x -C /tmp/base
    .venv/bin/python bench/checkpoint_cost.py --baseline-src /tmp/base/src
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

from _servers import PacedUpstream, QueuedUpstream

TEXT = "流式输出的每一段文字，"  # 11 characters a chunk


async def _relay_run(generations: int, chunks: int, mode: str, interval: float) -> float:
    """Process CPU seconds per chunk for one run of ``generations`` × ``chunks``."""
    from wenxin_stream.server._metrics import Metrics
    from wenxin_stream.server._relay import EntryKind, Relay

    relay = Relay(Metrics(), on_disconnect="cancel", resume_grace=0.0, max_answer_chars=10**7)
    store = checkpoints = None
    ids: list[str] = []
    tmp = tempfile.TemporaryDirectory()
    if mode == "on":
        from wenxin_stream.server._checkpoints import Checkpoints
        from wenxin_stream.server._store import SQLiteStore

        store = SQLiteStore(os.path.join(tmp.name, "w.db"))
        await store.open()
        conv = await store.create_conversation("o", title=None, model="m", system=None)
        for _ in range(generations):
            _, answer = await store.add_exchange("o", conv.id, question="q", model="m")
            ids.append(answer.id)
        checkpoints = Checkpoints(store, Metrics(), interval=interval)
        checkpoints.start()

    async def noop(gen: Any) -> None:
        pass

    async def read(sub: Any) -> None:
        while True:
            batch = await sub.next_batch()
            for entry in batch:
                entry.sse(b"s:")
            if batch[-1].kind is EntryKind.END:
                return

    started_cpu = time.process_time()
    readers = []
    for index in range(generations):
        gen = relay.start(
            PacedUpstream(chunks, TEXT), owner="o", model="m", received_at=0.0, on_end=noop
        )  # type: ignore[arg-type]
        gen.begin({"model": "m"})
        if checkpoints is not None:
            checkpoints.track(ids[index], gen)
        readers.append(asyncio.ensure_future(read(relay.attach(gen))))
    await asyncio.gather(*readers)
    cpu = time.process_time() - started_cpu
    if checkpoints is not None and store is not None:
        await checkpoints.aclose()
        await store.close()
    tmp.cleanup()
    return cpu / (generations * chunks)


async def _tick_costs(answers: int, length: int, growth: int) -> tuple[float, float]:
    """(loop, store) µs of process CPU per answer for one tick of ``answers`` answers of ``length``
    characters that each grew by ``growth`` chunks (entries: a reader takes each) since
    their last checkpoint: the steady state of a tick."""
    from wenxin_stream.server._checkpoints import Checkpoints
    from wenxin_stream.server._metrics import Metrics
    from wenxin_stream.server._relay import EntryKind, Relay
    from wenxin_stream.server._store import SQLiteStore

    relay = Relay(Metrics(), on_disconnect="cancel", resume_grace=0.0, max_answer_chars=10**7)

    async def read(sub: Any) -> None:
        while (await sub.next_batch())[-1].kind is not EntryKind.END:
            pass

    async def feed(upstreams: list[QueuedUpstream], chunks: int) -> None:
        for _ in range(chunks):
            for upstream in upstreams:
                upstream.queue.put_nowait(TEXT)
            for _ in range(4):  # each generation takes its chunk, each reader claims it
                await asyncio.sleep(0)

    with tempfile.TemporaryDirectory() as tmp:
        store = SQLiteStore(os.path.join(tmp, "w.db"))
        await store.open()
        conv = await store.create_conversation("o", title=None, model="m", system=None)
        checkpoints = Checkpoints(store, Metrics(), interval=1.0)
        upstreams, gens, readers = [], [], []
        for _ in range(answers):
            _, answer = await store.add_exchange("o", conv.id, question="q", model="m")
            upstream = QueuedUpstream()
            gen = relay.start(upstream, owner="o", model="m", received_at=0.0, on_end=_noop)  # type: ignore[arg-type]
            gen.begin({"model": "m"})
            checkpoints.track(answer.id, gen)
            readers.append(asyncio.ensure_future(read(relay.attach(gen))))
            upstreams.append(upstream)
            gens.append(gen)
        await feed(upstreams, max(0, length // len(TEXT) - growth))
        await checkpoints.flush()  # the previous tick
        await feed(upstreams, growth)
        started = time.process_time()  # the worker thread is idle: the loop's CPU
        due = checkpoints.due()
        loop_s = time.process_time() - started
        assert len(due) == answers
        started = time.process_time()  # the loop is idle, waiting: the worker's CPU
        await store.checkpoint([c for _, c in due])
        store_s = time.process_time() - started
        for upstream in upstreams:
            upstream.queue.put_nowait(None)
        await asyncio.gather(*readers)
        await store.close()
    return loop_s / answers * 1e6, store_s / answers * 1e6


async def _noop(gen: Any) -> None:
    pass


def _child(args: argparse.Namespace) -> None:
    per_chunk = asyncio.run(_relay_run(args.generations, args.chunks, args.mode, args.interval))
    print(json.dumps({"mode": args.mode, "us_per_chunk": per_chunk * 1e6}))


def _run_mode(mode: str, args: argparse.Namespace) -> float:
    env = dict(os.environ)
    if mode == "main":
        env["PYTHONPATH"] = args.baseline_src
    command = [
        sys.executable, __file__, "--child", "--mode", "off" if mode == "main" else mode,
        "--generations", str(args.generations), "--chunks", str(args.chunks),
        "--interval", str(args.interval),
    ]  # fmt: skip
    # our own interpreter running this file: no untrusted input
    out = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout  # noqa: S603
    value: float = json.loads(out.splitlines()[-1])["us_per_chunk"]
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline-src", help="a src/ directory of the baseline (main)")
    parser.add_argument("--generations", type=int, default=200)
    parser.add_argument("--chunks", type=int, default=300)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--growth", type=int, default=20, help="chunks per answer per tick")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="off", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args)
        return
    modes = (["main"] if args.baseline_src else []) + ["off", "on"]
    results: dict[str, list[float]] = {mode: [] for mode in modes}
    for _ in range(args.rounds):
        for mode in modes:
            results[mode].append(_run_mode(mode, args))
    print(
        f"relay, {args.generations} streams x {args.chunks} chunks "
        f"(checkpoints every {args.interval} s when on): µs of process CPU per chunk"
    )
    for mode in modes:
        values = sorted(results[mode])
        rounds = "  ".join(f"{v:.2f}" for v in results[mode])
        print(f"  {mode:5} {rounds}   min {values[0]:.2f}  median {values[len(values) // 2]:.2f}")
    print(
        f"one tick, N answers of L characters, each {args.growth} chunks longer than at the "
        "last tick: µs of CPU per answer, loop part / store part (best of 3)"
    )
    for answers in (1, 100, 1000):
        for length in (300, 1000, 3000):
            runs = [asyncio.run(_tick_costs(answers, length, args.growth)) for _ in range(3)]
            loop_us, store_us = min(r[0] for r in runs), min(r[1] for r in runs)
            print(f"  N={answers:5} L={length:5}  {loop_us:8.1f} / {store_us:8.1f}")


if __name__ == "__main__":
    main()
