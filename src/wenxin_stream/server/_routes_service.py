"""Service routes: health, readiness, metrics, the OpenAPI document and the server's info.

Theory of operation
===================

What operators and clients ask about the server itself, never audited: ``/healthz`` answers
while the process runs; ``/readyz`` says whether it takes work — 200 while the
:class:`ServerState` is ``ready``, 503 ``starting`` / ``shutting_down`` otherwise (so a load
balancer stops sending asks the moment a drain begins) — and 503 ``degraded`` while a
dependency every ask needs does not answer, naming each in ``missing``: ``redis`` (a fleet's
shared state, a ``PING``) and ``database`` (the store, a ``SELECT 1``), both asked at once —
and, with channels, 503 ``no_channel_available`` while some route (a public model name) has no
channel that can take a request (every one cooling down after failures), naming the routes and
channels that are down (a 200 names the channels down, too); ``/metrics`` is the Prometheus
text; ``/openapi.json`` the contract; ``/api/info`` what the chat page needs to know
(upstream, models, whether a key is required).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from enum import Enum

from .._asgi import Receive, Send, send_json
from .._version import __version__
from ._access import Access
from ._http import Context, HTTPError, Routes
from ._metrics import CONTENT_TYPE, Metrics
from ._openapi import document
from ._redis import SharedRedis, SharedStateError
from ._schema import StoreUnavailableError
from ._store import Store
from ._upstream import Upstream

__all__ = ["ServerState", "ServiceRoutes"]


class ServerState(Enum):
    """Where the server is in its life: ``starting`` until the lifespan start-up has opened
    everything, ``ready``, ``stopping`` from the first moment of the drain, ``stopped``."""

    STARTING = "starting"
    READY = "ready"
    STOPPING = "stopping"
    STOPPED = "stopped"


class ServiceRoutes:
    """The service routes (see the module docstring); ``state`` reads the server's state."""

    def __init__(
        self,
        *,
        state: Callable[[], ServerState],
        metrics: Metrics,
        upstream: Upstream,
        access: Access,
        store: Store,
        redis: SharedRedis | None = None,
    ) -> None:
        self.state = state
        self.store = store
        self.redis = redis
        self.metrics = metrics
        self.upstream = upstream
        self.access = access

    def routes(self) -> Routes:
        """This module's routes: path template → method → handler."""
        return {
            "/healthz": {"GET": self.health},
            "/readyz": {"GET": self.ready},
            "/metrics": {"GET": self.render_metrics},
            "/openapi.json": {"GET": self.openapi},
            "/api/info": {"GET": self.info},
        }

    async def health(self, ctx: Context, receive: Receive, send: Send) -> None:
        """``GET /healthz``: the process is up."""
        await send_json(send, 200, {"status": "ok"})

    async def ready(self, ctx: Context, receive: Receive, send: Send) -> None:
        """``GET /readyz``: 200 while the server takes work, else 503."""
        state = self.state()
        if state is ServerState.READY:
            missing = await self._missing()
            if missing:
                names = [name for name, _ in missing]
                code = "shared_state_unavailable" if "redis" in names else "database_unavailable"
                body = {
                    "status": "degraded",
                    "missing": names,
                    **HTTPError(503, code, "; ".join(error for _, error in missing)).body(),
                }
                await send_json(send, 503, body, [(b"retry-after", b"1")])
                return
        if state is ServerState.READY and self.upstream.gateway:
            channels = self.upstream.channels
            down, routes_down = channels.down(), channels.routes_down()
            if routes_down:
                error = HTTPError(
                    503,
                    "no_channel_available",
                    f"no channel can serve {', '.join(routes_down)} now",
                    retry_after=min(
                        (c.breaker.cooldown_left() for c in channels.channels if c.name in down),
                        default=1.0,
                    ),
                )
                body = {"status": "degraded", **error.body()}
                body.update(channels_down=down, routes_down=routes_down)
                await send_json(send, 503, body, error.headers)
                return
            body = {"status": "ready", "upstream": self.upstream.kind, "channels_down": down}
            await send_json(send, 200, body)
            return
        if state is ServerState.READY:
            await send_json(send, 200, {"status": "ready", "upstream": self.upstream.kind})
            return
        code = "starting" if state is ServerState.STARTING else "shutting_down"
        body = HTTPError(503, code, f"the server is {state.value}").body()
        await send_json(send, 503, {"status": state.value, **body})

    async def _missing(self) -> list[tuple[str, str]]:
        """The dependencies that do not answer now, each with what it said."""

        async def redis() -> str | None:
            if self.redis is None:
                return None
            try:
                await self.redis.call(self.redis.client.ping(), "PING")
            except SharedStateError as exc:
                return str(exc)
            return None

        async def database() -> str | None:
            try:
                await self.store.ping()
            except StoreUnavailableError as exc:
                return str(exc)
            return None

        said = await asyncio.gather(redis(), database())
        named = zip(("redis", "database"), said, strict=True)
        return [(name, error) for name, error in named if error]

    async def render_metrics(self, ctx: Context, receive: Receive, send: Send) -> None:
        """``GET /metrics``: the Prometheus text format."""
        body = self.metrics.render()
        headers = [(b"content-type", CONTENT_TYPE.encode()), (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def openapi(self, ctx: Context, receive: Receive, send: Send) -> None:
        """``GET /openapi.json``: the OpenAPI document."""
        await send_json(send, 200, document(__version__))

    async def info(self, ctx: Context, receive: Receive, send: Send) -> None:
        """``GET /api/info``: version, upstream, models, whether a key is required."""
        upstream = self.upstream
        await send_json(
            send,
            200,
            {
                "version": __version__,
                "upstream": upstream.kind,
                "api": upstream.api,
                "default_model": upstream.default_model,
                "models": upstream.model_names(),
                "auth_required": not await self.access.dev_mode(),
            },
        )
