"""Model routes: ``GET /v1/models``, ``GET /v1/models/{id}`` (OpenAI) and ``GET /api/models``.

Thin: the principal is checked as on every API route, and the bodies come from the one
catalogue as ``_catalogue`` shapes them (today's live models with their limits and
capabilities; a retired one answered as Baidu answers it; the page's picker list). With
channels, the lists hold what some channel serves.
"""

from __future__ import annotations

from .._asgi import Receive, Send, send_json
from ._access import Access
from ._catalogue import baidu_today, native_models, openai_model, openai_models, served_models
from ._http import Context, Routes
from ._upstream import Upstream

__all__ = ["ModelRoutes"]


class ModelRoutes:
    """The model routes (see the module docstring)."""

    def __init__(self, *, access: Access, upstream: Upstream) -> None:
        self.access = access
        self.upstream = upstream

    def routes(self) -> Routes:
        """This module's routes: path template → method → handler."""
        return {
            "/v1/models": {"GET": self.list_openai},
            "/v1/models/{id}": {"GET": self.get_openai},
            "/api/models": {"GET": self.list_native},
        }

    async def list_openai(self, ctx: Context, receive: Receive, send: Send) -> None:
        """``GET /v1/models``: the live models, with the catalogue's facts as extra fields
        (with channels: the names they serve)."""
        await self.access.principal(ctx)
        upstream = self.upstream
        if upstream.gateway:
            await send_json(send, 200, served_models(upstream.model_names()))
            return
        await send_json(send, 200, openai_models(upstream.api, baidu_today()))

    async def get_openai(self, ctx: Context, receive: Receive, send: Send) -> None:
        """``GET /v1/models/{id}``: one model or alias; 403 ``model_offline`` when retired,
        404 ``model_not_found`` when unknown."""
        await self.access.principal(ctx)
        await send_json(send, 200, openai_model(ctx.params["id"], baidu_today()))

    async def list_native(self, ctx: Context, receive: Receive, send: Send) -> None:
        """``GET /api/models``: every catalogue model for the page's picker."""
        await self.access.principal(ctx)
        upstream = self.upstream
        body = native_models(upstream.api, upstream.default_model, baidu_today())
        if upstream.gateway:  # the picker offers what some channel serves
            body["models"] = [m for m in body["models"] if upstream.channels.serves(m["id"])]
        await send_json(send, 200, body)
