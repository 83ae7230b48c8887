"""Helpers for the server tests: the real server under uvicorn on loopback, its upstream a
fast emulator (pacing per request with fault directives such as ``[[wenxin:fault
interval=0.02;chunks=40]]``), small helpers to read event streams as streams, and a scripted
upstream of bursts (``BurstUpstream``) for driving a generation in-process, with the relay
and generation the relay tests start on it (``burst_relay``, ``start_bursts``, ``settle``)."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from servers import serving
from wenxin_stream import EndReason, ServerSentEvent, SSEDecoder, TextDelta
from wenxin_stream._asgi import ASGIApp, Receive, Scope, Send
from wenxin_stream.emulator import ServerHandle
from wenxin_stream.server import Server, ServerConfig, create_app
from wenxin_stream.server._metrics import Metrics
from wenxin_stream.server._relay import EntryKind, Generation, Relay, Subscription

BEARER = "bce-v3/ALTAK-serve-tests/x"


def paced(question: str, spec: str = "interval=0.02;chunks=40") -> str:
    """A question whose answer the emulator paces per ``spec``."""
    return f"{question} [[wenxin:fault {spec}]]"


@dataclass
class Running:
    """A server under test: the app object, its URL and the uvicorn handle."""

    app: Server
    url: str
    handle: ServerHandle

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=10, **kwargs)

    @property
    def db(self) -> Path:
        return self.app.config.data_dir / "wenxin.db"


def server_config(data_dir: Path, upstream: str, **overrides: Any) -> ServerConfig:
    """The configuration tests use: upstream at ``upstream``, data in ``data_dir``."""
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "upstream_api": "v2",
        "upstream_v2_base_url": upstream,
        "upstream_bearer_token": BEARER,
        "upstream_emulated": True,
        "upstream_retries": 0,
        "resume_grace": 2.0,
        "shutdown_grace": 0.5,
    }
    values.update(overrides)
    return ServerConfig(**values)


@contextmanager
def running(
    data_dir: Path, upstream: str, client: Any = None, **overrides: Any
) -> Iterator[Running]:
    """Serve the Q&A server for the duration of the ``with`` block (``client``: its upstream
    client instead of the configured one)."""
    app = create_app(server_config(data_dir, upstream, **overrides), client=client)
    with serving(app) as handle:
        yield Running(app, handle.base_url, handle)


@contextmanager
def draining(app: Server, **kwargs: Any) -> Iterator[tuple[str, threading.Thread, Any]]:
    """The app under the CLI's uvicorn server (drain first, then close) in a thread: set
    ``server.should_exit`` to shut it down as SIGTERM does (``kwargs``: ``uvicorn_server``'s)."""
    from wenxin_stream.emulator._server import base_url_of, bind_socket
    from wenxin_stream.server import uvicorn_server

    server = uvicorn_server(app, **kwargs)
    sock = bind_socket("127.0.0.1", 0)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    wait_for(lambda: server.started or not thread.is_alive(), timeout=10)
    try:
        yield base_url_of(sock), thread, server
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def new_conversation(client: httpx.Client, **body: Any) -> str:
    r = client.post("/api/conversations", json=body)
    assert r.status_code == 201, r.text
    cid: str = r.json()["id"]
    return cid


def sse_events(data: bytes) -> list[ServerSentEvent]:
    decoder = SSEDecoder()
    events = decoder.feed(data)
    events += decoder.close()
    return events


class EventReader:
    """Reads an event stream from an httpx streaming response, event by event."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.raw = bytearray()
        self._decoder = SSEDecoder()
        self._pending: list[ServerSentEvent] = []
        self._chunks = response.iter_raw()

    def next(self) -> ServerSentEvent | None:
        while not self._pending:
            try:
                chunk = next(self._chunks)
            except StopIteration:
                return None
            self.raw += chunk
            self._pending += self._decoder.feed(chunk)
        return self._pending.pop(0)

    def rest(self) -> list[ServerSentEvent]:
        out = []
        while (event := self.next()) is not None:
            out.append(event)
        return out


def texts(events: list[ServerSentEvent]) -> str:
    return "".join(json.loads(e.data)["text"] for e in events if e.event == "delta")


def seqs(events: list[ServerSentEvent]) -> list[int]:
    return [int(e.id.rsplit(":", 1)[1]) for e in events]


def wait_for(predicate: Callable[[], Any], timeout: float = 5.0, step: float = 0.01) -> Any:
    """Poll ``predicate`` until it is truthy (its value) or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {predicate}")
        time.sleep(step)


class Probe:
    """Wraps an ASGI app to count the HTTP requests it is still serving (the upstream side of
    a stream: an emulator stream stops the moment its client goes away)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.open = 0
        self.started = 0
        self.closed_at: list[float] = []
        self._lock = threading.Lock()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        with self._lock:
            self.open += 1
            self.started += 1
        try:
            await self.app(scope, receive, send)
        finally:
            with self._lock:
                self.open -= 1
                self.closed_at.append(time.monotonic())


def raw_request(
    url: str,
    method: str,
    path: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    rcvbuf: int | None = None,
) -> socket.socket:
    """Send a raw HTTP/1.1 request and return the connected socket (read it yourself)."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.socket()
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.connect((host, int(port)))
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}"]
    for name, value in (headers or {}).items():
        lines.append(f"{name}: {value}")
    if body:
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
    return sock


class BurstUpstream:
    """Stands in for AsyncChatStream: yields the bursts it is given, until ``finish``."""

    def __init__(self) -> None:
        self._bursts: asyncio.Queue[tuple[list[str], Callable[[], None] | None] | None] = (
            asyncio.Queue()
        )
        self.end_reason: EndReason | None = None
        self.attempt_usages: tuple[Any, ...] = ()  # the SDK's per-request ledger: none

    def burst(self, *texts: str, then: Callable[[], None] | None = None) -> None:
        """Deliver ``texts`` in one go; ``then`` runs once the generation has taken them all
        (before it next waits for the upstream)."""
        self._bursts.put_nowait((list(texts), then))

    def finish(self) -> None:
        self._bursts.put_nowait(None)

    async def __aenter__(self) -> BurstUpstream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        pass

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._events()

    async def _events(self) -> AsyncIterator[Any]:
        while (item := await self._bursts.get()) is not None:
            texts, then = item
            for text in texts:
                yield TextDelta(text)  # no await in between: one loop step for the burst
            if then is not None:
                then()
        self.end_reason = EndReason.COMPLETED


async def settle(steps: int = 5) -> None:
    """Let the generation (and any reader) run until they wait again."""
    for _ in range(steps):
        await asyncio.sleep(0)


async def no_end(gen: Generation) -> None:
    """An ``on_end`` that records nothing."""


class PokedWriter:
    """What the relay sees of a fleet's event-log writer (``track``, ``poke``, ``finish``) for
    one answer: its pokes counted, its end "in Redis" at once."""

    def __init__(self) -> None:
        self.pokes = 0
        self.tracked: list[Generation] = []

    def track(self, gen: Generation) -> None:
        self.tracked.append(gen)

    def poke(self, stream_id: str | None = None) -> None:
        assert stream_id == self.tracked[0].stream_id
        self.pokes += 1

    def finish(self, gen: Generation) -> None:
        gen.logged(len(gen.entries))  # the end is in "Redis": its readers may have it


def burst_relay() -> Relay:
    """A relay as the relay tests use it: metrics of its own, a disconnect cancels, no resume
    window, answers up to 10,000 characters."""
    return Relay(Metrics(), on_disconnect="cancel", resume_grace=0.0, max_answer_chars=10_000)


def start_bursts(relay: Relay) -> tuple[Generation, BurstUpstream]:
    """A generation of ``relay`` fed by a :class:`BurstUpstream`, begun (its task has not run
    yet: :func:`settle` lets it)."""
    upstream = BurstUpstream()
    gen = relay.start(
        upstream,  # type: ignore[arg-type]
        owner="o",
        model="m",
        received_at=asyncio.get_running_loop().time(),
        on_end=no_end,
    )
    gen.begin({"model": "m"})
    return gen, upstream


async def reader_past_start(relay: Relay, gen: Generation) -> Subscription:
    """A new reader of ``gen`` that has taken the ``start`` entry."""
    sub = relay.attach(gen)
    [start] = await sub.next_batch()
    assert start.kind is EntryKind.START
    return sub


class Recorder:
    """An ASGI wrapper that keeps the JSON bodies of the v2 chat requests it passes on."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.bodies: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != "/v2/chat/completions":
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []

        async def recording() -> Any:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                with self._lock:
                    self.bodies.append(json.loads(b"".join(chunks)))
            return message

        await self.app(scope, recording, send)


class UsageTap:
    """An ASGI wrapper around the emulator that reads the ``usage`` it reports in each chat
    response (the last one of a stream: v2 repeats its running total) — the upstream's own
    figures, taken off the wire; ``exchanges`` pairs each with the request's JSON body."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.usages: list[dict[str, int]] = []
        self.exchanges: list[tuple[dict[str, Any], dict[str, int]]] = []
        self._lock = threading.Lock()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not scope["path"].endswith("/chat/completions"):
            await self.app(scope, receive, send)
            return
        asked: list[bytes] = []
        body: list[bytes] = []

        async def heard() -> Any:
            message = await receive()
            if message["type"] == "http.request":
                asked.append(message.get("body", b""))
            return message

        async def tapped(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.body":
                body.append(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, heard, tapped)
        finally:
            usage = last_usage(b"".join(body))
            if usage is not None:
                try:
                    request = json.loads(b"".join(asked) or b"{}")
                except ValueError:
                    request = {}
                with self._lock:
                    self.usages.append(usage)
                    self.exchanges.append((request, usage))

    def recorded(self, count: int, timeout: float = 5.0) -> list[dict[str, int]]:
        """The usages once ``count`` are recorded. A response's usage is recorded when the
        emulator's handler returns, which can be after its client has read the last byte."""

        def enough() -> tuple[list[dict[str, int]]] | None:
            # wrapped in a tuple: `wait_for` waits for a truthy value, and an empty list
            # (``count`` 0, reached at once) is falsy
            with self._lock:
                return (list(self.usages),) if len(self.usages) >= count else None

        usages: list[dict[str, int]] = wait_for(enough, timeout)[0]
        return usages

    def totals(self) -> tuple[int, int, int]:
        with self._lock:
            return (
                sum(u["prompt_tokens"] for u in self.usages),
                sum(u["completion_tokens"] for u in self.usages),
                sum(u["total_tokens"] for u in self.usages),
            )


def last_usage(body: bytes) -> dict[str, int] | None:
    """The last ``usage`` object of a response body (SSE ``data:`` lines, or one JSON)."""
    found = None
    text = body.decode("utf-8", "replace")
    candidates = [line[5:].strip() for line in text.splitlines() if line.startswith("data:")]
    if not candidates:
        candidates = [text]
    for data in candidates:
        try:
            doc = json.loads(data)
        except ValueError:
            continue
        if isinstance(doc, dict) and isinstance(doc.get("usage"), dict):
            found = doc["usage"]
    return found
