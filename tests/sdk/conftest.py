"""Fixtures of the SDK tests (see ``sdk_helpers`` for the harness that drives the sync and async
clients through the same test code; test modules import helpers from there, never from a
``conftest``)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from sdk_helpers import (
    SCENARIOS,
    VARIANTS,
    Api,
    Emu,
    Factory,
    Harness,
    Mode,
    build_client,
    credentials,
    serve_emulator,
)


@pytest.fixture(scope="session")
def sdk_emu() -> Iterator[Emu]:
    """One fast emulator shared by the SDK tests (state is per credential, and every client
    has its own credentials)."""
    with serve_emulator(scenarios=SCENARIOS) as emu:
        yield emu


@pytest.fixture(params=["v1", "v2"])
def api(request: pytest.FixtureRequest) -> Api:
    """The API generation under test."""
    value: Api = request.param
    return value


@pytest.fixture(params=["sync", "async"])
def mode(request: pytest.FixtureRequest) -> Mode:
    """Which twin is under test."""
    value: Mode = request.param
    return value


@pytest.fixture
async def make(api: Api, mode: Mode, sdk_emu: Emu) -> AsyncIterator[Factory]:
    """``make(**kwargs)``: a harness for (``api``, ``mode``) on the shared SDK emulator, with
    fresh credentials; ``url=`` points it elsewhere. Closed at the end of the test."""
    made: list[Harness] = []

    def factory(*, url: str | None = None, **kwargs: Any) -> Harness:
        target = url or sdk_emu.base_url
        harness = build_client(mode, **{**credentials(api, target), **kwargs})
        made.append(harness)
        return harness

    yield factory
    for harness in made:
        await harness.close()


@pytest.fixture
async def make_each(sdk_emu: Emu) -> AsyncIterator[Callable[..., list[Harness]]]:
    """``make_each(**kwargs)``: one harness per (api, mode). For tests bound by wall-clock
    waits, which run the four variants at once (``asyncio.gather``) instead of one by one."""
    made: list[Harness] = []

    def factory(*, url: str | None = None, **kwargs: Any) -> list[Harness]:
        target = url or sdk_emu.base_url
        group = [
            build_client(mode, **{**credentials(api, target), **kwargs}) for api, mode in VARIANTS
        ]
        made.extend(group)
        return group

    yield factory
    for harness in made:
        await harness.close()
