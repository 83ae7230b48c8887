"""The upstream token shared through Redis (``_shared_token``) and the SDK's hook for it
(``AsyncTokenManager(share=…)``): one fetch for many managers, a refused token never handed
back, the lock released by its owner only, Redis gone → each fetches alone."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator

import pytest

from services import Service, redis_server
from wenxin_stream._tokens import AccessToken
from wenxin_stream._tokens_async import AsyncTokenManager
from wenxin_stream.server._redis import SharedRedis
from wenxin_stream.server._shared_token import SharedToken

_prefixes = itertools.count()


@pytest.fixture
async def shared(redis_service: Service) -> AsyncIterator[SharedRedis]:
    redis = SharedRedis(redis_service.url, timeout=2.0, prefix=f"tok{next(_prefixes)}:")
    await redis.open()
    yield redis
    await redis.close()


class Upstream:
    """An OAuth endpoint that counts its calls and answers slowly."""

    def __init__(self) -> None:
        self.calls = 0

    async def fetch(self) -> AccessToken:
        self.calls += 1
        await asyncio.sleep(0.1)
        now = time.time()
        return AccessToken(f"token-{self.calls}", now + 3600, now)


async def test_many_managers_one_fetch_and_a_refused_token_is_replaced_once(
    shared: SharedRedis,
) -> None:
    upstream = Upstream()
    managers = [
        AsyncTokenManager(upstream.fetch, share=SharedToken(shared, "cred")) for _ in range(4)
    ]
    tokens = await asyncio.gather(*(m.get() for m in managers for _ in range(3)))
    assert {t.value for t in tokens} == {"token-1"}
    assert upstream.calls == 1
    stored = await shared.client.get(shared.key("token", "cred"))
    assert b"token-1" in stored
    assert 3_500_000 < await shared.client.pttl(shared.key("token", "cred")) <= 3_600_000
    for manager in managers:  # every instance meets the 111 for the same token
        manager.invalidate(tokens[0])
    again = await asyncio.gather(*(m.get() for m in managers))
    assert {t.value for t in again} == {"token-2"}
    assert upstream.calls == 2
    assert await shared.client.get(shared.key("token", "cred", "lock")) is None


async def test_a_lock_taken_over_is_not_released_by_its_old_owner(shared: SharedRedis) -> None:
    share = SharedToken(shared, "cred", lock_timeout=0.2)
    lock = shared.key("token", "cred", "lock")

    async def slow_fetch() -> AccessToken:
        await asyncio.sleep(0.4)  # longer than the lock lives
        await shared.client.set(lock, "someone else's")
        now = time.time()
        return AccessToken("slow", now + 60, now)

    assert (await share.obtain(slow_fetch, None)).value == "slow"
    assert await shared.client.get(lock) == b"someone else's"


async def test_without_redis_each_instance_fetches_alone() -> None:
    upstream = Upstream()
    with redis_server() as service:
        redis = SharedRedis(service.url, timeout=0.3)
        await redis.open()
    share = SharedToken(redis, "cred")
    assert (await share.obtain(upstream.fetch, None)).value == "token-1"
    assert share.fetches == 1
    await redis.close()
