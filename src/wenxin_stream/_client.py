# Generated from src/wenxin_stream/_async_client.py by scripts/unasync.py — do not edit.
"""An ERNIE client: :class:`Client`, its ``chat`` namespace and :class:`ChatStream`.

A thin I/O shell around :class:`~wenxin_stream._stream_core.StreamCore`: it sends each attempt
through the pooled transport, reads the body piece by piece with the timeout the core computes,
and sleeps, through the injected ``sleep``, where the core says to wait. Every decision is the
core's; what is left here is the loop.

The sync and async clients are twins: the sync one is generated from the async one by
``scripts/unasync.py`` (renames only; see its table), and ``scripts/check`` fails when it is
stale. The async client reads with aiohttp, whose small per-response buffer stops reading from
the socket while it is full, so a slow consumer slows the server down instead of filling memory
(backpressure); cancelling the consuming task closes the HTTP response at once. The sync client
reads with urllib3, one blocking read at a time with the socket timeout set per read.
"""

from __future__ import annotations

import random
from collections.abc import Generator, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any

from ._client_base import ClientBase, StreamView
from ._clock import Sleep
from ._events import (
    ChatResult,
    FinishEvent,
    FunctionCallEvent,
    ReasoningDelta,
    StreamEvent,
    TextDelta,
    ToolCallDelta,
)
from ._exceptions import (
    APIConnectionError,
    APITimeoutError,
    ClientRateLimitTimeout,
    MalformedResponseError,
    WenxinError,
)
from ._ratelimit import RateLimits, Reservation
from ._ratelimit_sync import SyncRateLimiter
from ._requests import chat_params
from ._stream_core import MAX_BODY, MAX_ERROR_BODY, StreamCore
from ._synchronization import sync_sleep
from ._tokens import AccessToken, TokenCache
from ._tokens_sync import TokenManager
from ._transport import HTTPRequest, Limits, SyncResponse, SyncTransport

__all__ = ["Chat", "ChatStream", "Client"]

_ANSWER_STARTS = (TextDelta, ToolCallDelta, FunctionCallEvent, FinishEvent)
"""Events that end the reasoning phase of a stream (see ``reasoning_stream``)."""


def _read_all(response: SyncResponse, core: StreamCore, limit: int) -> bytes:
    body = bytearray()
    while True:
        seconds, kind = core.read_timeout()
        try:
            data = response.read(seconds)
        except TimeoutError:
            raise core.timed_out(kind) from None
        if not data:
            return bytes(body)
        body += data
        if len(body) > limit:
            raise MalformedResponseError(f"response body larger than {limit} bytes", None)


class ChatStream(StreamView):
    """One streamed answer, as a context manager that iterates typed events.

    ::

        with client.chat.stream(messages=[{"role": "user", "content": "你好"}]) as stream:
            for text in stream.text_stream:
                print(text, end="", flush=True)
            answer = stream.get_final_message()
        print(answer.usage)

    A reasoning model thinks first: its thinking arrives as
    :class:`~wenxin_stream.ReasoningDelta` events, which ``text_stream`` leaves out.
    ``reasoning_stream`` yields that thinking and stops where the answer begins, so the two
    read one after the other::

        with client.chat.stream(model="ernie-x1.1", messages=question) as stream:
            for thought in stream.reasoning_stream:
                print(thought, end="")  # 思考过程
            for text in stream.text_stream:
                print(text, end="")
            answer = stream.get_final_message()  # .reasoning, .content, .tool_calls

    Leaving the block — at the end, by ``break``, by an exception, by task cancellation or by
    Ctrl-C — closes the HTTP response at once. Afterwards :attr:`end_reason` says how the
    stream ended (exactly one :class:`~wenxin_stream.EndReason`); errors raised while iterating
    carry the text already delivered in ``partial_text`` and the same ``end_reason``.
    """

    def __init__(self, client: Client, core: StreamCore) -> None:
        self._client = client
        self._core = core
        self._iterator = client._run_stream(core)
        self._held: StreamEvent | None = None  # the event that ended reasoning_stream

    def __enter__(self) -> ChatStream:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __iter__(self) -> Iterator[StreamEvent]:
        if self._held is None:
            return self._iterator
        return self._resumed()

    def __next__(self) -> StreamEvent:
        held = self._held
        if held is not None:
            self._held = None
            return held
        return self._iterator.__next__()

    def _resumed(self) -> Iterator[StreamEvent]:
        held, self._held = self._held, None
        if held is not None:
            yield held
        yield from self._iterator

    @property
    def text_stream(self) -> Iterator[str]:
        """Only the text of the answer, piece by piece, as it arrives (never the reasoning)."""
        return self._texts()

    def _texts(self) -> Iterator[str]:
        held, self._held = self._held, None
        if type(held) is TextDelta:
            yield held.text
        for event in self._iterator:
            if type(event) is TextDelta:
                yield event.text

    @property
    def reasoning_stream(self) -> Iterator[str]:
        """The reasoning ("deep thinking") text, piece by piece, until the answer begins (its
        first text, tool call or finish); the rest of the stream is then left for
        ``text_stream`` or plain iteration. Yields nothing for a model that does not think."""
        return self._reasonings()

    def _reasonings(self) -> Iterator[str]:
        if self._held is not None:
            return  # the answer has already begun
        for event in self._iterator:
            if type(event) is ReasoningDelta:
                yield event.text
            elif isinstance(event, _ANSWER_STARTS):
                self._held = event
                return

    def until_done(self) -> None:
        """Consume the rest of the stream."""
        self._held = None
        for _ in self._iterator:
            pass

    def get_final_message(self) -> ChatResult:
        """Consume the rest of the stream and return the whole answer (with ``reasoning``,
        ``tool_calls`` and ``search_results`` when there are)."""
        self.until_done()
        return self._core.result()

    def close(self) -> None:
        """Stop reading and release the connection (idempotent)."""
        self._iterator.close()
        self._core.cancel()  # no effect when the stream already ended


class Chat:
    """``client.chat``: streamed (:meth:`stream`) and whole (:meth:`create`) answers."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def stream(
        self,
        *,
        messages: Sequence[Mapping[str, Any]] | str,
        model: str | None = None,
        endpoint: str | None = None,
        continue_on_error: bool | None = None,
        system: str | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        penalty_score: float | None = None,
        frequency_penalty: float | None = None,
        presence_penalty: float | None = None,
        stop: Sequence[str] | None = None,
        max_output_tokens: int | None = None,
        max_tokens: int | None = None,
        max_completion_tokens: int | None = None,
        response_format: str | Mapping[str, Any] | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
        tool_choice: str | Mapping[str, Any] | None = None,
        functions: Sequence[Mapping[str, Any]] | None = None,
        disable_search: bool | None = None,
        enable_citation: bool | None = None,
        enable_trace: bool | None = None,
        min_output_tokens: int | None = None,
        user_id: str | None = None,
        user_setting: Any = None,
        enable_system_memory: bool | None = None,
        system_memory_id: str | None = None,
        user: str | None = None,
        seed: int | None = None,
        repetition_penalty: float | None = None,
        parallel_tool_calls: bool | None = None,
        web_search: Mapping[str, Any] | None = None,
        metadata: Mapping[str, str] | None = None,
        enable_thinking: bool | None = None,
        thinking_budget: int | None = None,
        thinking_strategy: str | None = None,
        reasoning_effort: str | None = None,
        logprobs: bool | None = None,
        top_logprobs: int | None = None,
        stream_options: Mapping[str, Any] | None = None,
        include_usage: bool | None = None,
        extra_body: Mapping[str, Any] | None = None,
    ) -> ChatStream:
        """Start a streamed answer (see :class:`ChatStream`); no I/O until iterated.

        ``messages`` is the conversation (or one question as a string); ``model`` a model
        name (the client's default otherwise); ``endpoint`` a custom v1 endpoint;
        ``continue_on_error`` the client's continue mode for this stream only.

        Request parameters, each left out when ``None`` (``shared/ERNIE-PROTOCOL.md`` §1.4,
        ``shared/ERNIE-CURRENT.md`` §2–6). Both generations: ``system`` (on v2 a leading
        system message), ``temperature``, ``top_p``, ``penalty_score``,
        ``frequency_penalty``, ``presence_penalty``, ``stop``, the answer's length as
        ``max_output_tokens`` (v1's name), ``max_tokens`` or ``max_completion_tokens`` (v2's;
        one of the three), ``response_format``, ``tools``, ``tool_choice``. v1:
        ``functions``, ``disable_search``, ``enable_citation``, ``enable_trace``,
        ``min_output_tokens``, ``user_id``, ``user_setting``, ``enable_system_memory``,
        ``system_memory_id``. v2: ``user``, ``seed``, ``repetition_penalty``,
        ``parallel_tool_calls``, ``web_search``, ``metadata``, the thinking controls
        ``enable_thinking``, ``thinking_budget``, ``thinking_strategy``,
        ``reasoning_effort``, ``logprobs``, ``top_logprobs``, ``stream_options``,
        ``include_usage``. A field the other generation spells differently is translated
        (``user``/``user_id``, ``tools``/``functions``, ``web_search``/``disable_search``…),
        one it cannot honour is refused (``_dialects``). Anything else goes in
        ``extra_body``, merged into the request body as is; an unknown keyword is a
        :class:`TypeError`. The request is checked before anything is sent — against
        ERNIE's rules and, for a model of the catalogue, against what that model can
        honour (tools, web search, images, thinking, ``max_tokens``):
        :class:`~wenxin_stream.InvalidRequestError` names the field to fix.
        """
        core = self._client._core(
            messages,
            model=model,
            endpoint=endpoint,
            stream=True,
            params=chat_params(locals()),
            extra_body=extra_body,
            continue_on_error=continue_on_error,
        )
        return ChatStream(self._client, core)

    def create(
        self,
        *,
        messages: Sequence[Mapping[str, Any]] | str,
        model: str | None = None,
        endpoint: str | None = None,
        system: str | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        penalty_score: float | None = None,
        frequency_penalty: float | None = None,
        presence_penalty: float | None = None,
        stop: Sequence[str] | None = None,
        max_output_tokens: int | None = None,
        max_tokens: int | None = None,
        max_completion_tokens: int | None = None,
        response_format: str | Mapping[str, Any] | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
        tool_choice: str | Mapping[str, Any] | None = None,
        functions: Sequence[Mapping[str, Any]] | None = None,
        disable_search: bool | None = None,
        enable_citation: bool | None = None,
        enable_trace: bool | None = None,
        min_output_tokens: int | None = None,
        user_id: str | None = None,
        user_setting: Any = None,
        enable_system_memory: bool | None = None,
        system_memory_id: str | None = None,
        user: str | None = None,
        seed: int | None = None,
        repetition_penalty: float | None = None,
        parallel_tool_calls: bool | None = None,
        web_search: Mapping[str, Any] | None = None,
        metadata: Mapping[str, str] | None = None,
        enable_thinking: bool | None = None,
        thinking_budget: int | None = None,
        thinking_strategy: str | None = None,
        reasoning_effort: str | None = None,
        logprobs: bool | None = None,
        top_logprobs: int | None = None,
        stream_options: Mapping[str, Any] | None = None,
        include_usage: bool | None = None,
        extra_body: Mapping[str, Any] | None = None,
    ) -> ChatResult:
        """Ask for a whole (non-stream) answer; the parameters are those of :meth:`stream`
        (``stream_options`` and ``include_usage`` are refused: they apply to streams only)."""
        core = self._client._core(
            messages,
            model=model,
            endpoint=endpoint,
            stream=False,
            params=chat_params(locals()),
            extra_body=extra_body,
        )
        return self._client._run_once(core)


class Client(ClientBase[Sleep]):
    """An ERNIE client: one connection pool, shared by every stream it opens.

    With no arguments it reads qianfan's environment variables (``QIANFAN_BEARER_TOKEN`` for
    v2; ``QIANFAN_AK``/``QIANFAN_SK`` or ``QIANFAN_ACCESS_TOKEN`` for v1;
    ``QIANFAN_ACCESS_KEY``/``QIANFAN_SECRET_KEY`` for IAM; ``QIANFAN_BASE_URL``,
    ``QIANFAN_CONSOLE_API_BASE_URL``, ``QIANFAN_IAM_BASE_URL``, ``QIANFAN_APP_ID``). Without
    any credentials it uses the embedded offline emulator and logs a warning
    (``emulator=False`` makes that an error). ``api="openai"`` with ``base_url=".../v1"`` (and
    ``api_key=`` if the server wants one) reaches any OpenAI-compatible server instead — vLLM,
    FastDeploy… serving ERNIE 4.5 — with the same events and errors. Share one client: the
    sync client across threads, the async one across the tasks of one event loop. ``clock``
    and ``sleep`` inject time (see :class:`~wenxin_stream._client_base.ClientBase`).
    """

    _transport: SyncTransport
    _limiter: SyncRateLimiter
    _tokens: TokenManager | None
    chat: Chat
    """Chat completions: ``client.chat.stream(...)`` and ``client.chat.create(...)``."""

    # -- public conveniences ---------------------------------------------------------------

    def stream_chat(
        self, messages: Sequence[Mapping[str, Any]] | str, **kwargs: Any
    ) -> Iterator[str]:
        """Stream only the text of an answer: ``for piece in client.stream_chat("你好")``
        (``kwargs`` as for ``chat.stream``)."""
        with self.chat.stream(messages=messages, **kwargs) as stream:
            yield from stream.text_stream

    def rate_limit_delay(self, estimate: int = 0) -> float:
        """Seconds a new request of about ``estimate`` tokens would now wait for the
        client-side rate limits — the configured ones, those the server's ``X-Ratelimit-*``
        headers set, and the pause after a rate-limit error (``0``: it would go at once)."""
        return self._limiter.delay(estimate)

    def close(self) -> None:
        """Close every pooled connection."""
        self._transport.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- the loop --------------------------------------------------------------------------

    def _fetch_token(self) -> AccessToken:
        auth: Any = self._auth
        request: HTTPRequest = auth.token_request(self._wall())
        response = self._transport.open(
            request,
            connect_timeout=self.timeout.connect,
            head_timeout=self.timeout.first_token,
        )
        try:
            body = bytearray()
            while data := response.read(self.timeout.idle):
                body += data
                if len(body) > MAX_ERROR_BODY:
                    raise MalformedResponseError("token response too large", None)
        except TimeoutError:
            raise APITimeoutError("idle", timeout=self.timeout.idle) from None
        finally:
            response.close()
        token: AccessToken = auth.parse_token(response.status, bytes(body), self._wall())
        return token

    def _open(self, core: StreamCore) -> tuple[SyncResponse, AccessToken | None]:
        token = self._tokens.get() if self._tokens is not None else None
        request = core.http_request(token, self._wall())
        try:
            response = self._transport.open(
                request, connect_timeout=self.timeout.connect, head_timeout=core.head_timeout()
            )
        except APITimeoutError as exc:
            raise core.head_timed_out(exc) from None
        self._limiter.update_from_headers(response.headers)
        return response, token

    def _recover(self, core: StreamCore, error: WenxinError, token: AccessToken | None) -> None:
        """Carry out the core's decision on a failed attempt: wait and return to try again,
        or raise."""
        decision = core.on_failure(error, random.random(), token)  # noqa: S311 - jitter
        if decision.pause is not None:
            self._limiter.on_rate_limited(decision.pause.retry_after, scope=decision.pause.scope)
        if decision.error is not None:
            raise decision.error
        if decision.invalidate is not None and self._tokens is not None:
            self._tokens.invalidate(decision.invalidate)
        if decision.delay > 0:
            self._sleep(decision.delay)

    def _reserve(self, core: StreamCore) -> Reservation:
        """Wait (bounded) for the client-side rate limits to allow the exchange."""
        try:
            return self._limiter.acquire(core.token_estimate())
        except ClientRateLimitTimeout as error:
            raise core.fail(error) from None

    def _settle(self, reservation: Reservation, core: StreamCore) -> None:
        """Record what the exchange cost (see :meth:`StreamCore.settlement`)."""
        tokens = core.settlement()
        if tokens is None:
            self._limiter.release(reservation)
        else:
            self._limiter.settle(reservation, tokens)

    def _run_stream(self, core: StreamCore) -> Generator[StreamEvent, None, None]:
        reservation = self._reserve(core)
        try:
            while True:
                token: AccessToken | None = None
                try:
                    response, token = self._open(core)
                    try:
                        if core.is_error_status(response.status):
                            body = _read_all(response, core, MAX_ERROR_BODY)
                            raise core.error_from_body(response.status, body, response.headers)
                        core.begin_body(response.headers)
                        while True:
                            seconds, kind = core.read_timeout()
                            try:
                                data = response.read(seconds)
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
                            yield from core.feed(data)
                        yield from core.finish()
                        return
                    finally:
                        response.close()
                except WenxinError as error:
                    self._recover(core, error, token)
        finally:
            core.cancel()  # no effect when the stream ended by itself
            self._settle(reservation, core)

    def _run_once(self, core: StreamCore) -> ChatResult:
        reservation = self._reserve(core)
        try:
            while True:
                token: AccessToken | None = None
                try:
                    response, token = self._open(core)
                    try:
                        body = _read_all(response, core, MAX_BODY)
                    finally:
                        response.close()
                    if core.is_error_status(response.status):
                        raise core.error_from_body(response.status, body, response.headers)
                    return core.result_from_body(response.status, body, response.headers)
                except WenxinError as error:
                    self._recover(core, error, token)
        finally:
            self._settle(reservation, core)

    def _new_chat(self) -> Chat:
        return Chat(self)

    def _new_transport(self, limits: Limits | None) -> SyncTransport:
        from ._transport_urllib3 import Urllib3Transport

        return Urllib3Transport(limits)

    def _new_limiter(self, limits: RateLimits, max_wait: float) -> SyncRateLimiter:
        return SyncRateLimiter(limits, max_wait=max_wait, clock=self._clock, sleep=self._sleep)

    def _new_token_manager(self, cache: TokenCache | None, key: str | None) -> TokenManager:
        return TokenManager(self._fetch_token, clock=self._wall, cache=cache, cache_key=key)

    def _default_sleep(self) -> Sleep:
        return sync_sleep
