"""Shared fixtures: a fast emulator on loopback for the whole session, private Redis and
PostgreSQL servers (``services``) for the tests that need them, and the cyclic collector off
for the tests that look for reference cycles."""

from __future__ import annotations

import gc
import secrets
from collections.abc import AsyncIterator, Iterator

import httpx
import psycopg
import pytest

from servers import emulator
from services import Service, ServiceUnavailable, postgres_server, redis_server, unavailable
from wenxin_stream.emulator import ServerHandle
from wenxin_stream.server._redis import SharedRedis


@pytest.fixture
def collector_off() -> Iterator[None]:
    """The cyclic collector off (after one collection) for the test, as ``wenxin serve`` runs
    it: what only that collector would free stays, for the test to find."""
    was = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        if was:
            gc.enable()


@pytest.fixture(scope="session")
def emu() -> Iterator[ServerHandle]:
    """One fast (no pacing) dev-mode emulator shared by the tests that need no special config.

    Its state (tokens, fault counters) is shared too, so tests use unique credentials.
    """
    with emulator() as handle:
        yield handle


@pytest.fixture
def client(emu: ServerHandle) -> Iterator[httpx.Client]:
    """A sync httpx client pointed at the shared emulator."""
    with httpx.Client(base_url=emu.base_url, timeout=10) as c:
        yield c


@pytest.fixture(scope="session")
def redis_service() -> Iterator[Service]:
    """A private redis-server for the whole session (tests use their own key prefixes)."""
    try:
        with redis_server() as service:
            yield service
    except ServiceUnavailable as exc:
        unavailable(str(exc))


@pytest.fixture
async def shared_redis(redis_service: Service) -> AsyncIterator[SharedRedis]:
    """The session's Redis as the server sees it, with a key prefix of its own."""
    redis = SharedRedis(redis_service.url, timeout=1.0, prefix=f"t{secrets.token_hex(3)}:")
    await redis.open()
    yield redis
    await redis.close()


@pytest.fixture(scope="session")
def postgres_service() -> Iterator[Service]:
    """A private PostgreSQL for the whole session (tests use their own databases or schemas)."""
    try:
        with postgres_server() as service:
            yield service
    except ServiceUnavailable as exc:
        unavailable(str(exc))


@pytest.fixture
def postgres_url(postgres_service: Service) -> str:
    """A URL of the private PostgreSQL whose tables live in a schema of their own, new for
    this test (a fresh database, as far as the store can tell)."""
    schema = "t_" + secrets.token_hex(6)
    with psycopg.connect(postgres_service.url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")  # a name of hex digits: nothing to quote
    return f"{postgres_service.url}?options=-csearch_path%3D{schema}"
