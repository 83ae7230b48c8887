"""The admin view: ``GET /api/admin/channels``, the health of every upstream channel.

Theory of operation
===================

The server has no admin users; the operator is whoever holds the *admin key*
(``admin_key`` in the config file or ``WENXIN_ADMIN_KEY``; never a flag, which ``ps`` would
show), sent as ``Authorization: Bearer <admin key>`` and compared in constant time. An API key
is never an admin key. Without a configured admin key the view answers only in dev mode (no
API keys, loopback): the same people who may use everything else; otherwise it is 403
``admin_disabled``, saying how to enable it.

The body lists each channel (``_channels.Channel.health``: kind, URL without password,
models, weight, priority, breaker state, consecutive failures, cooldown left, rate-limit
wait, streams in flight, requests by outcome, failovers, average time to first token, the last
failure's code) — never a credential — and which channels and routes are down.
"""

from __future__ import annotations

import hmac

from .._asgi import Receive, Send, send_json
from ._access import Access
from ._http import Context, HTTPError, Routes
from ._upstream import Upstream

__all__ = ["AdminRoutes"]


class AdminRoutes:
    """The admin routes (see the module docstring)."""

    def __init__(self, *, access: Access, upstream: Upstream, admin_key: str | None) -> None:
        self.access = access
        self.upstream = upstream
        self._key = None if admin_key is None else admin_key.encode()

    def routes(self) -> Routes:
        """This module's routes: path template → method → handler."""
        return {"/api/admin/channels": {"GET": self.channels}}

    async def authorize(self, ctx: Context) -> None:
        """Let the operator through.

        Raises:
            HTTPError: 401 ``invalid_admin_key`` (wrong or missing key), 403
                ``admin_disabled`` (no admin key configured and not in dev mode).
        """
        if self._key is None:
            if await self.access.dev_mode():
                return
            raise HTTPError(
                403,
                "admin_disabled",
                "the admin view needs an admin key: set admin_key in the config file or "
                "WENXIN_ADMIN_KEY",
            )
        scheme, _, given = (ctx.request.headers.get("authorization") or "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), self._key):
            raise HTTPError(401, "invalid_admin_key", "a valid admin key is required")

    async def channels(self, ctx: Context, receive: Receive, send: Send) -> None:
        """``GET /api/admin/channels``: every channel's health."""
        await self.authorize(ctx)
        channels = self.upstream.channels
        await send_json(
            send,
            200,
            {
                "gateway": self.upstream.gateway,
                "channels": channels.health(),
                "channels_down": channels.down(),
                "routes_down": channels.routes_down(),
            },
        )
