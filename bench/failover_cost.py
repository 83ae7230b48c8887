"""What the gateway's ``FailoverStream`` (``server/_failover.py``) adds per event, in one run.

A scripted stream of N text events is read bare (as a generation reads the SDK's stream
without channels) and through a ``FailoverStream`` over one configured channel (what every
answer goes through with ``[[channels]]``), alternating, ``--rounds`` rounds; process CPU per
event, the best round of each. The difference is the routing layer's cost on the per-chunk
path; compare it with the relay's CPU per chunk (``redis_eventlog_cost.py``: 10.6–12.8 ms per
1,000 chunks, log off).

    .venv/bin/python bench/failover_cost.py
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from wenxin_stream._accumulate import Accumulator
from wenxin_stream._events import ChatResult, EndReason, StreamEvent, TextDelta
from wenxin_stream.server._channel_config import parse_gateway
from wenxin_stream.server._channels import Channels
from wenxin_stream.server._config import ServerConfig
from wenxin_stream.server._failover import FailoverStream
from wenxin_stream.server._metrics import Metrics


class Scripted:
    """A stream of ready-made events (the SDK stream's shape)."""

    end_reason = EndReason.COMPLETED
    attempt_usages = ()  # the SDK's ledger (read once per answer)

    def __init__(self, events: list[StreamEvent]) -> None:
        self.events = events
        self.delivered = Accumulator()  # what the SDK's stream keeps of what it delivered

    @property
    def text(self) -> str:
        return self.delivered.text

    def snapshot(self) -> ChatResult:
        return self.delivered.result()

    async def __aenter__(self) -> Scripted:
        return self

    async def __aexit__(self, *exc: object) -> None:
        pass

    async def aclose(self) -> None:
        pass

    def __aiter__(self) -> AsyncIterator[StreamEvent]:
        return self._events()

    async def _events(self) -> AsyncIterator[StreamEvent]:
        add = self.delivered.add
        for event in self.events:
            add(event)
            yield event


async def _bare(events: list[StreamEvent]) -> int:
    count = 0
    async with Scripted(events) as stream:
        async for _ in stream:
            count += 1
    return count


async def _routed(events: list[StreamEvent], channels: Channels) -> int:
    channel, probe = channels.pick("m", set())
    first: Any = (channel, probe, Scripted(events))
    count = 0
    async with FailoverStream(
        channels, [], "m", {}, attempts=3, deadline=60.0, first=first
    ) as stream:
        async for _ in stream:
            count += 1
    stream.usage_ledger  # noqa: B018 — what the records read at the end
    return count


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--answers", type=int, default=20_000, help="one-event answers, per round")
    args = parser.parse_args()
    events: list[StreamEvent] = [TextDelta("文心一言好") for _ in range(args.events)]
    gateway = parse_gateway(
        [{"name": "a", "kind": "qianfan-v2", "api_key": "k", "models": ["*"]}], None, {}
    )
    channels = Channels.build(ServerConfig(gateway=gateway), Metrics())
    best = {"bare": float("inf"), "routed": float("inf")}
    for _ in range(args.rounds):
        for name in best:
            started = time.process_time()
            await (_bare(events) if name == "bare" else _routed(events, channels))
            spent = (time.process_time() - started) / args.events * 1e9
            best[name] = min(best[name], spent)
    # per answer: the router's pick, the breaker, the counters, the stream's own set-up and
    # ledger (one event each, so the per-event part is negligible)
    one: list[StreamEvent] = [TextDelta("文")]
    per_answer = {"bare": float("inf"), "routed": float("inf")}
    for _ in range(args.rounds):
        for name in per_answer:
            started = time.process_time()
            for _ in range(args.answers):
                await (_bare(one) if name == "bare" else _routed(one, channels))
            spent = (time.process_time() - started) / args.answers * 1e6
            per_answer[name] = min(per_answer[name], spent)
    await channels.aclose()
    added = best["routed"] - best["bare"]
    print(
        f"bare {best['bare']:.0f} ns/event, through FailoverStream {best['routed']:.0f} "
        f"ns/event: +{added:.0f} ns per event = {added / 1000:.2f} ms per 1,000 chunks"
        f" ({added / 11_700 * 100:.1f} % of ~11.7 ms relay CPU per 1,000 chunks)"
    )
    routing = per_answer["routed"] - per_answer["bare"]
    print(
        f"per answer (one event): bare {per_answer['bare']:.1f} µs, routed "
        f"{per_answer['routed']:.1f} µs: +{routing:.1f} µs per answer"
    )


if __name__ == "__main__":
    asyncio.run(main())
