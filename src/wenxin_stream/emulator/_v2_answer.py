"""A v2 answer as today's ERNIE gives it: thinking, then text or tool calls, with search and usage.

Theory of operation
===================

:func:`plan_v2` turns a checked request into a :class:`V2Answer` (pure, deterministic):

* **thinking** — when the model thinks for this request (``ModelSpec.thinks``: always, or a
  hybrid model by ``enable_thinking`` or its default), a seeded reasoning text
  (``_answers.reasoning_text``) cut to ``thinking_budget`` tokens, in 2–8 character pieces;
* **tool calls** (``_tools``) — when ``tools`` are sent and the question calls for one, or
  ``tool_choice`` forces one; otherwise
* **text** — the answer to tool results, the description of the images, a scenario's answer
  or the seeded default, with citation markers when a search cites (``_search``), cut by
  ``stop`` / ``max_tokens`` and the content faults, in deltas (``_chat.plan_answer``);
* **usage** — the prompt's estimate, plus about 300 tokens when tools are sent and the
  search's tokens (``prompt_tokens_details.search_tokens``); completion = thinking + answer (or
  the calls' arguments), with ``completion_tokens_details.reasoning_tokens`` on request.

:func:`complete_body` renders the non-stream ``chat.completion``; :func:`stream_plan` the
stream for the pump, chunk by chunk, in this order (every one counts as a chunk for the fault
positions ``cut_after``, ``error_after``, ``stall_after``…, so ``cut_after=3`` on a thinking
model cuts during the thinking):

1. the search-status signal (``delta_tag: "search_status"``, on the choice or in the delta);
2. the thinking, ``delta.reasoning_content``, paced by ``thinking_interval``;
3. the answer: text deltas, the first with the top-level ``search_results`` and the last with
   ``finish_reason`` (answer chunks of a thinking model carry ``reasoning_content`` as
   configured: absent, ``""`` or ``null``) — or one delta per tool call with ``index``, ``id``,
   ``type``, ``function.name`` and the whole ``arguments`` (``tool_call_index`` /
   ``tool_index=0`` leave ``index`` out; ``tool_call_pieces`` / ``tool_pieces=N`` cut the
   arguments into N deltas, the first carrying id and name), then an empty chunk with
   ``finish_reason: "tool_calls"``.

The first chunk carries ``role: "assistant"``. Usage rides on the last chunk
(``include_usage``) or, running, on every chunk (``chunk_include_usage``). A plain text answer
is rendered exactly as before this module existed, at the same cost per chunk.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .._asgi import json_bytes
from .._models import ModelSpec
from .._parameters import thinking_requested
from ._answers import TokenCounter, cut_to_tokens, delta_pieces, even_pieces, reasoning_text
from ._chat import Answer, Shared
from ._config import EmulatorConfig
from ._faults import FaultSpec
from ._search import STATUS_TEXT, SearchPlan
from ._stream import ENDLESS_CAP, StreamPlan
from ._tools import PlannedCall

__all__ = [
    "TOOLS_PROMPT_TOKENS",
    "V2Answer",
    "complete_body",
    "plan_reasoning",
    "plan_v2",
    "stream_plan",
    "usage",
]

TOOLS_PROMPT_TOKENS = 300
"""Prompt tokens function calling adds (Baidu's built-in template, ``ERNIE-CURRENT`` §3.1)."""


def _cumulative(pieces: Sequence[str]) -> tuple[int, ...]:
    counter = TokenCounter()
    totals = [0]
    for piece in pieces:
        counter.feed(piece)
        totals.append(counter.total)
    return tuple(totals)


@dataclass(frozen=True, slots=True)
class V2Answer:
    """A planned v2 answer (see the module docstring): the text ``answer`` (its prompt tokens
    include tools and search), the ``reasoning`` pieces with their running token counts, the
    tool ``calls`` with their argument pieces, and the ``search``."""

    answer: Answer
    reasoning: tuple[str, ...] = ()
    reasoning_totals: tuple[int, ...] = (0,)
    calls: tuple[PlannedCall, ...] = ()
    call_pieces: tuple[tuple[str, ...], ...] = ()
    call_totals: tuple[int, ...] = (0,)
    search: SearchPlan | None = None

    @property
    def reasoning_tokens(self) -> int:
        """Tokens of the whole thinking."""
        return self.reasoning_totals[-1]

    @property
    def completion_tokens(self) -> int:
        """Tokens of the whole answer: thinking plus text (or the calls' arguments)."""
        answer = self.call_totals[-1] if self.calls else self.answer.completion_tokens
        return self.reasoning_tokens + answer

    @property
    def finish(self) -> str:
        """The answer's ``finish_reason``."""
        return "tool_calls" if self.calls else self.answer.finish


def plan_reasoning(
    config: EmulatorConfig, spec: ModelSpec, body: Mapping[str, Any], question: str
) -> tuple[str, ...]:
    """The thinking pieces for this request (``()`` when the model does not think)."""
    if not spec.thinks(thinking_requested(body)):
        return ()
    text = reasoning_text(question, config.seed)
    budget = body.get("thinking_budget")
    if isinstance(budget, int) and not isinstance(budget, bool):
        text = cut_to_tokens(text, budget) or text
    return delta_pieces(text, config.seed)


def plan_v2(
    config: EmulatorConfig,
    answer: Answer,
    reasoning: tuple[str, ...],
    calls: tuple[PlannedCall, ...],
    search: SearchPlan | None,
    fault: FaultSpec,
) -> V2Answer:
    """Put the parts of a v2 answer together (the text ``answer`` was planned by the route)."""
    pieces_per_call = fault.tool_pieces or config.tool_call_pieces
    call_pieces = tuple(
        tuple(even_pieces(call.arguments, min(pieces_per_call, max(1, len(call.arguments)))))
        for call in calls
    )
    return V2Answer(
        answer=answer,
        reasoning=reasoning,
        reasoning_totals=_cumulative(reasoning) if reasoning else (0,),
        calls=calls,
        call_pieces=call_pieces,
        call_totals=_cumulative([p for pieces in call_pieces for p in pieces]) if calls else (0,),
        search=search,
    )


def usage(
    config: EmulatorConfig, plan: V2Answer, completion: int, reasoning: int
) -> dict[str, Any]:
    """A ``usage`` object (``completion`` tokens so far, ``reasoning`` of them thinking)."""
    prompt = plan.answer.prompt_tokens
    result: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
    if plan.search is not None:
        result["prompt_tokens_details"] = {"search_tokens": plan.search.tokens, "cached_tokens": 0}
    if config.reasoning_tokens_detail and plan.reasoning:
        result["completion_tokens_details"] = {"reasoning_tokens": reasoning}
    return result


def _flags(choice: dict[str, Any], flag: int) -> dict[str, Any]:
    choice["flag"] = flag
    if flag:
        choice["ban_round"] = -1
    return choice


def _tool_call(call: PlannedCall) -> dict[str, Any]:
    """A whole tool call, as a non-stream message lists it."""
    function = {"name": call.name, "arguments": call.arguments}
    return {"id": call.id, "type": "function", "function": function}


def complete_body(
    config: EmulatorConfig, plan: V2Answer, response_id: str, model: str
) -> dict[str, Any]:
    """The non-stream ``chat.completion`` of ``plan``."""
    answer = plan.answer
    message: dict[str, Any] = {"role": "assistant", "content": "" if plan.calls else answer.text}
    if plan.reasoning:
        message["reasoning_content"] = "".join(plan.reasoning)
    if plan.calls:
        message["tool_calls"] = [_tool_call(call) for call in plan.calls]
    choice = {"index": 0, "message": message, "finish_reason": plan.finish}
    body: dict[str, Any] = {
        "id": response_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [_flags(choice, 0 if plan.calls else answer.safety)],
    }
    if plan.search is not None and plan.search.trace:
        body["search_results"] = list(plan.search.results)
    body["usage"] = usage(config, plan, plan.completion_tokens, plan.reasoning_tokens)
    return body


_REASONING_IN_ANSWER: dict[str, object] = {"empty": "", "null": None}


def stream_plan(
    shared: Shared,
    plan: V2Answer,
    fault: FaultSpec,
    response_id: str,
    model: str,
    *,
    stream: bool,
    include_usage: bool,
    every_chunk: bool,
    error_json: bytes,
    config: EmulatorConfig | None = None,
) -> StreamPlan:
    """The pump's plan of a v2 stream (see the module docstring for the order of chunks);
    ``config`` overrides ``shared.config`` (the OpenAI-compatible route's view of it)."""
    config = shared.config if config is None else config
    status = plan.search is not None and plan.search.status
    head = int(status) + len(plan.reasoning)  # chunks before the answer
    if plan.calls:
        answer_count = sum(len(pieces) for pieces in plan.call_pieces) + 1
    else:
        answer_count = len(plan.answer.pieces) + (plan.answer.safety >= 3)
    endless = stream and fault.endless and not plan.calls
    count = head + (ENDLESS_CAP if endless else answer_count)
    if head == 0 and not plan.calls and plan.search is None:
        render = _plain_renderer(
            config, plan, response_id, model, count, include_usage, every_chunk
        )
    else:
        render = _renderer(
            config, plan, fault, response_id, model, count, include_usage, every_chunk, status
        )
    return StreamPlan(
        count=count,
        render=render,
        end_json=None,
        done_marker=True,
        error_json=error_json,
        ttft=config.ttft if fault.ttft is None else fault.ttft,
        interval=config.v2_interval if fault.interval is None else fault.interval,
        fault=fault,
        think_count=head,
        think_interval=(
            config.thinking_interval if fault.thinking_interval is None else fault.thinking_interval
        ),
    )


def _plain_renderer(
    config: EmulatorConfig,
    plan: V2Answer,
    response_id: str,
    model: str,
    count: int,
    include_usage: bool,
    every_chunk: bool,
) -> Callable[[int], bytes]:
    """Chunk ``index`` of a plain text answer (no thinking, search or tools): the per-chunk
    path of most streams, kept as cheap as it was."""
    answer = plan.answer
    pieces: Sequence[str] = answer.pieces
    if answer.safety >= 3:
        pieces = (*pieces, "")  # the empty chunk that reports the filter
    n_pieces = len(pieces)
    # Safety 1–2 marks every chunk; 3–4 only the final (filter) chunk.
    all_flag = answer.safety if 0 < answer.safety < 3 else 0

    def render(index: int) -> bytes:
        last = index == count - 1
        delta = (
            {"role": "assistant", "content": pieces[0]}
            if index == 0
            else {"content": pieces[index % n_pieces]}
        )
        choice = {"index": 0, "delta": delta, "finish_reason": answer.finish if last else None}
        flag = answer.safety if last and answer.safety else all_flag
        chunk: dict[str, Any] = {
            "id": response_id,
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
            "choices": [_flags(choice, flag)],
        }
        if every_chunk or (include_usage and last):
            chunk["usage"] = usage(config, plan, answer.completion_after(index + 1), 0)
        return json_bytes(chunk)

    return render


def _renderer(
    config: EmulatorConfig,
    plan: V2Answer,
    fault: FaultSpec,
    response_id: str,
    model: str,
    count: int,
    include_usage: bool,
    every_chunk: bool,
    status: bool,
) -> Callable[[int], bytes]:
    """Chunk ``index`` of an answer with a status signal, thinking, search or tool calls."""
    reasoning = plan.reasoning
    head = int(status) + len(reasoning)
    last = count - 1
    answer_choice = _tool_choice(config, plan, fault, head == 0) if plan.calls else None
    text_choice = None if plan.calls else _text_choice(config, plan, head == 0)
    search_extra = (
        {"search_results": list(plan.search.results)}
        if plan.search is not None and plan.search.trace
        else None
    )

    def completion_after(index: int) -> tuple[int, int]:
        """(completion, reasoning) tokens after chunk ``index``."""
        if index < head:
            thought = plan.reasoning_totals[max(0, index + 1 - int(status))]
            return thought, thought
        j = index - head
        if plan.calls:
            done = plan.call_totals[min(j + 1, len(plan.call_totals) - 1)]
        else:
            done = plan.answer.completion_after(j + 1)
        return plan.reasoning_tokens + done, plan.reasoning_tokens

    def render(index: int) -> bytes:
        chunk: dict[str, Any] = {
            "id": response_id,
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
        }
        if index < head:
            choice = _head_choice(config, reasoning, index, status)
        elif answer_choice is not None:
            choice = answer_choice(index - head, index == last)
        else:
            assert text_choice is not None
            choice = text_choice(index - head, index == last)
        chunk["choices"] = [choice]
        if index == head and search_extra is not None and not plan.calls:
            chunk.update(search_extra)
        if every_chunk or (include_usage and index == last):
            chunk["usage"] = usage(config, plan, *completion_after(index))
        return json_bytes(chunk)

    return render


def _head_choice(
    config: EmulatorConfig, reasoning: tuple[str, ...], index: int, status: bool
) -> dict[str, Any]:
    """The choice of a chunk before the answer: the status signal or a piece of thinking."""
    delta: dict[str, Any] = {"role": "assistant"} if index == 0 else {}
    if status and index == 0:
        delta["content"] = STATUS_TEXT
        choice: dict[str, Any] = {"index": 0, "delta": delta}
        if config.search_status_placement == "delta":
            delta["delta_tag"] = "search_status"
        else:
            choice["delta_tag"] = "search_status"
        choice["finish_reason"] = None
        return _flags(choice, 0)
    delta["reasoning_content"] = reasoning[index - int(status)]
    return _flags({"index": 0, "delta": delta, "finish_reason": None}, 0)


ChoiceRenderer = Callable[[int, bool], dict[str, Any]]


def _text_choice(config: EmulatorConfig, plan: V2Answer, first_of_stream: bool) -> ChoiceRenderer:
    """The choice of text chunk ``j`` (``last``: the stream's last chunk)."""
    answer = plan.answer
    pieces: Sequence[str] = answer.pieces
    if answer.safety >= 3:
        pieces = (*pieces, "")
    n_pieces = len(pieces)
    all_flag = answer.safety if 0 < answer.safety < 3 else 0
    carry = bool(plan.reasoning) and config.reasoning_in_answer != "absent"
    carried = _REASONING_IN_ANSWER.get(config.reasoning_in_answer)

    def render(j: int, last: bool) -> dict[str, Any]:
        delta: dict[str, Any] = {"role": "assistant"} if j == 0 and first_of_stream else {}
        delta["content"] = pieces[j % n_pieces]
        if carry:
            delta["reasoning_content"] = carried
        choice = {"index": 0, "delta": delta, "finish_reason": answer.finish if last else None}
        return _flags(choice, answer.safety if last and answer.safety else all_flag)

    return render


def _tool_choice(
    config: EmulatorConfig, plan: V2Answer, fault: FaultSpec, first_of_stream: bool
) -> ChoiceRenderer:
    """The choice of tool-call chunk ``j``: the calls' deltas, then the finishing chunk."""
    with_index = config.tool_call_index if fault.tool_index is None else fault.tool_index
    slots = [
        (number, position)
        for number, pieces in enumerate(plan.call_pieces)
        for position in range(len(pieces))
    ]

    def render(j: int, last: bool) -> dict[str, Any]:
        if j >= len(slots):
            return _flags({"index": 0, "delta": {"content": ""}, "finish_reason": "tool_calls"}, 0)
        number, position = slots[j]
        call = plan.calls[number]
        item: dict[str, Any] = {"index": number} if with_index else {}
        function: dict[str, Any] = {}
        if position == 0:
            item.update(id=call.id, type="function")
            function["name"] = call.name
        function["arguments"] = plan.call_pieces[number][position]
        item["function"] = function
        delta: dict[str, Any] = {"role": "assistant"} if j == 0 and first_of_stream else {}
        delta["content"] = ""
        delta["tool_calls"] = [item]
        return _flags({"index": 0, "delta": delta, "finish_reason": None}, 0)

    return render
