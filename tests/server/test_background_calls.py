"""The small calls of a process, sent together (server/_background_calls.py) against a real
redis-server: one pipeline per moment, failures that stop nothing, scripts after a restart;
and the calls a caller waits for (``ask``): the asks of one moment share one pipeline, each
gets its own reply or error."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from services import redis_server
from wenxin_stream.server._background_calls import BackgroundCalls
from wenxin_stream.server._redis import SharedRedis, SharedStateError


@pytest.fixture
def shared(shared_redis: SharedRedis) -> SharedRedis:
    return shared_redis


INCR_BY = "return redis.call('INCRBY', KEYS[1], ARGV[1])"


async def _adder(shared: SharedRedis, name: str) -> tuple[Any, str, BackgroundCalls]:
    """INCR_BY loaded, a counter key named ``name``, and fresh calls."""
    script = shared.client.register_script(INCR_BY)
    await shared.client.script_load(INCR_BY)
    return script, shared.key("n", name), BackgroundCalls(shared)


async def test_the_calls_of_one_moment_share_one_pipeline(shared: SharedRedis) -> None:
    client = shared.client
    members, counter = shared.key("lease", "k"), shared.key("n", "k")
    await client.zadd(members, {"a": 1, "b": 2, "c": 3})
    calls = BackgroundCalls(shared, delay=0.05)
    script = client.register_script(INCR_BY)
    await client.script_load(INCR_BY)  # (a first call would load it: a second pipeline)
    calls.command("ZREM lease", "ZREM", members, "a")
    calls.script("add", script, [counter], [5])
    calls.command("ZREM lease", "ZREM", members, "b")
    assert await client.zcard(members) == 3  # nothing sent yet: they wait for the others
    await asyncio.sleep(0.2)
    assert calls.batches == 1
    assert await client.zrange(members, 0, -1) == [b"c"]
    assert await client.get(counter) == b"5"
    calls.script("add", script, [counter], [2])  # a later moment: a pipeline of its own
    await calls.flush()
    assert calls.batches == 2
    assert await client.get(counter) == b"7"


async def test_flush_sends_at_once_and_waits(shared: SharedRedis) -> None:
    calls = BackgroundCalls(shared, delay=60.0)
    key = shared.key("n", "x")
    calls.command("SET", "SET", key, "1")
    async with asyncio.timeout(2):
        await calls.flush()
    assert await shared.client.get(key) == b"1"
    await calls.flush()  # nothing queued: nothing sent
    assert calls.batches == 1


async def test_a_failed_call_is_logged_and_stops_no_other(
    shared: SharedRedis, caplog: pytest.LogCaptureFixture
) -> None:
    client = shared.client
    text, counter = shared.key("s", "x"), shared.key("n", "x")
    await client.set(text, "not a number")
    calls = BackgroundCalls(shared)
    calls.command("bump", "INCR", text)  # refused by Redis: a string that is no integer
    calls.command("count", "INCR", counter)
    with caplog.at_level(logging.WARNING, logger="wenxin_stream.server"):
        await calls.flush()
    assert await client.get(counter) == b"1"
    assert "bump: ResponseError" in caplog.text
    assert "count" not in caplog.text


async def test_scripts_are_loaded_again_after_a_redis_restart(shared: SharedRedis) -> None:
    client = shared.client
    counter = shared.key("n", "y")
    script = client.register_script(INCR_BY)
    await client.script_load(INCR_BY)
    calls = BackgroundCalls(shared)
    calls.script("add", script, [counter], [1])
    await calls.flush()
    await client.script_flush()  # what a restarted Redis has: no scripts
    calls.script("add", script, [counter], [10])
    calls.command("other", "INCR", counter)
    await calls.flush()
    assert await client.get(counter) == b"12"  # the script's call sent once more, once
    assert calls.batches == 3


async def test_redis_down_loses_the_batch_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    with redis_server() as service:
        redis = SharedRedis(service.url, timeout=0.5, prefix="down:")
        await redis.open()
        try:
            service.process.kill()
            service.process.wait()
            calls = BackgroundCalls(redis)
            calls.command("ZREM lease", "ZREM", redis.key("lease", "k"), "a")
            with caplog.at_level(logging.WARNING, logger="wenxin_stream.server"):
                async with asyncio.timeout(3):
                    await calls.flush()  # no exception: nobody waits for these calls
            assert "lost: ZREM lease" in caplog.text
        finally:
            await redis.close()


async def test_the_asks_of_one_moment_share_one_pipeline_each_with_its_reply(
    shared: SharedRedis,
) -> None:
    client = shared.client
    script = client.register_script(INCR_BY)
    await client.script_load(INCR_BY)
    calls = BackgroundCalls(shared, delay=60.0)
    members = shared.key("lease", "a")
    await client.zadd(members, {"gone": 1})
    calls.command("ZREM lease", "ZREM", members, "gone")  # waits for its own timer
    keys = [shared.key("n", f"k{i % 3}") for i in range(30)]
    async with asyncio.timeout(2):
        replies = await asyncio.gather(
            *(calls.ask("add", script, [key], [i + 1]) for i, key in enumerate(keys))
        )
    # the first went at once; the 29 made while it was in flight, together when it was back
    assert calls.batches == 2
    assert await client.zcard(members) == 1  # the background call did not ride along
    totals = dict.fromkeys(keys, 0)
    expected = []
    for i, key in enumerate(keys):  # Redis ran them in the order asked
        totals[key] += i + 1
        expected.append(totals[key])
    assert replies == expected
    async with asyncio.timeout(2):  # a later moment: a pipeline of its own
        assert await calls.ask("add", script, [keys[0]], [1]) == totals[keys[0]] + 1
    assert calls.batches == 3
    await calls.flush()  # and the background call goes when its time (here: flush) comes
    assert calls.batches == 4
    assert await client.zcard(members) == 0


async def test_an_error_reply_goes_to_its_caller_only(shared: SharedRedis) -> None:
    client = shared.client
    text, counter = shared.key("s", "e"), shared.key("n", "e")
    await client.set(text, "not a number")
    script = client.register_script(INCR_BY)
    await client.script_flush()  # as after a Redis restart: the asks must load it first
    calls = BackgroundCalls(shared)
    async with asyncio.timeout(2):
        bad, good = await asyncio.gather(
            calls.ask("bump", script, [text], [1]),
            calls.ask("count", script, [counter], [2]),
            return_exceptions=True,
        )
    assert isinstance(bad, SharedStateError)
    assert str(bad).startswith("bump: ResponseError")
    assert good == 2
    # the first: NOSCRIPT, the script loaded, sent once more; the second after it, loaded
    assert calls.batches == 3


async def test_a_caller_that_leaves_stops_no_other(shared: SharedRedis) -> None:
    script, counter, calls = await _adder(shared, "c")
    first = asyncio.ensure_future(calls.ask("add", script, [counter], [1]))
    leaving = asyncio.ensure_future(calls.ask("add", script, [counter], [10]))
    staying = asyncio.ensure_future(calls.ask("add", script, [counter], [100]))
    await asyncio.sleep(0)  # the first in flight, the other two waiting for it
    leaving.cancel()
    async with asyncio.timeout(2):
        assert await first == 1
        assert await staying == 111  # the leaver's call was queued already: it ran
    assert leaving.cancelled()
    await calls.flush()
    assert calls.batches == 2


async def test_asks_waiting_for_a_cancelled_one_are_still_sent(shared: SharedRedis) -> None:
    script, counter, calls = await _adder(shared, "l")
    first = asyncio.ensure_future(calls.ask("add", script, [counter], [1]))
    waiting = asyncio.ensure_future(calls.ask("add", script, [counter], [10]))
    await asyncio.sleep(0)  # the first in flight (in its caller's task), the other waiting
    first.cancel()
    async with asyncio.timeout(2):
        got = await waiting
    assert got in (10, 11)  # the cancelled call may have reached Redis before it was
    assert int(await shared.client.get(counter)) == got
    assert first.done()  # (cancelled, or finished: redis-py may see its reply through)


async def test_asks_whose_pipeline_is_cancelled_get_an_error_not_a_hang(
    shared: SharedRedis,
) -> None:
    script, counter, calls = await _adder(shared, "h")
    calls._asking = True  # as if an ask were in flight
    waiting = asyncio.ensure_future(calls.ask("add", script, [counter], [10]))
    await asyncio.sleep(0)  # it waits for the one in flight
    calls._next_asks()  # that one is back: the waiting ask's pipeline starts…
    for task in list(calls._tasks):  # …and is cancelled before it ran (a shutdown)
        task.cancel()
    async with asyncio.timeout(2):
        with pytest.raises(SharedStateError, match="cancelled"):
            await waiting
    async with asyncio.timeout(2):  # and the next ask is not stuck behind it
        assert await calls.ask("add", script, [counter], [100]) == 100


async def test_redis_down_fails_every_ask_with_shared_state_error() -> None:
    with redis_server() as service:
        redis = SharedRedis(service.url, timeout=0.5, prefix="down:")
        await redis.open()
        try:
            script = redis.client.register_script(INCR_BY)
            service.process.kill()
            service.process.wait()
            calls = BackgroundCalls(redis)
            async with asyncio.timeout(3):
                outcomes = await asyncio.gather(
                    *(calls.ask("add", script, [redis.key("n", "d")], [1]) for _ in range(3)),
                    return_exceptions=True,
                )
            assert all(isinstance(o, SharedStateError) for o in outcomes), outcomes
            assert "shared state calls" in str(outcomes[0])
            assert "redis://" not in str(outcomes[0])
            assert not redis.healthy
        finally:
            await redis.close()
