"""The Q&A server as one plain ASGI 3 application: lifespan, routing, and the safety net.

Theory of operation
===================

:class:`Server` is built from a :class:`~._config.ServerConfig`. Its lifespan start-up opens
the store (and marks answers left ``streaming`` by a crash as ``server_shutdown``), the key
cache, the audit log, the ONE upstream :class:`~wenxin_stream.AsyncClient` (one connection
pool for every stream) and the :class:`~._relay.Relay`; it refuses to start in dev mode on a
public address. Shutdown refuses new asks (503 ``shutting_down``), gives running answers
``shutdown_grace`` seconds, stops the rest with ``server_shutdown`` (each is stored and gets
its ``end`` event), then closes everything. :func:`run_server` (the CLI) starts this drain
*before* uvicorn closes the connections, so clients see their streams end properly.

Routing is a table of path templates (``/api/conversations/{id}``) → method → handler, built
from the route modules; each request is decoded once into a :class:`~._auth.Context`.

Every request runs inside a safety net: an :class:`~._auth.HTTPError` becomes an OpenAI-shaped
JSON error; anything unexpected is logged as one line (a traceback only with ``debug``) and
answered 500 ``internal_error`` — never a traceback to the client — or, if the response had
started, the connection is closed. Each answer is counted (``wenxin_http_requests_total`` by
route template and status) and audited (API routes; a generation writes its own record when
it ends, since only then does it know how it ended).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from time import perf_counter
from typing import Any

from .._asgi import ClientDisconnected, Message, Receive, Request, Scope, Send, send_json
from .._async_client import AsyncClient
from .._client_base import EMULATOR_NOTICE
from .._models import MODELS, find_model
from .._timeouts import Timeout
from .._transport import Limits
from .._version import __version__
from . import _conversations, _http_sse, _openai, _static
from ._audit import AuditLog
from ._auth import Access, Context, HTTPError, Principal, dev_mode_problem, is_loopback
from ._config import ServerConfig
from ._keys import KeyCache
from ._limits import Admission, KeyLimiter, KeyLimits, Rejection
from ._metrics import CONTENT_TYPE, Metrics
from ._openapi import document
from ._relay import Relay
from ._static import StaticFiles
from ._store import SQLiteStore, open_store
from ._ws import serve_socket

__all__ = ["Server", "StartupError", "create_app"]

logger = logging.getLogger("wenxin_stream.server")

Handler = Callable[["Server", Context, Receive, Send], Awaitable[None]]

_AUDIT_FIELDS: dict[str, Any] = dict.fromkeys(
    ("key_id", "route", "model", "conversation_id", "stream_id", "status", "end_reason", "usage",
     "ttft_ms", "total_ms", "client"),
)  # fmt: skip
_UNAUDITED = ("/healthz", "/readyz", "/metrics", "/openapi.json", "/", "/static/{name}")


class StartupError(Exception):
    """The server cannot start (dev mode on a public address, an unusable database…)."""


class _DropNotice(logging.Filter):
    """Drops the SDK's "no credentials: emulator" warning (the start-up line says it)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != EMULATOR_NOTICE


class _Tracked:
    """Wraps ``send`` to remember the status and whether the response has started. Streams
    write their body through ``raw`` (the status is known by then)."""

    __slots__ = ("raw", "status")

    def __init__(self, send: Send) -> None:
        self.raw = send
        self.status = 0

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
        await self.raw(message)


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
        self.state = "starting"
        self.static = StaticFiles()
        self.metrics = Metrics()
        self.limiter = KeyLimiter(
            KeyLimits(
                rpm=config.default_rpm or None,
                tpm=config.default_tpm or None,
                max_streams=config.default_max_streams or None,
            )
        )
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
        self.store: SQLiteStore
        self.keys: KeyCache
        self.access: Access
        self.audit: AuditLog
        self.client: AsyncClient
        self.routes: dict[int, list[tuple[tuple[str, ...], str, dict[str, Handler]]]] = {}
        table: dict[str, dict[str, Handler]] = {
            "/healthz": {"GET": _health},
            "/readyz": {"GET": _ready},
            "/metrics": {"GET": _metrics},
            "/openapi.json": {"GET": _openapi_json},
            "/api/info": {"GET": _info},
        }
        for module in (_static, _conversations, _http_sse, _openai):
            table.update(module.routes())
        for template, methods in table.items():
            parts = tuple(template.strip("/").split("/")) if template != "/" else ()
            self.routes.setdefault(len(parts), []).append((parts, template, methods))

    # -- services the routes use --------------------------------------------------------------

    @property
    def upstream(self) -> str:
        """``emulator`` or ``ernie``."""
        emulated = self.config.upstream_emulated
        return "emulator" if (self.client.emulated if emulated is None else emulated) else "ernie"

    @property
    def default_model(self) -> str:
        """The model of requests that name none."""
        return self.config.default_model or self.client.model

    def resolve_model(self, name: str | None) -> tuple[str, str]:
        """(the name to show, the name to send upstream) of a requested model.

        Raises:
            HTTPError: 404 ``model_not_found``.
        """
        if name is None or name == self.default_model:
            name = self.default_model
        info = find_model(name)
        if info is None:
            if name == self.default_model:
                return name, name
            raise HTTPError(
                404, "model_not_found", f"the model {name!r} does not exist", param="model"
            )
        return name, (info.name if self.client.api == "v1" else info.v2_name)

    def model_names(self) -> list[str]:
        """The models this server serves."""
        if self.client.api == "v1":
            return [info.name for info in MODELS.values()]
        return sorted({info.v2_name for info in MODELS.values()})

    async def principal(self, ctx: Context) -> Principal:
        """Who is asking (401 when nobody valid)."""
        if ctx.principal is None:
            ctx.principal = await self.access.from_header(ctx.request.headers.get("authorization"))
            if ctx.audit is not None:
                ctx.audit["key_id"] = ctx.principal.owner
        return ctx.principal

    def admit(self, principal: Principal, estimate: int) -> Admission:
        """Admit a request under the principal's limits (429 otherwise)."""
        decision = self.limiter.admit(principal.owner, principal.limits, estimate)
        if isinstance(decision, Rejection):
            raise _conversations.rejection_error(decision)
        return decision

    def audit_fields(
        self, ctx: Context | None, *, question: str | None = None, **extra: Any
    ) -> dict[str, Any]:
        """The audit record of a request, to complete and write later."""
        fields: dict[str, Any] = {}
        if ctx is not None and ctx.audit is not None:
            fields = ctx.audit
        if ctx is not None and ctx.principal is not None:
            fields["key_id"] = ctx.principal.owner
        if question is not None:
            fields["question"] = question
        fields.update(extra)
        return fields

    def write_audit(self, fields: dict[str, Any], **updates: Any) -> None:
        """Write one audit record (every field of the contract present, ``null`` if unknown)."""
        self.audit.record(**{**_AUDIT_FIELDS, **fields, **updates})

    # -- ASGI ---------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI connection scope."""
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "websocket":
            if scope.get("path") != "/api/ws" or self.state != "ready":
                await send({"type": "websocket.close", "code": 1008})
                return
            try:
                await serve_socket(self, scope, receive, send)
            except asyncio.CancelledError:
                return
            except Exception as exc:
                self._internal(scope.get("path", ""), exc)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    def _match(self, path: str) -> tuple[str | None, dict[str, Handler], dict[str, str]]:
        parts = tuple(path.strip("/").split("/")) if path != "/" else ()
        for pattern, template, methods in self.routes.get(len(parts), ()):
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
        )
        tracked = _Tracked(send)
        if template is not None and template not in _UNAUDITED:
            ctx.audit = {"route": template, "key_id": None, "client": ctx.client}
        try:
            method = "GET" if request.method == "HEAD" else request.method
            handler = methods.get(method)
            if template is None:
                raise HTTPError(404, "not_found", f"no such route: {request.path}")
            if handler is None:
                allow = ", ".join(methods).encode()
                raise HTTPError(
                    405,
                    "method_not_allowed",
                    f"{request.method} is not allowed on {template}",
                    headers=[(b"allow", allow)],
                )
            await handler(self, ctx, receive, tracked)
        except HTTPError as error:
            if tracked.status == 0:
                headers = list(error.headers)
                if error.status == 401:
                    headers.append((b"www-authenticate", b"Bearer"))
                await send_json(tracked, error.status, error.body(), headers)
        except ClientDisconnected:
            pass
        except asyncio.CancelledError:
            return  # the server is stopping
        except Exception as exc:
            self._internal(request.path, exc)
            if tracked.status == 0:
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
            self.write_audit(ctx.audit, status=status)

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
        """Open the store, keys, audit log and upstream client (see the module docstring).

        Raises:
            StartupError: dev mode on a public address, or the store cannot be opened.
        """
        config = self.config
        try:
            config.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            self.store = open_store(config.database)
            await self.store.open()
        except Exception as exc:
            raise StartupError(f"cannot open the database: {exc}") from None
        try:
            await self.store.mark_streaming_as("server_shutdown")
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
            self.client = self._client or self._upstream_client()
        except BaseException:
            await self.store.close()
            raise
        self.state = "ready"
        if self._on_ready is not None:
            self._on_ready(self)

    def _upstream_client(self) -> AsyncClient:
        config = self.config
        sdk_logger = logging.getLogger("wenxin_stream")
        notice = _DropNotice()
        sdk_logger.addFilter(notice)  # the start-up line says it: no second warning
        try:
            return AsyncClient(
                bearer_token=config.upstream_bearer_token,
                v2_base_url=config.upstream_v2_base_url,
                base_url=config.upstream_base_url,
                api=config.upstream_api,
                model=config.default_model,
                retry=config.upstream_retries,
                timeout=Timeout(
                    connect=config.upstream_connect_timeout,
                    first_token=config.upstream_first_token_timeout,
                    idle=config.upstream_idle_timeout,
                ),
                limits=Limits(
                    max_connections=config.upstream_max_connections,
                    max_keepalive_connections=config.upstream_max_connections,
                ),
            )
        finally:
            sdk_logger.removeFilter(notice)

    async def drain(self) -> None:
        """Begin the shutdown: refuse new asks, let running answers end (bounded), stop the
        rest. Idempotent; concurrent callers share one drain."""
        if self.state != "ready" and self._stopping is None:
            return
        self.state = "stopping"
        if self._stopping is None:
            self._stopping = asyncio.ensure_future(self.relay.shutdown(self.config.shutdown_grace))
        await asyncio.shield(self._stopping)

    async def shutdown(self) -> None:
        """Drain, then close the upstream client, the store and the audit log."""
        if self.state == "starting":
            return
        await self.drain()
        self.state = "stopped"
        await self.client.aclose()
        try:
            await self.store.mark_streaming_as("server_shutdown")
        finally:
            await self.store.close()
            self.audit.close()


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


# -- service routes ---------------------------------------------------------------------------


async def _health(server: Server, ctx: Context, receive: Receive, send: Send) -> None:
    await send_json(send, 200, {"status": "ok"})


async def _ready(server: Server, ctx: Context, receive: Receive, send: Send) -> None:
    if server.state == "ready":
        await send_json(send, 200, {"status": "ready", "upstream": server.upstream})
        return
    code = "starting" if server.state == "starting" else "shutting_down"
    body = HTTPError(503, code, f"the server is {server.state}").body()
    await send_json(send, 503, {"status": server.state, **body})


async def _metrics(server: Server, ctx: Context, receive: Receive, send: Send) -> None:
    body = server.metrics.render()
    headers = [(b"content-type", CONTENT_TYPE.encode()), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _openapi_json(server: Server, ctx: Context, receive: Receive, send: Send) -> None:
    await send_json(send, 200, document(__version__))


async def _info(server: Server, ctx: Context, receive: Receive, send: Send) -> None:
    await send_json(
        send,
        200,
        {
            "version": __version__,
            "upstream": server.upstream,
            "api": server.client.api,
            "default_model": server.default_model,
            "models": server.model_names(),
            "auth_required": not await server.access.dev_mode(),
        },
    )
