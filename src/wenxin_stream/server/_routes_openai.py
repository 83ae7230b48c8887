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

import math
import secrets
import time
from typing import Any

from .._aio import race
from .._asgi import Message, Receive, Send, json_bytes, send_json, wait_for_disconnect
from .._exceptions import InvalidRequestError
from .._sse import DONE_EVENT, encode_event_bytes
from ._access import Access
from ._answers import Answers
from ._config import ServerConfig
from ._connection import PING, SSE_HEADERS, Outlet, watch
from ._errors import cut_error, openai_finish
from ._http import Context, HTTPError, Routes, read_json, required_str
from ._relay import Entry, EntryKind, Generation, Relay, Subscription, usage_dict
from ._upstream import Upstream

__all__ = ["OpenAIRoutes", "parse_messages", "parse_params"]

_DELTA, _END = EntryKind.DELTA, EntryKind.END
_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}


def _invalid(message: str, param: str = "messages") -> HTTPError:
    code = "invalid_messages" if param == "messages" else "invalid_field"
    return HTTPError(400, code, message, param=param)


def _text(content: object, index: int) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text":
                raise _invalid(f"message {index}: only text content is supported")
            if not isinstance(part.get("text"), str):
                raise _invalid(f"message {index}: a text part needs a string 'text'")
            parts.append(part["text"])
        return "".join(parts)
    raise _invalid(f"message {index}: 'content' must be a string or a list of text parts")


def parse_messages(value: object) -> list[dict[str, str]]:
    """The request's messages, checked: known roles, non-blank text, the last from the user."""
    if value is None:
        raise HTTPError(400, "missing_field", "'messages' is required", param="messages")
    if not isinstance(value, list) or not value:
        raise _invalid("'messages' must be a non-empty list")
    messages = []
    for index, message in enumerate(value):
        if not isinstance(message, dict):
            raise _invalid(f"message {index} must be an object")
        name = message.get("role")
        role = _ROLES.get(name) if isinstance(name, str) else None  # a list is no dict key
        if role is None:
            raise _invalid(f"message {index}: unsupported role {message.get('role')!r}")
        text = _text(message.get("content"), index)
        if not text.strip():
            raise _invalid(f"message {index}: empty content")
        messages.append({"role": role, "content": text})
    if messages[-1]["role"] != "user":
        raise _invalid("the last message must be from the user")
    return messages


def _number(body: dict[str, Any], name: str, low: float, high: float) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _invalid(f"'{name}' must be a number", name)
    if not low <= value <= high:
        raise _invalid(f"'{name}' must be in [{low:g}, {high:g}]", name)
    return float(value)


def parse_params(body: dict[str, Any], api: str) -> dict[str, Any]:
    """The honoured parameters, checked and named for the upstream API."""
    params: dict[str, Any] = {}
    for name, high in (("temperature", 2.0), ("top_p", 1.0)):
        value = _number(body, name, 0.0, high)
        if value is not None:
            params[name] = value
    max_tokens = body.get("max_tokens", body.get("max_completion_tokens"))
    if max_tokens is not None:
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise _invalid("'max_tokens' must be a positive integer", "max_tokens")
        params["max_tokens"] = max_tokens
    stop = body.get("stop")
    if stop is not None:
        if isinstance(stop, str):
            stop = [stop]
        if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
            raise _invalid("'stop' must be a string or a list of strings", "stop")
        params["stop"] = stop
    user = body.get("user")
    if user is not None:
        if not isinstance(user, str):
            raise _invalid("'user' must be a string", "user")
        params["user_id" if api == "v1" else "user"] = user
    return params


class _Chunks:
    """Encodes log entries as ``chat.completion.chunk`` SSE frames for one request."""

    def __init__(self, model: str, include_usage: bool) -> None:
        self.id = "chatcmpl-" + secrets.token_hex(12)
        self.created = int(time.time())
        self.prefix = b'{"id":"%s","object":"chat.completion.chunk","created":%d,' % (
            self.id.encode(),
            self.created,
        )
        self.prefix += b'"model":%s,"system_fingerprint":null,"choices":' % json_bytes(model)
        self.include_usage = include_usage

    def choice(self, delta: bytes, finish: str | None) -> bytes:
        reason = b"null" if finish is None else b'"%s"' % finish.encode()
        return encode_event_bytes(
            b'%s[{"index":0,"delta":%s,"logprobs":null,"finish_reason":%s}]}'
            % (self.prefix, delta, reason)
        )

    def encode(self, entry: Entry, gen: Generation) -> bytes:
        if entry.kind is _DELTA:
            # entry.json() is b'{"text":"…"}': the same JSON string, under another name
            return self.choice(b'{"content":' + entry.json()[8:], None)
        if entry.kind is not _END:
            return self.choice(b'{"role":"assistant","content":""}', None)
        out = b""
        finish = openai_finish(gen.end_reason, gen.finish_reason)
        if finish is None:  # a cut: an error, never a finish
            out += encode_event_bytes(json_bytes(_failure(gen).body()))
        else:
            out += self.choice(b"{}", finish)
        if self.include_usage and gen.usage is not None:
            usage = json_bytes(usage_dict(gen.usage))
            out += encode_event_bytes(b'%s[],"usage":%s}' % (self.prefix, usage))
        return out + DONE_EVENT


def _failure(gen: Generation) -> HTTPError:
    """Why ``gen`` did not finish, as our API answers it."""
    return gen.failure or cut_error(gen.end_reason or "incomplete")


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
            await self.first({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
        await super().write(message)


async def _relay(sub: Subscription, outlet: _LazyOutlet, chunks: _Chunks) -> None:
    gen = sub.gen
    held = b""
    while True:
        batch = await sub.next_batch()
        last = batch[-1]
        shown = outlet.started or any(entry.kind is _DELTA for entry in batch)
        if last.kind is _END and not shown and openai_finish(gen.end_reason, None) is None:
            return  # nothing shown yet: the handler answers with an HTTP error status
        body = held + b"".join([chunks.encode(entry, gen) for entry in batch])
        if not outlet.started and last.kind is not _DELTA and last.kind is not _END:
            held = body  # the role chunk waits for the content it introduces
            continue
        held = b""
        await outlet.write({"type": "http.response.body", "body": body, "more_body": True})
        if last.kind is _END:
            return


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
            "/v1/models": {"GET": self.models},
        }

    async def completions(self, ctx: Context, receive: Receive, send: Send) -> None:
        """``POST /v1/chat/completions``."""
        principal = await self.access.principal(ctx)
        body = await read_json(receive, ctx.request, self.max_body_bytes)
        name, upstream_model = self.upstream.resolve_model(required_str(body, "model"))
        messages = parse_messages(body.get("messages"))
        stream = body.get("stream", False)
        if stream is None:
            stream = False
        if not isinstance(stream, bool):
            raise _invalid("'stream' must be a boolean", "stream")
        options = body.get("stream_options") or {}
        if not isinstance(options, dict) or not isinstance(
            options.get("include_usage", False), bool
        ):
            raise _invalid(
                "'stream_options' must be an object with a boolean include_usage",
                "stream_options",
            )
        params = parse_params(body, self.upstream.api)
        self.upstream.check_rate()  # ERNIE is rate limited: 429 now, nothing is held
        try:
            gen = await self.answers.complete(
                principal,
                messages=messages,
                model=name,
                upstream_model=upstream_model,
                params=params,
                received_at=ctx.received_at,
                audit=ctx.audit_fields(),
            )
        except InvalidRequestError as exc:
            raise _invalid(str(exc), exc.field) from None
        ctx.audit_taken = True
        sub = self.relay.attach(gen)
        if stream:
            chunks = _Chunks(name, bool(options.get("include_usage")))
            await self._stream(sub, receive, send, chunks)
        else:
            await self._whole(sub, receive, send, name)

    async def _stream(
        self, sub: Subscription, receive: Receive, send: Send, chunks: _Chunks
    ) -> None:
        outlet = _LazyOutlet(send)
        gone = True
        try:
            winner = await race(
                _relay(sub, outlet, chunks),
                watch(receive, outlet, PING, self.ping_interval, self.stall_timeout),
            )
            if winner == 0:
                gone = False
                if outlet.started:
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
                else:
                    raise _failure(sub.gen)
        finally:
            self.relay.detach(sub, gone=gone)

    async def _whole(self, sub: Subscription, receive: Receive, send: Send, model: str) -> None:
        gone = True
        try:
            winner = await race(_consume(sub), wait_for_disconnect(receive))
            gone = winner != 0
        finally:
            self.relay.detach(sub, gone=gone)
        if gone:
            return
        gen = sub.gen
        finish = openai_finish(gen.end_reason, gen.finish_reason)
        if finish is None:
            raise _failure(gen)
        await send_json(
            send,
            200,
            {
                "id": "chatcmpl-" + secrets.token_hex(12),
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "system_fingerprint": None,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": gen.text, "refusal": None},
                        "logprobs": None,
                        "finish_reason": finish,
                    }
                ],
                "usage": usage_dict(gen.usage),
            },
        )

    async def models(self, ctx: Context, receive: Receive, send: Send) -> None:
        """``GET /v1/models``: the models this server knows."""
        await self.access.principal(ctx)
        data = [
            {"id": name, "object": "model", "created": 0, "owned_by": "baidu"}
            for name in self.upstream.model_names()
        ]
        await send_json(send, 200, {"object": "list", "data": data})
