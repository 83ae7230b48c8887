"""Taking over the answers of a process that died: claim, read the log, continue or interrupt.

Theory of operation
===================

Every process of a fleet runs one :class:`Takeovers` task. About every second (a third of
``answer_lease_ttl``) it runs the claim script (``_answer_leases``): every answer whose lease
expired — its producer was ``kill -9``-ed, froze, or lost Redis for the lease's TTL — is
given to exactly one caller, with the next fencing token. For each answer it got, the task
reads the answer back (:func:`read_answer`: its metadata, with the request it asked, and
its whole log, in one round trip) and hands it to the use case (``Answers.take_over``), which
continues it in this process::

    claim (atomic: expired → holder = me, token + 1)
      └► read meta + log ── the text so far, the ids so far
           ├► continuable? ── ask ERNIE to continue (the SDK's continue mode: the partial
           │                  answer as an assistant turn, then "继续"), trim a repeated seam
           │                  (:class:`ContinuedStream`), append to the SAME log with the next
           │                  ids, under the new token
           └► not continuable ── end it ``interrupted`` (a 503 error in the ``end``)

**When an answer is not continued** (:func:`continue_refusal`): the request offered tools
or functions, the log holds a tool call, or the fleet is configured never to continue
(``takeover = "interrupt"``). A safety stop ends the answer before a takeover could start.
The end is written under the new token, so exactly one end is written whatever the number
of processes that looked.

**What the clients see.** In a fleet a client only ever receives events that are in the log
(the relay is write-ahead: ``Generation.durable``), so whatever a client received, the taker
has read too: a client resuming with its last id anywhere gets the continuation after it,
nothing repeated, nothing missing — apart from what continue mode itself documents (the
continuation is a new generation: it may rephrase; a repeated seam is trimmed).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .._aio import stop_task
from .._async_client import AsyncChatStream
from .._continuation import OverlapTrimmer
from .._events import (
    EndReason,
    FinishEvent,
    ReasoningDelta,
    StreamEvent,
    TextDelta,
    UsageEvent,
)
from .._stream_core import AttemptKind, AttemptUsage
from ._answer_leases import AnswerLeases
from ._eventlog_keys import Record, log_key, meta_key, record_of
from ._failover import FailoverStream
from ._redis import SharedRedis, SharedStateError
from ._usage import DEFAULT_CHANNEL

__all__ = [
    "Claimed",
    "ContinuedStream",
    "InterruptedStream",
    "Takeovers",
    "continue_refusal",
    "logged_text",
    "read_answer",
]

logger = logging.getLogger("wenxin_stream.server")


@dataclass(frozen=True, slots=True)
class Claimed:
    """An answer this process took over: what its log and metadata hold."""

    stream_id: str
    token: int
    owner: str
    request: dict[str, Any]
    """What the answer asked: ``messages``, ``model`` (upstream), ``name`` (shown),
    ``params``, ``continuable``."""
    records: list[Record]
    """Its log, the ``start`` event first."""


async def read_answer(shared: SharedRedis, stream_id: str, token: int) -> Claimed | None:
    """The answer ``stream_id`` as its log and metadata hold it (``None``: it is gone, ended,
    holds no request, or its log lacks its ``start``).

    Raises:
        SharedStateError: Redis failed.
    """
    pipe = shared.client.pipeline(transaction=False)
    pipe.hmget(meta_key(shared, stream_id), ["owner", "request", "ended"])
    pipe.xrange(log_key(shared, stream_id), "-", "+")
    (owner, request, ended), entries = await shared.call(pipe.execute(), "read answer")
    if owner is None or request is None or ended == b"1":
        return None
    records = [record_of(redis_id, fields) for redis_id, fields in entries]
    if not records or records[0].seq != 0 or records[-1].is_end:
        return None
    return Claimed(stream_id, token, owner.decode(), json.loads(request), records)


def logged_text(records: list[Record], kind: bytes = b"delta") -> str:
    """The text of the ``kind`` events of ``records``."""
    return "".join(json.loads(r.data)["text"] for r in records if r.kind == kind)


def continue_refusal(claimed: Claimed, policy: str) -> str | None:
    """Why the answer may not be continued (``None``: it may)."""
    if policy != "continue":
        return "the fleet is configured never to continue"
    if not claimed.request.get("continuable", False):
        return "the request offered tools or functions"
    if any(r.kind == b"tool_call" for r in claimed.records):
        return "the answer holds a tool call"
    return None


class ContinuedStream:
    """The continuation's upstream stream as the relay's ``Generation`` reads it: the SDK
    stream of the continue-mode request, its text passed through the SDK's
    :class:`~wenxin_stream._continuation.OverlapTrimmer` (a continuation that starts by
    repeating the end of what was shown loses that seam), and its thinking dropped once
    answer text was shown (the continuation goes on with the answer, not the thinking)."""

    def __init__(
        self, inner: AsyncChatStream | FailoverStream, shown: str, *, keep_reasoning: bool
    ) -> None:
        self._inner = inner
        self._trimmer = OverlapTrimmer(shown) if shown else None
        self._keep_reasoning = keep_reasoning

    async def __aenter__(self) -> ContinuedStream:
        await self._inner.__aenter__()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self._inner.__aexit__(*exc_info)

    @property
    def end_reason(self) -> EndReason | None:
        """The continuation's end reason (the SDK's)."""
        return self._inner.end_reason

    @property
    def attempt_usages(self) -> Sequence[AttemptUsage]:
        """What the continuation's upstream requests cost (the SDK's ledger; through the
        gateway's channels, each channel's)."""
        return [attempt for _, attempt in self.usage_ledger]

    @property
    def usage_ledger(self) -> list[tuple[str, AttemptUsage]]:
        """Each of the continuation's upstream requests, its channel and cost, in order; the
        first a ``continuation`` (it resends the partial answer; a ``retry`` when nothing was
        shown), the SDK's own kinds after."""
        inner = self._inner
        if isinstance(inner, FailoverStream):
            ledger = inner.usage_ledger
        else:
            ledger = [(DEFAULT_CHANNEL, attempt) for attempt in inner.attempt_usages]
        if ledger and ledger[0][1].kind == "first":  # the answer's request, sent again
            channel, attempt = ledger[0]
            kind: AttemptKind = "continuation" if self._trimmer is not None else "retry"
            ledger[0] = (channel, dataclasses.replace(attempt, kind=kind))
        return ledger

    def __aiter__(self) -> AsyncIterator[StreamEvent]:
        return self._events()

    async def _events(self) -> AsyncIterator[StreamEvent]:
        trimmer = self._trimmer
        async for event in self._inner:
            if isinstance(event, TextDelta):
                text = trimmer.push(event.text) if trimmer is not None else event.text
                if text:
                    yield TextDelta(text)
                continue
            if isinstance(event, ReasoningDelta) and not self._keep_reasoning:
                continue
            if trimmer is not None and isinstance(event, FinishEvent | UsageEvent):
                held = trimmer.flush()  # the text ended before the decision window
                if held:
                    yield TextDelta(held)
            yield event
        if trimmer is not None:
            held = trimmer.flush()
            if held:
                yield TextDelta(held)


class InterruptedStream:
    """The stream of an answer that is not continued: nothing (the generation is cancelled
    with ``interrupted`` before it reads)."""

    end_reason = EndReason.INCOMPLETE
    attempt_usages: Sequence[AttemptUsage] = ()  # no upstream request: nothing spent

    async def __aenter__(self) -> InterruptedStream:
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        return None

    def __aiter__(self) -> AsyncIterator[StreamEvent]:
        return self._events()

    async def _events(self) -> AsyncIterator[StreamEvent]:
        return
        yield  # an async generator that yields nothing


class Takeovers:
    """One process's claims of answers whose lease expired (see the module docstring).
    ``handle(claimed)`` continues (or interrupts) each answer taken."""

    def __init__(
        self,
        shared: SharedRedis,
        leases: AnswerLeases,
        handle: Callable[[Claimed], Awaitable[None]],
        *,
        interval: float | None = None,
    ) -> None:
        self.shared = shared
        self.leases = leases
        self.handle = handle
        self.interval = leases.ttl / 3 if interval is None else interval
        self.taken = 0
        """Answers this process took over."""
        self._task: asyncio.Task[None] | None = None
        self._handling: set[asyncio.Task[None]] = set()
        self._failing = False
        self._stopped = False

    async def stop_claiming(self) -> None:
        """The process is stopping: claim nothing more (what it hands over must go to
        another instance); an answer being taken over right now is handed over too."""
        self._stopped = True
        task, self._task = self._task, None
        await stop_task(task)

    def start(self) -> None:
        """Claim every ``interval`` seconds until :meth:`aclose`."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="takeovers")

    async def aclose(self) -> None:
        self._stopped = True
        task, self._task = self._task, None
        await stop_task(task)
        for handling in list(self._handling):
            await stop_task(handling)

    async def claim(self) -> list[str]:
        """One round: claim what expired and start handling each; the stream ids taken.

        Raises:
            SharedStateError: Redis failed.
        """
        taken = await self.leases.claim()
        for stream_id, token in taken:
            self.taken += 1
            task = asyncio.get_running_loop().create_task(
                self._take(stream_id, token), name=f"takeover {stream_id}"
            )
            self._handling.add(task)
            task.add_done_callback(self._handling.discard)
        return [stream_id for stream_id, _ in taken]

    async def _take(self, stream_id: str, token: int) -> None:
        try:
            claimed = await read_answer(self.shared, stream_id, token)
        except SharedStateError as exc:  # the lease lapses again: another round retries
            logger.warning("taking over %s: %s", stream_id, exc)
            self.leases.forget(stream_id)
            return
        if self._stopped:  # stopping meanwhile: another instance continues it
            with contextlib.suppress(SharedStateError):
                await self.leases.hand_over([stream_id])
            self.leases.forget(stream_id)
            return
        if claimed is None:  # ended meanwhile, expired, or its log was trimmed past its start
            with contextlib.suppress(SharedStateError):
                await self.leases.drop(stream_id)
            return
        logger.warning(
            "took over %s (its producer is gone): token %d, %d events logged",
            stream_id,
            token,
            len(claimed.records),
        )
        try:
            await self.handle(claimed)
        except Exception as exc:  # a bug: the lease lapses and another process retries
            logger.error("taking over %s failed: %s: %s", stream_id, type(exc).__name__, exc)
            self.leases.forget(stream_id)

    async def _run(self) -> None:
        # not `while True`: a claim that turns its cancellation into a SharedStateError (caught
        # below) would have the loop sleep on and the stop that cancelled it wait forever —
        # seen once in a restart's shutdown, when `SharedRedis.call` still did that (it now
        # raises the cancellation); the flag ends the loop whatever a claim does with it
        while not self._stopped:
            await asyncio.sleep(self.interval)
            try:
                await self.claim()
            except SharedStateError as exc:
                if not self._failing:
                    logger.warning("claiming expired answer leases failed: %s", exc)
                self._failing = True
            else:
                self._failing = False
