"""The emulator as one plain ASGI 3 application: routing, OAuth, IAM and the safety net.

Theory of operation
===================

:func:`create_app` builds an :class:`EmulatorApp` around one :class:`~._chat.Shared` state.
Each HTTP request is decoded once into a :class:`~._asgi.Request` and routed by path:

==========================================================  =====================================
``/healthz`` (GET)                                          readiness probe (not a Baidu route)
``/oauth/2.0/token`` (GET, POST)                            v1 OAuth client-credentials token
``/rpc/2.0/ai_custom/v1/wenxinworkshop/chat/{endpoint}``    v1 chat (:mod:`._v1`)
``/v2/chat/completions``                                    v2 chat (:mod:`._v2`)
``/v2/models`` (GET)                                        the live model roster (:mod:`._roster`)
``/v1/chat/completions``                                    a self-hosted ERNIE 4.5 under vLLM or
                                                            FastDeploy (:mod:`._openai`)
``/v1/models`` (GET)                                        the model it serves
``/v1/BCE-BEARER/token`` (GET)                              mint an IAM bearer token
``/wenxinworkshop/service/list`` (POST)                     the qianfan SDK's model list
==========================================================  =====================================

Anything else under the v1 prefix is v1 error 3; any other path is a 404 JSON error.

Every request runs inside a safety net: an unexpected exception is logged as one line (with a
traceback only in ``debug`` mode) and answered in the route's own error shape — v1 error
336000 (HTTP 200), v2 500 ``internal_error``, others 500 — or, if the response had already
started, the response is abandoned (the connection closes). Cancellation by the server at
shutdown ends the request quietly. Lifespan events are acknowledged; WebSockets are refused.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any
from urllib.parse import parse_qsl

from .._asgi import (
    BodyTooLarge,
    ClientDisconnected,
    Receive,
    Request,
    Scope,
    Send,
    TrackingSend,
    read_body,
    send_json,
)
from .._models import MODELS, V1_CHAT_PREFIX, V2_CHAT_PATH, V2_MODELS_PATH
from . import _openai, _roster, _v1, _v2
from ._auth import DEFAULT_BEARER_TTL, MAX_BEARER_TTL, SignatureRequest
from ._chat import Shared
from ._config import EmulatorConfig
from ._openai_wire import error_body

logger = logging.getLogger("wenxin_stream.emulator")

V1_PREFIX = V1_CHAT_PREFIX.removesuffix("chat/")
OAUTH_PATH = "/oauth/2.0/token"
BEARER_PATH = "/v1/BCE-BEARER/token"
SERVICE_LIST_PATH = "/wenxinworkshop/service/list"
HEALTH_PATH = "/healthz"

_BCE_STATUS = {
    "AccessDenied": 403,
    "InvalidAccessKeyId": 403,
    "SignatureDoesNotMatch": 400,
    "InvalidParameter": 400,
    "MethodNotAllowed": 405,
}
_BCE_MESSAGES = {
    "AccessDenied": "Access denied.",
    "InvalidAccessKeyId": "The access key ID you provided does not exist.",
    "SignatureDoesNotMatch": "The request signature we calculated does not match the signature "
    "you provided.",
    "MethodNotAllowed": "The specified method is not allowed against this resource.",
}


class EmulatorApp:
    """The emulator's ASGI application; build it with :func:`create_app`.

    ``config`` is the configuration in force and ``shared`` the live state (issued tokens,
    quota windows, fault counters), exposed for embedding programs and tests.
    """

    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self.shared = Shared(config)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI connection scope."""
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await _lifespan(receive, send)
        elif kind == "websocket":
            await send({"type": "websocket.close", "code": 1008})

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        tracked = TrackingSend(send)
        request = Request.from_scope(scope)
        try:
            await self._route(request, receive, tracked)
        except asyncio.CancelledError:
            return  # the server is shutting down; end quietly
        except ClientDisconnected:
            return  # gone while its request body was read: no one to answer
        except Exception as exc:
            logger.error(
                "internal error answering %s %s: %s: %s",
                request.method,
                request.path,
                type(exc).__name__,
                exc,
                exc_info=exc if self.config.debug else None,
            )
            if not tracked.started:
                await _internal_error(request.path, tracked)

    async def _route(self, request: Request, receive: Receive, send: Send) -> None:
        path = request.path
        shared = self.shared
        if path.startswith(V1_CHAT_PREFIX):
            await _v1.handle(shared, request, receive, send, path[len(V1_CHAT_PREFIX) :])
        elif path == V2_CHAT_PATH:
            await _v2.handle(shared, request, receive, send)
        elif path == V2_MODELS_PATH:
            await _roster.list_models(shared, request, send)
        elif path == _openai.CHAT_PATH:
            await _openai.handle_chat(shared, request, receive, send)
        elif path == _openai.MODELS_PATH:
            await _openai.list_models(shared, request, send)
        elif path == OAUTH_PATH:
            await self._oauth(request, receive, send)
        elif path == HEALTH_PATH:
            await send_json(send, 200, {"status": "ok"})
        elif path == BEARER_PATH:
            await self._bearer(request, send)
        elif path == SERVICE_LIST_PATH:
            await self._service_list(request, send)
        elif path.startswith(V1_PREFIX):
            body = _v1.error_body(3, None, shared.new_id())
            await send_json(send, 200, body)
        else:
            await send_json(send, 404, _not_found(path))

    async def _oauth(self, request: Request, receive: Receive, send: Send) -> None:
        if request.method not in ("GET", "POST"):
            await send_json(
                send,
                405,
                {"error": "invalid_request", "error_description": "method not allowed"},
            )
            return
        params = dict(reversed(request.query))
        content_type = request.headers.get("content-type", "")
        if request.method == "POST" and content_type.startswith(
            "application/x-www-form-urlencoded"
        ):
            try:
                raw = await read_body(receive, request.headers, 64 * 1024)
            except (BodyTooLarge, ClientDisconnected):
                raw = b""
            form = parse_qsl(raw.decode("latin-1"), keep_blank_values=True)
            params = {**dict(reversed(form)), **params}
        status, body = self.shared.auth.issue_token(
            params.get("grant_type", ""),
            params.get("client_id", ""),
            params.get("client_secret", ""),
        )
        await send_json(send, status, body)

    async def _iam_guard(self, request: Request, send: Send, method: str) -> str | None:
        """Check method and signature of an IAM/console request; the identity or None."""
        if request.method != method:
            await _bce_error(send, "MethodNotAllowed")
            return None
        signed = SignatureRequest(request.method, request.path, request.query, request.headers)
        result = self.shared.auth.check_iam(signed)
        if not result.ok:
            assert isinstance(result.error, str)
            await _bce_error(send, result.error)
            return None
        return result.identity

    async def _bearer(self, request: Request, send: Send) -> None:
        identity = await self._iam_guard(request, send, "GET")
        if identity is None:
            return
        text = request.query_value("expireInSeconds")
        ttl = DEFAULT_BEARER_TTL
        if text is not None:
            if not text.isdigit() or not 1 <= int(text) <= MAX_BEARER_TTL:
                message = f"expireInSeconds must be an integer in [1, {MAX_BEARER_TTL}]"
                await _bce_error(send, "InvalidParameter", message)
                return
            ttl = int(text)
        await send_json(send, 200, self.shared.auth.mint_bearer(identity, ttl))

    async def _service_list(self, request: Request, send: Send) -> None:
        if await self._iam_guard(request, send, "POST") is None:
            return
        host = request.headers.get("host", "127.0.0.1")
        base = f"http://{host}{V1_CHAT_PREFIX}"

        def entry(name: str, endpoint: str) -> dict[str, Any]:
            return {
                "name": name,
                "url": base + endpoint,
                "apiType": "chat",
                "chargeStatus": "OPENED",
            }

        common = [entry(info.name, info.endpoint) for info in MODELS.values()]
        custom = [entry(name, ep) for ep, name in self.config.custom_endpoints.items()]
        result = {"common": common, "custom": custom}
        await send_json(send, 200, {"log_id": uuid.uuid4().hex, "success": True, "result": result})


def create_app(config: EmulatorConfig | None = None) -> EmulatorApp:
    """Build the emulator's ASGI application (default configuration when ``config`` is None).

    Serve it with any ASGI server, e.g. ``uvicorn.run(create_app(), port=8866)``, or use
    :func:`~wenxin_stream.emulator.run_in_thread`.
    """
    return EmulatorApp(config or EmulatorConfig())


def _not_found(path: str) -> dict[str, Any]:
    return {
        "error": {
            "code": "not_found",
            "message": f"no such route: {path}",
            "type": "invalid_request_error",
        }
    }


async def _bce_error(send: Send, code: str, message: str | None = None) -> None:
    body = {
        "requestId": str(uuid.uuid4()),
        "code": code,
        "message": message or _BCE_MESSAGES.get(code, code),
    }
    await send_json(send, _BCE_STATUS.get(code, 400), body)


async def _internal_error(path: str, send: Send) -> None:
    if path == _openai.CHAT_PATH:
        await send_json(send, 500, error_body("vllm", 500, "Internal error"))
    elif path.startswith(V1_PREFIX):
        await send_json(send, 200, {"error_code": 336000, "error_msg": "Internal error"})
    else:
        body = {
            "error": {
                "code": "internal_error",
                "message": "Internal error",
                "type": "Internal_error",
            }
        }
        await send_json(send, 500, body)


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
