"""Conversation routes: ``/api/conversations`` and ``/api/conversations/{id}`` (CRUD).

Theory of operation
===================

Thin: check the body (a rename's title is whitespace-collapsed, non-blank, at most
:data:`TITLE_MAX_CHARS` characters), call the store with the principal's ``owner``, shape the
JSON of ``docs/SERVER-API.md``. Another owner's conversation is simply not found (404), never
forbidden. Asking inside a conversation is the answer use case (``_answers``), reached through
the event-stream routes and the WebSocket.
"""

from __future__ import annotations

from typing import Any

from .._asgi import Receive, Send, send_json
from ._access import Access
from ._http import (
    Context,
    HTTPError,
    Routes,
    not_found,
    optional_str,
    parse_count,
    read_json,
    required_str,
)
from ._store import ConversationRecord, MessageRecord, Store
from ._upstream import Upstream

__all__ = ["TITLE_MAX_CHARS", "ConversationRoutes", "conversation_json", "message_json"]

TITLE_MAX_CHARS = 200
"""The longest title a conversation may be given (whitespace collapsed first)."""


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
        **_extras(m.extras),
    }


def _extras(extras: dict[str, Any] | None) -> dict[str, Any]:
    """An answer's reasoning, search results, tool calls and, for an answer another instance
    took over, who continued it (``continued``; each ``null`` when none)."""
    extras = extras or {}
    names = ("reasoning", "search_results", "tool_calls", "continued")
    return {name: extras.get(name) for name in names}


def _not_found(cid: str) -> HTTPError:
    return not_found(f"no conversation {cid!r}")


class ConversationRoutes:
    """The conversation CRUD routes, over the store (see the module docstring)."""

    def __init__(
        self, *, store: Store, access: Access, upstream: Upstream, max_body_bytes: int
    ) -> None:
        self.store = store
        self.access = access
        self.upstream = upstream
        self.max_body_bytes = max_body_bytes

    def routes(self) -> Routes:
        """This module's routes: path template → method → handler."""
        return {
            "/api/conversations": {"GET": self.list_conversations, "POST": self.create},
            "/api/conversations/{id}": {
                "GET": self.get,
                "PATCH": self.rename,
                "DELETE": self.delete,
            },
        }

    async def list_conversations(self, ctx: Context, receive: Receive, send: Send) -> None:
        """``GET /api/conversations``: the owner's conversations, newest first."""
        principal = await self.access.principal(ctx)
        text = ctx.request.query_value("limit")
        limit = 100 if text is None else parse_count(text, "limit", 1, 1000)
        convs = await self.store.list_conversations(principal.owner, limit=limit)
        await send_json(send, 200, {"conversations": [conversation_json(c) for c in convs]})

    async def create(self, ctx: Context, receive: Receive, send: Send) -> None:
        """``POST /api/conversations``: a new, empty conversation (every field is optional,
        so the body may be empty)."""
        principal = await self.access.principal(ctx)
        body = await read_json(receive, ctx.request, self.max_body_bytes, empty_ok=True)
        title = optional_str(body, "title")
        system = optional_str(body, "system")
        requested = optional_str(body, "model")
        upstream = self.upstream
        model = upstream.resolve_model(requested)[0] if requested else upstream.default_model
        conv = await self.store.create_conversation(
            principal.owner, title=title, model=model, system=system or None
        )
        if ctx.audit is not None:
            ctx.audit.update(conversation_id=conv.id, model=model)
        await send_json(send, 201, conversation_json(conv, []))

    async def get(self, ctx: Context, receive: Receive, send: Send) -> None:
        """``GET /api/conversations/{id}``: the conversation with its messages."""
        principal = await self.access.principal(ctx)
        cid = ctx.params["id"]
        conv = await self.store.get_conversation(principal.owner, cid)
        if conv is None:
            raise _not_found(cid)
        messages = await self.store.get_messages(principal.owner, cid)
        await send_json(send, 200, conversation_json(conv, messages))

    async def rename(self, ctx: Context, receive: Receive, send: Send) -> None:
        """``PATCH /api/conversations/{id}`` with ``{"title": …}``: the renamed conversation
        (without its messages), or 404."""
        principal = await self.access.principal(ctx)
        body = await read_json(receive, ctx.request, self.max_body_bytes)
        title = " ".join(required_str(body, "title").split())
        if len(title) > TITLE_MAX_CHARS:
            raise HTTPError(
                400, "invalid_field", f"'title' is longer than {TITLE_MAX_CHARS} characters",
                param="title",
            )  # fmt: skip
        cid = ctx.params["id"]
        if not await self.store.set_title(principal.owner, cid, title):
            raise _not_found(cid)
        conv = await self.store.get_conversation(principal.owner, cid)
        if conv is None:  # deleted between the two calls
            raise _not_found(cid)
        await send_json(send, 200, conversation_json(conv))

    async def delete(self, ctx: Context, receive: Receive, send: Send) -> None:
        """``DELETE /api/conversations/{id}``: 204, or 404."""
        principal = await self.access.principal(ctx)
        if not await self.store.delete_conversation(principal.owner, ctx.params["id"]):
            raise _not_found(ctx.params["id"])
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})
