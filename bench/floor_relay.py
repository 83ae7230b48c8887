"""The floor: the cheapest streaming relay one can write in Python on `wenxin serve`'s stack.

Theory of operation
===================

Issue 15 asks what part of `wenxin serve`'s cost per chunk and per open stream is the
product's own, and what part any Python relay on this stack pays. This file is the second
half of that question: a relay with nothing in it but the stack.

    client ──HTTP/1.1──▶ uvicorn (httptools, uvloop) ──ASGI──▶ FloorRelay
                                                              │  one pooled aiohttp session
                                                              ▼
                                               emulator  POST /v2/chat/completions

- **Server.** uvicorn with the protocol and loop `wenxin serve` runs (``http="httptools"``,
  uvloop through ``loop="auto"``), the same ``backlog``, no server header, no access log,
  no lifespan work but opening and closing the session. `wenxin serve` runs uvicorn's
  httptools protocol subclassed with per-connection bounds (``_http_limits``); they act per
  connection and per request head, never per response chunk, so the floor uses the plain one.
- **Upstream.** One ``aiohttp.ClientSession`` for the process with the connector settings of
  the SDK's transport (``_transport_aiohttp``): no limit per host, a keep-alive expiry, no
  total timeout, ``read_bufsize`` 64 KiB, ``auto_decompress``, no ``User-Agent``.
- **Relay** (``POST /v1/chat/completions``; the client's body and bearer key are sent on as
  they are, like nginx's ``proxy_pass``). The upstream's status and content type, then one
  ``http.response.body`` with ``more_body`` per ``readany()``: whatever bytes arrived, as they
  arrived. The emulator's v2 stream is OpenAI's chunk format already, so a load generator for
  the OpenAI route counts the chunks unchanged (nginx relays the same bytes).
- **``--parse``** adds the least a real translation does: every upstream read is fed to the
  SDK's SSE decoder (:class:`wenxin_stream._sse.SSEDecoder`), every event's data is
  ``json.loads``-ed, an OpenAI chunk is built from its fields and ``json.dumps``-ed into one
  ``data:`` frame; the frames of one read go out in one ``send``.
- **``--sdk``** puts the SDK itself in the pipe, as a program that streams with it would: the
  client's body is ``json.loads``-ed, its ``model`` and ``messages`` go to
  ``AsyncClient.chat.stream`` (v2, the client's bearer key, one client per key, a pool as
  large as the relay's), and each typed event (text, finish, usage) is ``json.dumps``-ed into
  one OpenAI ``data:`` frame and sent. So the SDK's share of `wenxin serve`'s cost (its request
  checks, read deadlines, stream core, accumulator, typed events) is told apart from the
  server's own (keys, admission, limits, the answer's log, metrics, usage, audit).
  The headers go out with the first event, so an upstream that fails before any text is
  answered with its status (``502`` when it has none); a failure after it cuts the response.

One thing no shippable relay can leave out is kept: noticing that the client went away
(uvicorn's ``send`` drops what is sent to a closed connection without a word, so without it
every abandoned stream would be relayed to its end). One task per stream waits in
``receive()`` for ``http.disconnect``; the relay loop looks at it (``done()``, an attribute
read) after each upstream read and closes the upstream stream when it has fired. It costs
the task's memory and nothing per chunk.

The cyclic garbage collector is off (``--gc off``, the default), as `wenxin serve` runs
(``server/_gc.py``): with thousands of streams open, CPython's automatic collections scan
every stream's objects in the middle of the load, and their pauses (tens of milliseconds)
would decide the floor's maximum at ERNIE's pace instead of its CPU. ``--gc on`` keeps
CPython's default, as the floor ran before 2026-12-05.

What it leaves out, on purpose: authentication, limits, metrics (but the two below),
heartbeats, retries, failover, usage accounting, audit. Errors stay honest at
the few edges it has: an upstream it cannot reach is ``502``, an upstream error status is
passed on with its body, and a stream cut mid-way raises out of the app, so uvicorn closes
the connection without the final chunk of the chunked encoding: a cut answer never looks
finished.

``GET /metrics`` answers two lines under `wenxin serve`'s names: the gauge
``wenxin_streams_in_flight`` (``bench/compare``'s memory measurement waits for it to reach 0
and samples RSS on its plateau) and the counter ``wenxin_stream_ends_total`` (relayed streams
that ended, however; ``bench/profile_serve.py`` divides CPU by it), so that both read the
floor as they read `wenxin serve`.

Run: ``.venv/bin/python bench/floor_relay.py --upstream http://127.0.0.1:PORT [--parse |
--sdk] [--gc on]``;
it prints ``floor relay on http://127.0.0.1:PORT`` to stderr once it listens.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import sys
import time
from typing import Any

import aiohttp
import uvicorn

from wenxin_stream import AsyncClient, FinishEvent, Limits, TextDelta, UsageEvent, WenxinError
from wenxin_stream._sse import SSEDecoder
from wenxin_stream._transport_aiohttp import READ_BUFSIZE
from wenxin_stream.emulator._server import base_url_of, bind_socket

ROUTE = "/v1/chat/completions"
UPSTREAM_PATH = "/v2/chat/completions"
KEEPALIVE_EXPIRY = 4.0
"""The SDK's pool idle expiry (``Limits.keepalive_expiry``'s default)."""
MODES = ("bytes", "parse", "sdk")
"""The relay's modes: the bytes passed through, ``--parse`` and ``--sdk`` (the module
docstring)."""
PASSED_HEADERS = (b"authorization", b"content-type")
"""The client's request headers sent on upstream (nothing else is needed by the emulator)."""

Scope = dict[str, Any]


class FloorRelay:
    """The bare ASGI relay (see the module docstring) in one of its :data:`MODES`."""

    def __init__(self, upstream: str, *, mode: str = "bytes", max_connections: int = 10_000):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        self.upstream = upstream.rstrip("/")
        self.upstream_url = self.upstream + UPSTREAM_PATH
        self.mode = mode
        self.max_connections = max_connections
        self.session: aiohttp.ClientSession | None = None
        self.clients: dict[str, AsyncClient] = {}  # --sdk: one per bearer key
        self.answers = 0
        self.in_flight = 0
        self.ended = 0

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] != "http":
            return
        elif scope["path"] == ROUTE and scope["method"] == "POST":
            await self._relay(scope, receive, send)
        elif scope["path"] == "/metrics":
            text = 'wenxin_streams_in_flight %d\nwenxin_stream_ends_total{route="floor"} %d\n'
            await _answer(send, 200, (text % (self.in_flight, self.ended)).encode())
        elif scope["path"] == "/healthz":
            await _answer(send, 200, b"ok\n")
        else:
            await _answer(send, 404, b"not found\n")

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                connector = aiohttp.TCPConnector(
                    limit=self.max_connections,
                    limit_per_host=0,
                    keepalive_timeout=KEEPALIVE_EXPIRY,
                )
                self.session = aiohttp.ClientSession(
                    connector=connector,
                    timeout=aiohttp.ClientTimeout(total=None),
                    auto_decompress=True,
                    skip_auto_headers=("User-Agent",),
                    read_bufsize=READ_BUFSIZE,
                )
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.session is not None:
                    await self.session.close()
                for client in self.clients.values():
                    await client.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _relay(self, scope: Scope, receive: Any, send: Any) -> None:
        assert self.session is not None  # opened at start-up
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {
            name.decode("latin-1"): value.decode("latin-1")
            for name, value in scope["headers"]
            if name in PASSED_HEADERS
        }
        self.in_flight += 1
        gone = asyncio.ensure_future(receive())  # http.disconnect, once the client has gone
        try:
            if self.mode == "sdk":
                await self._relay_sdk(bytes(body), headers.get("authorization", ""), send, gone)
                return
            try:
                response = await self.session.post(
                    self.upstream_url, data=bytes(body), headers=headers, allow_redirects=False
                )
            except (aiohttp.ClientError, OSError) as exc:
                await _answer(send, 502, f"upstream unreachable: {type(exc).__name__}\n".encode())
                return
            try:
                content_type = response.headers.get("Content-Type", "application/octet-stream")
                await _start(send, response.status, content_type.encode("latin-1"))
                if self.mode == "parse" and response.status == 200:
                    await _relay_parsed(response, send, gone)
                else:
                    await _relay_bytes(response, send, gone)
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            finally:
                if gone.done():  # the client has gone: the upstream connection too
                    response.close()
                else:
                    response.release()
        finally:
            gone.cancel()
            self.in_flight -= 1
            self.ended += 1

    def _client(self, authorization: str) -> AsyncClient:
        bearer = authorization.removeprefix("Bearer ").strip()
        client = self.clients.get(bearer)
        if client is None:
            pool = Limits(
                max_connections=self.max_connections,
                max_keepalive_connections=self.max_connections,
                keepalive_expiry=KEEPALIVE_EXPIRY,
            )
            client = AsyncClient(
                api="v2", bearer_token=bearer, v2_base_url=self.upstream,
                environ={}, emulator=False, limits=pool,
            )  # fmt: skip
            self.clients[bearer] = client
        return client

    async def _relay_sdk(
        self, body: bytes, authorization: str, send: Any, gone: asyncio.Future[Any]
    ) -> None:
        """``--sdk``: the answer streamed with the SDK, each event one OpenAI frame."""
        try:
            request = json.loads(body)
            stream = self._client(authorization).chat.stream(
                model=request.get("model"), messages=request.get("messages") or ()
            )
        except (ValueError, AttributeError, WenxinError) as exc:
            await _answer(send, 400, f"bad request: {exc}\n".encode())
            return
        self.answers += 1
        head = f'data: {{"id":"chatcmpl-floor-{self.answers}","object":"chat.completion.chunk",'
        head += f'"created":{int(time.time())},"model":{json.dumps(request.get("model"))},'
        started = False
        try:
            async with stream:
                async for event in stream:
                    if gone.done():
                        return
                    frame = _sdk_frame(head, event)
                    if frame is None:
                        continue
                    if not started:
                        started = True
                        await _start(send, 200, b"text/event-stream")
                    await send({"type": "http.response.body", "body": frame, "more_body": True})
        except WenxinError as exc:
            if started:
                raise  # cut: uvicorn closes the connection without the chunked body's end
            status = getattr(exc, "status_code", None) or 502
            await _answer(send, status if 400 <= status < 600 else 502, f"{exc}\n".encode())
            return
        if not started:
            await _start(send, 200, b"text/event-stream")
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})


async def _start(send: Any, status: int, content_type: bytes) -> None:
    """The response's head: ``status`` and its one header."""
    headers = [(b"content-type", content_type)]
    await send({"type": "http.response.start", "status": status, "headers": headers})


def _sdk_frame(head: str, event: object) -> bytes | None:
    """One SDK event as an OpenAI chunk frame (``head``: its fields before ``choices``), or
    ``None`` for an event with no place in one."""
    if isinstance(event, TextDelta):
        if not event.text:
            return None
        content = _dumps(event.text)
        tail = f'"choices":[{{"index":0,"delta":{{"content":{content}}},"finish_reason":null}}]}}'
    elif isinstance(event, FinishEvent):
        tail = f'"choices":[{{"index":0,"delta":{{}},"finish_reason":"{event.reason.value}"}}]}}'
    elif isinstance(event, UsageEvent):
        usage = event.usage
        counts = {
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.total_tokens,
        }
        tail = f'"choices":[],"usage":{_dumps(counts)}}}'
    else:
        return None
    return (head + tail + "\n\n").encode()


def _dumps(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


async def _relay_bytes(
    response: aiohttp.ClientResponse, send: Any, gone: asyncio.Future[Any]
) -> None:
    """The bare pipe: every upstream read, as it is, in one ``send``."""
    content = response.content
    while data := await content.readany():
        if gone.done():
            return
        await send({"type": "http.response.body", "body": data, "more_body": True})


async def _relay_parsed(
    response: aiohttp.ClientResponse, send: Any, gone: asyncio.Future[Any]
) -> None:
    """The pipe with the least parse: SSE decoded, JSON loaded, an OpenAI chunk dumped."""
    decoder = SSEDecoder()
    content = response.content
    while data := await content.readany():
        if gone.done():
            return
        frames = [_reencode(event.data) for event in decoder.feed(data)]
        if frames:
            await send({"type": "http.response.body", "body": b"".join(frames), "more_body": True})
    decoder.close()
    if decoder.truncated:
        raise ValueError("the upstream stream ended inside an event")


def _reencode(data: str) -> bytes:
    """One upstream event's data as an OpenAI ``chat.completion.chunk`` frame."""
    if data == "[DONE]":
        return b"data: [DONE]\n\n"
    upstream = json.loads(data)
    chunk: dict[str, Any] = {
        "id": upstream.get("id"),
        "object": "chat.completion.chunk",
        "created": upstream.get("created"),
        "model": upstream.get("model"),
        "choices": [
            {
                "index": choice.get("index", 0),
                "delta": choice.get("delta") or {},
                "finish_reason": choice.get("finish_reason"),
            }
            for choice in upstream.get("choices") or ()
        ],
    }
    if upstream.get("usage") is not None:
        chunk["usage"] = upstream["usage"]
    encoded = json.dumps(chunk, ensure_ascii=False, separators=(",", ":"))
    return b"data: " + encoded.encode() + b"\n\n"


async def _answer(send: Any, status: int, body: bytes) -> None:
    await _start(send, status, b"text/plain; charset=utf-8")
    await send({"type": "http.response.body", "body": body})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--upstream", required=True, help="the emulator's base URL")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--parse", action="store_true", help="decode and re-encode each event")
    mode.add_argument("--sdk", action="store_true", help="stream with the SDK's AsyncClient")
    parser.add_argument(
        "--gc",
        choices=("off", "on"),
        default="off",
        help="CPython's cyclic collector (off, as wenxin serve runs; see the module docstring)",
    )
    args = parser.parse_args(argv)
    if args.gc == "off":
        gc.disable()
    mode = "parse" if args.parse else "sdk" if args.sdk else "bytes"
    relay = FloorRelay(args.upstream, mode=mode)
    sock = bind_socket(args.host, args.port)
    config = uvicorn.Config(
        relay,
        http="httptools",
        loop="auto",
        lifespan="on",
        log_level="warning",
        access_log=False,
        server_header=False,
        backlog=4096,
    )
    server = uvicorn.Server(config)
    print(f"floor relay on {base_url_of(sock)}", file=sys.stderr, flush=True)
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:
        pass
    finally:
        sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
