"""What the chat routes (v1, v2, OpenAI-compatible) share: the emulator's state, the request's
body and question, fault selection, answer planning and sending.

Theory of operation
===================

:class:`Shared` is the one mutable object of an emulator app: the config, the
:class:`~._auth.Authenticator`, the :class:`~._quota.Quotas`, the ``times=N`` counters and the
seeded RNG that draws the configured fault rates. Routes receive it explicitly.

Every route runs the same preamble, each answering its failures in its own error shape:
:func:`read_json_object` (the body, bounded: too large, not JSON, not an object), then, once
the route has checked the messages, :func:`read_question` (the question a continuation asks
again, the scenario, the fault); after planning, :meth:`Shared.respond` sends the whole answer
or the event stream.

A chat request is turned into an :class:`Answer` in three pure-ish steps:

1. :func:`select_fault` — the explicit SPEC (``X-Wenxin-Fault`` header plus the directives in
   the last user message, merged) wins; else the matching scenario's fault; else each
   configured rate is drawn in order from the seeded RNG and the first hit applies. A SPEC
   with ``times=N`` then applies only to the first N requests carrying it per identity.
2. :func:`plan_answer` — the text (scenario or seeded default, lengthened for ``chunks=N``),
   cut at the first ``stop`` word (finish ``stop``) or at the ``max_*tokens`` limit (finish
   ``length``), split into pieces (the route's splitter, or exactly N pieces), then cut to the
   first half of its pieces for ``truncate=1`` (finish ``length``) and ``safety`` 3–4 (finish
   ``content_filter``).
3. Token usage: prompt tokens over every message (and ``system``), directives removed;
   completion tokens after *n* pieces from a cumulative table, which also serves ``endless``
   streams (whole cycles plus a partial one) in O(1).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from .._aio import race
from .._asgi import Headers, Receive, Send, json_bytes, read_body, wait_for_disconnect
from .._continuation import CONTINUE_PROMPT
from ._answers import (
    TokenCounter,
    cut_at_stop,
    cut_to_tokens,
    default_answer,
    even_pieces,
    lengthen,
)
from ._auth import Authenticator
from ._config import EmulatorConfig, Scenario
from ._faults import FaultSpec, find_directives, parse_fault_spec, strip_directives
from ._quota import Quotas
from ._stream import StreamPlan, deliver, pump, sse_headers

_ID_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789"
_MAX_COUNTERS = 100_000
NO_FAULT = FaultSpec()
"""The empty fault."""


class Shared:
    """The state of one emulator app (see the module docstring)."""

    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self.auth = Authenticator(config)
        self.quotas = Quotas(config.rpm, config.tpm)
        self.fault_rng = random.Random(f"wenxin-emulator-faults|{config.seed}")  # noqa: S311 (seeded on purpose)
        self._id_rng = random.Random()  # noqa: S311 (seeded on purpose)
        self._times: dict[tuple[str, str], int] = {}
        self.active_streams = 0
        """How many event streams are being sent right now (for tests and monitoring)."""

    async def stream(self, receive: Receive, send: Send, plan: StreamPlan) -> bool:
        """Pump a stream until it ends or the client disconnects (True if it disconnected)."""
        self.active_streams += 1
        try:
            return await race(pump(send, plan), wait_for_disconnect(receive)) == 1
        finally:
            self.active_streams -= 1

    async def respond(
        self,
        receive: Receive,
        send: Send,
        plan: StreamPlan,
        headers: Headers,
        whole: dict[str, Any] | None,
    ) -> None:
        """Send a planned answer with status 200: ``whole`` (a non-stream answer) after the
        time ``plan`` takes to generate it, or, when ``whole`` is None, ``plan``'s event
        stream until it ends or the client disconnects."""
        if whole is not None:
            await deliver(send, plan, 200, headers, json_bytes(whole))
            return
        start_headers = sse_headers(headers, charset=self.config.sse_charset)
        await send({"type": "http.response.start", "status": 200, "headers": start_headers})
        await self.stream(receive, send, plan)

    def new_id(self) -> str:
        """A fresh response id: ``as-`` and 10 lowercase alphanumerics."""
        return "as-" + "".join(self._id_rng.choices(_ID_CHARS, k=10))

    def new_call_id(self) -> str:
        """A fresh tool-call id: 32 lowercase hex characters, as in Baidu's example."""
        return f"{self._id_rng.getrandbits(128):032x}"

    def request_id(self, headers: dict[str, str]) -> str:
        """The ``X-Baidu-Request-Id`` to answer with: the client's ``Request_id`` if sent."""
        given = headers.get("request_id") or headers.get("x-request-id")
        if given:
            return given
        return "".join(self._id_rng.choices("0123456789abcdef", k=32))

    def count_times(self, spec: FaultSpec, identity: str) -> bool:
        """Count one request carrying ``spec``; True while it is within ``times=N``."""
        if spec.times is None:
            return True
        key = (spec.canonical(), identity)
        if key not in self._times and len(self._times) >= _MAX_COUNTERS:
            self._times.clear()
        seen = self._times.get(key, 0) + 1
        self._times[key] = seen
        return seen <= spec.times


class BodyNotAnObject(ValueError):
    """The request body is not a JSON object: not JSON at all (``is_json`` False) or JSON of
    another type."""

    def __init__(self, *, is_json: bool) -> None:
        super().__init__("the request body is not a JSON object")
        self.is_json = is_json


async def read_json_object(receive: Receive, headers: dict[str, str], limit: int) -> dict[str, Any]:
    """The request body, at most ``limit`` bytes, parsed as a JSON object.

    Raises:
        BodyTooLarge: the declared or actual length exceeds ``limit``.
        ClientDisconnected: the client disconnected before the body was complete.
        BodyNotAnObject: the body is not JSON, or not an object.
    """
    raw = await read_body(receive, headers, limit)
    try:
        body = json.loads(raw)
    except ValueError:
        raise BodyNotAnObject(is_json=False) from None
    if not isinstance(body, dict):
        raise BodyNotAnObject(is_json=True)
    return body


@dataclass(frozen=True, slots=True)
class Question:
    """What a checked chat request asks: the ``prompt`` to answer (directive-free; for a
    continuation the question asked before), ``continued`` (see :func:`continuation_of`), the
    matching ``scenario`` and the ``fault`` chosen for it."""

    prompt: str
    continued: tuple[str, str] | None
    scenario: Scenario | None
    fault: FaultSpec

    @property
    def shown(self) -> str:
        """The part of the answer a continuation says the client already has ("" if none)."""
        return self.continued[1] if self.continued else ""


def read_question(
    shared: Shared,
    headers: dict[str, str],
    messages: Sequence[Any],
    raw_prompt: str,
    text_of: Callable[[Any], str],
    identity: str,
) -> Question:
    """The :class:`Question` of a request whose (checked) ``messages`` end in ``raw_prompt``,
    the last user message as sent (directives included), read by the route's ``text_of``.

    Raises:
        FaultSpecError: the explicit SPEC (``X-Wenxin-Fault`` or a directive) does not parse.
    """
    continued = continuation_of(messages, text_of)
    prompt = continued[0] if continued else strip_directives(raw_prompt)
    scenario = find_scenario(shared.config.scenarios, prompt)
    fault = select_fault(shared, headers.get("x-wenxin-fault"), raw_prompt, scenario, identity)
    return Question(prompt, continued, scenario, fault)


def continuation_of(
    messages: Sequence[Any], text_of: Callable[[Any], str]
) -> tuple[str, str] | None:
    """``(question, shown)`` when the conversation asks to continue an interrupted answer.

    That is: it ends with a user turn saying :data:`~wenxin_stream._continuation.CONTINUE_PROMPT`
    right after an assistant turn (the part already ``shown``) which answered the user turn
    before it (the ``question``). The emulator then answers with the rest of the answer it
    gives to ``question`` — provided ``shown`` is a prefix of it (see :func:`plan_answer`) — so
    the client's continue mode can be tested for exact, seamless results.
    """
    rest = [m for m in messages if isinstance(m, dict) and m.get("role") != "system"]
    if len(rest) < 3:
        return None
    question, shown, ask = rest[-3], rest[-2], rest[-1]
    if ask.get("role") != "user" or strip_directives(text_of(ask)).strip() != CONTINUE_PROMPT:
        return None
    if shown.get("role") != "assistant" or question.get("role") != "user":
        return None
    partial = text_of(shown)
    return (strip_directives(text_of(question)), partial) if partial else None


def find_scenario(scenarios: Iterable[Scenario], prompt: str) -> Scenario | None:
    """The first scenario matching ``prompt``, or None."""
    for scenario in scenarios:
        if scenario.matches(prompt):
            return scenario
    return None


def select_fault(
    shared: Shared,
    header: str | None,
    raw_prompt: str,
    scenario: Scenario | None,
    identity: str,
) -> FaultSpec:
    """Choose the fault of one request (see the module docstring).

    Raises:
        FaultSpecError: the explicit SPEC does not parse.
    """
    texts = find_directives(raw_prompt) if "[[wenxin:fault" in raw_prompt else []
    if header is not None:
        texts.insert(0, header)
    spec = NO_FAULT
    if texts:
        spec = parse_fault_spec(";".join(texts))
    elif scenario is not None and scenario.fault is not None:
        spec = scenario.fault
    else:
        for candidate, rate in shared.config.fault_rates:
            if shared.fault_rng.random() < rate:
                spec = candidate
                break
    if spec.is_empty or not shared.count_times(spec, identity):
        return NO_FAULT
    return spec


@dataclass(frozen=True, slots=True)
class Answer:
    """A planned answer: the content ``pieces`` (one per content chunk), the ``finish``
    reason, whether it was ``truncated``, the ``safety`` flag, and token counts."""

    pieces: tuple[str, ...]
    finish: str
    truncated: bool
    safety: int
    prompt_tokens: int
    cumulative: tuple[int, ...]

    @property
    def text(self) -> str:
        """The whole delivered text."""
        return "".join(self.pieces)

    def completion_after(self, sent: int) -> int:
        """Completion tokens after ``sent`` content chunks (cycling, for ``endless``)."""
        cycles, rest = divmod(sent, len(self.pieces))
        return cycles * self.cumulative[-1] + self.cumulative[rest]

    @property
    def completion_tokens(self) -> int:
        """Completion tokens of the whole answer (one cycle)."""
        return self.cumulative[-1]


def prompt_tokens(texts: Iterable[str]) -> int:
    """Estimated tokens of the prompt texts, with fault directives removed."""
    counter = TokenCounter()
    for text in texts:
        counter.feed(strip_directives(text))
        counter.feed("\n")
    return counter.total


def _cumulative(pieces: Sequence[str]) -> tuple[int, ...]:
    counter = TokenCounter()
    totals = [0]
    for piece in pieces:
        counter.feed(piece)
        totals.append(counter.total if any(totals) or piece else 0)
    return tuple(totals)


def plan_answer(
    config: EmulatorConfig,
    prompt: str,
    scenario: Scenario | None,
    fault: FaultSpec,
    split: Callable[[str], Sequence[str]],
    *,
    normal_finish: str,
    stop: Sequence[str] | None,
    max_tokens: int | None,
    prompt_token_count: int,
    shown: str = "",
    text: str | None = None,
) -> Answer:
    """Plan the answer to ``prompt`` (the directive-free last user message); with ``shown``
    (a continuation, see :func:`continuation_of`) only the rest of the answer after it — empty
    when all of it was shown (an answer cut between its last text and its finish). The
    text is the scenario's answer, else ``text`` (an answer the route composed: after tool
    results, about images), else the seeded default."""
    if scenario is not None and scenario.answer:
        text = scenario.answer
    elif text is None:
        text = default_answer(prompt, config.seed)
    if shown and text.startswith(shown):  # the rest: nothing if it was all shown already
        text = text[len(shown) :]
    if fault.chunks is not None:
        text = lengthen(text, fault.chunks, config.seed)
    finish = normal_finish
    truncated = False
    if stop:
        cut = cut_at_stop(text, stop)
        if cut is not None:
            text, finish = cut, "stop"
    if max_tokens is not None:
        cut = cut_to_tokens(text, max_tokens)
        if cut is not None:
            text, finish, truncated = cut, "length", True
    pieces = tuple(even_pieces(text, fault.chunks) if fault.chunks else split(text)) or ("",)
    safety = fault.safety or 0
    if fault.truncate or safety >= 3:
        pieces = pieces[: (len(pieces) + 1) // 2]
        if fault.truncate:
            finish, truncated = "length", True
        if safety >= 3:
            finish = "content_filter"
    return Answer(pieces, finish, truncated, safety, prompt_token_count, _cumulative(pieces))
