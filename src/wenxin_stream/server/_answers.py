"""The answer use case: asking ERNIE on behalf of a principal, from admission to the record.

Theory of operation
===================

:class:`Answers` is what the SSE route, the WebSocket and the OpenAI route call to get an
answer started. It is built at start-up with exactly what it uses: the store, the relay, the
checkpoints, the per-key limiter, the upstream and the audit log.

:meth:`Answers.ask` answers a question inside a conversation:

1. with admission pacing on (``start_slice``), wait for its turn when a burst of starts is
   being paced (``_pacing``: at once on a server that is not flooded); refuse while shutting
   down (503); check the model (404
   ``model_not_found``) and load the conversation and its last messages (the window the
   history can use: ``history_turns`` exchanges and one more; all of them when the window
   keeps too few, or to replace an exchange); to *replace* the last
   exchange (regenerate, retry, edit: ``AskOptions.replace``), the messages from that question
   on are left out of the history (404 when the question is unknown, 409 when it is not the
   last or its answer streams);
2. rebuild the history the model sees with the SDK's
   :class:`~wenxin_stream._conversation.ConversationCore` (:func:`history_core`: complete
   answers as they are, interrupted ones marked as interrupted, unanswered questions dropped,
   so the request is always valid for v1's alternation rules), then the question;
3. admit it under the key's limits (429 + ``Retry-After``) — in a fleet, with the upstream
   request already on its way when the key has room (**Overlap**, below);
4. start the generation — the upstream request leaves now — and, meanwhile, store the
   question (complete) and the answer (``streaming``, empty) in one transaction
   (``Store.add_exchange``; the replaced exchange is deleted in the same transaction, and
   checked again there);
5. ``begin`` the stream with the ids, and have the answer checkpointed while it streams
   (``_checkpoints``: its text so far, every ``checkpoint_interval``, many answers per
   write). When the generation ends, :meth:`Answers._persist` stops the checkpoints and
   writes the answer once, with its status, end reason, usage, timings and character
   counts, settles the limiter and writes the audit record. Nothing is written per chunk.

**Usage and budgets.** Admission first reserves the request's estimate against the key's
budgets (``_budgets``: 429 ``budget_exceeded`` before anything goes upstream), then asks the
per-key limits; when a limit refuses, the budget's hold is given back whole, so a refused
request spends nothing of either. When
the generation ends, :meth:`Answers._account` turns the SDK's per-request ledger (one entry
per upstream request that generated something: retries and continuations are separate
requests, each counted once) into ``_usage`` records — counted in ``/metrics``, settled
against the budgets (their sum replaces the estimate) and handed to ``_usage_writer``, which
stores the records of all the answers that ended in one checkpoint interval in one operation.
Per answer, never per chunk.

:meth:`Answers.complete` is the OpenAI route's: the same admission, generation and record,
but nothing stored and nothing to resume (its one subscriber is the request).

**Admission.** An admitted request holds a concurrency slot of its key until the generation
ends (its ``on_end`` settles and releases it). Until the generation has *begun*, any failure
aborts the generation if it exists and releases the admission: up to the generation's start
(a refusal, an invalid request) in :meth:`Answers.admit`, which starts it; after it (a
conversation deleted meanwhile, a failing write, a cancellation) in the caller's one
``finally``.

**Overlap.** A fleet's limits decide in a Redis round trip, which on a busy event loop is
several milliseconds that every chunk of the stream would inherit. When they say the key has
room to spare (:meth:`~._limits.Limits.overlap`, ``_limits_redis``), :meth:`admit` starts the
generation (the upstream request) *before* awaiting their decision; text that arrives before
it waits in the generation, which begins only once admitted. A refusal aborts the
generation — the upstream request is cut, nothing was shown — and is the same 429; the
in-process limiter decides at once and never overlaps. Counted in
``wenxin_admission_overlaps_total{decision}``.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

from .._async_client import AsyncChatStream
from .._continuation import continuation_messages
from .._conversation import ConversationCore
from .._events import EndReason, Usage
from .._exceptions import InvalidRequestError
from .._token_estimate import (
    DEFAULT_ANSWER_TOKENS,
    estimate_text_tokens,
    estimate_tokens,
    message_texts,
)
from ._access import Principal
from ._audit import AuditLog
from ._budgets import Budgeter, BudgetHold, BudgetLimiter
from ._checkpoints import Checkpoints
from ._completion_request import web_search_object
from ._failover import FailoverStream
from ._http import HTTPError, not_found, optional_str
from ._limits import Admission, Limits, Rejection
from ._pacing import StartPacer
from ._relay import FINISHED_REASONS, Generation, Relay, usage_dict
from ._schema import StoreUnavailableError, replaced_index
from ._store import (
    ConversationRecord,
    ExchangeConflictError,
    HistoryMessage,
    MessageNotFoundError,
    MessageRecord,
    Store,
    StoreError,
)
from ._takeover import (
    Claimed,
    ContinuedStream,
    InterruptedStream,
    continue_refusal,
    logged_text,
)
from ._upstream import Upstream
from ._usage import (
    DEFAULT_CHANNEL,
    Pricing,
    UsageRecord,
    first_attempt,
    taken_over_record,
    usage_records,
)
from ._usage_writer import UsageWriter

__all__ = [
    "MAX_IMAGES",
    "Answers",
    "AskOptions",
    "history_core",
    "invalid_request",
    "parse_ask_options",
    "rejection_error",
    "with_images",
]

logger = logging.getLogger("wenxin_stream.server")

_END_REASONS = {reason.value: reason for reason in EndReason}


def history_core(
    system: str | None, records: Sequence[HistoryMessage], turns: int
) -> ConversationCore:
    """The conversation the stored ``records`` make, its last ``turns`` kept: the answers'
    text only (their reasoning is never sent back; tool calls the page showed are not
    replayed; an empty or cut answer is dropped as the SDK's conversation drops it)."""
    core = ConversationCore(system=system, max_turns=turns)
    pending: str | None = None
    for m in records:
        if m.role == "user":
            pending = m.content
        elif m.role == "assistant" and pending is not None:
            if m.status != "streaming":  # an answer still running elsewhere is not history
                reason = _END_REASONS.get(m.end_reason or "", EndReason.CANCELLED)
                core.restore(pending, reason, m.content)
            pending = None
    return core


MAX_IMAGES = 10
"""The most images one native question may carry."""


@dataclass(frozen=True, slots=True)
class AskOptions:
    """What a native ask (SSE or WebSocket) may add to its question: the ``model``, a
    ``system`` text, ``enable_thinking``, ``web_search`` (Baidu's object, or a boolean for
    ``{"enable": …}``), ``images`` (data URLs or links, sent as ``image_url`` parts of the
    question), ``tools`` / ``tool_choice`` (the answer's calls are shown, not run), and
    ``replace``: the id of the conversation's last question, whose exchange the new one
    replaces (regenerate, retry, edit). ``None``: not given."""

    model: str | None = None
    system: str | None = None
    enable_thinking: bool | None = None
    web_search: object = None
    images: tuple[str, ...] = ()
    tools: object = None
    tool_choice: object = None
    replace: str | None = None

    def params(self) -> dict[str, Any]:
        """The request fields they ask for (checked by the SDK before anything is sent)."""
        params: dict[str, Any] = {}
        if self.enable_thinking is not None:
            params["enable_thinking"] = self.enable_thinking
        if self.web_search is not None:
            params["web_search"] = self.web_search
        if self.tools is not None:
            params["tools"] = self.tools
        if self.tool_choice is not None:
            params["tool_choice"] = self.tool_choice
        return params


def parse_ask_options(body: dict[str, Any]) -> AskOptions:
    """The options of a native ask's body (or WebSocket ``ask`` frame).

    Raises:
        HTTPError: 400 naming the field.
    """
    thinking = body.get("enable_thinking")
    if thinking is not None and not isinstance(thinking, bool):
        raise HTTPError(400, "invalid_field", "'enable_thinking' must be a boolean",
                        param="enable_thinking")  # fmt: skip
    images = body.get("images")
    if images is None:
        images = []
    if not isinstance(images, list) or not all(isinstance(i, str) and i for i in images):
        raise HTTPError(400, "invalid_field", "'images' must be a list of image URLs",
                        param="images")  # fmt: skip
    if len(images) > MAX_IMAGES:
        raise HTTPError(400, "invalid_field", f"at most {MAX_IMAGES} images per question",
                        param="images")  # fmt: skip
    return AskOptions(
        model=optional_str(body, "model"),
        system=optional_str(body, "system"),
        enable_thinking=thinking,
        web_search=web_search_object(body.get("web_search")),
        images=tuple(images),
        tools=body.get("tools"),
        tool_choice=body.get("tool_choice"),
        replace=optional_str(body, "replace") or None,
    )


def with_images(messages: list[dict[str, Any]], images: tuple[str, ...]) -> None:
    """Make the last message's text a ``text`` part followed by one ``image_url`` part per
    image (the SDK checks them against Baidu's limits and the model's vision)."""
    if images:
        last = messages[-1]
        parts: list[dict[str, Any]] = [{"type": "text", "text": last["content"]}]
        parts += [{"type": "image_url", "image_url": {"url": url}} for url in images]
        messages[-1] = {**last, "content": parts}


def _replaced(history: Sequence[HistoryMessage], question_id: str) -> int:
    """Where the exchange to replace begins in ``history``.

    Raises:
        HTTPError: 404 for an unknown question, 409 when it cannot be replaced.
    """
    try:
        return replaced_index([(m.id, m.role, m.status) for m in history], question_id)
    except (MessageNotFoundError, ExchangeConflictError) as exc:
        raise _replace_error(exc) from None


def _replace_error(exc: StoreError) -> HTTPError:
    """404 ``not_found`` (no such question) or 409 ``not_last_exchange`` /
    ``answer_streaming``, naming ``replace``."""
    if isinstance(exc, ExchangeConflictError):
        code = "answer_streaming" if exc.reason == "streaming" else "not_last_exchange"
        return HTTPError(409, code, str(exc), param="replace")
    return HTTPError(404, "not_found", str(exc), param="replace")


def invalid_request(exc: InvalidRequestError) -> HTTPError:
    """400 for a request the SDK refused before sending it, naming the field."""
    code = "invalid_messages" if exc.field.startswith("messages") else "invalid_field"
    return HTTPError(400, code, str(exc), param=exc.field)


def rejection_error(rejection: Rejection) -> HTTPError:
    """429 (503 when the shared state is down) for a refused admission, with ``Retry-After``;
    a spent budget is ``insufficient_quota`` with ``x-should-retry: false`` (no retry within
    seconds can help: ``Retry-After`` is when its period resets)."""
    budget = rejection.code == "budget_exceeded"
    headers = [(b"retry-after", rejection.retry_after_header.encode())]
    if budget:
        headers.append((b"x-should-retry", b"false"))
    return HTTPError(
        rejection.status,
        rejection.code,
        rejection.message,
        headers=headers,
        type="insufficient_quota" if budget else None,
    )


class Answers:
    """Starts answers and records how they ended (see the module docstring)."""

    def __init__(
        self,
        *,
        store: Store,
        relay: Relay,
        checkpoints: Checkpoints,
        limiter: Limits,
        upstream: Upstream,
        audit: AuditLog,
        history_turns: int,
        producer: str | None = None,
        budgets: Budgeter | None = None,
        pricing: Pricing | None = None,
        clock: Callable[[], float] = time.time,
        takeover: str = "continue",
        pacer: StartPacer | None = None,
        usage: UsageWriter | None = None,
    ) -> None:
        self.usage = usage or UsageWriter(store, batched=False)
        """Stores the answers' usage records (``_usage_writer``: with the checkpoint tick)."""
        self.pacer = pacer
        """Admits the starts of a burst a slice at a time (``_pacing``; ``None``: off)."""
        self.takeover = takeover
        """What a takeover does with an answer (``continue`` where allowed, or
        ``interrupt``)."""
        self.budgets: Budgeter = budgets or BudgetLimiter(self.usage.spent_since, clock=clock)
        """The per-key budgets (``_budgets``: in this process, or the fleet's in Redis)."""
        self.pricing = pricing or Pricing()
        self._clock = clock
        self.producer = producer
        """The instance name stored with each streaming answer (who may end it as crashed)."""
        self.store = store
        self.relay = relay
        self.checkpoints = checkpoints
        self.limiter = limiter
        self.upstream = upstream
        self.audit = audit
        self.history_turns = history_turns

    async def admit(
        self,
        principal: Principal,
        messages: list[dict[str, Any]],
        model: str,
        answer_tokens: int = DEFAULT_ANSWER_TOKENS,
        *,
        send: Callable[[], Generation],
    ) -> tuple[Admission, BudgetHold, Generation]:
        """Reserve the request's estimate (prompt plus ``answer_tokens``, and that at
        ``model``'s price) against the key's budgets, then admit it under the key's limits;
        a request refused by either spends nothing of the other (the budget's hold is given
        back whole when a limit refuses).

        ``send`` starts the generation (the upstream request goes out), returned third. It
        is called once admitted — or, when the limits allow it (:meth:`~._limits.Limits.
        overlap`: a fleet's decision takes a round trip, and the key had room to spare),
        before they decide, so the request and the decision travel together. Whatever raises
        meanwhile (a refusal, an invalid request) aborts a generation already started — none
        of it has reached a client, since the caller begins it only after the return — and
        gives back the admission and the budget's hold.

        Raises:
            HTTPError: 429 over a budget or a limit, 503 when the fleet's shared state is
                unreachable.
            StoreUnavailableError: the store could not say what a budget's period has spent
                (answered 503 ``database_unavailable``).
        """
        estimate = estimate_tokens(messages, answer_tokens=answer_tokens)
        hold = BudgetHold((0, 0))
        budgets = principal.budgets
        if budgets is not None and budgets.any:
            prompt = estimate - answer_tokens
            # the channel is not picked yet: the estimate is at the catalogue's price
            nano = self.pricing.estimate(model, DEFAULT_CHANNEL, prompt, answer_tokens)
            # loading a period's spend reads the store: unavailable → 503 (the safety net)
            held = await self.budgets.reserve(principal.owner, budgets, estimate, nano)
            if isinstance(held, Rejection):
                raise rejection_error(held)
            hold = held
        started: Generation | None = None
        admitted: Admission | None = None
        try:
            overlapped = self.limiter.overlap(principal.owner, principal.limits, estimate)
            if overlapped:
                started = send()
            decision = await self.limiter.acquire(principal.owner, principal.limits, estimate)
            if overlapped:
                self.relay.metrics.admission_overlapped(not isinstance(decision, Rejection))
            if isinstance(decision, Rejection):
                raise rejection_error(decision)
            admitted = decision
            if started is None:
                started = send()
        except BaseException:  # one exit path: whatever was taken is given back
            if started is not None:  # its request went out before the refusal: cut it
                started.abort()
            if admitted is not None:  # admitted, then the request was invalid
                self.limiter.release(admitted)
            hold.release()
            raise
        return admitted, hold, started

    async def ask(
        self,
        principal: Principal,
        *,
        conversation_id: str | None,
        content: str,
        options: AskOptions,
        received_at: float,
        audit: dict[str, Any],
    ) -> Generation:
        """Start answering ``content`` in a conversation (a new one when ``conversation_id`` is
        None); the generation has begun (its ``start`` event is in the log) on return.
        ``audit`` is the request's audit record: the generation writes it when it ends.

        Raises:
            HTTPError: 404 (conversation, model), 400 (invalid request), 429 (limits),
                503 (shutting down).
        """
        if self.pacer is not None:  # a burst of starts is let in a slice at a time
            await self.pacer.turn()
        self._check_accepting()  # (after any wait: a shutdown may have begun meanwhile)
        store, owner = self.store, principal.owner
        conv: ConversationRecord | None = None
        history: list[HistoryMessage] = []
        if options.replace is not None and conversation_id is None:
            raise HTTPError(400, "invalid_field", "'replace' needs a conversation",
                            param="replace")  # fmt: skip
        # Only the messages that can be sent are read — the last `history_turns` exchanges and
        # one more — so a long conversation costs an ask its window, not its length. A
        # replacement reads them all (the question it names is checked against the rest).
        window = None if options.replace is not None else 2 * (self.history_turns + 1)
        cut = False  # the window left earlier messages out
        if conversation_id is not None:  # both reads in one store operation
            conv, history = await store.get_history(owner, conversation_id, last=window)
            if conv is None:
                raise not_found(f"no conversation {conversation_id!r}")
            cut = len(history) < conv.message_count
        if options.replace is not None:
            history = history[: _replaced(history, options.replace)]
        upstream = self.upstream
        model = options.model or (conv.model if conv else None)
        name, upstream_model = upstream.resolve_model(model)
        system = options.system
        if system is None and conv is not None:
            system = conv.system
        core = history_core(system, history, self.history_turns)
        if cut and conversation_id is not None and len(core.messages) < 2 * self.history_turns:
            # the window's answers were too few to keep (empty, cut, running): read them all
            conv, history = await store.get_history(owner, conversation_id)
            if conv is None:  # deleted meanwhile
                raise not_found(f"no conversation {conversation_id!r}")
            core = history_core(system, history, self.history_turns)
        messages, params = core.request(content, "v1" if upstream.api == "v1" else "v2")
        with_images(messages, options.images)
        params.update(options.params())
        answer: list[MessageRecord] = []  # known once stored; the end comes later still

        async def on_end(ended: Generation) -> None:  # (only once begun: admitted by then)
            try:
                await self._persist(ended, admission, answer[0], audit)
            finally:  # lost: the taker records what this instance spent (take_over)
                await self._account(
                    ended, principal.owner, upstream_model, hold, store=not ended.lost
                )

        def send() -> Generation:  # the upstream request goes out
            try:
                stream = upstream.stream(messages, upstream_model, **params)
            except InvalidRequestError as exc:
                raise invalid_request(exc) from None
            gen = self.relay.start(
                stream, owner=owner, model=name, received_at=received_at, on_end=on_end
            )
            if self.relay.log is not None:  # a fleet: another instance may continue it
                gen.request = json.dumps(
                    {
                        "messages": messages,
                        "model": upstream_model,
                        "name": name,
                        "params": params,
                        "continuable": not (params.get("tools") or params.get("functions")),
                        "channel": (
                            stream.first_channel
                            if isinstance(stream, FailoverStream)
                            else DEFAULT_CHANNEL
                        ),
                    },
                    ensure_ascii=False,
                    separators=(",", ":"),
                ).encode()
            return gen

        admission, hold, gen = await self.admit(principal, messages, upstream_model, send=send)
        begun = False
        try:
            if conv is None:
                conv = await store.create_conversation(
                    owner, title=None, model=name, system=options.system or None
                )
            audit.update(conversation_id=conv.id, model=name)
            # the upstream request is on its way; meanwhile, both messages in one transaction
            try:
                asked, stored = await store.add_exchange(
                    owner,
                    conv.id,
                    question=content,
                    model=name,
                    replace=options.replace,
                    producer=self.producer,
                )
            except (MessageNotFoundError, ExchangeConflictError) as exc:
                raise _replace_error(exc) from None
            answer.append(stored)
            audit["stream_id"] = gen.stream_id
            start = {
                "stream_id": gen.stream_id,
                "conversation_id": conv.id,
                "message_id": answer[0].id,
                "question_id": asked.id,
                "model": name,
            }
            gen.begin(start, {"message_id": answer[0].id})
            self.checkpoints.track(answer[0].id, gen)
            begun = True
            return gen
        finally:
            if not begun:  # it never will: nothing is recorded, the slot is free again
                gen.abort()
                self.limiter.release(admission)
                hold.release()

    async def complete(
        self,
        principal: Principal,
        *,
        messages: list[dict[str, Any]],
        model: str,
        upstream_model: str,
        params: dict[str, Any],
        received_at: float,
        audit: dict[str, Any],
    ) -> Generation:
        """Start a completion of ``messages`` (not stored, not resumable), shown as ``model``;
        it has begun on return. ``audit`` is the request's audit record: the generation
        writes it when it ends.

        Raises:
            HTTPError: 400 (the request breaks ERNIE's rules: the SDK names the field), 429
                (limits), 503 (shutting down).
        """
        if self.pacer is not None:  # a burst of starts is let in a slice at a time
            await self.pacer.turn()
        self._check_accepting()  # (after any wait: a shutdown may have begun meanwhile)
        answer_tokens = params.get("max_tokens") or params.get("max_completion_tokens")
        if not isinstance(answer_tokens, int) or isinstance(answer_tokens, bool):
            answer_tokens = DEFAULT_ANSWER_TOKENS

        async def on_end(ended: Generation) -> None:  # (only once begun: admitted by then)
            self._settle(ended, admission)
            failed = ended.error is not None and not ended.delivered_chars
            self.audit.request(
                audit,
                status=ended.error_status if failed else 200,
                end_reason=ended.end_reason,
                usage=usage_dict(ended.usage),
                ttft_ms=ended.ttft_ms,
                total_ms=ended.total_ms,
            )
            await self._account(ended, principal.owner, upstream_model, hold)

        def send() -> Generation:  # the upstream request goes out
            try:
                stream = self.upstream.stream(messages, upstream_model, **params)
            except InvalidRequestError as exc:
                raise invalid_request(exc) from None
            return self.relay.start(
                stream,
                owner=principal.owner,
                model=model,
                received_at=received_at,
                on_end=on_end,
                resumable=False,
            )

        admission, hold, gen = await self.admit(
            principal, messages, upstream_model, answer_tokens, send=send
        )
        begun = False
        try:
            audit.update(question="".join(message_texts(messages[-1])), model=model)
            gen.begin({"model": model})
            begun = True
            audit["stream_id"] = gen.stream_id
            return gen
        finally:
            if not begun:  # the one exit path of a failed start
                gen.abort()
                self.limiter.release(admission)
                hold.release()

    def _check_accepting(self) -> None:
        if not self.relay.accepting:
            raise HTTPError(503, "shutting_down", "the server is shutting down")

    async def _account(
        self, gen: Generation, owner: str, model: str, hold: BudgetHold, *, store: bool = True
    ) -> list[UsageRecord]:
        """The answer ended: one usage record per upstream request, stored (unless ``store``
        is false: the answer was lost to a taker, which records this part), counted in
        ``/metrics`` and settled against the key's budgets (the records' sum replaces the
        estimate). The budget is settled even when the store fails (logged by the caller)."""
        records = usage_records(
            gen.usage_ledger,
            key_id=owner,
            model=model,
            stream_id=gen.stream_id,
            now=self._clock(),
            pricing=self.pricing,
        )
        hold.settle(sum(r.total_tokens for r in records), sum(r.cost_nano or 0 for r in records))
        if store:
            await self._store_usage(records, taken=lambda: gen.lost)
        return records

    async def _store_usage(
        self, records: list[UsageRecord], *, taken: Callable[[], bool] | None = None
    ) -> None:
        """Count ``records`` in ``/metrics`` and store them (``_usage_writer``: with the
        next checkpoint tick, many answers in one operation)."""
        self._count_usage(records)
        await self.usage.record(records, taken=taken)

    def _count_usage(self, records: list[UsageRecord]) -> None:
        metrics = self.relay.metrics
        for r in records:
            metrics.usage(r.model, r.channel, r.prompt_tokens, r.completion_tokens, r.cost_nano,
                          estimated=r.estimated)  # fmt: skip

    async def _account_takeover(
        self, claimed: Claimed, before: Usage, upstream: object
    ) -> list[UsageRecord]:
        """A taken-over answer ended here: its usage records under this instance's block of
        request numbers (``_usage.first_attempt``: no collision with the producer's or
        another taker's) — the estimate of what the instances before spent (``before``: the
        original prompt and the logged text; stored only if none of them stored rows of
        its own), then each request of the continuation, on the channel that served it. Not
        settled against budgets (the producer's hold was)."""
        request, now = claimed.request, self._clock()
        model = str(request["model"])
        estimate = taken_over_record(
            before,
            key_id=claimed.owner,
            model=model,
            channel=str(request.get("channel") or DEFAULT_CHANNEL),
            stream_id=claimed.stream_id,
            token=claimed.token,
            now=now,
            pricing=self.pricing,
        )
        records: list[UsageRecord] = []
        if isinstance(upstream, ContinuedStream):
            records = usage_records(
                upstream.usage_ledger,
                key_id=claimed.owner,
                model=model,
                stream_id=claimed.stream_id,
                now=now,
                pricing=self.pricing,
                first=first_attempt(claimed.token) + 1,
            )
        stored = await self.store.record_taken_over_usage(estimate, records)
        if stored > len(records):
            records.insert(0, estimate)
        self._count_usage(records)
        return records

    def _settle(self, gen: Generation, admission: Admission) -> None:
        """The generation ended: count what it really used, free its slot."""
        if gen.usage is not None:
            self.limiter.settle(admission, gen.usage.total_tokens)
        self.limiter.release(admission)

    async def take_over(self, claimed: Claimed) -> Generation:
        """Continue (or end ``interrupted``) an answer taken over from a process that died
        (``_takeover``): the same log, the next ids, the stored message produced here now.
        Not admitted again: the dead process's slot has expired with its lease."""
        request = claimed.request
        partial = logged_text(claimed.records)
        refusal = continue_refusal(claimed, self.takeover)
        upstream: Any = InterruptedStream()
        if refusal is None:
            messages = request["messages"]
            if partial:
                messages = continuation_messages(messages, partial)
            try:
                inner = self.upstream.stream(list(messages), request["model"], **request["params"])
            except InvalidRequestError as exc:
                refusal = f"the continuation is refused: {exc}"
            else:
                thought = any(r.kind == b"reasoning" for r in claimed.records)
                upstream = ContinuedStream(inner, partial, keep_reasoning=not (partial or thought))
        first = Usage(
            prompt_tokens=estimate_tokens(request["messages"], answer_tokens=0),
            completion_tokens=estimate_text_tokens(partial),
        )
        start = json.loads(claimed.records[0].data)
        message_id: str | None = start.get("message_id")
        taken = {"by": self.producer, "token": claimed.token, "at_chars": len(partial)}

        async def on_end(ended: Generation) -> None:
            if ended.lost:
                return  # lost again, to a third process: it records the answer and its usage
            later = ended.usage or Usage()
            prompt = first.prompt_tokens + later.prompt_tokens
            completion = first.completion_tokens + later.completion_tokens
            ended.usage = Usage(prompt, completion, prompt + completion)
            try:
                if message_id is not None:
                    await self._record(ended, message_id, continued=taken)
            finally:
                await self._account_takeover(claimed, first, upstream)

        if message_id is not None and self.producer is not None:  # before any record of it
            await self.store.take_over_message(message_id, self.producer)
        gen = self.relay.adopt(
            cast(AsyncChatStream, upstream),
            stream_id=claimed.stream_id,
            owner=claimed.owner,
            model=request.get("name", ""),
            token=claimed.token,
            records=claimed.records,
            on_end=on_end,
        )
        gen.request = json.dumps(request, ensure_ascii=False, separators=(",", ":")).encode()
        if refusal is not None:
            logger.warning("%s is not continued (%s): it ends interrupted", gen.stream_id, refusal)
            gen.cancel("interrupted")
        if message_id is not None:
            self.checkpoints.track(message_id, gen)
        return gen

    async def _persist(
        self,
        gen: Generation,
        admission: Admission,
        message: MessageRecord,
        audit: dict[str, Any],
    ) -> None:
        """Record how an answer ended: the message (once), the limiter, the audit log."""
        self._settle(gen, admission)
        try:
            # Lost (another instance may take it over, or took it): the record is fenced — if a
            # taker produces the row now, this write changes nothing; if none can (a Redis that
            # restarted empty lost the answer's log and lease), the row ends here with this
            # instance's text as `interrupted` instead of staying `streaming` for ever, and a
            # taker that claims it later opens it again (`Store.take_over_message`).
            await self._record(gen, message.id, reason="interrupted" if gen.lost else None)
        finally:
            self.audit.request(
                audit,
                status=200,
                end_reason=gen.end_reason or "incomplete",
                usage=usage_dict(gen.usage),
                ttft_ms=gen.ttft_ms,
                total_ms=gen.total_ms,
            )

    async def _record(
        self,
        gen: Generation,
        message_id: str,
        continued: dict[str, Any] | None = None,
        *,
        reason: str | None = None,
    ) -> None:
        """Write the answer's final record (its end ``reason``: the generation's unless
        given) — fenced: not once another instance produces it (it took the answer over)."""
        self.checkpoints.forget(message_id)
        reason = reason or gen.end_reason or "incomplete"
        extras = gen.extras()
        if continued is not None:
            extras = {**(extras or {}), "continued": continued}
        write = functools.partial(
            self.store.update_message,
            message_id,
            content=gen.text,
            status="complete" if reason in FINISHED_REASONS else "partial",
            end_reason=reason,
            usage=usage_dict(gen.usage),
            ttft_ms=gen.ttft_ms,
            total_ms=gen.total_ms,
            generated_chars=gen.generated_chars,
            delivered_chars=gen.delivered_chars,
            extras=extras,
            producer=self.producer,
        )
        try:
            await write()
        except StoreUnavailableError as exc:  # the database is away: written when it is back
            if not self.checkpoints.defer(message_id, write):
                raise
            logger.warning("the final record of %s waits for the database: %s", message_id, exc)
