"""The OpenAI-compatible API: ``POST /v1/chat/completions`` (stream and not) and ``/v1/models``.

Theory of operation
===================

A completion is a generation like any other (same relay, metrics, limits and audit:
:meth:`~._answers.Answers.complete`) that is not stored as a conversation and not resumable:
its one subscriber is this request.

**Stream.** Headers are sent with the first content (or the first ``: ping``, after
``ping_interval``), never later: so an upstream failure *before* any content still gets a real
HTTP status (502 / 504, which the OpenAI SDK raises as ``APIStatusError``), while a slow first
token still keeps the connection alive. Each log entry becomes one ``chat.completion.chunk``:
the first carries ``role: "assistant"``; once the answer has ended — only then is it known to
have *finished* — one chunk with an empty delta carries ``finish_reason`` (as OpenAI's own
streams do), then the usage chunk (``"choices": []``) if ``stream_options.include_usage``,
then ``data: [DONE]``. An answer that did not finish (an error after content has been sent,
a shutdown, a timeout) has no ``finish_reason`` chunk at all: an ``{"error": {…}}`` data
event (``_errors``: the same code and message the HTTP answer would have had), then
``[DONE]`` — the official SDKs raise it, so a cut answer never looks finished. The chunk
prefix (id, created, model) is encoded once per request; a delta costs one formatting and the
one SSE encoder's framing (``_sse.encode_event_bytes``).

**Non-stream.** The same stream is read to its end and answered as one ``chat.completion``
when it finished (``finish_reason`` by ``_errors.openai_finish``); an answer that did not
finish is answered with its error's status instead (503 ``server_shutdown`` on a shutdown,
the ``_errors`` row of an upstream failure), never 200 with a truncated text.

In both, a client that disconnects stops the generation (the disconnect policy, with no grace:
there is nothing to resume).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from json.encoder import encode_basestring
from typing import Any

from .._asgi import DisconnectSignal, Message, Receive, Send, json_bytes, send_json
from .._events import Usage, thaw
from .._sse import DONE_EVENT, encode_event_bytes
from ._access import Access
from ._answers import Answers
from ._completion_request import parse_completion
from ._config import ServerConfig
from ._connection import SSE_HEADERS, Outlet, follow
from ._errors import cut_error, openai_finish
from ._http import Context, HTTPError, Routes, read_json, required_str
from ._relay import Entry, EntryKind, Generation, Relay, Subscription, usage_dict
from ._upstream import Upstream

__all__ = ["OpenAIRoutes", "openai_usage"]

_START, _DELTA, _END = EntryKind.START, EntryKind.DELTA, EntryKind.END
_REASONING, _SEARCH, _TOOL_CALL = EntryKind.REASONING, EntryKind.SEARCH_RESULTS, EntryKind.TOOL_CALL


def openai_usage(usage: Usage | None) -> dict[str, Any] | None:
    """Usage as OpenAI shows it: the three counts, and ERNIE's ``completion_tokens_details``
    (``reasoning_tokens``) and ``prompt_tokens_details`` (``search_tokens``) when it sent
    them."""
    counts: dict[str, Any] | None = usage_dict(usage)
    if usage is not None and counts is not None:
        for name in ("completion_tokens_details", "prompt_tokens_details"):
            details = usage.extra.get(name)
            if isinstance(details, Mapping):
                counts[name] = thaw(details)
    return counts


def completion_id(stream_id: str) -> str:
    """The ``chatcmpl-`` id of a completion: its stream id's random part (one random draw per
    answer, not two)."""
    return "chatcmpl-" + stream_id.removeprefix("s_")


def _tool_call(index: int, call: dict[str, Any]) -> dict[str, Any]:
    function = {"name": call["name"], "arguments": call["arguments"]}
    return {"index": index, "id": call["id"], "type": "function", "function": function}


class _Chunks:
    """Encodes log entries as ``chat.completion.chunk`` SSE frames for one request."""

    def __init__(self, model: str, include_usage: bool, stream_id: str) -> None:
        self.id = completion_id(stream_id)
        self.created = int(time.time())
        self.prefix = b'{"id":"%s","object":"chat.completion.chunk","created":%d,' % (
            self.id.encode(),
            self.created,
        )
        self.prefix += b'"model":%s,"system_fingerprint":null,"choices":' % json_bytes(model)
        # A text chunk's whole frame is head + the text as a JSON string + tail: one join.
        # It is what `encode_event_bytes` makes of it (one `data:` line: the JSON has no raw
        # CR or LF — `encode_basestring` escapes them, `json_bytes` too, the rest is ours).
        choice = b'data: %s[{"index":0,"delta":{' % self.prefix
        self.text_head = choice + b'"content":'
        self.reasoning_head = choice + b'"reasoning_content":'
        self.text_tail = b'},"logprobs":null,"finish_reason":null}]}\n\n'
        self.include_usage = include_usage
        self.calls = 0  # tool calls sent so far: the next one's index

    def choice(self, delta: bytes, finish: str | None) -> bytes:
        reason = b"null" if finish is None else b'"%s"' % finish.encode()
        return encode_event_bytes(
            b'%s[{"index":0,"delta":%s,"logprobs":null,"finish_reason":%s}]}'
            % (self.prefix, delta, reason)
        )

    def encode(self, entry: Entry, gen: Generation) -> bytes:
        kind = entry.kind
        if kind is _DELTA:
            text = encode_basestring(entry.text).encode()
            return b"".join((self.text_head, text, self.text_tail))
        if kind is _START:
            return self.choice(b'{"role":"assistant","content":""}', None)
        if kind is _REASONING:
            text = encode_basestring(entry.text).encode()
            return b"".join((self.reasoning_head, text, self.text_tail))
        if kind is _SEARCH:
            results = json_bytes((entry.data or {}).get("results", []))
            return encode_event_bytes(
                b'%s[{"index":0,"delta":{},"logprobs":null,"finish_reason":null}],'
                b'"search_results":%s}' % (self.prefix, results)
            )
        if kind is _TOOL_CALL:
            # OpenAI's shape: id, type and name first (empty arguments), then the arguments
            call = _tool_call(self.calls, entry.data or {})
            self.calls += 1
            arguments = call["function"].pop("arguments")
            call["function"]["arguments"] = ""
            rest = {"index": call["index"], "function": {"arguments": arguments}}
            return self.choice(json_bytes({"tool_calls": [call]}), None) + self.choice(
                json_bytes({"tool_calls": [rest]}), None
            )
        out = b""
        finish = openai_finish(gen.end_reason, gen.finish_reason)
        if finish is None:  # a cut: an error, never a finish
            out += encode_event_bytes(json_bytes(_failure(gen).body()))
        else:
            out += self.choice(b"{}", finish)
        if self.include_usage and gen.usage is not None:
            usage = json_bytes(openai_usage(gen.usage))
            out += encode_event_bytes(b'%s[],"usage":%s}' % (self.prefix, usage))
        return out + DONE_EVENT


def _failure(gen: Generation) -> HTTPError:
    """Why ``gen`` did not finish, as our API answers it: a new error each time (raising the
    kept one would make a cycle, see :meth:`HTTPError.copy`)."""
    if gen.failure is not None:
        return gen.failure.copy()
    return cut_error(gen.end_reason or "incomplete")


class _LazyOutlet(Outlet):
    """An outlet that sends the response headers just before its first write."""

    __slots__ = ("first", "started")

    def __init__(self, send: Send) -> None:
        super().__init__(send)
        self.first = send  # the headers go through the app's status tracking
        self.started = False

    async def write(self, message: Message) -> None:
        if not self.started:
            self.started = True
            await self._head()
        await super().write(message)

    def write_now(self, body: bytes) -> None:
        """:meth:`Outlet.write_now`; before the headers (a ping while the answer is silent:
        ``_connection._Guard``) they and ``body`` go out as a task the next write waits for."""
        if self.started:
            super().write_now(body)
            return
        self.started = True
        self._begin()
        self.pending = self.loop.create_task(self._after(self._head(body)))

    async def _head(self, body: bytes | None = None) -> None:
        await self.first({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
        if body is not None:
            await self.send({"type": "http.response.body", "body": body, "more_body": True})


async def _relay(sub: Subscription, outlet: _LazyOutlet, chunks: _Chunks) -> None:
    gen = sub.gen
    held = b""

    def push(batch: list[Entry]) -> bool:  # the direct hand-over (`Subscription`): text only
        if not outlet.idle:
            return False
        for entry in batch:
            if entry.kind is not _DELTA and entry.kind is not _REASONING:
                return False
        encode = chunks.encode
        outlet.write_now(b"".join([encode(entry, gen) for entry in batch]))
        return True

    while True:
        batch = await sub.next_batch()
        last = batch[-1]
        shown = outlet.started or any(e.kind is not _START and e.kind is not _END for e in batch)
        if last.kind is _END and not shown and openai_finish(gen.end_reason, None) is None:
            return  # nothing shown yet: the handler answers with an HTTP error status
        body = held + b"".join([chunks.encode(entry, gen) for entry in batch])
        if not outlet.started and last.kind is _START:
            held = body  # the role chunk waits for the content it introduces
            continue
        held = b""
        await outlet.write({"type": "http.response.body", "body": body, "more_body": True})
        if last.kind is _END:
            return
        sub.push = push  # the headers are out: text may go directly from now on


async def _consume(sub: Subscription) -> None:
    while (await sub.next_batch())[-1].kind is not _END:
        pass


class OpenAIRoutes:
    """The OpenAI-compatible routes (see the module docstring)."""

    def __init__(
        self,
        *,
        access: Access,
        answers: Answers,
        relay: Relay,
        upstream: Upstream,
        config: ServerConfig,
    ) -> None:
        self.access = access
        self.answers = answers
        self.relay = relay
        self.upstream = upstream
        self.max_body_bytes = config.max_body_bytes
        self.ping_interval = config.ping_interval
        self.stall_timeout = config.stall_timeout

    def routes(self) -> Routes:
        """This module's routes: path template → method → handler."""
        return {
            "/v1/chat/completions": {"POST": self.completions},
        }

    async def completions(self, ctx: Context, receive: Receive, send: Send) -> None:
        """``POST /v1/chat/completions``."""
        principal = await self.access.principal(ctx)
        body = await read_json(receive, ctx.request, self.max_body_bytes)
        name, upstream_model = self.upstream.resolve_model(required_str(body, "model"))
        request = parse_completion(body)
        self.upstream.check_rate()  # ERNIE is rate limited: 429 now, nothing is held
        gen = await self.answers.complete(
            principal,
            messages=request.messages,
            model=name,
            upstream_model=upstream_model,
            params=request.params,
            received_at=ctx.received_at,
            audit=ctx.audit_fields(),
        )
        ctx.audit_taken = True
        sub = self.relay.attach(gen)
        if request.stream:
            chunks = _Chunks(name, request.include_usage, gen.stream_id)
            await self._stream(sub, receive, send, chunks, ctx.disconnect)
        else:
            await self._whole(sub, receive, send, name, ctx.disconnect)

    async def _stream(
        self,
        sub: Subscription,
        receive: Receive,
        send: Send,
        chunks: _Chunks,
        disconnect: DisconnectSignal | None,
    ) -> None:
        outlet = _LazyOutlet(send)
        gone = True
        try:
            if await follow(
                _relay(sub, outlet, chunks),
                receive,
                disconnect,
                outlet,
                self.ping_interval,
                self.stall_timeout,
            ):
                gone = False
                if outlet.started:
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
                else:
                    raise _failure(sub.gen)
        finally:
            outlet.close()
            self.relay.detach(sub, gone=gone)

    async def _whole(
        self,
        sub: Subscription,
        receive: Receive,
        send: Send,
        model: str,
        disconnect: DisconnectSignal | None,
    ) -> None:
        gone = True
        try:
            gone = not await follow(_consume(sub), receive, disconnect)
        finally:
            self.relay.detach(sub, gone=gone)
        if gone:
            return
        gen = sub.gen
        finish = openai_finish(gen.end_reason, gen.finish_reason)
        if finish is None:
            raise _failure(gen)
        await send_json(send, 200, _completion(gen, model, finish))


def _completion(gen: Generation, model: str, finish: str) -> dict[str, Any]:
    """The ``chat.completion`` of a finished answer."""
    text = gen.text
    message: dict[str, Any] = {"role": "assistant", "content": text, "refusal": None}
    reasoning = gen.reasoning
    if reasoning:
        message["reasoning_content"] = reasoning
    if gen.tool_calls:
        message["tool_calls"] = [
            {k: v for k, v in _tool_call(i, call).items() if k != "index"}
            for i, call in enumerate(gen.tool_calls)
        ]
        message["content"] = text or None
    body: dict[str, Any] = {
        "id": completion_id(gen.stream_id),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": None,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
        "usage": openai_usage(gen.usage),
    }
    if gen.search_results is not None:
        body["search_results"] = gen.search_results
    return body
