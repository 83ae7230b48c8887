"""One chat exchange's logic — attempts, parsing, delivery, end reason — with no I/O.

The sync :class:`~wenxin_stream.Client` and the async :class:`~wenxin_stream.AsyncClient`
run the same loop, differing only in how they wait and read (STYLE.md principle 4)::

    reservation = limiter.acquire(core.token_estimate())
    while True:
        request = core.http_request(token, now)     # build (and authorize) this attempt
        response = transport.open(request, …)       # the shell's I/O
        if core.is_error_status(response.status):
            raise core.error_from_body(…)           # whole (bounded) body → APIError
        while data := response.read(core.read_timeout(now)):
            yield from core.feed(data)              # bytes → typed events, delivered
        yield from core.finish()                    # terminal event seen, or an error
      on error:
        decision = core.on_failure(error, rand, token)  # retry / refresh / continue / raise
        (apply decision.pause to the limiter, raise decision.error, forget
         decision.invalidate, sleep decision.delay)
    finally:
        limiter.settle(reservation, core.settlement()) or release it when that is None

Every choice in that loop is made here and returned as plain data (:class:`Decision`, the
numbers of :meth:`StreamCore.token_estimate` and :meth:`StreamCore.settlement`); the shells only
carry it out — wait, read, sleep — which is why the sync client can be generated from the async
one by renaming.

The rules the core enforces:

* **Nothing is repeated.** An attempt is replayed (with backoff, per the RetryPolicy) only while
  no event has reached the caller. Afterwards the error is raised with ``partial_text`` (all
  text delivered) and ``end_reason`` attached — or, in opt-in continue mode, the conversation
  is resent with the partial answer and only new text is delivered (see ``_continuation``).
* **Token expiry** (v1 110/111, v2 401 with a minted bearer) invalidates the token and replays
  once, before anything was delivered.
* **Exactly one end reason** per exchange: from the finish reason when the terminal event
  arrives, from the error otherwise, CANCELLED when the caller leaves early.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from ._accumulate import Accumulator
from ._continuation import OverlapTrimmer, continuation_messages
from ._credentials import Authenticator
from ._events import (
    ChatResult,
    EndReason,
    FinishEvent,
    StreamEvent,
    TextDelta,
    Usage,
    end_reason_for,
)
from ._exceptions import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    ClientRateLimitTimeout,
    IncompleteStreamError,
    RateLimitError,
    TimeoutKind,
    WenxinError,
    is_retryable,
)
from ._ratelimit import RateLimitScope, rate_limit_scope
from ._requests import PreparedRequest, build_openai_chat, build_v1_chat, build_v2_chat
from ._retry import RetryPolicy
from ._timeouts import Timeout, read_timeout
from ._token_estimate import estimate_prompt_tokens, estimate_text_tokens, estimate_tokens
from ._tokens import AccessToken
from ._transport import HTTPRequest
from ._wire_openai import OpenAIStreamParser, parse_openai_body
from ._wire_v1 import V1StreamParser, parse_v1_body
from ._wire_v2 import V2StreamParser, parse_v2_body

ApiName = Literal["v1", "v2", "openai"]
"""The kind of upstream: Qianfan v1, Qianfan v2, or any OpenAI-compatible server."""

_BODY_PARSERS = {"v1": parse_v1_body, "v2": parse_v2_body, "openai": parse_openai_body}
_STREAM_PARSERS: dict[str, type[V1StreamParser | V2StreamParser]] = {
    "v1": V1StreamParser,
    "v2": V2StreamParser,
    "openai": OpenAIStreamParser,
}
MAX_ERROR_BODY = 1 << 20
"""Most bytes of an error (or non-stream) body read into memory."""
MAX_BODY = 16 << 20
"""Most bytes of a non-stream answer read into memory."""
AFTER_END_WAIT = 0.5
"""Seconds a stream waits for the end of its body once the terminal event has arrived; a
server slow to close (or closing uncleanly) then does not turn a whole answer into an error."""


@dataclass(frozen=True, slots=True)
class ChatCall:
    """What the caller asked for: API generation, model (or v1 endpoint), messages, params,
    and the fields ``extra_body`` adds to the request body as they are."""

    api: ApiName
    model: str | None
    messages: tuple[Mapping[str, Any], ...]
    params: Mapping[str, Any]
    endpoint: str | None = None
    stream: bool = True
    extra_body: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class RateLimitPause:
    """The server refused for its rate: pause the client-side limiter for ``retry_after``
    seconds (``None``: unknown) and block the budget ``scope`` names (``None``: none known)."""

    retry_after: float | None
    scope: RateLimitScope | None


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do after a failed attempt, in this order: apply ``pause`` to the rate limiter
    (when set); ``raise`` ``error``; or forget the rejected token ``invalidate`` (when set) and
    ``retry`` / ``refresh`` (the token) / ``continue`` (resume the answer) after ``delay``
    seconds."""

    action: Literal["retry", "refresh", "continue", "raise"]
    delay: float = 0.0
    error: WenxinError | None = None
    invalidate: AccessToken | None = None
    pause: RateLimitPause | None = None


AttemptKind = Literal["first", "retry", "continuation"]


@dataclass(frozen=True, slots=True)
class AttemptUsage:
    """What one upstream request of an exchange cost (:attr:`StreamCore.attempt_usages`).

    ``attempt`` counts the exchange's requests from 1; ``kind`` is ``first``, ``retry`` (sent
    again — after a failure or a refreshed token — before anything reached the caller) or
    ``continuation`` (continue mode: the partial answer resent); ``usage`` is what the
    upstream reported for this request (``None``: it reported nothing, e.g. the stream broke
    first); ``estimate`` is then ``_token_estimate``'s figure for it — this request's prompt
    and the text and reasoning it delivered — the figure to count instead (``None`` when the
    usage was reported: estimating costs a pass over the text, about 1 µs a character, so it
    is made only when needed).
    """

    attempt: int
    kind: AttemptKind
    usage: Usage | None
    estimate: Usage | None = None

    @property
    def counted(self) -> Usage:
        """What to count for this request: the reported usage, else the estimate."""
        counted = self.usage or self.estimate
        assert counted is not None  # one of the two is always set
        return counted


def end_reason_of_error(error: BaseException, *, body_started: bool) -> EndReason:
    """The end reason an error gives a stream (a client-side rate-limit wait that ran out of
    time counts as timed out: the caller's bounded wait expired)."""
    if isinstance(error, APITimeoutError | ClientRateLimitTimeout):
        return EndReason.TIMED_OUT
    if isinstance(error, IncompleteStreamError):
        return EndReason.INCOMPLETE
    if isinstance(error, APIConnectionError):
        return EndReason.INCOMPLETE if body_started else EndReason.UPSTREAM_ERROR
    return EndReason.UPSTREAM_ERROR


class StreamCore:
    """The state of one exchange (see the module docstring). Not thread-safe; one per stream."""

    # slotted: one per open stream, in the SDK and in every stream the server relays (its
    # ~30 attributes as an instance dict were ~1.4 KB of each; bench/MEMORY.md)
    __slots__ = (
        "_attempt_open",
        "_attempt_started",
        "_body_started",
        "_clock",
        "_messages",
        "_next_kind",
        "_parser",
        "_prepared",
        "_trimmer",
        "_whole",
        "accumulator",
        "attempt_usages",
        "attempts",
        "auth",
        "base_url",
        "call",
        "continuations",
        "continue_mode",
        "delivered",
        "end_reason",
        "ended_at",
        "error",
        "first_token_at",
        "max_continuations",
        "refreshed",
        "response_headers",
        "retries",
        "retry",
        "started_at",
        "timeout",
    )

    def __init__(
        self,
        call: ChatCall,
        *,
        base_url: str,
        auth: Authenticator,
        retry: RetryPolicy,
        timeout: Timeout,
        continue_mode: bool = False,
        max_continuations: int = 2,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.call = call
        self.base_url = base_url
        self.auth = auth
        self.retry = retry
        self.timeout = timeout
        self.continue_mode = continue_mode
        self.max_continuations = max_continuations
        self._clock = clock
        self._prepared = self._prepare(call.messages)  # validates before any I/O
        self._messages: Sequence[Mapping[str, Any]] = call.messages
        self._next_kind: AttemptKind = "first"
        self._attempt_open: tuple[AttemptKind, int, int, Usage | None, bool] | None = None
        self.attempt_usages: list[AttemptUsage] = []
        """One entry per upstream request that generated something (text, reasoning or a
        usage report), in order; a request that failed before generating anything cost no
        tokens and has none. Complete once the exchange has ended."""
        self.attempts = 0
        self.retries = 0
        self.continuations = 0
        self.refreshed = False
        self.delivered = False
        self.accumulator = Accumulator()
        self._whole: ChatResult | None = None
        self.end_reason: EndReason | None = None
        self.error: WenxinError | None = None
        self.response_headers: Mapping[str, str] = {}
        self.started_at = clock()
        self.first_token_at: float | None = None
        self.ended_at: float | None = None
        self._attempt_started = self.started_at
        self._body_started = False
        self._parser: V1StreamParser | V2StreamParser | None = None
        self._trimmer: OverlapTrimmer | None = None

    # -- building requests ---------------------------------------------------------------

    def _prepare(self, messages: Sequence[Mapping[str, Any]]) -> PreparedRequest:
        call = self.call
        if call.api == "v1":
            return build_v1_chat(
                call.model,
                list(messages),
                stream=call.stream,
                endpoint=call.endpoint,
                extra_body=call.extra_body,
                **call.params,
            )
        build = build_openai_chat if call.api == "openai" else build_v2_chat
        return build(
            call.model or "",
            list(messages),
            stream=call.stream,
            extra_body=call.extra_body,
            **call.params,
        )

    @property
    def needs_token(self) -> bool:
        """Whether this exchange's credential fetches tokens."""
        return bool(self.auth.needs_token)

    def http_request(self, token: AccessToken | None, now: float) -> HTTPRequest:
        """The HTTP request of the next attempt, authorized with ``token``."""
        if self.attempts == 0:
            self.started_at = self._clock()  # the exchange (TTFT, deadline) starts here
        self._close_attempt()
        self.attempts += 1
        acc = self.accumulator
        self._attempt_open = (
            self._next_kind,
            len(acc.text),
            len(acc.reasoning),
            acc.usage,
            self.delivered,
        )
        self._attempt_started = self._clock()
        self._body_started = False
        self._parser = None
        prepared = self._prepared
        url = self.base_url + prepared.path
        headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
        if not prepared.stream:
            headers["Accept"] = "application/json"
        request = HTTPRequest(prepared.method, url, headers, prepared.body_bytes())
        return self.auth.authorize(request, token, now)

    # -- reading -------------------------------------------------------------------------

    def head_timeout(self) -> float | None:
        """How long to wait for the response headers (raises APITimeoutError when that budget
        is already spent, e.g. the deadline passed while a token was fetched)."""
        seconds, kind = self.read_timeout(body_started=False)
        if seconds is not None and seconds <= 0:
            raise self.timed_out(kind)
        return seconds

    def head_timed_out(self, error: APITimeoutError) -> APITimeoutError:
        """The error for a transport whose wait for the headers ran out: the transport only
        knows it waited ``head_timeout()``, which is the deadline when that came first."""
        _, kind = self.read_timeout(body_started=False)
        if error.timeout_kind == "first_token" and kind == "deadline":
            return self.timed_out(kind)
        return error

    def read_timeout(self, *, body_started: bool | None = None) -> tuple[float | None, TimeoutKind]:
        """How long the next read may wait, and which limit that is."""
        seconds, kind = read_timeout(
            self.timeout,
            now=self._clock(),
            started=self._attempt_started,
            body_started=self._body_started if body_started is None else body_started,
            exchange_started=self.started_at,
        )
        if self.complete and (seconds is None or seconds > AFTER_END_WAIT):
            seconds = AFTER_END_WAIT
        return seconds, kind

    @property
    def complete(self) -> bool:
        """Whether this attempt's terminal event has arrived (v1 ``is_end``, v2 ``[DONE]``):
        the answer is whole, and a read that then times out or breaks ends the stream
        normally (the wire layer ignores anything after the terminal event, too)."""
        return self._parser is not None and self._parser.finished

    def timed_out(self, kind: TimeoutKind) -> APITimeoutError:
        """The error for a read that waited its whole budget."""
        limit = {
            "connect": self.timeout.connect,
            "first_token": self.timeout.first_token,
            "idle": self.timeout.idle,
            "deadline": self.timeout.deadline,
        }[kind]
        return APITimeoutError(kind, timeout=limit)

    @staticmethod
    def is_error_status(status: int) -> bool:
        """A status whose body is an error document, not the answer."""
        return not 200 <= status < 300

    def begin_body(self, headers: Mapping[str, str]) -> None:
        """The response headers of a successful status have arrived."""
        self.response_headers = headers
        if self.call.stream:
            self._parser = _STREAM_PARSERS[self.call.api](headers=headers)

    def error_from_body(self, status: int, body: bytes, headers: Mapping[str, str]) -> WenxinError:
        """The error an error status's body describes."""
        try:
            _BODY_PARSERS[self.call.api](status, body, headers=headers)
        except WenxinError as exc:
            return exc
        return APIError(  # a 2xx body parsed fine but the status said error: still an error
            f"HTTP {status}", api=self.call.api, code=None, status_code=status, headers=headers
        )

    def result_from_body(self, status: int, body: bytes, headers: Mapping[str, str]) -> ChatResult:
        """A non-stream answer (raises the APIError a v1 200 body may carry)."""
        result = _BODY_PARSERS[self.call.api](status, body, headers=headers)
        self._whole = result
        self._end(end_reason_for(result.finish_reason))
        return result

    def feed(self, data: bytes) -> Iterator[StreamEvent]:
        """Body bytes in, the events to deliver out (raises on a protocol or API error at
        once). An event counts as delivered — accumulated into :attr:`text` and the result —
        only when the caller takes it from the iterator: one read may hold hundreds of
        events, and a caller that stops after a few has not been shown the rest."""
        assert self._parser is not None
        if not self._body_started:
            self._body_started = True
        events = self._parser.feed(data)
        return self._hand_over(self._trim(events) if self._trimmer is not None else events)

    def _hand_over(self, events: list[StreamEvent]) -> Iterator[StreamEvent]:
        for event in events:
            self._take(event)
            yield event

    def finish(self) -> list[StreamEvent]:
        """The body ended: the last events (raises IncompleteStreamError without a terminal)."""
        assert self._parser is not None
        events = self._trim(self._parser.close()) if self._trimmer else self._parser.close()
        if self._trimmer is not None:
            held = self._trimmer.flush()  # a continuation shorter than the decision window
            if held:
                events = [TextDelta(held), *events]
        for event in events:
            self._take(event)
        self._end(end_reason_for(self.accumulator.finish_reason))
        return events

    def _take(self, event: StreamEvent) -> None:
        """``event`` reaches the caller now."""
        self.delivered = True
        self.accumulator.add(event)
        if self.first_token_at is None and type(event) is TextDelta:
            self.first_token_at = self._clock()

    def _trim(self, events: list[StreamEvent]) -> list[StreamEvent]:
        trimmer = self._trimmer
        assert trimmer is not None
        out: list[StreamEvent] = []
        for event in events:
            if type(event) is TextDelta:
                text = trimmer.push(event.text)
                if text:
                    out.append(TextDelta(text))
            else:
                if type(event) is FinishEvent:
                    text = trimmer.flush()
                    if text:
                        out.append(TextDelta(text))
                out.append(event)
        return out

    # -- failures and endings ------------------------------------------------------------

    @property
    def text(self) -> str:
        """All text delivered so far."""
        return self.accumulator.text

    def on_failure(
        self, error: WenxinError, rand: float, token: AccessToken | None = None
    ) -> Decision:
        """Decide what follows a failed attempt (see the module docstring): ``rand`` in
        [0, 1) draws the backoff's jitter, ``token`` is the access token the attempt used."""
        self._close_attempt()
        self._next_kind = "retry"
        pause = None
        if isinstance(error, RateLimitError):
            pause = RateLimitPause(error.retry_after, rate_limit_scope(error))
        token_error = isinstance(error, APIError) and error.token_expired and self.needs_token
        if token_error and not self.refreshed and not self.delivered:
            self.refreshed = True
            return Decision("refresh", invalidate=token, pause=pause)
        if not self.delivered:
            delay = self.retry.delay(self.retries + 1, error, rand)
            if delay is not None and not self._past_deadline(delay):
                self.retries += 1
                return Decision("retry", delay, pause=pause)
        elif self._can_continue(error):
            delay = self.retry.delay(self.continuations + 1, error, rand)
            if delay is not None and not self._past_deadline(delay):
                self.continuations += 1
                self._messages = continuation_messages(self.call.messages, self.text)
                self._prepared = self._prepare(self._messages)
                self._next_kind = "continuation"
                self._trimmer = OverlapTrimmer(self.text)
                return Decision("continue", delay, pause=pause)
        return Decision("raise", error=self.fail(error), pause=pause)

    def _past_deadline(self, delay: float) -> bool:
        """Whether another attempt after ``delay`` seconds would start past the deadline."""
        deadline = self.timeout.deadline
        return deadline is not None and self._clock() + delay >= self.started_at + deadline

    def _can_continue(self, error: WenxinError) -> bool:
        result = self.accumulator.result()
        return (
            self.continue_mode
            and self.continuations < self.max_continuations
            and is_retryable(error)
            and bool(self.text)
            and not result.tool_calls
            and result.function_call is None
            and not result.need_clear_history
        )

    def fail(self, error: WenxinError) -> WenxinError:
        """Record ``error`` as how this exchange ended and attach what was delivered."""
        # A 2xx stream response that began (its parser exists) and then broke is incomplete,
        # even when the break came before its first body byte.
        began = self._body_started or self._parser is not None
        reason = end_reason_of_error(error, body_started=began)
        error.partial_text = self.text
        error.end_reason = reason
        self.error = error
        self._end(reason)
        return error

    def cancel(self) -> None:
        """The caller left before the end (break, exception, cancellation, Ctrl-C)."""
        self._end(EndReason.CANCELLED)

    def _end(self, reason: EndReason) -> None:
        if self.end_reason is None:
            self.end_reason = reason
            self.ended_at = self._clock()
        self._close_attempt()

    def _close_attempt(self) -> None:
        """Account for the attempt in flight (once): an :class:`AttemptUsage` when it
        generated something. Per attempt, never per chunk."""
        opened, self._attempt_open = self._attempt_open, None
        if opened is None:
            return
        kind, text_at, reasoning_at, usage_before, delivered_before = opened
        usage = self._usage()
        if usage is not None and usage is not usage_before:  # this request reported it
            self.attempt_usages.append(AttemptUsage(self.attempts, kind, usage))
            return
        whole = self._whole
        if whole is not None:  # a whole (non-stream) answer
            text, reasoning = whole.content, whole.reasoning
        else:
            acc = self.accumulator
            text, reasoning = acc.text[text_at:], acc.reasoning[reasoning_at:]
        if not (text or reasoning or (self.delivered and not delivered_before)):
            return  # it generated nothing: it cost nothing
        prompt = estimate_prompt_tokens(self._messages)
        completion = estimate_text_tokens(text) + estimate_text_tokens(reasoning)
        estimate = Usage(prompt, completion, prompt + completion)
        self.attempt_usages.append(AttemptUsage(self.attempts, kind, None, estimate))

    # -- rate-limit accounting -----------------------------------------------------------

    def token_estimate(self) -> int:
        """Tokens to reserve for one attempt: the prompt plus a margin for the answer."""
        params = self.call.params
        answer = (
            params.get("max_output_tokens")
            or params.get("max_tokens")
            or params.get("max_completion_tokens")
        )
        if isinstance(answer, int) and not isinstance(answer, bool) and answer > 0:
            return estimate_tokens(self.call.messages, answer_tokens=answer)
        return estimate_tokens(self.call.messages)

    @property
    def generated(self) -> bool:
        """Whether the server generated (part of) an answer: text was delivered, or usage or
        a whole answer came back. An error before any text cost no tokens."""
        return self.delivered or self._usage() is not None

    def tokens_used(self) -> int:
        """Tokens an attempt cost: the usage the server reported, else the estimate
        (``_token_estimate``) of the prompt plus the text delivered (the server counts a
        broken stream too)."""
        usage = self._usage()
        if usage is not None:
            return usage.total_tokens
        return estimate_prompt_tokens(self.call.messages) + estimate_text_tokens(self.text)

    def settlement(self) -> int | None:
        """What the exchange's rate-limit reservation settles at once it is over: the tokens
        used (:meth:`tokens_used`), or ``None`` when the server generated nothing — release the
        reservation's tokens then. One reservation covers a request and its retries: a retry is
        paced by the server's ``Retry-After`` and the backoff, not queued behind its own first
        attempt."""
        return self.tokens_used() if self.generated else None

    # -- results -------------------------------------------------------------------------

    def result(self) -> ChatResult:
        """The whole non-stream answer, or everything delivered so far, folded into one
        :class:`ChatResult`."""
        return self._whole if self._whole is not None else self.accumulator.result()

    def _usage(self) -> Usage | None:
        """``result().usage`` without folding the result (an end asks it several times)."""
        return self._whole.usage if self._whole is not None else self.accumulator.usage

    @property
    def time_to_first_token(self) -> float | None:
        """Seconds from the first request to the first text, if any text came."""
        if self.first_token_at is None:
            return None
        return self.first_token_at - self.started_at

    @property
    def elapsed(self) -> float:
        """Seconds from the first request to the end (or to now, while running)."""
        end = self.ended_at if self.ended_at is not None else self._clock()
        return end - self.started_at
