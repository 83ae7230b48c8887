"""Fixtures for the server tests (the helpers they use live in ``server_helpers``, imported by
name so that no test module imports a ``conftest``)."""

from __future__ import annotations

import asyncio
import gc
import secrets
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from server_helpers import Probe, Recorder, Running, running

from servers import serving
from services import Service
from wenxin_stream.emulator import EmulatorConfig, ServerHandle
from wenxin_stream.emulator import create_app as create_emulator
from wenxin_stream.server._store import PostgresStore, SQLiteStore, open_store


@pytest.fixture
def make_server(tmp_path: Path, emu: ServerHandle) -> Iterator[Callable[..., Running]]:
    """Start servers (over the shared fast emulator unless ``upstream=`` says otherwise);
    they stop at the end of the test."""
    stack: list[Any] = []

    def start(**overrides: Any) -> Running:
        upstream = overrides.pop("upstream", emu.base_url)
        cm = running(tmp_path / f"data{len(stack)}", upstream, **overrides)
        stack.append(cm)
        return cm.__enter__()

    yield start
    for cm in reversed(stack):
        cm.__exit__(None, None, None)


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory, emu: ServerHandle) -> Iterator[Running]:
    """One dev-mode server for the tests of a module that need nothing special."""
    with running(tmp_path_factory.mktemp("serve"), emu.base_url, ping_interval=5.0) as srv:
        yield srv


@pytest.fixture
def probed_emu() -> Iterator[tuple[Probe, ServerHandle]]:
    """A fast emulator whose open requests can be watched."""
    probe = Probe(create_emulator(EmulatorConfig(ttft=0.0, interval=0.0, v2_interval=0.0)))
    with serving(probe) as handle:
        yield probe, handle


@pytest.fixture
def postgres_url(postgres_service: Service) -> str:
    """A URL of the private PostgreSQL whose tables live in a schema of their own, new for
    this test (a fresh database, as far as the store can tell)."""
    schema = "t_" + secrets.token_hex(6)
    with psycopg.connect(postgres_service.url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")  # a name of hex digits: nothing to quote
    return f"{postgres_service.url}?options=-csearch_path%3D{schema}"


@pytest.fixture
def recorded() -> Iterator[tuple[Recorder, ServerHandle]]:
    """A fast emulator that keeps the JSON bodies of the chat requests it answers."""
    recorder = Recorder(create_emulator(EmulatorConfig(ttft=0.0, interval=0.0, v2_interval=0.0)))
    with serving(recorder) as handle:
        yield recorder, handle


@pytest.fixture(params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where a fresh database is, for the tests of a store on both backends: a SQLite file,
    or a PostgreSQL URL (a new schema)."""
    if request.param == "sqlite":
        return str(tmp_path / "data" / "wenxin.db")
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
async def store(database: str) -> AsyncIterator[SQLiteStore | PostgresStore]:
    """A store open on :func:`database`."""
    async with open_store(database, pool_size=2) as s:
        yield s


@pytest.fixture
async def loop_errors() -> AsyncIterator[list[dict[str, Any]]]:
    """What reaches the loop's exception handler (e.g. "Task exception was never retrieved")."""
    loop = asyncio.get_running_loop()
    errors: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    yield errors
    gc.collect()
    loop.set_exception_handler(previous)


@pytest.fixture
def no_collector() -> Iterator[None]:
    """The cyclic collector off (as in the server between its quiet collections): what is
    freed now is freed by reference counts alone."""
    was = gc.isenabled()
    gc.collect()
    gc.disable()
    yield
    if was:
        gc.enable()
