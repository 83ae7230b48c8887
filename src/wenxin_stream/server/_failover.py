"""One answer across channels: failover before the first token, continuation after it.

Theory of operation
===================

:class:`FailoverStream` is what a generation reads when the gateway has channels: the same
shape as the SDK's :class:`~wenxin_stream.AsyncChatStream` (an async context manager that
iterates typed events, then tells its ``end_reason``), made of one or more *upstream
requests*, each an SDK stream on one channel picked by :meth:`Channels.pick`::

    request 1 on A ──✗ before any event ──► request 2 on B ── text … text ──✗ cut
                                                              │
          request 3 on C: the conversation + B's partial answer + "继续" ◄┘
          (seam trimmed: only new text is delivered)  ── text … finish ✓

- **Before the first event**, a failure the error table does not blame on the client
  (``_errors.blame``: a rate limit, a quota, anything upstream) moves the request to the next
  channel, as long as the answer has made fewer than ``attempts`` upstream requests and its
  ``deadline`` has not passed. A client error (every other 4xx row) is raised at once: no
  channel would take it.
- **After it** (text was delivered), such a failure continues the answer on another channel
  with the SDK's continue mode: :func:`~wenxin_stream._continuation.continuation_messages`
  (the partial answer as an assistant turn, then "继续"), and an
  :class:`~wenxin_stream._continuation.OverlapTrimmer` that drops the continuation's repeat of
  the seam. The continuation's own thinking is dropped (the answer's was shown). An answer
  with tool calls, a function call, or nothing but thinking is not continued (as in the SDK).
- What is finally raised carries the answer's whole ``partial_text`` and, when text was
  delivered, the end reason ``incomplete``.

Every upstream request is recorded as an :class:`UpstreamRequest` (channel, upstream model,
outcome, usage when the upstream reported it, characters delivered, whether it continued the
answer) in :attr:`FailoverStream.requests`, in order: the hook for per-channel spend (each
upstream request counted once), and :attr:`FailoverStream.channels` is what the stored
message records. Each channel's breaker and counters learn every outcome (``_channels``).

**The per-chunk path.** Every chunk of every answer goes through this class, so it does
nothing per chunk once the first shown event is out: the events of the SDK stream are passed
straight through, and what the request delivered (its text, its usage, whether it made a
tool or function call) is read once from the SDK stream's own record when the request ends,
fails or is left (:meth:`FailoverStream._adopt`). Only a continuation after a mid-stream cut
looks at each event (the seam trimmed, its thinking dropped). ``bench/failover_cost.py``
measures what is left: the one extra generator step per chunk.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from dataclasses import dataclass
from time import perf_counter
from types import TracebackType
from typing import Any, Protocol

from .._async_client import AsyncChatStream
from .._continuation import OverlapTrimmer, continuation_messages
from .._events import (
    EndReason,
    FinishEvent,
    FunctionCallEvent,
    ReasoningDelta,
    SearchInfoEvent,
    StreamEvent,
    TextDelta,
    ToolCallDelta,
    Usage,
    UsageEvent,
)
from .._exceptions import InvalidRequestError, WenxinError
from .._stream_core import AttemptKind, AttemptUsage
from ._channels import Channel, Channels
from ._errors import blame

__all__ = ["AnswerStream", "FailoverStream", "UpstreamRequest"]

_CALLS = (ToolCallDelta, FunctionCallEvent)

_VISIBLE = frozenset({TextDelta, ReasoningDelta, ToolCallDelta, FunctionCallEvent, SearchInfoEvent})
"""Events a reader shows (the generation logs them): once one is delivered, the answer can
no longer start again elsewhere, only be continued."""


class AnswerStream(Protocol):
    """What a generation reads: the SDK's stream, or a :class:`FailoverStream`."""

    @property
    def end_reason(self) -> EndReason | None:
        """How the stream ended (once it has)."""

    async def __aenter__(self) -> AsyncIterator[StreamEvent]: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


@dataclass(slots=True)
class UpstreamRequest:
    """One upstream request of an answer. ``outcome``: ``ok``, ``failed``, ``busy``,
    ``client_error``, ``cancelled`` (``None`` while it runs); ``usage``: as the upstream
    reported it (``None``: it reported none, e.g. it was cut); ``chars``: answer text it
    delivered (after the seam was trimmed); ``continued``: it continued a cut answer."""

    channel: str
    model: str
    continued: bool = False
    outcome: str | None = None
    usage: Usage | None = None
    chars: int = 0
    error: str | None = None


class FailoverStream:
    """An answer over the gateway's channels (see the module docstring). Build it with
    :meth:`open`, which picks the first channel and checks the request before any I/O."""

    def __init__(
        self,
        channels: Channels,
        messages: list[dict[str, Any]],
        model: str,
        params: Mapping[str, Any],
        *,
        attempts: int,
        deadline: float,
        first: tuple[Channel, bool, AsyncChatStream],
    ) -> None:
        self._channels = channels
        self._messages = messages
        self._model = model
        self._params = params
        self._attempts = attempts
        self._deadline = perf_counter() + deadline
        self._first: tuple[Channel, bool, AsyncChatStream] | None = first
        self._texts: list[str] = []
        """The text of each upstream request that ended, and of the continuation's events."""
        self._live: AsyncChatStream | None = None
        """The request being passed straight through (its text is the SDK stream's)."""
        self._calls = False
        self._tried: set[str] = set()
        self._iterator: AsyncGenerator[StreamEvent, None] | None = None
        self.delivered = False
        """Whether an event the reader shows (text, thinking, a call, sources) was
        delivered: from then on the answer can only be continued."""
        self.end_reason: EndReason | None = None
        self.requests: list[UpstreamRequest] = []
        self._ledger: list[tuple[UpstreamRequest, AsyncChatStream]] = []
        """Every upstream request of the answer, in order."""

    @classmethod
    def open(
        cls,
        channels: Channels,
        messages: list[dict[str, Any]],
        model: str,
        params: Mapping[str, Any],
        *,
        attempts: int,
        deadline: float,
    ) -> FailoverStream:
        """The answer's stream, its first channel picked and its request checked.

        Raises:
            InvalidRequestError: the request breaks the first channel's rules.
            ClientRateLimitTimeout, NoChannelError: no channel can take it now.
        """
        channel, probe = channels.pick(model, set())
        try:
            stream = channel.open_stream(messages, model, params)
        except InvalidRequestError:
            channels.ended(channel, "client_error", probe=probe)
            raise
        return cls(
            channels,
            messages,
            model,
            params,
            attempts=attempts,
            deadline=deadline,
            first=(channel, probe, stream),
        )

    def __del__(self) -> None:
        # Never entered nor closed (the request failed between its stream's creation and
        # the generation's start): the first channel's slot — perhaps its breaker's one
        # probe — is given back, so a half-open channel is never left waiting for it.
        first = self._first
        if first is not None:
            self._first = None
            self._channels.ended(first[0], "cancelled", probe=first[1])

    @property
    def first_channel(self) -> str:
        """The channel of the answer's first upstream request (known once opened; ``""``
        for a stream closed before it went)."""
        if self.requests:
            return self.requests[0].channel
        first = self._first
        return first[0].name if first is not None else ""

    @property
    def channels(self) -> list[str]:
        """The channels that delivered part of the answer, in order."""
        return [r.channel for r in self.requests if r.chars or r.outcome == "ok"]

    @property
    def text(self) -> str:
        """The answer's text delivered so far."""
        live = self._live
        done = "".join(self._texts)
        return done if live is None else done + live.text

    async def __aenter__(self) -> FailoverStream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __aiter__(self) -> AsyncGenerator[StreamEvent, None]:
        if self._iterator is None:
            self._iterator = self._run()
        return self._iterator

    async def aclose(self) -> None:
        """Stop: the open upstream request is closed (idempotent)."""
        if self._iterator is not None:
            await self._iterator.aclose()
        elif self._first is not None:  # never iterated: the first request never went
            channel, probe, stream = self._first
            self._first = None
            await stream.aclose()
            self._channels.ended(channel, "cancelled", probe=probe)

    # -- the loop ------------------------------------------------------------------------------

    async def _run(self) -> AsyncGenerator[StreamEvent, None]:
        assert self._first is not None
        channel, probe, stream = self._first
        self._first = None
        trimmer: OverlapTrimmer | None = None
        while True:
            request = UpstreamRequest(channel.name, channel.model_for(self._model))
            request.continued = trimmer is not None
            self.requests.append(request)
            self._ledger.append((request, stream))
            self._tried.add(channel.name)
            started = perf_counter()
            try:
                async with stream:
                    if trimmer is None:
                        self._live = stream
                        try:
                            events = stream.__aiter__()
                            first = True
                            async for event in events:  # until the first event shown
                                if first:
                                    first = False
                                    self._channels.first_token(channel, perf_counter() - started)
                                if type(event) in _VISIBLE:
                                    self.delivered = True
                                    yield event
                                    break
                                yield event
                            async for event in events:  # then straight through: no work
                                yield event
                        finally:
                            self._live = None
                            self._adopt(request, stream)
                    else:  # a continuation: its text past the seam, its thinking dropped
                        first = True
                        async for event in stream:
                            if first:
                                first = False
                                self._channels.first_token(channel, perf_counter() - started)
                            if type(event) is TextDelta:
                                text = trimmer.push(event.text)
                                if text:
                                    yield self._text(request, text)
                                continue
                            if type(event) is ReasoningDelta:
                                continue  # the answer's thinking was shown already
                            if type(event) is FinishEvent:
                                held = trimmer.flush()
                                if held:
                                    yield self._text(request, held)
                            elif type(event) is UsageEvent:
                                request.usage = event.usage
                            elif isinstance(event, _CALLS):
                                self._calls = True
                            yield event
                        held = trimmer.flush()  # a continuation shorter than the decision window
                        if held:
                            yield self._text(request, held)
            except WenxinError as exc:
                request.error = str(getattr(exc, "code", None) or type(exc).__name__)
                who = blame(exc)
                outcome = {"client": "client_error", "busy": "busy"}.get(who, "failed")
                request.outcome = outcome
                self._channels.ended(channel, outcome, probe=probe, error=exc)
                if who == "client":
                    raise self._final(exc) from None
                mid_stream = self.delivered
                if mid_stream and not self._continuable():
                    raise self._final(exc) from None
                picked = self._next(exc)
                self._channels.failed_over(
                    channel, "mid_stream" if mid_stream else "before_first_token"
                )
                channel, probe, stream = picked
                if mid_stream:
                    trimmer = OverlapTrimmer(self.text)
                continue
            except BaseException:  # cancelled, or the reader left (GeneratorExit)
                request.outcome = "cancelled"
                self._channels.ended(channel, "cancelled", probe=probe)
                raise
            request.outcome = "ok"
            self._channels.ended(channel, "ok", probe=probe)
            self.end_reason = stream.end_reason
            return

    def _adopt(self, request: UpstreamRequest, stream: AsyncChatStream) -> None:
        """An untrimmed request ended (or failed, or was left): what it delivered, read once
        from the SDK stream's own record (its text, usage and calls) instead of per event."""
        seen = stream.snapshot()
        if seen.content:
            self._texts.append(seen.content)
            request.chars = len(seen.content)
        if seen.usage is not None:
            request.usage = seen.usage
        if seen.tool_calls or seen.function_call is not None:
            self._calls = True

    @property
    def usage_ledger(self) -> list[tuple[str, AttemptUsage]]:
        """What each upstream request cost, on which channel, in order: every channel's SDK
        ledger (a request that generated nothing is not in it), the first request of a later
        channel a ``continuation`` of the cut answer or a ``retry`` before its first token."""
        out: list[tuple[str, AttemptUsage]] = []
        for index, (request, stream) in enumerate(self._ledger):
            for attempt in stream.attempt_usages:
                if index and attempt.attempt == 1:
                    kind: AttemptKind = "continuation" if request.continued else "retry"
                    attempt = dataclasses.replace(attempt, kind=kind)
                out.append((request.channel, attempt))
        return out

    def _text(self, request: UpstreamRequest, text: str) -> TextDelta:
        self._texts.append(text)
        request.chars += len(text)
        self.delivered = True
        return TextDelta(text)

    def _continuable(self) -> bool:
        """Whether the cut answer may be continued elsewhere (text, no tool or function
        call): the SDK's rule (``StreamCore._can_continue``)."""
        return bool(self._texts) and not self._calls

    def _next(self, error: WenxinError) -> tuple[Channel, bool, AsyncChatStream]:
        """The channel and stream of the next upstream request; ``error`` (re-raised as
        the answer's) when no other may be made."""
        messages: list[dict[str, Any]] = self._messages
        if self.delivered:
            messages = [dict(m) for m in continuation_messages(self._messages, self.text)]
        elif perf_counter() >= self._deadline:
            raise self._final(error)
        while len(self.requests) < self._attempts:
            try:
                channel, probe = self._channels.pick(self._model, self._tried)
            except WenxinError:
                raise self._final(error) from None
            self._tried.add(channel.name)
            try:
                stream = channel.open_stream(messages, self._model, self._params)
            except InvalidRequestError:  # this channel's API cannot carry the request
                self._channels.ended(channel, "client_error", probe=probe)
                continue
            return channel, probe, stream
        raise self._final(error)

    def _final(self, error: WenxinError) -> WenxinError:
        """``error`` as the answer's: its whole text so far, and ``incomplete`` when text was
        delivered but the error says the upstream failed before its own."""
        error.partial_text = self.text
        if error.end_reason is None:
            error.end_reason = EndReason.UPSTREAM_ERROR
        if self.delivered and error.end_reason is EndReason.UPSTREAM_ERROR:
            error.end_reason = EndReason.INCOMPLETE
        self.end_reason = error.end_reason
        return error
