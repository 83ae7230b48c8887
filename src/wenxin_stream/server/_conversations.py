"""Conversations: the CRUD routes, and starting an answer inside a conversation.

Theory of operation
===================

The routes (``/api/conversations`` and ``/api/conversations/{id}``) are thin: check the body,
call the store with the principal's ``owner``, shape the JSON of ``docs/SERVER-API.md``. Another
owner's conversation is simply not found (404), never forbidden.

:func:`start_answer` is what both the SSE route and the WebSocket call to ask a question:

1. check the model (404 ``model_not_found``) and load the conversation and its messages;
2. rebuild the history the model sees with the SDK's
   :class:`~wenxin_stream._conversation.ConversationCore` (complete answers as they are,
   interrupted ones marked as interrupted, unanswered questions dropped, so the request is
   always valid for v1's alternation rules), then the question;
3. admit it under the key's limits (429 + ``Retry-After``);
4. start the generation — the upstream request leaves now — and, meanwhile, store the
   question (complete) and the answer (``streaming``, empty);
5. ``begin`` the stream with the ids. When the generation ends, :func:`_persist` writes the
   answer once, with its status, end reason, usage, timings and character counts, settles the
   limiter and writes the audit record. Nothing is written per chunk.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from .._asgi import Receive, Send, send_json
from .._conversation import ConversationCore
from .._events import ChatResult, EndReason
from .._exceptions import InvalidRequestError
from .._ratelimit import estimate_tokens
from ._auth import Context, HTTPError, Principal, optional_str, read_json
from ._limits import Admission, Rejection
from ._relay import FINISHED_REASONS, Generation, usage_dict
from ._store import ConversationRecord, MessageRecord

if TYPE_CHECKING:
    from ._app import Server

__all__ = ["conversation_json", "message_json", "routes", "start_answer"]

_END_REASONS = {reason.value: reason for reason in EndReason}


def conversation_json(
    conv: ConversationRecord, messages: list[MessageRecord] | None = None
) -> dict[str, Any]:
    """A conversation as the API shows it (with its messages when given)."""
    body: dict[str, Any] = {
        "id": conv.id,
        "title": conv.title,
        "model": conv.model,
        "system": conv.system,
        "created_at": conv.created_at,
        "updated_at": conv.updated_at,
    }
    if messages is None:
        body["message_count"] = conv.message_count
    else:
        body["messages"] = [message_json(m) for m in messages]
    return body


def message_json(m: MessageRecord) -> dict[str, Any]:
    """A message as the API shows it."""
    return {
        "id": m.id,
        "role": m.role,
        "content": m.content,
        "status": m.status,
        "end_reason": m.end_reason,
        "model": m.model,
        "usage": m.usage,
        "ttft_ms": m.ttft_ms,
        "total_ms": m.total_ms,
        "generated_chars": m.generated_chars,
        "delivered_chars": m.delivered_chars,
        "created_at": m.created_at,
    }


# -- routes ----------------------------------------------------------------------------------


async def list_conversations(server: Server, ctx: Context, receive: Receive, send: Send) -> None:
    """``GET /api/conversations``: the owner's conversations, newest first."""
    principal = await server.principal(ctx)
    text = ctx.request.query_value("limit") or "100"
    if not text.isdigit() or not 1 <= int(text) <= 1000:
        raise HTTPError(400, "invalid_field", "limit must be 1..1000", param="limit")
    convs = await server.store.list_conversations(principal.owner, limit=int(text))
    await send_json(send, 200, {"conversations": [conversation_json(c) for c in convs]})


async def create_conversation(server: Server, ctx: Context, receive: Receive, send: Send) -> None:
    """``POST /api/conversations``: a new, empty conversation."""
    principal = await server.principal(ctx)
    body = await read_json(receive, ctx.request, server.config.max_body_bytes)
    title = optional_str(body, "title")
    system = optional_str(body, "system")
    requested = optional_str(body, "model")
    model = server.resolve_model(requested)[0] if requested else server.default_model
    conv = await server.store.create_conversation(
        principal.owner, title=title, model=model, system=system or None
    )
    if ctx.audit is not None:
        ctx.audit.update(conversation_id=conv.id, model=model)
    await send_json(send, 201, conversation_json(conv, []))


async def get_conversation(server: Server, ctx: Context, receive: Receive, send: Send) -> None:
    """``GET /api/conversations/{id}``: the conversation with its messages."""
    principal = await server.principal(ctx)
    cid = ctx.params["id"]
    conv = await server.store.get_conversation(principal.owner, cid)
    if conv is None:
        raise not_found(cid)
    messages = await server.store.get_messages(principal.owner, cid)
    await send_json(send, 200, conversation_json(conv, messages))


async def delete_conversation(server: Server, ctx: Context, receive: Receive, send: Send) -> None:
    """``DELETE /api/conversations/{id}``: 204, or 404."""
    principal = await server.principal(ctx)
    if not await server.store.delete_conversation(principal.owner, ctx.params["id"]):
        raise not_found(ctx.params["id"])
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})


def not_found(cid: str) -> HTTPError:
    """404 for a conversation that does not exist or is another owner's."""
    return HTTPError(404, "not_found", f"no conversation {cid!r}")


def routes() -> dict[str, dict[str, Any]]:
    """This module's routes: path template → method → handler."""
    return {
        "/api/conversations": {"GET": list_conversations, "POST": create_conversation},
        "/api/conversations/{id}": {"GET": get_conversation, "DELETE": delete_conversation},
    }


# -- asking ----------------------------------------------------------------------------------


def history_request(
    system: str | None, records: list[MessageRecord], question: str, api: str, turns: int
) -> tuple[list[dict[str, str]], dict[str, str]]:
    """The messages and parameters that ask ``question`` after the stored ``records``."""
    core = ConversationCore(system=system, max_turns=turns)
    pending: str | None = None
    for m in records:
        if m.role == "user":
            pending = m.content
        elif m.role == "assistant" and pending is not None:
            if m.status != "streaming":  # an answer still running elsewhere is not history
                reason = _END_REASONS.get(m.end_reason or "", EndReason.CANCELLED)
                core.record(pending, reason, ChatResult(content=m.content))
            pending = None
    return core.request(question, "v1" if api == "v1" else "v2")


async def start_answer(
    server: Server,
    principal: Principal,
    *,
    conversation_id: str | None,
    content: str,
    model: str | None,
    received_at: float,
    audit: dict[str, Any],
) -> Generation:
    """Start answering ``content`` in a conversation (a new one when ``conversation_id`` is
    None); the generation has begun (its ``start`` event is in the log) on return.

    Raises:
        HTTPError: 404 (conversation, model), 400 (invalid request), 429 (limits),
            503 (shutting down).
    """
    if not server.relay.accepting:
        raise HTTPError(503, "shutting_down", "the server is shutting down")
    store, owner = server.store, principal.owner
    conv: ConversationRecord | None = None
    history: list[MessageRecord] = []
    if conversation_id is not None:  # both reads in one trip to the store's thread
        conv, history = await asyncio.gather(
            store.get_conversation(owner, conversation_id),
            store.get_messages(owner, conversation_id),
        )
        if conv is None:
            raise not_found(conversation_id)
    name, upstream_model = server.resolve_model(model or (conv.model if conv else None))
    system = conv.system if conv is not None else None
    messages, params = history_request(
        system, history, content, server.client.api, server.config.history_turns
    )
    admission = server.admit(principal, estimate_tokens(messages))
    try:
        extra: dict[str, Any] = dict(params)
        upstream = server.client.chat.stream(messages=messages, model=upstream_model, **extra)
    except InvalidRequestError as exc:
        server.limiter.release(admission)
        raise HTTPError(400, "invalid_messages", str(exc), param=exc.field) from None
    if conv is None:
        try:
            conv = await store.create_conversation(owner, title=None, model=name, system=None)
        except BaseException:
            server.limiter.release(admission)
            raise
    audit.update(conversation_id=conv.id, model=name)
    assistant: list[MessageRecord] = []

    async def on_end(gen: Generation) -> None:
        await _persist(server, gen, admission, assistant[0], audit)

    gen = server.relay.start(
        upstream, owner=owner, model=name, received_at=received_at, on_end=on_end
    )
    try:  # the question and the empty answer: one operation, so one transaction
        _, answer = await store.add_exchange(owner, conv.id, question=content, model=name)
    except BaseException:
        gen.abort()
        server.limiter.release(admission)
        raise
    assistant.append(answer)
    audit["stream_id"] = gen.stream_id
    start = {
        "stream_id": gen.stream_id,
        "conversation_id": conv.id,
        "message_id": assistant[0].id,
        "model": name,
    }
    gen.begin(start, {"message_id": assistant[0].id})
    return gen


async def _persist(
    server: Server,
    gen: Generation,
    admission: Admission,
    message: MessageRecord,
    audit: dict[str, Any],
) -> None:
    """Record how an answer ended: the message (once), the limiter, the audit log."""
    if gen.usage is not None:
        server.limiter.settle(admission, gen.usage.total_tokens)
    server.limiter.release(admission)
    reason = gen.end_reason or "incomplete"
    usage = usage_dict(gen.usage)
    try:
        await server.store.update_message(
            message.id,
            content=gen.text,
            status="complete" if reason in FINISHED_REASONS else "partial",
            end_reason=reason,
            usage=usage,
            ttft_ms=gen.ttft_ms,
            total_ms=gen.total_ms,
            generated_chars=gen.generated_chars,
            delivered_chars=gen.delivered_chars,
        )
    finally:
        server.write_audit(
            audit,
            status=200,
            end_reason=reason,
            usage=usage,
            ttft_ms=gen.ttft_ms,
            total_ms=gen.total_ms,
        )


def rejection_error(rejection: Rejection) -> HTTPError:
    """429 for a refused admission, with ``Retry-After``."""
    return HTTPError(
        429,
        rejection.code,
        rejection.message,
        headers=[(b"retry-after", rejection.retry_after_header.encode())],
    )
