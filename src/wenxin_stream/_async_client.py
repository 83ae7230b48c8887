"""The async client: :class:`AsyncClient`, its ``chat`` namespace and :class:`AsyncChatStream`.

The twin of ``_client``: the same loop around :class:`~wenxin_stream._stream_core.StreamCore`
with ``await`` (aiohttp transport, ``asyncio.sleep``). Backpressure: the next piece of the body
is read only when the consumer asks for the next event, and aiohttp stops reading from the
socket while its small per-response buffer is full, so a slow consumer slows the server down
instead of filling memory. Cancelling the consuming task closes the HTTP response at once.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from types import TracebackType
from typing import Any

from ._client_base import ClientBase, StreamView
from ._events import ChatResult, StreamEvent, TextDelta
from ._exceptions import (
    APIConnectionError,
    APITimeoutError,
    MalformedResponseError,
    RateLimitError,
    WenxinError,
)
from ._ratelimit import (
    AsyncRateLimiter,
    ClientRateLimitTimeout,
    RateLimits,
    Reservation,
    rate_limit_scope,
)
from ._stream_core import MAX_BODY, MAX_ERROR_BODY, StreamCore
from ._tokens import AccessToken, AsyncTokenManager, TokenCache
from ._transport import AsyncResponse, AsyncTransport, HTTPRequest, Limits


async def _read_all(response: AsyncResponse, core: StreamCore, limit: int) -> bytes:
    body = bytearray()
    while True:
        seconds, kind = core.read_timeout()
        try:
            data = await response.read(seconds)
        except TimeoutError:
            raise core.timed_out(kind) from None
        if not data:
            return bytes(body)
        body += data
        if len(body) > limit:
            raise MalformedResponseError(f"response body larger than {limit} bytes", None)


class AsyncChatStream(StreamView):
    """One streamed answer. Use it in an ``async with`` block and ``async for`` its events.

    ::

        async with client.chat.stream(messages=[{"role": "user", "content": "你好"}]) as stream:
            async for text in stream.text_stream:
                print(text, end="", flush=True)
        print((await stream.get_final_message()).usage)

    Leaving the block — at the end, by ``break``, by an exception or by task cancellation —
    closes the HTTP response at once. Afterwards :attr:`end_reason` says how the stream ended
    (exactly one :class:`~wenxin_stream.EndReason`); errors raised while iterating carry the
    text already delivered in ``partial_text`` and the same ``end_reason``.
    """

    def __init__(self, client: AsyncClient, core: StreamCore) -> None:
        self._client = client
        self._core = core
        self._iterator = client._run_stream(core)

    async def __aenter__(self) -> AsyncChatStream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __aiter__(self) -> AsyncIterator[StreamEvent]:
        return self._iterator

    async def __anext__(self) -> StreamEvent:
        return await self._iterator.__anext__()

    @property
    def text_stream(self) -> AsyncIterator[str]:
        """Only the text of the answer, piece by piece, as it arrives."""
        return self._texts()

    async def _texts(self) -> AsyncIterator[str]:
        async for event in self._iterator:
            if type(event) is TextDelta:
                yield event.text

    async def until_done(self) -> None:
        """Consume the rest of the stream."""
        async for _ in self._iterator:
            pass

    async def get_final_message(self) -> ChatResult:
        """Consume the rest of the stream and return the whole answer."""
        await self.until_done()
        return self._core.result()

    async def aclose(self) -> None:
        """Stop reading and release the connection (idempotent)."""
        await self._iterator.aclose()
        self._core.cancel()  # no effect when the stream already ended


class AsyncChat:
    """``client.chat``: streamed (:meth:`stream`) and whole (:meth:`create`) answers."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    def stream(
        self,
        *,
        messages: Sequence[Mapping[str, Any]] | str,
        model: str | None = None,
        endpoint: str | None = None,
        continue_on_error: bool | None = None,
        **params: Any,
    ) -> AsyncChatStream:
        """Start a streamed answer (see :class:`AsyncChatStream`); no I/O until iterated.

        ``messages`` is the conversation (or a single question as a string); ``model`` a model
        name (the client's default otherwise); ``endpoint`` a custom v1 endpoint; other keyword
        arguments are sent as request parameters (``temperature``, ``system``, ``stop`` …).
        The request is checked against ERNIE's rules before anything is sent:
        :class:`~wenxin_stream.InvalidRequestError` tells what to fix.
        """
        core = self._client._core(
            messages,
            model=model,
            endpoint=endpoint,
            stream=True,
            params=params,
            continue_on_error=continue_on_error,
        )
        return AsyncChatStream(self._client, core)

    async def create(
        self,
        *,
        messages: Sequence[Mapping[str, Any]] | str,
        model: str | None = None,
        endpoint: str | None = None,
        **params: Any,
    ) -> ChatResult:
        """Ask for a whole (non-stream) answer."""
        core = self._client._core(
            messages, model=model, endpoint=endpoint, stream=False, params=params
        )
        return await self._client._run_once(core)


class AsyncClient(ClientBase):
    """An asyncio ERNIE client: one connection pool, shared by every stream it opens.

    With no arguments it reads qianfan's environment variables (``QIANFAN_BEARER_TOKEN`` for
    v2; ``QIANFAN_AK``/``QIANFAN_SK`` or ``QIANFAN_ACCESS_TOKEN`` for v1;
    ``QIANFAN_ACCESS_KEY``/``QIANFAN_SECRET_KEY`` for IAM; ``QIANFAN_BASE_URL``,
    ``QIANFAN_CONSOLE_API_BASE_URL``, ``QIANFAN_IAM_BASE_URL``, ``QIANFAN_APP_ID``). Without
    any credentials it uses the embedded offline emulator and logs a warning
    (``emulator=False`` makes that an error). Share one client across the tasks of one
    event loop.
    """

    _transport: AsyncTransport
    _limiter: AsyncRateLimiter
    _tokens: AsyncTokenManager | None
    chat: AsyncChat
    """Chat completions: ``client.chat.stream(...)`` and ``client.chat.create(...)``."""

    # -- public conveniences ---------------------------------------------------------------

    async def stream_chat(
        self, messages: Sequence[Mapping[str, Any]] | str, **kwargs: Any
    ) -> AsyncIterator[str]:
        """Stream only the text of an answer: ``async for piece in client.stream_chat("你好")``."""
        async with self.chat.stream(messages=messages, **kwargs) as stream:
            async for text in stream.text_stream:
                yield text

    async def aclose(self) -> None:
        """Close every pooled connection."""
        await self._transport.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- the loop --------------------------------------------------------------------------

    async def _fetch_token(self) -> AccessToken:
        auth: Any = self._auth
        request: HTTPRequest = auth.token_request(time.time())
        response = await self._transport.open(
            request,
            connect_timeout=self.timeout.connect,
            head_timeout=self.timeout.first_token,
        )
        try:
            body = bytearray()
            while data := await response.read(self.timeout.idle):
                body += data
                if len(body) > MAX_ERROR_BODY:
                    raise MalformedResponseError("token response too large", None)
        except TimeoutError:
            raise APITimeoutError("idle", timeout=self.timeout.idle) from None
        finally:
            await response.aclose()
        token: AccessToken = auth.parse_token(response.status, bytes(body), time.time())
        return token

    async def _open(self, core: StreamCore) -> tuple[AsyncResponse, AccessToken | None]:
        token = await self._tokens.get() if self._tokens is not None else None
        request = core.http_request(token, time.time())
        try:
            response = await self._transport.open(
                request, connect_timeout=self.timeout.connect, head_timeout=core.head_timeout()
            )
        except APITimeoutError as exc:
            raise core.head_timed_out(exc) from None
        self._limiter.update_from_headers(response.headers)
        return response, token

    async def _recover(
        self, core: StreamCore, error: WenxinError, token: AccessToken | None
    ) -> None:
        """Handle a failed attempt: wait and return to try again, or raise."""
        if isinstance(error, RateLimitError):
            self._limiter.on_rate_limited(error.retry_after, scope=rate_limit_scope(error))
        decision = core.on_failure(error, random.random())  # noqa: S311 - jitter, not crypto
        if decision.action == "raise":
            assert decision.error is not None
            raise decision.error
        if decision.action == "refresh" and self._tokens is not None and token is not None:
            self._tokens.invalidate(token)
        if decision.delay > 0:
            await asyncio.sleep(decision.delay)

    async def _reserve(self, core: StreamCore) -> Reservation:
        """Wait (bounded) for the client-side rate limits to allow one attempt."""
        try:
            return await self._limiter.acquire(core.token_estimate())
        except ClientRateLimitTimeout as error:
            raise core.fail(error) from None

    def _settle(self, reservation: Reservation, core: StreamCore) -> None:
        """Record what a request cost: nothing unless the server generated an answer.

        One reservation covers a request and its retries: a retry is paced by the server's
        ``Retry-After`` and the backoff, not queued behind its own first attempt."""
        if core.generated:
            self._limiter.settle(reservation, core.tokens_used())
        else:
            self._limiter.release(reservation)

    async def _run_stream(self, core: StreamCore) -> AsyncGenerator[StreamEvent, None]:
        reservation = await self._reserve(core)
        try:
            while True:
                token: AccessToken | None = None
                try:
                    response, token = await self._open(core)
                    try:
                        if core.is_error_status(response.status):
                            body = await _read_all(response, core, MAX_ERROR_BODY)
                            raise core.error_from_body(response.status, body, response.headers)
                        core.begin_body(response.headers)
                        while True:
                            seconds, kind = core.read_timeout()
                            try:
                                data = await response.read(seconds)
                            except TimeoutError:
                                if core.complete:
                                    break  # the answer is whole; the server is slow to close
                                raise core.timed_out(kind) from None
                            except APIConnectionError:
                                if core.complete:
                                    break  # the answer is whole; the close was unclean
                                raise
                            if not data:
                                break
                            for event in core.feed(data):
                                yield event
                        for event in core.finish():
                            yield event
                        return
                    finally:
                        await response.aclose()
                except WenxinError as error:
                    await self._recover(core, error, token)
        finally:
            core.cancel()  # no effect when the stream ended by itself
            self._settle(reservation, core)

    async def _run_once(self, core: StreamCore) -> ChatResult:
        reservation = await self._reserve(core)
        try:
            while True:
                token: AccessToken | None = None
                try:
                    response, token = await self._open(core)
                    try:
                        body = await _read_all(response, core, MAX_BODY)
                    finally:
                        await response.aclose()
                    if core.is_error_status(response.status):
                        raise core.error_from_body(response.status, body, response.headers)
                    return core.result_from_body(response.status, body, response.headers)
                except WenxinError as error:
                    await self._recover(core, error, token)
        finally:
            self._settle(reservation, core)

    def _new_chat(self) -> AsyncChat:
        return AsyncChat(self)

    def _new_transport(self, limits: Limits | None) -> AsyncTransport:
        from ._transport_aiohttp import AiohttpTransport

        return AiohttpTransport(limits)

    def _new_limiter(self, limits: RateLimits, max_wait: float) -> AsyncRateLimiter:
        return AsyncRateLimiter(limits, max_wait=max_wait)

    def _new_token_manager(self, cache: TokenCache | None, key: str | None) -> AsyncTokenManager:
        return AsyncTokenManager(self._fetch_token, cache=cache, cache_key=key)
