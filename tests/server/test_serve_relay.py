"""The relay's parts in isolation: generations over scripted upstreams, the race.

No network: a fake upstream yields typed events (with a chosen failure), and time is short."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from wenxin_stream import APIConnectionError, EndReason, FinishEvent, FinishReason, TextDelta
from wenxin_stream._aio import race
from wenxin_stream.server._metrics import Metrics
from wenxin_stream.server._relay import EntryKind, Generation, Relay


class FakeUpstream:
    """Stands in for the SDK's AsyncChatStream: yields ``events``, then raises or hangs."""

    def __init__(
        self, events: list[Any], *, error: BaseException | None = None, hang: bool = False
    ) -> None:
        self.events = events
        self.error = error
        self.hang = hang
        self.closed = False
        self.end_reason: EndReason | None = None
        self.attempt_usages: tuple[Any, ...] = ()  # the SDK's per-request ledger: none

    async def __aenter__(self) -> FakeUpstream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.closed = True

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._events()

    async def _events(self) -> AsyncIterator[Any]:
        for event in self.events:
            await asyncio.sleep(0)
            yield event
        if self.error is not None:
            raise self.error
        if self.hang:
            await asyncio.Event().wait()
        self.end_reason = EndReason.COMPLETED


def _relay(**kwargs: Any) -> Relay:
    return Relay(
        Metrics(),
        on_disconnect="cancel",
        resume_grace=kwargs.pop("grace", 0.0),
        max_answer_chars=1000,
        **kwargs,
    )


async def _ended(gen: Generation) -> None:
    await asyncio.wait_for(gen.done, 5)


def _start(relay: Relay, upstream: FakeUpstream, on_end: Any = None) -> Generation:
    async def noop(g: Generation) -> None:
        pass

    loop = asyncio.get_running_loop()
    return relay.start(
        upstream,
        owner="o",
        model="m",
        received_at=loop.time(),  # type: ignore[arg-type]
        on_end=on_end or noop,
    )


async def test_a_bug_in_the_stream_still_ends_it_with_an_error() -> None:
    relay = _relay()
    gen = _start(relay, FakeUpstream([TextDelta("半")], error=RuntimeError("boom")))
    gen.begin({"model": "m"})
    await _ended(gen)
    assert gen.entries[-1].kind is EntryKind.END
    assert gen.end_reason == "incomplete"
    assert gen.error is not None
    assert gen.error["code"] == "internal_error"
    assert gen.error_status == 500
    assert 'wenxin_errors_total{kind="internal"} 1' in relay.metrics.render().decode()


async def test_connection_errors_are_upstream_errors() -> None:
    relay = _relay()
    error = APIConnectionError("reset by peer")
    gen = _start(
        relay, FakeUpstream([TextDelta("a"), FinishEvent(FinishReason.STOP, "stop")], error=error)
    )
    gen.begin({})
    await _ended(gen)
    assert gen.error is not None
    assert gen.error["code"] == "upstream_error"
    assert "the connection to ERNIE failed: reset by peer" in gen.error["message"]
    assert gen.error_status == 502
    assert gen.entries[-1].data is not None
    assert gen.entries[-1].data["error"] == gen.error  # in-band, in the end event


async def test_cancelled_before_it_ran_and_aborted_before_begin() -> None:
    relay = _relay()
    upstream = FakeUpstream([TextDelta("x")])
    gen = _start(relay, upstream)
    gen.cancel("server_shutdown")  # before the task's first step
    gen.begin({})
    await _ended(gen)
    assert gen.end_reason == "server_shutdown"
    assert gen.entries[-1].kind is EntryKind.END
    assert not relay.running

    ended: list[Generation] = []

    async def record(g: Generation) -> None:
        ended.append(g)

    aborted = _start(relay, FakeUpstream([], hang=True), record)
    await asyncio.sleep(0.01)
    aborted.abort()
    await _ended(aborted)
    assert aborted.entries == []
    assert ended == []


async def test_a_failing_on_end_does_not_lose_the_end_event() -> None:
    async def broken(g: Generation) -> None:
        raise RuntimeError("database down")

    relay = _relay()
    gen = _start(relay, FakeUpstream([TextDelta("好")]), broken)
    gen.begin({})
    await _ended(gen)
    assert gen.entries[-1].kind is EntryKind.END
    assert gen.end_reason == "completed"


async def test_shutdown_waits_then_stops_the_rest() -> None:
    relay = _relay()
    quick = _start(relay, FakeUpstream([TextDelta("快")]))
    slow = _start(relay, FakeUpstream([TextDelta("慢")], hang=True))
    quick.begin({})
    slow.begin({})
    await relay.shutdown(0.1)
    assert quick.end_reason == "completed"
    assert slow.end_reason == "server_shutdown"
    assert not relay.accepting
    assert not relay.running


async def test_subscriptions_read_the_same_log() -> None:
    relay = _relay(grace=0.05)
    gen = _start(relay, FakeUpstream([TextDelta("一"), TextDelta("二")]))
    gen.begin({"model": "m"})
    await _ended(gen)
    late = relay.attach(gen, 0)
    batch = await late.next_batch()
    assert batch[-1].kind is EntryKind.END
    assert batch[0].seq == 1
    assert batch[0].sse(gen.sse_id) is batch[0].sse(gen.sse_id)  # encoded once
    gen.claim(0)  # an older claim changes nothing
    relay.detach(late, gone=False)
    relay.detach(late, gone=False)  # idempotent
    assert relay.find(gen.stream_id, "o") is gen
    assert relay.find(gen.stream_id, "x") is None
    await asyncio.sleep(0.1)
    assert relay.find(gen.stream_id, "o") is None  # expired after the grace


async def test_race_returns_the_first_and_cancels_the_rest() -> None:
    cancelled = []

    async def forever() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            cancelled.append(True)

    async def quick() -> int:
        return 1

    assert await race(forever(), quick()) == 1
    assert cancelled == [True]

    async def fails() -> None:
        raise ValueError("no")

    with pytest.raises(ValueError, match="no"):
        await race(forever(), fails())

    async def outer() -> None:
        await race(forever(), forever())

    task = asyncio.create_task(outer())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cancelled == [True] * 4


async def test_early_text_is_logged_in_bounded_deltas() -> None:
    from wenxin_stream.server._relay import MAX_DELTA_CHARS

    relay = _relay()
    relay.max_answer_chars = 10**7
    piece = "字" * 5000
    gen = _start(relay, FakeUpstream([TextDelta(piece) for _ in range(20)], hang=True))
    for _ in range(1000):  # all of it arrives before the ids are known
        if gen.generated_chars == 20 * 5000:
            break
        await asyncio.sleep(0)
    gen.begin({})
    deltas = [e for e in gen.entries if e.kind is EntryKind.DELTA]
    assert len(deltas) > 1
    assert max(e.size for e in deltas) < MAX_DELTA_CHARS + 5000
    assert "".join(e.text for e in deltas) == piece * 20
    assert deltas[-1].end_offset == 100_000
    gen.cancel("cancelled")
    await _ended(gen)
