"""What a stream request looks like for each kind of target, and the setup each one needs.

Theory of operation
===================

A :class:`Target` turns "stream number n" into the exact request bytes and names the
:class:`~._recorder.StreamRecorder` that reads the answer:

========== ============================================== ================================
kind       request                                        answer read by
========== ============================================== ================================
openai     ``POST {url}/v1/chat/completions`` (bearer key  :class:`~._recorder.OpenAIRecorder`
           if given), ``stream: true``,
           ``stream_options.include_usage``
ernie-v2   ``POST {url}/v2/chat/completions``, bearer key  :class:`~._recorder.OpenAIRecorder`
ernie-v1   OAuth token once (``{url}/oauth/2.0/token``),   :class:`~._recorder.V1Recorder`
           then ``POST {url}/rpc/2.0/ai_custom/v1/
           wenxinworkshop/chat/{endpoint}?access_token=…``
native     ``POST {url}/api/conversations`` (per worker,   :class:`~._recorder.NativeRecorder`
           renewed every ``native_turns`` questions),
           then ``POST …/{id}/messages``
========== ============================================== ================================

Pacing reaches the emulator behind any relay as a fault directive appended to the question,
``[[wenxin:fault ttft=…;interval=…;chunks=…;stamp=1]]`` (``stamp=1`` is added when absent), so
the emulator paces the answer and stamps every chunk with ``wenxin_emitted_at``.

:meth:`Target.setup` runs once before the load (the v1 OAuth token); :meth:`Target.prepare`
runs before each stream on the worker's own connection (the native conversation) and gets a
per-worker state dictionary. Both raise :class:`SetupError` with a failure reason.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

from ._client import Connection, build_request, fetch
from ._recorder import NativeRecorder, OpenAIRecorder, Pacing, StreamRecorder, V1Recorder

__all__ = [
    "KINDS",
    "Endpoint",
    "SetupError",
    "Target",
    "TargetConfig",
    "make_target",
    "parse_pacing",
]

KINDS: tuple[str, ...] = ("openai", "native", "ernie-v2", "ernie-v1")
"""The target kinds ``--target`` accepts."""

DEFAULT_QUESTION = "请用几句话介绍一下长城。"
DEV_V2_KEY = "bce-v3/ALTAK-bench/bench"
DEV_V1_KEY = "bench-client:bench-secret"
V1_CHAT_PREFIX = "/rpc/2.0/ai_custom/v1/wenxinworkshop/chat/"

Opener = Callable[[], Awaitable[Connection]]


class SetupError(Exception):
    """A request a stream depends on failed; ``reason`` is the failure category."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def parse_pacing(text: str) -> Pacing:
    """Validate a pacing SPEC with the emulator's own parser and read what it promises.

    ``stamp=1`` is appended when the SPEC does not mention ``stamp``.

    Raises:
        ValueError: the SPEC is not valid (the emulator would refuse it).
    """
    from ..emulator._faults import parse_fault_spec

    spec = parse_fault_spec(text)  # FaultSpecError is a ValueError
    items = [item.strip() for item in text.split(";") if item.strip()]
    if not any(item.split("=", 1)[0].strip() == "stamp" for item in items):
        items.append("stamp=1")
    return Pacing(";".join(items), spec.ttft, spec.interval, spec.chunks)


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where to connect: scheme, host, port, path prefix and the ``Host`` header value."""

    scheme: str
    host: str
    port: int
    base_path: str
    host_header: str

    @classmethod
    def parse(cls, url: str) -> Endpoint:
        """Parse ``http[s]://host[:port][/prefix]``.

        Raises:
            ValueError: not an http(s) URL, or no host.
        """
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"expected an http:// or https:// URL, not {url!r}")
        if parts.query or parts.fragment:
            raise ValueError(f"the URL must not have a query or fragment: {url!r}")
        default = 443 if parts.scheme == "https" else 80
        port = parts.port or default
        host = parts.hostname
        shown = f"[{host}]" if ":" in host else host
        host_header = shown if port == default else f"{shown}:{port}"
        return cls(parts.scheme, host, port, parts.path.rstrip("/"), host_header)

    def tls(self) -> ssl.SSLContext | None:
        """A default TLS context for https, else ``None``."""
        return ssl.create_default_context() if self.scheme == "https" else None


@dataclass(frozen=True, slots=True)
class TargetConfig:
    """Everything that shapes the requests (see ``wenxin bench --help``)."""

    kind: str
    url: str
    api_key: str | None = None
    model: str | None = None
    endpoint: str | None = None
    path: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    question: str = DEFAULT_QUESTION
    pacing: Pacing | None = None
    native_turns: int = 10
    request_timeout: float = 30.0


@dataclass(slots=True)
class Target:
    """Request shapes of one target kind (built by :func:`make_target`)."""

    config: TargetConfig
    endpoint: Endpoint
    recorder: type[StreamRecorder]
    path: str
    headers: list[tuple[str, str]]
    setup_info: dict[str, Any] = field(default_factory=dict)
    _body_parts: tuple[bytes, bytes] | tuple[()] | None = None
    _head_path: str = ""
    _head: bytes = b""

    def question(self, n: int) -> str:
        """The text of question ``n`` (numbered, so no cache in between can answer it)."""
        text = f"{self.config.question}（第{n}问）"
        pacing = self.config.pacing
        return f"{text} [[wenxin:fault {pacing.spec}]]" if pacing else text

    def body(self, n: int, state: dict[str, Any]) -> dict[str, Any]:
        """The JSON body of stream ``n``."""
        messages = [{"role": "user", "content": self.question(n)}]
        kind = self.config.kind
        if kind == "ernie-v1":
            return {"messages": messages, "stream": True}
        if kind == "native":
            body: dict[str, Any] = {"content": self.question(n)}
            if self.config.model:
                body["model"] = self.config.model
            return body
        return {
            "model": self.config.model or "ernie-lite-8k",
            "messages": messages,
            "stream": True,
            "stream_options": {"include_usage": True},
        }

    def stream_path(self, state: dict[str, Any]) -> str:
        """The request target of the next stream."""
        kind = self.config.kind
        if kind == "native":
            return f"{self.endpoint.base_path}/api/conversations/{state['conversation']}/messages"
        if kind == "ernie-v1":
            return f"{self.path}?access_token={quote(self.setup_info['access_token'], safe='')}"
        return self.path

    def request(self, n: int, state: dict[str, Any]) -> bytes:
        """The bytes of the request for stream ``n``.

        Only the question number changes from one stream to the next, so the body is encoded
        once around a marker and the number spliced in; the head (all but the length) is
        cached too while the path stays the same (every kind but ``native``).
        """
        parts = self._body_parts
        if parts is None:
            parts = self._body_parts = self._split_body(state)
        if parts:
            body = b"%s%d%s" % (parts[0], n, parts[1])
        else:  # the question itself contains the marker: encode every body in full
            body = json.dumps(self.body(n, state), ensure_ascii=False).encode()
        path = self.stream_path(state)
        if path != self._head_path:
            self._head_path = path
            self._head = build_request("POST", path, self.endpoint.host_header, self.headers)
            self._head = self._head[: -len(b"0\r\n\r\n")]  # ends in "Content-Length: "
        return b"%s%d\r\n\r\n%s" % (self._head, len(body), body)

    def _split_body(self, state: dict[str, Any]) -> tuple[bytes, bytes] | tuple[()]:
        text = json.dumps(self.body(0, state), ensure_ascii=False).replace("第0问", "第\ue000问")
        pieces = text.encode().split("\ue000".encode())
        return (pieces[0], pieces[1]) if len(pieces) == 2 else ()

    async def setup(self, open_connection: Opener) -> None:
        """Run once before the load: fetch the v1 OAuth token.

        Raises:
            SetupError: the token request failed.
        """
        if self.config.kind != "ernie-v1":
            return
        client_id, _, secret = (self.config.api_key or DEV_V1_KEY).partition(":")
        query = (
            f"grant_type=client_credentials&client_id={quote(client_id, safe='')}"
            f"&client_secret={quote(secret, safe='')}"
        )
        path = f"{self.endpoint.base_path}/oauth/2.0/token?{query}"
        try:
            conn = await open_connection()
        except (OSError, TimeoutError) as exc:
            raise SetupError("oauth_connect_error", str(exc) or type(exc).__name__) from None
        try:
            obj = await self._json(conn, "POST", path, b"", "oauth")
        finally:
            conn.close()
        token = obj.get("access_token") if isinstance(obj, dict) else None
        if not isinstance(token, str) or not token:
            raise SetupError("oauth_error", json.dumps(obj, ensure_ascii=False)[:300])
        self.setup_info["access_token"] = token

    async def prepare(self, conn: Connection, state: dict[str, Any]) -> None:
        """Run before each stream on the worker's connection (native: the conversation).

        Raises:
            SetupError: a conversation request failed.
        """
        if self.config.kind != "native":
            return
        turns = state.get("turns", 0)
        if "conversation" in state and turns < self.config.native_turns:
            state["turns"] = turns + 1
            return
        base = self.endpoint.base_path
        old = state.pop("conversation", None)
        if old is not None and conn.reusable:
            await self._json(conn, "DELETE", f"{base}/api/conversations/{old}", None, "delete")
        if not conn.reusable:
            raise SetupError("conversation_error", "connection closed while renewing")
        body = json.dumps({"title": "wenxin bench"}).encode()
        obj = await self._json(conn, "POST", f"{base}/api/conversations", body, "conversation")
        conversation = obj.get("id") if isinstance(obj, dict) else None
        if not isinstance(conversation, str):
            raise SetupError("conversation_error", f"no id in {obj!r}"[:300])
        state["conversation"] = conversation
        state["turns"] = 1

    async def _json(
        self, conn: Connection, method: str, path: str, body: bytes | None, what: str
    ) -> Any:
        headers = [h for h in self.headers if h[0].lower() != "accept"]
        if body is None:
            headers = [h for h in headers if h[0].lower() != "content-type"]
        request = build_request(method, path, self.endpoint.host_header, headers, body or b"")
        try:
            async with asyncio.timeout(self.config.request_timeout):
                sink = await fetch(conn, request, method)
        except TimeoutError:
            conn.abort("timeout", f"{what} request timed out")
            raise SetupError(f"{what}_timeout", f"{method} {path}") from None
        if sink.error is not None:
            raise SetupError(f"{what}_{sink.error[0]}", sink.error[1])
        assert sink.head is not None
        text = sink.body.decode("utf-8", "replace")
        if not 200 <= sink.head.status < 300:
            raise SetupError(f"{what}_http_{sink.head.status}", text[:300])
        if not text:
            return None
        try:
            return json.loads(text)
        except ValueError:
            raise SetupError(f"{what}_protocol_error", f"not JSON: {text[:120]!r}") from None


def _auth_headers(config: TargetConfig) -> list[tuple[str, str]]:
    key = config.api_key
    if config.kind == "ernie-v2":
        key = key or DEV_V2_KEY
    if config.kind == "ernie-v1" or not key:
        return []
    return [("Authorization", f"Bearer {key}")]


def make_target(config: TargetConfig) -> Target:
    """Build the :class:`Target` of ``config.kind``.

    Raises:
        ValueError: an unknown kind, a bad URL, or an unknown v1 model without ``endpoint``.
    """
    if config.kind not in KINDS:
        raise ValueError(f"unknown target kind {config.kind!r}; choose from {', '.join(KINDS)}")
    endpoint = Endpoint.parse(config.url)
    base = endpoint.base_path
    recorder: type[StreamRecorder] = OpenAIRecorder
    if config.kind == "openai":
        path = config.path or (
            f"{base}/chat/completions" if base.endswith("/v1") else f"{base}/v1/chat/completions"
        )
    elif config.kind == "ernie-v2":
        path = config.path or f"{base}/v2/chat/completions"
    elif config.kind == "ernie-v1":
        recorder = V1Recorder
        name = config.endpoint
        if name is None:
            from .._models import DEFAULT_MODEL, find_model

            info = find_model(config.model or DEFAULT_MODEL)
            if info is None:
                raise ValueError(f"unknown v1 model {config.model!r}: give --endpoint")
            name = info.endpoint
        path = config.path or f"{base}{V1_CHAT_PREFIX}{name}"
    else:
        recorder = NativeRecorder
        path = f"{base}/api/conversations/{{id}}/messages"
    headers = [
        ("Content-Type", "application/json"),
        ("Accept", "text/event-stream"),
        *_auth_headers(config),
        *config.headers,
    ]
    return Target(config, endpoint, recorder, path, headers)
