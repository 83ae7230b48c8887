"""The fleet's Redis connections (server/_redis.py): keys, bounded calls, failures named
without secrets, dedicated connections for blocking reads."""

from __future__ import annotations

import asyncio

import pytest

from services import Service
from wenxin_stream.server._redis import SharedRedis, SharedStateError


async def test_calls_keys_and_health(redis_service: Service) -> None:
    shared = SharedRedis(redis_service.url, max_connections=4, timeout=2.0, prefix="t1:")
    assert not shared.healthy
    await shared.open()
    try:
        assert shared.healthy
        key = shared.key("ans", "s_abc", "log")
        assert key == "t1:ans:{s_abc}:log"
        assert await shared.call(shared.client.set(key, "值"), "SET") is True
        assert (await shared.call(shared.client.get(key), "GET")).decode() == "值"
        # a blocking read on a dedicated connection does not hold the pool: four more
        # pooled calls go through while it blocks
        reader = await shared.dedicated()
        blocked = asyncio.ensure_future(reader.xread({shared.key("s", "x"): "$"}, block=1500))
        await asyncio.sleep(0.05)
        for index in range(8):
            await shared.call(shared.client.incr(shared.key("n", "1")), f"INCR {index}")
        assert not blocked.done()
        assert await blocked == []
    finally:
        await shared.close()
    assert not shared.healthy
    with pytest.raises(SharedStateError, match="not open"):
        shared.client  # noqa: B018


async def test_an_unreachable_redis_is_a_named_failure_without_the_password() -> None:
    shared = SharedRedis("redis://:hunter2@127.0.0.1:1/0", timeout=0.5)
    with pytest.raises(SharedStateError) as info:
        await shared.open()
    assert "PING" in str(info.value)
    assert "hunter2" not in str(info.value)
    assert "hunter2" not in repr(shared)
    assert not shared.healthy
    assert shared.last_error == str(info.value)
    await shared.close()


async def test_a_slow_call_times_out(redis_service: Service) -> None:
    shared = SharedRedis(redis_service.url, timeout=0.2)
    await shared.open()
    try:
        never = asyncio.get_running_loop().create_future()
        with pytest.raises(SharedStateError, match=r"did not answer within 0\.2 s"):
            await shared.call(never, "SLOW")
        assert not shared.healthy
        await shared.call(shared.client.ping(), "PING")
        assert shared.healthy
    finally:
        await shared.close()
