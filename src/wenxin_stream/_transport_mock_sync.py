# Generated from src/wenxin_stream/_transport_mock_async.py by scripts/unasync.py — do not edit.
"""A scripted transport for tests (see ``_transport_mock`` for what a script is).

The sync and async mock transports are twins: the sync one is generated from the async one by
``scripts/unasync.py``. What a read or an ``open`` does is decided by the pure parts of
``_transport_mock``; here it is only carried out, sleeping through the injected ``sleep``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from ._clock import Sleep
from ._synchronization import sync_sleep
from ._transport import HTTPRequest
from ._transport_mock import MockResponse, ResponseState, Script, open_delay

__all__ = ["MockSyncResponse", "MockTransport"]


class MockSyncResponse(ResponseState):
    """A scripted response (it keeps the transport contract of ``_transport``)."""

    def __init__(self, script: MockResponse, sleep: Sleep = sync_sleep) -> None:
        super().__init__(script)
        self._sleep = sleep

    def read(self, timeout: float | None) -> bytes:
        """The next scripted piece of the body (see ``_transport_mock``)."""
        wait, outcome = self._step(timeout)
        if wait > 0:
            self._sleep(wait)
        return self._result(outcome)

    def close(self) -> None:
        """Mark the response closed (idempotent)."""
        self.closed = True


class MockTransport:
    """A transport that serves scripted responses (see ``_transport_mock``); ``sleep`` carries
    out the scripted delays and pauses."""

    def __init__(
        self,
        responses: Iterable[MockResponse] | Callable[[HTTPRequest], MockResponse],
        *,
        sleep: Sleep = sync_sleep,
    ) -> None:
        self._script = Script(responses)
        self._sleep = sleep
        self.responses: list[MockSyncResponse] = []
        """Every response handed out, in order."""
        self.closed = False

    @property
    def requests(self) -> list[HTTPRequest]:
        """Every request received, in order (also those whose ``open`` failed)."""
        return self._script.requests

    def open(
        self, request: HTTPRequest, *, connect_timeout: float | None, head_timeout: float | None
    ) -> MockSyncResponse:
        """Serve the next scripted response."""
        script = self._script.next(request)
        wait, error = open_delay(script, connect_timeout, head_timeout)
        if wait > 0:
            self._sleep(wait)
        if error is not None:
            raise error
        response = MockSyncResponse(script, self._sleep)
        self.responses.append(response)
        return response

    def close(self) -> None:
        """Mark the transport closed."""
        self.closed = True
