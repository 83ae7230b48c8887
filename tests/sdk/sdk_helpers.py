"""Helpers of the SDK tests: emulators whose state the tests can see, and one *harness* that
drives the sync :class:`Client` and the async :class:`AsyncClient` through the same test code.

Every test here is an ``async def``. For ``mode == "async"`` the harness awaits the async client
directly; for ``mode == "sync"`` it runs the sync client's whole exchange in a worker thread
(``asyncio.to_thread``), so one test body checks both twins and any difference between them is
a failure. The fixtures ``api`` (``v1`` / ``v2``) and ``mode`` (``sync`` / ``async``) are
parametrised, so a test taking ``make`` runs four times; a test that applies to one API only
overrides the fixture with ``@pytest.mark.parametrize("api", ["v1"])``.

Each client gets fresh credentials, so the emulator's per-credential state (``times=N``
counters, quotas, tokens) never leaks between tests. Every client's transport is wrapped in a
recorder, so tests count what went on the wire (chat attempts, OAuth fetches, IAM mints).

Time: ``build_client(..., fake_time=True)`` gives the client a :class:`FakeClock` of its own
(``harness.clock``) as its ``clock`` and its sleep (``sleep`` for the sync twin, ``asleep`` for
the async one). The client's own waits — retry backoff, ``Retry-After``, rate-limit slots, a
mock transport's scripted pauses — then take no real time, and a test asserts them exactly, from
``harness.clock.sleeps``, instead of bounding the wall clock. Waits on a real server (its
pacing, a stall, a silent socket) stay real: those tests keep generous margins.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

from servers import FAST, serving
from wenxin_stream import (
    DONE_EVENT,
    AsyncChatStream,
    AsyncClient,
    ChatResult,
    ChatStream,
    Client,
    EndReason,
    RetryPolicy,
    StreamEvent,
    TextDelta,
    Timeout,
    WenxinError,
    encode_event,
)
from wenxin_stream._clock import FakeClock
from wenxin_stream._transport import AsyncResponse, AsyncTransport, HTTPRequest, SyncResponse
from wenxin_stream._transport import SyncTransport as SyncTransportProtocol
from wenxin_stream._transport_aiohttp import AiohttpTransport
from wenxin_stream._transport_urllib3 import Urllib3Transport
from wenxin_stream.emulator import EmulatorApp, EmulatorConfig, ServerHandle, create_app
from wenxin_stream.emulator._config import parse_scenarios

Api = Literal["v1", "v2"]
Mode = Literal["sync", "async"]

UTF8_PROMPT = "utf8 boundaries"
"""A prompt the SDK emulator answers with the short, multi-byte-heavy :data:`UTF8_ANSWER`."""
UTF8_ANSWER = "你好，世界！中文「测试」😀。第二句：é ß ✓ 𠀀。"

FAST_RETRY = RetryPolicy(max_attempts=3, initial_delay=0.01, multiplier=1.0, jitter=0.0)
"""Retries without real waiting, for tests that are not about backoff."""
TEST_TIMEOUT = Timeout(connect=5.0, first_token=5.0, idle=5.0)
"""Limits that turn a hang into a quick failure (each test also has a 60 s budget)."""


class ConsumerError(Exception):
    """Raised by the harness's consumer inside the ``with`` block (``raise_after``)."""


def fault(prompt: str, spec: str) -> str:
    """``prompt`` with the fault directive ``spec`` (the emulator strips it before answering)."""
    return f"{prompt} [[wenxin:fault {spec}]]"


def unique(prefix: str) -> str:
    """A fresh identifier, for credentials that share no emulator state with other tests."""
    return f"{prefix}{uuid.uuid4().hex[:12]}"


def sse_body(
    api: Api, pieces: Sequence[str], *, complete: bool = True, rid: str = "as-mock"
) -> bytes:
    """A well-formed ``api`` stream carrying ``pieces`` as its content chunks; with
    ``complete`` false it stops after them (no finish, no terminal event)."""
    chunks: list[dict[str, Any]] = []
    usage = {"prompt_tokens": 1, "completion_tokens": len(pieces), "total_tokens": 1 + len(pieces)}
    for index, piece in enumerate(pieces):
        if api == "v1":
            chunks.append({"id": rid, "sentence_id": index, "is_end": False, "result": piece})
        else:
            delta = {"role": "assistant", "content": piece} if index == 0 else {"content": piece}
            chunks.append({"id": rid, "choices": [{"index": 0, "delta": delta}]})
    body = b"".join(encode_event(json.dumps(c, ensure_ascii=False)) for c in chunks)
    if not complete:
        return body
    if api == "v1":
        end = {
            "id": rid,
            "sentence_id": len(pieces),
            "is_end": True,
            "result": "",
            "finish_reason": "normal",
            "usage": usage,
        }
        return body + encode_event(json.dumps(end))
    choice = {"index": 0, "delta": {}, "finish_reason": "stop"}
    last = {"id": rid, "choices": [choice], "usage": usage}
    return body + encode_event(json.dumps(last)) + DONE_EVENT


# --- emulators ------------------------------------------------------------------------------


@dataclass
class Emu:
    """A running emulator and its app (whose live state tests may read)."""

    handle: ServerHandle
    app: EmulatorApp

    @property
    def base_url(self) -> str:
        return self.handle.base_url

    @property
    def active_streams(self) -> int:
        """Event streams the emulator is sending right now (drops when a client leaves)."""
        return self.app.shared.active_streams

    def wait_for_streams(self, at_most: int, timeout: float = 1.0) -> float | None:
        """Poll until at most ``at_most`` streams are active; the seconds it took, or None."""
        start = time.monotonic()
        while time.monotonic() - start <= timeout:
            if self.active_streams <= at_most:
                return time.monotonic() - start
            time.sleep(0.005)
        return None

    async def await_streams(self, at_most: int, within: float = 1.0) -> float | None:
        """:meth:`wait_for_streams` without blocking the event loop."""
        start = time.monotonic()
        while time.monotonic() - start <= within:
            if self.active_streams <= at_most:
                return time.monotonic() - start
            await asyncio.sleep(0.005)
        return None


@contextmanager
def serve_emulator(config: EmulatorConfig | None = None, **overrides: Any) -> Iterator[Emu]:
    """Serve an emulator (fast pacing plus ``overrides``, or exactly ``config``)."""
    if config is None:
        config = EmulatorConfig(**{**FAST, **overrides})
    app = create_app(config)
    with serving(app) as handle:
        yield Emu(handle, app)


SCENARIOS = parse_scenarios([{"match": UTF8_PROMPT, "answer": UTF8_ANSWER}])


# --- recording transports -------------------------------------------------------------------


@dataclass(frozen=True)
class Sent:
    """One request a client sent, and when (``time.monotonic``)."""

    request: HTTPRequest
    at: float

    @property
    def url(self) -> str:
        return self.request.url


class _Recording:
    def __init__(self) -> None:
        self.sent: list[Sent] = []

    def _record(self, request: HTTPRequest) -> None:
        self.sent.append(Sent(request, time.monotonic()))

    def chat(self) -> list[Sent]:
        """The chat attempts (v1 or v2)."""
        return [s for s in self.sent if "/chat/" in s.url]

    def oauth(self) -> list[Sent]:
        """The v1 OAuth token fetches."""
        return [s for s in self.sent if "/oauth/2.0/token" in s.url]

    def mints(self) -> list[Sent]:
        """The IAM bearer-token mints."""
        return [s for s in self.sent if "/v1/BCE-BEARER/token" in s.url]


class RecordingTransport(_Recording):
    """Wraps a sync transport and records every request (thread-safe: list.append)."""

    def __init__(self, inner: SyncTransportProtocol) -> None:
        super().__init__()
        self.inner = inner

    def open(
        self, request: HTTPRequest, *, connect_timeout: float | None, head_timeout: float | None
    ) -> SyncResponse:
        self._record(request)
        return self.inner.open(request, connect_timeout=connect_timeout, head_timeout=head_timeout)

    def close(self) -> None:
        self.inner.close()


class AsyncRecordingTransport(_Recording):
    """Wraps an async transport and records every request."""

    def __init__(self, inner: AsyncTransport) -> None:
        super().__init__()
        self.inner = inner

    async def open(
        self, request: HTTPRequest, *, connect_timeout: float | None, head_timeout: float | None
    ) -> AsyncResponse:
        self._record(request)
        return await self.inner.open(
            request, connect_timeout=connect_timeout, head_timeout=head_timeout
        )

    async def aclose(self) -> None:
        await self.inner.aclose()


# --- the harness ----------------------------------------------------------------------------


@dataclass
class Outcome:
    """What one streamed exchange produced."""

    events: list[StreamEvent]
    times: list[float]
    """When each event arrived, in seconds since the iteration began."""
    error: WenxinError | None
    end_reason: EndReason | None
    text: str
    result: ChatResult
    time_to_first_token: float | None
    elapsed: float
    stream: ChatStream | AsyncChatStream = field(repr=False)
    consumer_error: ConsumerError | None = None
    """The exception the consumer raised inside the ``with`` block (``raise_after``)."""

    @property
    def texts(self) -> list[str]:
        """The text of every TextDelta, in order."""
        return [e.text for e in self.events if isinstance(e, TextDelta)]

    @property
    def delivered(self) -> str:
        """All text that reached the caller."""
        return "".join(self.texts)

    def of(self, kind: type[Any]) -> list[Any]:
        """The events of one type."""
        return [e for e in self.events if type(e) is kind]

    def raise_error(self) -> None:
        """Fail the test with the stream's error, if there was one."""
        if self.error is not None:
            raise self.error


class Harness:
    """One client under test, driven through the same async interface for both twins."""

    def __init__(
        self,
        mode: Mode,
        client: Client | AsyncClient,
        recorder: RecordingTransport | AsyncRecordingTransport | None,
        clock: FakeClock | None = None,
    ) -> None:
        self.mode = mode
        self.client = client
        self._recorder = recorder
        self._clock = clock

    @property
    def clock(self) -> FakeClock:
        """The client's fake clock (only for a harness built with ``fake_time=True``)."""
        assert self._clock is not None, "this harness runs on real time"
        return self._clock

    @property
    def api(self) -> str:
        return self.client.api

    @property
    def label(self) -> str:
        """``v1-sync`` …, for assertion messages."""
        return f"{self.api}-{self.mode}"

    @property
    def wire(self) -> _Recording:
        """What went on the wire (only when the harness wrapped the transport)."""
        assert self._recorder is not None, "this harness was given its own transport"
        return self._recorder

    async def stream(
        self,
        messages: Sequence[Mapping[str, Any]] | str,
        *,
        stop_after: int | None = None,
        raise_after: int | None = None,
        pause: float = 0.0,
        delay_start: float = 0.0,
        **params: Any,
    ) -> Outcome:
        """Stream one answer inside ``with`` and collect it. ``stop_after`` leaves the block
        (``break``) after that many events, ``raise_after`` by raising :class:`ConsumerError`;
        ``pause`` sleeps after each event (a slow consumer); ``delay_start`` waits between
        creating the stream and iterating it. Errors derived from WenxinError (and the
        ConsumerError) are returned in the outcome, others propagate."""
        how = (stop_after, raise_after, pause, delay_start)
        if isinstance(self.client, AsyncClient):
            return await self._astream(self.client, messages, how, params)
        return await asyncio.to_thread(self._sstream, self.client, messages, how, params)

    @staticmethod
    def _sstream(
        client: Client,
        messages: Sequence[Mapping[str, Any]] | str,
        how: tuple[int | None, int | None, float, float],
        params: dict[str, Any],
    ) -> Outcome:
        stop_after, raise_after, pause, delay_start = how
        events: list[StreamEvent] = []
        times: list[float] = []
        error: WenxinError | None = None
        raised: ConsumerError | None = None
        stream = client.chat.stream(messages=messages, **params)
        if delay_start:
            time.sleep(delay_start)
        start = time.monotonic()
        try:
            with stream:
                for event in stream:
                    events.append(event)
                    times.append(time.monotonic() - start)
                    if stop_after is not None and len(events) >= stop_after:
                        break
                    if raise_after is not None and len(events) >= raise_after:
                        raise ConsumerError(f"the consumer gave up after {len(events)} events")
                    if pause:
                        time.sleep(pause)
        except WenxinError as exc:
            error = exc
        except ConsumerError as exc:
            raised = exc
        return Outcome(
            events,
            times,
            error,
            stream.end_reason,
            stream.text,
            stream.get_final_message(),
            stream.time_to_first_token,
            stream.elapsed,
            stream,
            raised,
        )

    @staticmethod
    async def _astream(
        client: AsyncClient,
        messages: Sequence[Mapping[str, Any]] | str,
        how: tuple[int | None, int | None, float, float],
        params: dict[str, Any],
    ) -> Outcome:
        stop_after, raise_after, pause, delay_start = how
        events: list[StreamEvent] = []
        times: list[float] = []
        error: WenxinError | None = None
        raised: ConsumerError | None = None
        stream = client.chat.stream(messages=messages, **params)
        if delay_start:
            await asyncio.sleep(delay_start)
        start = time.monotonic()
        try:
            async with stream:
                async for event in stream:
                    events.append(event)
                    times.append(time.monotonic() - start)
                    if stop_after is not None and len(events) >= stop_after:
                        break
                    if raise_after is not None and len(events) >= raise_after:
                        raise ConsumerError(f"the consumer gave up after {len(events)} events")
                    if pause:
                        await asyncio.sleep(pause)
        except WenxinError as exc:
            error = exc
        except ConsumerError as exc:
            raised = exc
        return Outcome(
            events,
            times,
            error,
            stream.end_reason,
            stream.text,
            await stream.get_final_message(),
            stream.time_to_first_token,
            stream.elapsed,
            stream,
            raised,
        )

    async def create(self, messages: Sequence[Mapping[str, Any]] | str, **params: Any) -> Any:
        """A whole (non-stream) answer (the exception propagates)."""
        if isinstance(self.client, AsyncClient):
            return await self.client.chat.create(messages=messages, **params)
        client = self.client
        return await asyncio.to_thread(lambda: client.chat.create(messages=messages, **params))

    async def call(self, function: Callable[[], Any]) -> Any:
        """Run a blocking function of the sync client in a thread (for custom sync flows)."""
        return await asyncio.to_thread(function)

    async def close(self) -> None:
        if isinstance(self.client, AsyncClient):
            await self.client.aclose()
        else:
            self.client.close()


def credentials(api: Api, url: str) -> dict[str, Any]:
    """Fresh credentials for ``api`` against the emulator at ``url``."""
    if api == "v1":
        return {"api_key": unique("ak-"), "secret_key": unique("sk-"), "base_url": url}
    return {"bearer_token": f"bce-v3/ALTAK-{unique('k')}/{unique('s')}", "v2_base_url": url}


def on_clock(mode: Mode, clock: FakeClock) -> dict[str, Any]:
    """The ``clock`` and ``sleep`` arguments that put a ``mode`` client (or mock transport:
    use only ``sleep``) on ``clock``."""
    return {"clock": clock, "sleep": clock.sleep if mode == "sync" else clock.asleep}


def build_client(
    mode: Mode,
    *,
    transport: Any = None,
    record: bool = True,
    fake_time: bool = False,
    **kwargs: Any,
) -> Harness:
    """A harness around a new client of ``mode`` (``kwargs`` go to the constructor); with
    ``fake_time`` the client runs on a fake clock of its own (``harness.clock``)."""
    kwargs.setdefault("environ", {})
    kwargs.setdefault("retry", FAST_RETRY)
    kwargs.setdefault("timeout", TEST_TIMEOUT)
    clock = FakeClock() if fake_time else None
    if clock is not None:
        kwargs.update(on_clock(mode, clock))
    if mode == "sync":
        recorder = None
        if transport is None and record:
            transport = recorder = RecordingTransport(Urllib3Transport(kwargs.pop("limits", None)))
        return Harness(mode, Client(transport=transport, **kwargs), recorder, clock)
    arecorder = None
    if transport is None and record:
        transport = arecorder = AsyncRecordingTransport(
            AiohttpTransport(kwargs.pop("limits", None))
        )
    return Harness(mode, AsyncClient(transport=transport, **kwargs), arecorder, clock)


Factory = Callable[..., Harness]
MakeEach = Callable[..., list["Harness"]]


VARIANTS: tuple[tuple[Api, Mode], ...] = (
    ("v1", "sync"),
    ("v1", "async"),
    ("v2", "sync"),
    ("v2", "async"),
)
