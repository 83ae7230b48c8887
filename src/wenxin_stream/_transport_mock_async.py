"""A scripted transport for tests (see ``_transport_mock`` for what a script is).

The sync and async mock transports are twins: the sync one is generated from the async one by
``scripts/unasync.py``. What a read or an ``open`` does is decided by the pure parts of
``_transport_mock``; here it is only carried out, sleeping through the injected ``sleep``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from ._clock import AsyncSleep
from ._synchronization import async_sleep
from ._transport import HTTPRequest
from ._transport_mock import MockResponse, ResponseState, Script, open_delay

__all__ = ["AsyncMockResponse", "AsyncMockTransport"]


class AsyncMockResponse(ResponseState):
    """A scripted response (it keeps the transport contract of ``_transport``)."""

    def __init__(self, script: MockResponse, sleep: AsyncSleep = async_sleep) -> None:
        super().__init__(script)
        self._sleep = sleep

    async def read(self, timeout: float | None) -> bytes:  # noqa: ASYNC109 - a per-read budget
        """The next scripted piece of the body (see ``_transport_mock``)."""
        wait, outcome = self._step(timeout)
        if wait > 0:
            await self._sleep(wait)
        return self._result(outcome)

    async def aclose(self) -> None:
        """Mark the response closed (idempotent)."""
        self.closed = True


class AsyncMockTransport:
    """A transport that serves scripted responses (see ``_transport_mock``); ``sleep`` carries
    out the scripted delays and pauses."""

    def __init__(
        self,
        responses: Iterable[MockResponse] | Callable[[HTTPRequest], MockResponse],
        *,
        sleep: AsyncSleep = async_sleep,
    ) -> None:
        self._script = Script(responses)
        self._sleep = sleep
        self.responses: list[AsyncMockResponse] = []
        """Every response handed out, in order."""
        self.closed = False

    @property
    def requests(self) -> list[HTTPRequest]:
        """Every request received, in order (also those whose ``open`` failed)."""
        return self._script.requests

    async def open(
        self, request: HTTPRequest, *, connect_timeout: float | None, head_timeout: float | None
    ) -> AsyncMockResponse:
        """Serve the next scripted response."""
        script = self._script.next(request)
        wait, error = open_delay(script, connect_timeout, head_timeout)
        if wait > 0:
            await self._sleep(wait)
        if error is not None:
            raise error
        response = AsyncMockResponse(script, self._sleep)
        self.responses.append(response)
        return response

    async def aclose(self) -> None:
        """Mark the transport closed."""
        self.closed = True
