"""The sweeper ends a dead producer's stored answers only when two rounds running found it gone:
a liveness key missing once (a Redis that restarted empty, before the live processes renewed
theirs) is no death."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from wenxin_stream.server._liveness import instance_key
from wenxin_stream.server._redis import SharedRedis
from wenxin_stream.server._sweeper import Sweeper


@pytest.fixture
def shared(shared_redis: SharedRedis) -> SharedRedis:
    return shared_redis


class FakeStore:
    """The two store operations a sweep uses, over a fixed list of producers."""

    def __init__(self, producers: list[str | None]) -> None:
        self.producers = producers
        self.marked: list[tuple[str, list[str | None]]] = []

    async def streaming_producers(self) -> list[str | None]:
        return list(self.producers)

    async def mark_streaming_as(
        self, end_reason: str, producers: Sequence[str | None] | None = None
    ) -> int:
        swept = list(producers or [])
        self.marked.append((end_reason, swept))
        self.producers = [p for p in self.producers if p not in swept]
        return len(swept)


async def _alive(redis: SharedRedis, instance: str, alive: bool) -> None:
    key = instance_key(redis, instance)
    if alive:
        await redis.client.set(key, b"1", px=60_000)
    else:
        await redis.client.delete(key)


async def test_two_rounds_without_a_liveness_key_make_a_death(shared: SharedRedis) -> None:
    store = FakeStore(["me", "gone", "blip", "live", None])
    sweeper = Sweeper(store, shared, "me", interval=1.0)  # type: ignore[arg-type]
    await _alive(shared, "live", True)
    # round 1: "gone" and "blip" have no key — suspects, nothing ended yet
    assert await sweeper.sweep() == 0
    assert store.marked == []
    # "blip" renews its key (a live process after a Redis restart); "gone" stays gone
    await _alive(shared, "blip", True)
    assert await sweeper.sweep() == 1
    assert store.marked == [("server_crashed", ["gone"])]
    # "blip" misses once more: a first miss again, not a death
    await _alive(shared, "blip", False)
    assert await sweeper.sweep() == 0
    assert await sweeper.sweep() == 1
    assert store.marked[-1] == ("server_crashed", ["blip"])
    # never its own rows, never rows naming no producer, never a live one
    assert store.producers == ["me", "live", None]
    assert await sweeper.sweep() == 0
    assert sweeper.swept == 2
