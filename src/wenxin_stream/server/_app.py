"""The Q&A server as one plain ASGI 3 application: lifespan, routing, and the safety net.

Theory of operation
===================

:class:`Server` composes; it answers nothing itself. Built from a
:class:`~._config.ServerConfig`, it holds what lives as long as the process (metrics, the
per-key limiter, the relay, the page's files). Its lifespan start-up opens the store (and
marks answers left ``streaming`` by a crash as ``server_crashed``, keeping their last
checkpoint; this assumes the database is this server's alone — see
``Store.mark_streaming_as``), the key cache, the audit log and the upstream (ONE client with one
connection pool for every stream, or with ``[[channels]]`` one client and pool per channel:
``_channels``), refuses to start in dev mode on a public address, then
builds the route objects — each given exactly the collaborators it uses — and the routing
table from them, and starts the checkpoint tick (``_checkpoints``):

=============================  ===========================================================
``_routes_service``            ``/healthz``, ``/readyz``, ``/metrics``, ``/openapi.json``,
                               ``/api/info``
``_static``                    ``/``, ``/static/{name}``
``_routes_conversations``      ``/api/conversations``, ``/api/conversations/{id}``
``_routes_streams``            ``/api/conversations/{id}/messages``, ``/api/streams/…``
``_routes_openai``             ``/v1/chat/completions``, ``/v1/models``
``_ws``                        ``/api/ws`` (WebSocket)
``_routes_admin``              ``/api/admin/channels``
=============================  ===========================================================

Nothing below this module imports it. The server's life is a :class:`ServerState`: until the
start-up is complete every HTTP request is answered 503 ``starting`` (with uvicorn's lifespan
``on`` none arrives); shutdown refuses new asks (503 ``shutting_down``) once the requests a
proxy may still bring over connections the server holds have come (:meth:`Server.drain`'s
``admitting``: ``server/__init__``), gives running answers ``shutdown_grace`` seconds, stops
the rest with ``server_shutdown`` (each is stored with its full text and gets its ``end``
event), stops the checkpoint tick, then closes everything.
:func:`run_server` (the CLI) starts this drain *before* uvicorn closes the connections, so
clients see their streams end properly.

Routing is a table of path templates (``/api/conversations/{id}``) → method → handler; each
request is decoded once into a :class:`~._http.Context`. Every request runs inside a safety
net: an :class:`~._http.HTTPError` becomes an OpenAI-shaped JSON error; anything unexpected is
logged as one line (a traceback only with ``debug``) and answered 500 ``internal_error`` —
never a traceback to the client — or, if the response had started, the connection is closed.
Each answer is counted (``wenxin_http_requests_total`` by route template and status) and
audited (API routes; a generation writes its own record when it ends, since only then does it
know how it ended).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from time import perf_counter

from .._asgi import (
    ClientDisconnected,
    Receive,
    Request,
    Scope,
    Send,
    TrackingSend,
    disconnect_signal,
    send_json,
)
from .._async_client import AsyncClient
from .._models import PriceTier
from ._access import Access, dev_mode_problem, is_loopback
from ._answer_leases import AnswerLeases
from ._answers import Answers
from ._audit import AuditLog
from ._budgets import Budgeter, BudgetLimiter, SharedBudgets
from ._channel_config import ChannelConfigError, GatewaySpec
from ._channels import Channels
from ._checkpoints import Checkpoints
from ._config import ServerConfig
from ._eventlog import EventLog, default_instance_id
from ._http import Context, Handler, HTTPError, Routes
from ._keys import KeyCache
from ._leases import Leases
from ._limits import KeyLimiter, KeyLimits, Limits
from ._limits_redis import SharedLimits
from ._metrics import Metrics
from ._pacing import StartPacer
from ._redis import SharedRedis, SharedStateError
from ._redis_metrics import RedisMetrics
from ._relay import Relay
from ._revocations import Revocations
from ._routes_admin import AdminRoutes
from ._routes_conversations import ConversationRoutes
from ._routes_models import ModelRoutes
from ._routes_openai import OpenAIRoutes
from ._routes_service import ServerState, ServiceRoutes
from ._routes_streams import StreamRoutes
from ._routes_usage import UsageRoutes
from ._static import StaticFiles
from ._store import Store, StoreUnavailableError, open_store
from ._sweeper import Sweeper
from ._takeover import Claimed, Takeovers
from ._upstream import Upstream
from ._usage import Pricing
from ._usage_writer import UsageWriter
from ._ws import Sockets

__all__ = ["Server", "ServerState", "StartupError", "create_app"]

logger = logging.getLogger("wenxin_stream.server")

_SERVING = (ServerState.READY, ServerState.STOPPING)
"""The states in which a WebSocket is served (see :meth:`Server.__call__`)."""
_UNAUDITED = ("/healthz", "/readyz", "/metrics", "/openapi.json", "/", "/static/{name}")

_Table = dict[int, list[tuple[tuple[str, ...], str, dict[str, Handler]]]]


class StartupError(Exception):
    """The server cannot start (dev mode on a public address, an unusable database…)."""


def _table(routes: Routes) -> _Table:
    """Routes grouped by their number of path segments, for :meth:`Server._match`."""
    table: _Table = {}
    for template, methods in routes.items():
        parts = tuple(template.strip("/").split("/")) if template != "/" else ()
        table.setdefault(len(parts), []).append((parts, template, methods))
    return table


class Server:
    """The ASGI application of ``wenxin serve`` (build it with :func:`create_app`)."""

    def __init__(
        self,
        config: ServerConfig,
        *,
        client: AsyncClient | None = None,
        on_ready: Callable[[Server], None] | None = None,
    ) -> None:
        self.config = config
        self.state = ServerState.STARTING
        self.static = StaticFiles()
        self.metrics = Metrics(multiprocess_dir=config.metrics_dir)
        defaults = KeyLimits(
            rpm=config.default_rpm or None,
            tpm=config.default_tpm or None,
            max_streams=config.default_max_streams or None,
        )
        self.instance_id = config.instance_id or default_instance_id()
        self.redis: SharedRedis | None = None
        self.leases: Leases | None = None
        self.revocations: Revocations | None = None
        self.limiter: Limits = KeyLimiter(defaults)
        if config.redis_url is not None:  # the fleet's state: opened by the start-up
            self.redis = SharedRedis(
                config.redis_url,
                max_connections=config.redis_max_connections,
                timeout=config.redis_timeout,
            )
            self.redis_metrics = RedisMetrics(self.metrics)
            self.redis.observe = self.redis_metrics.call
            self.leases = Leases(self.redis, instance_id=self.instance_id, ttl=config.lease_ttl)
            self.limiter = SharedLimits(defaults, self.leases)
        self.relay = Relay(
            self.metrics,
            on_disconnect=config.on_disconnect,
            resume_grace=config.resume_grace,
            max_answer_chars=config.max_answer_chars,
            debug=config.debug,
        )
        self._client = client
        self._on_ready = on_ready
        self._stopping: asyncio.Task[None] | None = None
        self._routes: _Table = {}
        self._exact: dict[str, tuple[str, dict[str, Handler]]] = {}
        """The routes without parameters by their path (``strip("/")``, as matched)."""
        # opened by the lifespan start-up:
        self.store: Store
        self.keys: KeyCache
        self.access: Access
        self.audit: AuditLog
        self.upstream: Upstream
        self.checkpoints: Checkpoints
        self.usage: UsageWriter
        self.answers: Answers
        self.sockets: Sockets
        self.eventlog: EventLog | None = None
        self.sweeper: Sweeper | None = None
        self.takeovers: Takeovers | None = None

    @property
    def client(self) -> AsyncClient:
        """The upstream client (once started)."""
        return self.upstream.client

    # -- ASGI ---------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI connection scope."""
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "websocket":
            # while draining too: an upgrade a proxy brought over a kept-alive connection is
            # accepted, then closed with 1012 (_ws: connect again, to another instance)
            if scope.get("path") != "/api/ws" or self.state not in _SERVING:
                await send({"type": "websocket.close", "code": 1008})
                return
            try:
                await self.sockets.serve(scope, receive, send)
            except asyncio.CancelledError:
                return
            except Exception as exc:
                self._internal(scope.get("path", ""), exc)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    def _match(self, path: str) -> tuple[str | None, dict[str, Handler], dict[str, str]]:
        exact = self._exact.get(path.strip("/"))
        if exact is not None:
            return exact[0], exact[1], {}
        parts = tuple(path.strip("/").split("/")) if path != "/" else ()
        for pattern, template, methods in self._routes.get(len(parts), ()):
            params: dict[str, str] = {}
            for want, got in zip(pattern, parts, strict=True):
                if want.startswith("{"):
                    if not got:
                        break
                    params[want[1:-1]] = got
                elif want != got:
                    break
            else:
                return template, methods, params
        return None, {}, {}

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        received = perf_counter()
        request = Request.from_scope(scope)
        template, methods, params = self._match(request.path)
        client = scope.get("client")
        ctx = Context(
            request,
            template or "unmatched",
            received,
            f"{client[0]}:{client[1]}" if client else "",
            params,
            disconnect=disconnect_signal(scope),
        )
        tracked = TrackingSend(send)
        if template is not None and template not in _UNAUDITED:
            ctx.audit = {"route": template, "key_id": None, "client": ctx.client}
        try:
            method = "GET" if request.method == "HEAD" else request.method
            handler = methods.get(method)
            if template is None:
                if self.state is ServerState.STARTING:  # no routes until the start-up is done
                    raise HTTPError(503, "starting", "the server is starting")
                raise HTTPError(404, "not_found", f"no such route: {request.path}")
            if handler is None:
                allow = ", ".join(methods).encode()
                raise HTTPError(
                    405,
                    "method_not_allowed",
                    f"{request.method} is not allowed on {template}",
                    headers=[(b"allow", allow)],
                )
            await handler(ctx, receive, tracked)
        except HTTPError as error:
            if not tracked.started:
                headers = list(error.headers)
                if error.status == 401:
                    headers.append((b"www-authenticate", b"Bearer"))
                await send_json(tracked, error.status, error.body(), headers)
        except StoreUnavailableError as exc:  # the database is busy or away: retry later
            logger.warning("answering %s 503: %s", request.path, exc)
            if not tracked.started:
                unavailable = HTTPError(
                    503, "database_unavailable", "the database is busy; retry shortly",
                    retry_after=exc.retry_after,
                )  # fmt: skip
                await send_json(tracked, 503, unavailable.body(), unavailable.headers)
        except ClientDisconnected:
            pass
        except asyncio.CancelledError:
            return  # the server is stopping
        except Exception as exc:
            self._internal(request.path, exc)
            if not tracked.started:
                body = HTTPError(500, "internal_error", "internal server error").body()
                await send_json(tracked, 500, body)
        finally:
            self._account(ctx, tracked.status)

    def _account(self, ctx: Context, status: int) -> None:
        status = status or 499  # the client left before an answer
        self.metrics.http_request(ctx.route, status)
        if 400 <= status < 500 and status != 499:
            self.metrics.error("client")
        if ctx.audit is not None and not ctx.audit_taken:
            self.audit.request(ctx.audit, status=status)

    def _internal(self, path: str, exc: BaseException) -> None:
        self.metrics.error("internal")
        logger.error(
            "internal error answering %s: %s: %s",
            path,
            type(exc).__name__,
            exc,
            exc_info=exc if self.config.debug else None,
        )

    # -- lifespan -------------------------------------------------------------------------------

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    text = (
                        str(exc)
                        if isinstance(exc, StartupError)
                        else f"{type(exc).__name__}: {exc}"
                    )
                    await send({"type": "lifespan.startup.failed", "message": text})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def startup(self) -> None:
        """Open the store, keys, audit log and upstream client, and build the routes (see the
        module docstring).

        Raises:
            StartupError: dev mode on a public address, or the store cannot be opened.
        """
        config = self.config
        await self._open_shared()
        try:
            config.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            self.store = open_store(
                config.database,
                pool_size=config.database_pool_size,
                pool_timeout=config.database_pool_timeout,
            )
            await self.store.open(migrate=config.migrate == "auto")
        except Exception as exc:
            await self._close_shared()
            raise StartupError(f"cannot open the database: {exc}") from None
        try:
            crashed = await self._end_crashed_answers()
            if crashed:
                logger.warning(
                    "%d answers were cut by a crash of the previous run: stored as "
                    "server_crashed with their last checkpoint",
                    crashed,
                )
                self.metrics.streams_crashed(crashed)
            self.keys = KeyCache(self.store)
            problem = dev_mode_problem(
                config.host,
                keys_exist=await self.keys.keys_exist(),
                allow_remote=config.allow_dev_mode_remote,
            )
            if problem:
                raise StartupError(problem)
            self.access = Access(
                self.keys, dev_mode_allowed=is_loopback(config.host) or config.allow_dev_mode_remote
            )
            self.audit = AuditLog(config.audit_path, include_questions=config.audit_questions)
            try:
                channels = Channels.build(config, self.metrics, client=self._client)
            except ChannelConfigError as exc:
                raise StartupError(str(exc)) from None
            self.upstream = Upstream(
                channels,
                emulated=config.upstream_emulated,
                default_model=config.default_model,
                attempts=config.failover_attempts,
                deadline=config.failover_deadline,
            )
            default = self.upstream.default_model
            if channels.gateway is not None and not channels.serves(default):
                await channels.aclose()
                raise StartupError(
                    f"no channel serves the default model {default!r}: set default_model to a "
                    "model a channel lists (or add it to a channel's models)"
                )
        except BaseException:
            await self.store.close()
            await self._close_shared()
            raise
        if self.redis is not None:
            self.upstream.share_token(self.redis)
            self.revocations = Revocations(self.redis, self.keys)
            await self.revocations.start()
        self._compose()
        self.checkpoints.start()
        if self.sweeper is not None:
            self.sweeper.start()
        if self.eventlog is not None:
            self.relay.log = self.eventlog.writer
            self.relay.remote_readers = self.eventlog.remote_readers
            self.eventlog.start(self.relay.cancel)
        if self.takeovers is not None:
            self.takeovers.start()
        self.state = ServerState.READY
        if self._on_ready is not None:
            self._on_ready(self)

    async def _end_crashed_answers(self) -> int:
        """Answers a dead server left ``streaming`` become ``server_crashed`` (keeping their
        last checkpoint); how many. One server (no Redis): every one. In a fleet, only the
        answers of instances that are gone — never those another live instance streams."""
        if self.redis is None:
            return await self.store.mark_streaming_as("server_crashed")
        # a previous life of this instance (the same configured id), rows from before answers
        # named their producer, and the answers of fleet members that are gone
        self.sweeper = Sweeper(
            self.store,
            self.redis,
            self.instance_id,
            interval=self.config.lease_ttl,
            on_swept=self.metrics.streams_crashed,
        )
        mine = await self.store.mark_streaming_as("server_crashed", [None, self.instance_id])
        try:
            return mine + await self.sweeper.sweep()
        except SharedStateError as exc:
            raise StartupError(f"cannot reach the shared state: {exc}") from None

    async def _open_shared(self) -> None:
        """Connect to the fleet's Redis (if configured), start renewing leases, and make the
        answers' event log.

        Raises:
            StartupError: Redis cannot be reached at start-up.
        """
        if self.redis is None or self.leases is None:
            return
        try:
            await self.redis.open()
        except SharedStateError as exc:
            await self.redis.close()
            raise StartupError(f"cannot reach the shared state: {exc}") from None
        config = self.config
        answer_leases = AnswerLeases(
            self.redis, instance=self.instance_id, ttl=config.answer_lease_ttl
        )
        self.eventlog = EventLog(
            self.redis,
            self.metrics,
            instance=self.instance_id,
            window=config.resume_window,
            maxlen=config.eventlog_maxlen,
            grace=config.resume_grace,
            lease_ttl=config.lease_ttl,
            leases=answer_leases,
        )
        self.eventlog.writer.on_batch = self.redis_metrics.batch_written
        self.leases.carry(answer_leases, self.eventlog.writer.lose)
        self.leases.start()
        self.takeovers = Takeovers(self.redis, answer_leases, self._take_over)

    async def _take_over(self, claimed: Claimed) -> None:
        await self.answers.take_over(claimed)

    async def _close_shared(self) -> None:
        if self.takeovers is not None:
            await self.takeovers.aclose()
        if self.eventlog is not None:
            await self.eventlog.aclose()
        if self.revocations is not None:
            await self.revocations.aclose()
        if self.leases is not None:
            await self.leases.aclose()
        if self.redis is not None:
            await self.redis.close()

    def _compose(self) -> None:
        """The use case and the route objects, each with what it uses; the routing table."""
        config, access, upstream, relay = self.config, self.access, self.upstream, self.relay
        interval = config.checkpoint_interval
        # with the checkpoint tick: the usage records of many answers in one store operation
        self.usage = UsageWriter(self.store, batched=interval > 0)
        self.checkpoints = Checkpoints(
            self.store, self.metrics, interval=interval, usage=self.usage
        )
        relay.upstream_pause = upstream.rate_limit_delay
        budgets: Budgeter = BudgetLimiter(self.usage.spent_since)
        if self.leases is not None:  # a fleet: the budgets' counters in Redis too
            budgets = SharedBudgets(self.leases, self.usage.spent_since)
        pacer = StartPacer(config.start_slice) if config.start_slice > 0 else None
        if pacer is not None:
            pacer.register(self.metrics)
        self.answers = Answers(
            budgets=budgets,
            pricing=_pricing_of(config.gateway),
            store=self.store,
            relay=relay,
            checkpoints=self.checkpoints,
            usage=self.usage,
            limiter=self.limiter,
            upstream=upstream,
            audit=self.audit,
            history_turns=config.history_turns,
            producer=self.instance_id,
            takeover=config.takeover,
            pacer=pacer,
        )
        self.sockets = Sockets(
            access=access,
            answers=self.answers,
            relay=relay,
            metrics=self.metrics,
            config=config,
            eventlog=self.eventlog,
        )
        routes: Routes = {}
        for group in (
            ServiceRoutes(
                state=lambda: self.state,
                metrics=self.metrics,
                upstream=upstream,
                access=access,
                store=self.store,
                redis=self.redis,
            ).routes(),
            self.static.routes(),
            ConversationRoutes(
                store=self.store,
                access=access,
                upstream=upstream,
                max_body_bytes=config.max_body_bytes,
            ).routes(),
            StreamRoutes(
                access=access,
                answers=self.answers,
                relay=relay,
                config=config,
                eventlog=self.eventlog,
            ).routes(),
            OpenAIRoutes(
                access=access, answers=self.answers, relay=relay, upstream=upstream, config=config
            ).routes(),
            ModelRoutes(access=access, upstream=upstream).routes(),
            AdminRoutes(access=access, upstream=upstream, admin_key=config.admin_key).routes(),
            UsageRoutes(access=access, usage=self.usage).routes(),
            self.sockets.routes(),
        ):
            routes.update(group)
        self._routes = _table(routes)
        self._exact = {}
        for template in routes:  # a path without parameters: one dict lookup, not a scan
            if "{" not in template and self._match(template)[0] == template:
                self._exact[template.strip("/")] = (template, routes[template])

    async def drain(self, admitting: Awaitable[None] | None = None) -> None:
        """Begin the shutdown: refuse new asks (once ``admitting`` is done: the requests a
        proxy may still bring over the connections the server holds, at most the grace), let
        running answers end (bounded), stop the rest. Idempotent; concurrent callers share
        one drain (the first one's ``admitting``)."""
        if self.state is not ServerState.READY and self._stopping is None:
            return
        self.state = ServerState.STOPPING
        if self._stopping is None:
            self._stopping = asyncio.ensure_future(self._drain(admitting))
        await asyncio.shield(self._stopping)

    async def _drain(self, admitting: Awaitable[None] | None) -> None:
        self.sockets.drain()  # idle WebSockets closed with 1012 now, the others when idle
        if self.takeovers is not None:  # what this process hands over goes to another one
            await self.takeovers.stop_claiming()
        await self.relay.shutdown(self.config.shutdown_grace, admitting)

    async def shutdown(self) -> None:
        """Drain, then close the upstream client, the store and the audit log."""
        if self.state is ServerState.STARTING:
            return
        await self.drain()
        self.state = ServerState.STOPPED
        await self.checkpoints.aclose()
        await self.usage.aclose()  # the answers that ended since the last tick
        if self.sweeper is not None:
            await self.sweeper.aclose()
        await self.upstream.aclose()
        try:
            # only this server's: other instances may share the database
            await self.store.mark_streaming_as("server_shutdown", [self.instance_id])
        finally:
            await self.store.close()
            self.audit.close()
            await self._close_shared()


def create_app(
    config: ServerConfig | None = None,
    *,
    client: AsyncClient | None = None,
    on_ready: Callable[[Server], None] | None = None,
) -> Server:
    """The ASGI application of ``wenxin serve`` (lifespan required: it opens the store).

    ``client`` replaces the upstream client built from the configuration (tests, embedding).
    """
    return Server(config or ServerConfig(), client=client, on_ready=on_ready)


def _pricing_of(gateway: GatewaySpec | None) -> Pricing:
    """The prices of the usage records: the catalogue's, and each channel's own ``prices``."""
    if gateway is None:
        return Pricing()
    return Pricing(
        {
            spec.name: {model: [PriceTier(cny_in, cny_out)] for model, (cny_in, cny_out)
                        in spec.prices.items()}
            for spec in gateway.channels
            if spec.prices
        }
    )  # fmt: skip
