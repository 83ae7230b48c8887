"""``FailoverStream`` in process, over channels whose streams are scripted: what each upstream
request is sent, what the reader gets, what is recorded per request, and what each channel's
breaker learns — for the cases the emulators cannot stage cheaply."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest

from wenxin_stream import APIConnectionError, APIError, EndReason, IncompleteStreamError
from wenxin_stream._accumulate import Accumulator
from wenxin_stream._clock import FakeClock
from wenxin_stream._events import (
    ChatResult,
    FinishEvent,
    FinishReason,
    ReasoningDelta,
    StreamEvent,
    TextDelta,
    ToolCallDelta,
    Usage,
    UsageEvent,
)
from wenxin_stream.server._breaker import BreakerState
from wenxin_stream.server._channel_config import parse_gateway
from wenxin_stream.server._channels import Channels
from wenxin_stream.server._config import ServerConfig
from wenxin_stream.server._failover import FailoverStream
from wenxin_stream.server._metrics import Metrics

STOP = FinishReason.STOP
QUESTION = [{"role": "user", "content": "讲个故事"}]


class Scripted:
    """An SDK-shaped stream: ``events``, then ``error`` raised (or a normal end); like the
    SDK's, it keeps what it delivered (``text``, ``snapshot()``)."""

    def __init__(self, events: list[StreamEvent], error: Exception | None = None) -> None:
        self.events = events
        self.error = error
        self.end_reason: EndReason | None = None
        self.closed = False
        self.delivered = Accumulator()

    @property
    def text(self) -> str:
        return self.delivered.text

    def snapshot(self) -> ChatResult:
        return self.delivered.result()

    async def __aenter__(self) -> Scripted:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.closed = True

    async def aclose(self) -> None:
        self.closed = True

    def __aiter__(self) -> AsyncIterator[StreamEvent]:
        return self._run()

    async def _run(self) -> AsyncIterator[StreamEvent]:
        for event in self.events:
            await asyncio.sleep(0)
            self.delivered.add(event)
            yield event
        if self.error is not None:
            raise self.error
        self.end_reason = EndReason.COMPLETED


class World:
    """Channels named by ``priorities`` (highest first tried), each answering from a queue of
    scripted streams; ``sent`` keeps (channel, messages) of every request made."""

    def __init__(self, **priorities: int) -> None:
        specs = [
            {"name": name, "kind": "qianfan-v2", "api_key": "k", "models": ["*"],
             "priority": priority}
            for name, priority in priorities.items()
        ]  # fmt: skip
        gateway = parse_gateway(specs, None, {})
        config = ServerConfig(gateway=gateway, breaker_threshold=2, breaker_cooldown=10.0)
        self.clock = FakeClock()
        self.channels = Channels.build(
            config, Metrics(), clock=self.clock, rng=random.Random(1).random
        )
        self.scripts: dict[str, list[Scripted]] = {name: [] for name in priorities}
        self.sent: list[tuple[str, list[Mapping[str, Any]]]] = []
        for channel in self.channels.channels:
            channel.open_stream = self._opener(channel.name)  # type: ignore[method-assign]

    def _opener(self, name: str) -> Any:
        def open_stream(messages: Any, model: str, params: Any) -> Scripted:
            self.sent.append((name, list(messages)))
            return self.scripts[name].pop(0)

        return open_stream

    def stream(self, attempts: int = 3, deadline: float = 60.0) -> FailoverStream:
        return FailoverStream.open(
            self.channels, QUESTION, "m", {}, attempts=attempts, deadline=deadline
        )

    def health(self, name: str) -> dict[str, Any]:
        return self.channels.by_name[name].health()

    async def aclose(self) -> None:
        await self.channels.aclose()


async def read(stream: FailoverStream) -> tuple[str, list[StreamEvent]]:
    events = []
    async with stream:
        async for event in stream:
            events.append(event)
    return "".join(e.text for e in events if type(e) is TextDelta), events


def cut(reason: str = "reset") -> APIConnectionError:
    return APIConnectionError(reason)


def finished(*texts: str, usage: int = 10) -> Scripted:
    events: list[StreamEvent] = [TextDelta(t) for t in texts]
    events += [FinishEvent(FinishReason.STOP, "stop"), UsageEvent(Usage(5, usage, 5 + usage))]
    return Scripted(events)


async def test_a_cut_answer_is_continued_with_the_seam_trimmed_and_recorded() -> None:
    world = World(a=2, b=1)
    broken = IncompleteStreamError("no terminal event", api="v2")
    world.scripts["a"].append(
        Scripted([TextDelta("从前有座山，"), TextDelta("山里有座庙")], broken)
    )
    world.scripts["b"].append(finished("有座庙，庙里有个老和尚", "在讲故事。"))
    stream = world.stream()
    assert stream.first_channel == "a"  # picked at open, before anything went
    text, _ = await read(stream)
    assert text == "从前有座山，山里有座庙，庙里有个老和尚在讲故事。"
    assert stream.text == text
    assert stream.first_channel == "a"
    assert stream.end_reason is EndReason.COMPLETED
    (_, first), (_, second) = world.sent
    assert first == QUESTION
    assert second == [
        *QUESTION,
        {"role": "assistant", "content": "从前有座山，山里有座庙"},
        {"role": "user", "content": "继续"},
    ]
    a, b = stream.requests
    assert (a.channel, a.outcome, a.continued, a.chars, a.usage) == ("a", "failed", False, 11,
                                                                      None)  # fmt: skip
    assert (b.channel, b.outcome, b.continued, b.chars) == ("b", "ok", True, 13)
    assert b.usage == Usage(5, 10, 15)
    assert stream.channels == ["a", "b"]
    assert world.health("a")["failovers"] == {"before_first_token": 0, "mid_stream": 1}
    await world.aclose()


async def test_the_continuation_drops_its_own_thinking() -> None:
    world = World(a=2, b=1)
    world.scripts["a"].append(Scripted([ReasoningDelta("想一想"), TextDelta("答案是")], cut()))
    world.scripts["b"].append(
        Scripted(
            [
                ReasoningDelta("再想一想"),
                TextDelta("四十二。"),
                FinishEvent(FinishReason.STOP, "stop"),
            ]
        )
    )
    text, events = await read(world.stream())
    assert text == "答案是四十二。"
    assert [e.text for e in events if type(e) is ReasoningDelta] == ["想一想"]
    await world.aclose()


async def test_answers_with_tool_calls_or_only_thinking_are_not_continued() -> None:
    world = World(a=2, b=1)
    call = ToolCallDelta(index=0, id="c1", name="get_weather", arguments_delta='{"ci')
    world.scripts["a"].append(Scripted([TextDelta("查一下"), call], cut()))
    world.scripts["a"].append(Scripted([ReasoningDelta("想")], cut()))
    for _ in range(2):
        stream = world.stream()
        with pytest.raises(APIConnectionError) as raised:
            await read(stream)
        assert raised.value.end_reason is EndReason.INCOMPLETE
        assert stream.end_reason is EndReason.INCOMPLETE
    assert [name for name, _ in world.sent] == ["a", "a"]  # b was never asked
    assert raised.value.partial_text == ""
    await world.aclose()


async def test_before_the_first_token_the_same_question_goes_to_the_next_channel() -> None:
    world = World(a=3, b=2, c=1)
    world.scripts["a"].append(Scripted([], cut("refused")))
    world.scripts["b"].append(Scripted([], APIError("x", api="v2", code="service_unavailable",
                                                     status_code=503)))  # fmt: skip
    world.scripts["c"].append(finished("你好"))
    stream = world.stream()
    text, _ = await read(stream)
    assert text == "你好"
    assert [(name, messages) for name, messages in world.sent] == [
        ("a", QUESTION), ("b", QUESTION), ("c", QUESTION)
    ]  # fmt: skip
    assert [r.outcome for r in stream.requests] == ["failed", "failed", "ok"]
    assert stream.channels == ["c"]
    await world.aclose()


async def test_client_errors_and_exhausted_attempts_end_the_answer() -> None:
    world = World(a=2, b=1)
    invalid = APIError("bad", api="v2", code="invalid_argument", status_code=400)
    world.scripts["a"].append(Scripted([], invalid))
    with pytest.raises(APIError) as raised:
        await read(world.stream())
    assert raised.value is invalid
    assert len(world.sent) == 1
    assert world.health("a")["requests"]["client_error"] == 1
    assert world.health("a")["consecutive_failures"] == 0
    world.scripts["a"].append(Scripted([], cut("a down")))
    world.scripts["b"].append(Scripted([], cut("b down")))
    with pytest.raises(APIConnectionError, match="b down") as last:
        await read(world.stream(attempts=3))  # only two channels: two requests
    assert last.value.end_reason is EndReason.UPSTREAM_ERROR  # nothing was delivered
    world.scripts["a"].append(Scripted([], cut("a down")))
    with pytest.raises(APIConnectionError, match="a down"):
        await read(world.stream(attempts=1))
    assert len(world.sent) == 4
    await world.aclose()


async def test_breakers_learn_every_outcome_and_a_reader_leaving_frees_the_probe() -> None:
    world = World(a=2, b=1)
    for _ in range(2):
        world.scripts["a"].append(Scripted([], cut()))
        world.scripts["b"].append(finished("好"))
        await read(world.stream())
    a = world.channels.by_name["a"]
    assert a.breaker.state is BreakerState.OPEN
    world.scripts["b"].append(finished("好"))
    await read(world.stream())  # a is left out while it cools down
    assert [name for name, _ in world.sent][-1] == "b"
    world.clock.advance(10.0)
    world.scripts["a"].append(Scripted([TextDelta("半"), TextDelta("句")]))
    stream = world.stream()  # the probe
    async with stream:
        async for _ in stream:
            break  # the reader leaves mid-answer
    assert stream.requests[-1].outcome == "cancelled"
    assert a.breaker.state is BreakerState.HALF_OPEN
    assert a.breaker.available()
    assert world.health("a")["in_flight"] == 0
    world.scripts["a"].append(finished("好"))
    await read(world.stream())  # the next probe succeeds: closed
    assert a.breaker.state is BreakerState.CLOSED
    await world.aclose()


async def test_a_stream_never_read_releases_its_channel() -> None:
    world = World(a=1)
    world.scripts["a"].append(finished("好"))
    stream = world.stream()
    await stream.aclose()
    health = world.health("a")
    assert (health["in_flight"], health["requests"]["cancelled"]) == (0, 1)
    await world.aclose()


async def test_a_stream_dropped_unread_gives_back_its_probe() -> None:
    world = World(a=1)
    a = world.channels.by_name["a"]
    for _ in range(2):
        world.scripts["a"].append(Scripted([], cut()))
        with pytest.raises(APIConnectionError):
            await read(world.stream())
    world.clock.advance(10.0)
    world.scripts["a"].append(finished("好"))
    stream = world.stream()  # the probe, never entered (its request failed before)
    assert not a.breaker.available()
    del stream
    assert a.breaker.available()
    assert world.health("a")["in_flight"] == 0
    await world.aclose()


async def test_no_other_channel_is_tried_past_the_deadline() -> None:
    world = World(a=2, b=1)
    world.scripts["a"].append(Scripted([], cut("a down")))
    with pytest.raises(APIConnectionError, match="a down"):
        await read(world.stream(deadline=0.0))
    assert [name for name, _ in world.sent] == ["a"]
    await world.aclose()
