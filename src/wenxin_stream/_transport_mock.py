"""A scripted transport pair for tests: exact chunk boundaries, chosen delays, impossible wires.

Real servers on loopback (the emulator) are the main way to test streams, but some situations
cannot be produced on a real wire on demand: a chunk boundary inside a ``data:`` prefix, a CR
at the end of one read and its LF at the start of the next, a connection that breaks after
exactly 37 bytes, a 200 with an empty body. ``MockTransport`` (sync, ``_transport_mock_sync``)
and ``AsyncMockTransport`` (async, ``_transport_mock_async``; the sync twin is generated from
it) hand out :class:`MockResponse` scripts instead:

::

    body = b'data: {"result": "你好", "is_end": true}\\n\\n'
    clock = FakeClock()
    transport = MockTransport([MockResponse.split(body, [8, 20], pause=0.01)], sleep=clock.sleep)
    client = Client(access_token="t", base_url="http://mock", transport=transport, environ={},
                    clock=clock, sleep=clock.sleep)

A script is a status, headers and a body: a sequence of ``bytes`` (each returned by one
``read``, so the boundaries are exactly where you put them), :class:`Pause` items (a silence
between reads) and exceptions (raised by the ``read`` that reaches them, e.g.
``APIConnectionError("reset")`` for a connection broken mid-body). ``connect_delay`` and
``head_delay`` delay ``open``; ``error`` makes ``open`` raise.

The mocks keep the transport contract of ``_transport`` exactly, timeouts included: a read whose
``timeout`` passes during a :class:`Pause` sleeps that long and raises :class:`TimeoutError`
(the rest of the pause is still ahead), a ``timeout`` of 0 or less raises at once, a
``connect_delay`` longer than the connect timeout raises ``APITimeoutError("connect")`` and a
``head_delay`` longer than the head timeout ``APITimeoutError("first_token")``. What to do is
decided by one pure :class:`Cursor`; the twins differ only in how they sleep, and they sleep
through an injected ``sleep`` (default: real time). Give them a
:class:`~wenxin_stream._clock.FakeClock`'s sleep, and the client the same clock, and a script of
pauses and timeouts plays out at once, exactly, on the fake clock.

Every request is recorded (``transport.requests``), and every response handed out
(``transport.responses``) tells whether it was closed and whether its body had been
read to the end first (``released``: returned to the pool) or not (``aborted``). Responses are
served in order; a callable ``(HTTPRequest) -> MockResponse`` may decide instead. Running out
of scripted responses raises :class:`MockTransportExhausted` (not a ``WenxinError``, so no retry
hides it).
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from ._exceptions import APITimeoutError
from ._transport import HTTPRequest

__all__ = [
    "BodyItem",
    "Cursor",
    "MockResponse",
    "MockTransportExhausted",
    "Pause",
    "ResponseState",
    "Script",
    "every_byte",
    "open_delay",
    "split_at",
]


@dataclass(frozen=True, slots=True)
class Pause:
    """A silence of ``seconds`` between two reads of a scripted body."""

    seconds: float

    def __post_init__(self) -> None:
        if not self.seconds >= 0:
            raise ValueError("a pause lasts zero seconds or more")


BodyItem = bytes | Pause | BaseException
"""One step of a scripted body: bytes for one read, a pause, or an exception to raise."""

_EVENT_STREAM: Final[Mapping[str, str]] = {"content-type": "text/event-stream"}


def split_at(data: bytes, offsets: Iterable[int]) -> list[bytes]:
    """``data`` cut at each of ``offsets`` (sorted, deduplicated, out-of-range ones ignored)."""
    cuts = sorted({o for o in offsets if 0 < o < len(data)})
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds) if b > a]


def every_byte(data: bytes) -> list[bytes]:
    """``data`` one byte per read."""
    return [data[i : i + 1] for i in range(len(data))]


@dataclass(frozen=True, slots=True)
class MockResponse:
    """The script of one response (see the module docstring)."""

    status: int = 200
    headers: Mapping[str, str] = field(default_factory=lambda: dict(_EVENT_STREAM))
    body: Sequence[BodyItem] = ()
    connect_delay: float = 0.0
    head_delay: float = 0.0
    error: BaseException | None = None

    @classmethod
    def split(
        cls,
        data: bytes,
        offsets: Iterable[int] = (),
        *,
        pause: float = 0.0,
        status: int = 200,
        headers: Mapping[str, str] | None = None,
    ) -> MockResponse:
        """``data`` as a body cut at ``offsets``, with ``pause`` seconds between the pieces."""
        pieces: list[BodyItem] = []
        for piece in split_at(data, offsets):
            if pieces and pause > 0:
                pieces.append(Pause(pause))
            pieces.append(piece)
        return cls(status, dict(_EVENT_STREAM if headers is None else headers), tuple(pieces))


class MockTransportExhausted(RuntimeError):
    """A mock transport was asked for more responses than it was given."""


class _Timeout:
    """The outcome of a read whose timeout passed."""


_TIMED_OUT: Final = _Timeout()

Outcome = bytes | BaseException | _Timeout


class Cursor:
    """Where a read of a scripted body is: the pure decision both mock responses share."""

    __slots__ = ("_items", "_left", "_pos")

    def __init__(self, items: Sequence[BodyItem]) -> None:
        self._items = items
        self._pos = 0
        self._left: float | None = None  # what remains of a pause a timeout interrupted

    def step(self, timeout: float | None) -> tuple[float, Outcome]:
        """What ``read(timeout)`` does: sleep the first value, then return the bytes (``b""`` at
        the end of the body), raise the exception, or time out."""
        if timeout is not None and timeout <= 0:
            return 0.0, _TIMED_OUT
        waited = 0.0
        while self._pos < len(self._items):
            item = self._items[self._pos]
            if isinstance(item, Pause):
                left = item.seconds if self._left is None else self._left
                if timeout is not None and waited + left > timeout:
                    self._left = left - (timeout - waited)
                    return timeout, _TIMED_OUT
                waited += left
                self._left = None
                self._pos += 1
                continue
            self._pos += 1
            if isinstance(item, BaseException) or item:
                return waited, item
        return waited, b""


def open_delay(
    script: MockResponse, connect_timeout: float | None, head_timeout: float | None
) -> tuple[float, BaseException | None]:
    """How long ``open`` waits, and what it raises then (None: it returns the response)."""
    if connect_timeout is not None and script.connect_delay > connect_timeout:
        return connect_timeout, APITimeoutError("connect", timeout=connect_timeout)
    if head_timeout is not None and script.head_delay > head_timeout:
        return script.connect_delay + head_timeout, APITimeoutError(
            "first_token", timeout=head_timeout
        )
    return script.connect_delay + script.head_delay, script.error


class Script:
    """The responses of one mock transport, in order or from a callable; thread-safe."""

    def __init__(
        self, responses: Iterable[MockResponse] | Callable[[HTTPRequest], MockResponse]
    ) -> None:
        self._lock = threading.Lock()
        self._decide: Callable[[HTTPRequest], MockResponse] | None = None
        self._queue: Iterator[MockResponse] | None = None
        if callable(responses):
            self._decide = responses
        else:
            self._queue = iter(list(responses))
        self.requests: list[HTTPRequest] = []

    def next(self, request: HTTPRequest) -> MockResponse:
        """Record ``request`` and return the script of its response."""
        with self._lock:
            self.requests.append(request)
            if self._decide is not None:
                return self._decide(request)
            assert self._queue is not None
            script = next(self._queue, None)
        if script is None:
            raise MockTransportExhausted(
                f"no scripted response left for request #{len(self.requests)}: {request!r}"
            )
        return script


class ResponseState:
    """Status, headers and bookkeeping both mock responses share."""

    def __init__(self, script: MockResponse) -> None:
        self.status: int = script.status
        self.headers: Mapping[str, str] = {k.lower(): v for k, v in script.headers.items()}
        self.reads = 0
        """How many reads returned bytes."""
        self.eof = False
        self.closed = False
        self._cursor = Cursor(script.body)

    @property
    def released(self) -> bool:
        """Closed after the whole body was read: the connection went back to the pool."""
        return self.closed and self.eof

    @property
    def aborted(self) -> bool:
        """Closed before the end of the body: the connection was dropped."""
        return self.closed and not self.eof

    def _step(self, timeout: float | None) -> tuple[float, Outcome]:
        if self.eof or self.closed:
            return 0.0, b""
        return self._cursor.step(timeout)

    def _result(self, outcome: Outcome) -> bytes:
        if isinstance(outcome, _Timeout):
            raise TimeoutError
        if isinstance(outcome, BaseException):
            raise outcome
        if outcome:
            self.reads += 1
        else:
            self.eof = True
        return outcome
