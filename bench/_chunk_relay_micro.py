"""The relay's own per-chunk work, in one process (run by ``chunk_cost.py --micro`` with
``PYTHONPATH`` at the tree to measure): a real ``Generation`` fed by a scripted upstream, one
chunk per upstream "read", read by the route's real relay loop (OpenAI: ``_routes_openai``'s;
native: ``_routes_streams``'') into an ASGI ``send`` that keeps nothing. No SDK, no sockets: the
log, the wake-up or hand-over, the encoding and the ``send`` call. Prints one JSON line: CPU µs
per chunk for each route, less the harness's own (its scripted upstream read by a bare task,
the same loop steps), and that harness figure."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

import uvloop
from _servers import QueuedUpstream

from wenxin_stream.server import _routes_openai, _routes_streams
from wenxin_stream.server._metrics import Metrics
from wenxin_stream.server._relay import Generation, Relay


async def _noop(gen: Generation) -> None:
    pass


async def _send(message: Any) -> None:
    pass


async def _harness(chunks: int) -> float:
    """The harness alone: the same upstream and loop steps, read by a bare task."""
    upstream = QueuedUpstream()

    async def drain() -> None:
        async for _ in upstream:
            pass

    reader = asyncio.create_task(drain())
    start = time.process_time()
    for _ in range(chunks):
        upstream.queue.put_nowait("流式输出的文字，")
        await asyncio.sleep(0)
        await asyncio.sleep(0)
    spent = time.process_time() - start
    upstream.queue.put_nowait(None)
    await reader
    return spent / chunks * 1e6


async def _one(route: str, chunks: int) -> float:
    relay = Relay(Metrics(), on_disconnect="cancel", resume_grace=0.0, max_answer_chars=10**9)
    upstream = QueuedUpstream()
    gen = relay.start(upstream, owner="o", model="m", received_at=0.0, on_end=_noop)  # type: ignore[arg-type]
    gen.begin({"model": "m"})
    sub = relay.attach(gen)
    if route == "openai":
        outlet: Any = _routes_openai._LazyOutlet(_send)
        chunks_ = _routes_openai._Chunks("m", False, gen.stream_id)
        loop_ = _routes_openai._relay(sub, outlet, chunks_)
    else:
        outlet = _routes_streams.Outlet(_send)
        loop_ = _routes_streams._relay(sub, outlet, b"retry: 1000\n\n")
    reader = asyncio.create_task(loop_)
    upstream.queue.put_nowait("开始")
    for _ in range(10):
        await asyncio.sleep(0)
    start = time.process_time()
    for _ in range(chunks):  # one chunk, then two loop steps: the generation's, the reader's
        upstream.queue.put_nowait("流式输出的文字，")
        await asyncio.sleep(0)
        await asyncio.sleep(0)
    spent = time.process_time() - start
    upstream.queue.put_nowait(None)
    await reader
    if len(gen.entries) != chunks + 3:  # start, the first text, each chunk, end
        raise SystemExit(f"chunks were coalesced: {len(gen.entries)} entries")
    return spent / chunks * 1e6


def main() -> None:
    chunks = int(sys.argv[1])

    async def run() -> dict[str, float]:
        await _one("openai", 500)  # warm-up
        harness = await _harness(chunks)
        out = {route: await _one(route, chunks) - harness for route in ("openai", "native")}
        return {k: round(v, 3) for k, v in {**out, "harness": harness}.items()}

    print(json.dumps(uvloop.run(run())))


if __name__ == "__main__":
    main()
