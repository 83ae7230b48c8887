"""ERNIE API v2 (OpenAI-compatible) responses: bytes and dicts in, typed events out. No I/O.

v2 speaks OpenAI's dialect: ``choices[0].message`` / ``choices[0].delta``, errors as HTTP
4xx/5xx with ``{"error": {"code", "message", "type"}, "id"}``, and streams that end with
``data: [DONE]``. The stream parser shares its machinery (bare-JSON sniffing, SSE decoding,
deferred errors, terminal-event bookkeeping) with v1; see ``_stream_parser``.
"""

# Theory of operation (v2 specifics)
# ==================================
#
# Per SSE event: ``[DONE]`` is the terminal event (anything after it is ignored). A plain text
# chunk (the common case) is read by ``_wire_v2_text`` without the generic parse, with the same
# events. Otherwise one ``json.loads``; an object with ``error`` and no ``choices`` is a
# mid-stream error and raises the APIError (classified by its code, since the HTTP status was
# 200). A chunk becomes, in order: ChunkMeta, then per choice ReasoningDelta, TextDelta (or
# SearchStatusEvent), ToolCallDelta…, FunctionCallEvent, SafetyEvent; then SearchInfoEvent
# (top-level ``search_results``), UnknownFieldsEvent (chunk, choice and delta scopes),
# FinishEvent (a non-empty ``finish_reason``; ``normal`` is the 2024 spelling of ``stop``) and
# UsageEvent (every non-null ``usage``: with ``include_usage`` only the last chunk has one, with
# ``chunk_include_usage`` every chunk carries the running total). A usage-only chunk with
# ``choices: []`` is fine.
#
# Reasoning ("deep thinking", ERNIE-CURRENT §2): ``delta.reasoning_content`` (Qianfan,
# FastDeploy), or ``delta.reasoning`` (vLLM's newer name) when ``reasoning_content`` is empty; an
# answer chunk may leave the key out, or send ``""`` or ``null`` — all three mean "no
# reasoning here". ``reasoning`` is looked at only when the delta has keys outside the known
# set, so plain text chunks pay nothing for it; the same holds for ``delta_tag``.
#
# Search status (``web_search.enable_status``): a chunk tagged ``delta_tag: "search_status"``
# (on the choice or inside the delta: the reference and the deep-search page disagree) carries
# a "searching…" text that is not part of the answer: it becomes a SearchStatusEvent.
#
# Tool calls: fragments are merged by ``index`` when the server sends one (OpenAI, FastDeploy
# and vLLM do). Qianfan's reference lists no ``index`` in a delta, so without one a fragment
# with a non-empty ``id`` different from the current call's starts the next call (index one
# more than the highest so far), and any other fragment continues the current call.
#
# ERNIE has no ``n``: the choice with index 0 is the answer. A choice with another index is not
# interpreted but passed on whole, as UnknownFieldsEvent({"choices": (choice,)}).
#
# Safety: ``flag`` is 0 in every chunk of a safe answer, so a SafetyEvent is emitted only when
# ``flag`` is non-zero, ``ban_round`` is present or ``need_clear_history`` (qianfan's mock) is
# true.
#
# close() without ``[DONE]`` raises IncompleteStreamError; if a finish_reason had arrived, the
# error says so (``content_finished=True``): the text is complete but the stream was cut before
# its end marker (and maybe before its usage).

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from ._events import (
    EMPTY_MAPPING,
    ChatResult,
    ChunkMeta,
    FinishEvent,
    FinishReason,
    FunctionCallEvent,
    ReasoningDelta,
    SafetyEvent,
    SearchInfoEvent,
    SearchStatusEvent,
    StreamEvent,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    UnknownFieldsEvent,
    UsageEvent,
    freeze,
    search_results_of,
)
from ._exceptions import (
    ApiGeneration,
    IncompleteStreamError,
    MalformedResponseError,
    WenxinError,
    api_error_from_v2,
)
from ._stream_parser import (
    StreamParser,
    dump_json,
    int_or_none,
    load_json_object,
    parse_function_call,
    parse_usage,
)
from ._wire_v2_text import text_chunk_events

__all__ = ["V2StreamParser", "parse_v2_body", "parse_v2_response"]

_V2_KNOWN = frozenset({"id", "object", "created", "model", "choices", "usage", "search_results"})
_CHOICE_KNOWN = frozenset(
    {"index", "delta", "message", "finish_reason", "flag", "ban_round", "need_clear_history"}
)
_MESSAGE_KNOWN = frozenset({"role", "content", "reasoning_content", "tool_calls", "function_call"})
# Read only when a delta has keys outside _MESSAGE_KNOWN, and never reported as unknown.
_MESSAGE_HANDLED = _MESSAGE_KNOWN | {"reasoning", "delta_tag"}
_CHOICE_HANDLED = _CHOICE_KNOWN | {"delta_tag"}
SEARCH_STATUS_TAG = "search_status"
"""The ``delta_tag`` of a search-status signal chunk."""


def _malformed(what: str, value: object) -> MalformedResponseError:
    return MalformedResponseError(f"v2 {what}", dump_json(value), api="v2")


def _text(value: object, what: str) -> str:
    """A text field: a string, or ``""`` for null/absent."""
    if value is None:
        return ""
    if type(value) is not str:
        raise _malformed(f"{what} is not a string", value)
    return value


def _is_error(body: Mapping[str, Any]) -> bool:
    return "error" in body and not body.get("choices")


def _unknown(fields: Mapping[str, Any], known: frozenset[str]) -> dict[str, Any]:
    return {key: value for key, value in fields.items() if key not in known}


Extras = Callable[[Mapping[str, Any], frozenset[str]], dict[str, Any]]
"""Which fields of a chunk, choice or message are reported as unknown (``_unknown`` for v2:
every field outside the known set)."""


def parse_v2_response(
    body: Mapping[str, Any],
    *,
    headers: Mapping[str, str] | None = None,
    extras: Extras = _unknown,
) -> ChatResult:
    """A non-stream v2 answer as a :class:`ChatResult`.

    Raises the matching :class:`~wenxin_stream._exceptions.APIError` if the body is an error
    object, and MalformedResponseError if it is not shaped like an answer. ``extras`` picks
    the fields kept in ``ChatResult.extra`` (``_wire_openai`` leaves out nulls and telemetry).
    """
    if not isinstance(body, Mapping):
        raise _malformed("response is not a JSON object", body)
    if _is_error(body):
        raise api_error_from_v2(200, body, headers=headers)
    choices = body.get("choices")
    if not isinstance(choices, list) or not all(isinstance(c, Mapping) for c in choices):
        raise _malformed("response has no list of choices", body)
    extra = extras(body, _V2_KNOWN)
    others = [c for c in choices if c.get("index", 0) != 0]
    if others:
        extra["choices"] = others
    first: Mapping[str, Any] = next((c for c in choices if c.get("index", 0) == 0), {})
    message = first.get("message") or {}
    if not isinstance(message, Mapping):
        raise _malformed("choices[0].message is not an object", first)
    extra.update({f"choice.{k}": v for k, v in extras(first, _CHOICE_KNOWN).items()})
    extra.update({f"message.{k}": v for k, v in extras(message, _MESSAGE_HANDLED).items()})
    raw_reason = first.get("finish_reason")
    reason = _text(raw_reason, "finish_reason") or None
    usage = body.get("usage")
    search = body.get("search_results")
    info = None if search is None else freeze({"search_results": search})
    reasoning = _text(message.get("reasoning_content"), "message.reasoning_content")
    if not reasoning:
        reasoning = _text(message.get("reasoning"), "message.reasoning")
    rid = body.get("id")
    model = body.get("model")
    return ChatResult(
        id=rid if isinstance(rid, str) else "",
        content=_text(message.get("content"), "message.content"),
        finish_reason=None if reason is None else FinishReason.from_raw(reason),
        raw_finish_reason=reason,
        usage=None if usage is None else parse_usage(usage, api="v2"),
        need_clear_history=bool(first.get("need_clear_history")),
        ban_round=int_or_none(first.get("ban_round")),
        flag=int_or_none(first.get("flag")) or 0,
        function_call=parse_function_call(message.get("function_call"), api="v2"),
        tool_calls=tuple(
            _tool_call(call, position)
            for position, call in enumerate(message.get("tool_calls") or ())
        ),
        search_info=info,
        reasoning=reasoning,
        search_results=() if info is None else search_results_of(info),
        extra=freeze(extra) if extra else EMPTY_MAPPING,
        model=model if isinstance(model, str) else None,
        created=int_or_none(body.get("created")),
    )


def _tool_call(call: object, position: int) -> ToolCall:
    if not isinstance(call, Mapping):
        raise _malformed("tool call is not an object", call)
    function = call.get("function") or {}
    if not isinstance(function, Mapping):
        raise _malformed("tool call function is not an object", call)
    arguments = function.get("arguments")
    if arguments is not None and not isinstance(arguments, str):
        arguments = json.dumps(arguments, ensure_ascii=False)
    index = call.get("index", position)
    if type(index) is not int:
        raise _malformed("tool call index is not an integer", call)
    return ToolCall(
        id=_text(call.get("id"), "tool call id"),
        name=_text(function.get("name"), "tool call name"),
        arguments=arguments or "",
        type=_text(call.get("type"), "tool call type") or "function",
        index=index,
    )


def parse_v2_body(
    status: int, raw: bytes | str, *, headers: Mapping[str, str] | None = None
) -> ChatResult:
    """A whole non-stream v2 response (status and body bytes) as a :class:`ChatResult`, or the
    APIError it carries (any non-2xx status, whatever the body)."""
    if not 200 <= status < 300:
        raise api_error_from_v2(status, raw, headers=headers)
    body = load_json_object(raw, api="v2")
    if _is_error(body):
        raise api_error_from_v2(status, body, headers=headers)
    return parse_v2_response(body, headers=headers)


def _chunk_start(out: list[StreamEvent]) -> int:
    """The position of the current chunk's ChunkMeta in ``out`` (its events follow it)."""
    for position in range(len(out) - 1, -1, -1):
        if type(out[position]) is ChunkMeta:
            return position
    return 0


def _as_status(out: list[StreamEvent]) -> None:
    """The current chunk is the search-status signal: its text is not answer text."""
    start = _chunk_start(out)
    for position in range(start, len(out)):
        event = out[position]
        if type(event) is TextDelta:
            out[position] = SearchStatusEvent(event.text)
            return
    out.append(SearchStatusEvent())


def _delta_extras(
    delta: dict[str, Any],
    had_reasoning: bool,
    out: list[StreamEvent],
    tail: list[StreamEvent],
    extras: Extras,
) -> None:
    """The keys of a delta outside the common set (read only when there are some): vLLM's
    ``reasoning`` (placed before the chunk's text), ``delta_tag`` and unknown fields."""
    if not had_reasoning:
        reasoning = delta.get("reasoning")
        if reasoning:
            event = ReasoningDelta(_text(reasoning, "delta.reasoning"))
            start = _chunk_start(out) + 1
            out.insert(start, event)
    if delta.get("delta_tag") == SEARCH_STATUS_TAG:
        _as_status(out)
    fields = extras(delta, _MESSAGE_HANDLED)
    if fields:
        tail.append(UnknownFieldsEvent(freeze(fields), "message"))


class V2StreamParser(StreamParser):
    """Sans-I/O parser of a v2 chat stream: feed it the response body, get typed events.

    Args:
        headers: The response headers, used for the request id of errors.
        max_line_bytes, max_event_bytes: Limits handed to the SSE decoder.
        max_error_bytes: The largest bare JSON (error) line accepted.

    The terminal event is ``data: [DONE]``; :meth:`close` without it raises
    :class:`~wenxin_stream._exceptions.IncompleteStreamError` (with ``content_finished`` set if
    a ``finish_reason`` had arrived).
    """

    _api: ClassVar[ApiGeneration] = "v2"

    __slots__ = ("_raw_reason", "_tool_id", "_tool_index", "_tool_next")

    def _init_state(self) -> None:
        self._raw_reason: str | None = None
        self._tool_index = -1  # the call the last tool-call fragment belonged to
        self._tool_id: str | None = None  # its id
        self._tool_next = 0  # one more than the highest call index so far

    def _error_from(self, value: dict[str, Any]) -> WenxinError | None:
        if "error" in value or "code" in value:
            return api_error_from_v2(200, value, headers=self._headers)
        return None

    def _extras(self, fields: Mapping[str, Any], known: frozenset[str]) -> dict[str, Any]:
        """The fields of a chunk, choice or delta reported as unknown (all outside ``known``)."""
        return _unknown(fields, known)

    def _chunk_error(self, chunk: dict[str, Any]) -> WenxinError | None:
        """The error a chunk without choices carries, if it is one."""
        if "error" in chunk:
            return api_error_from_v2(200, chunk, headers=self._headers)
        return None

    def _incomplete(self, where: str) -> IncompleteStreamError:
        if self._raw_reason is not None:
            return IncompleteStreamError(
                f"{self._api} stream ended{where} without data: [DONE] after the answer had "
                f"finished (finish_reason {self._raw_reason!r}); usage may be missing",
                api=self._api,
                content_finished=True,
                finish_reason=self._raw_reason,
            )
        return IncompleteStreamError(
            f"{self._api} stream ended{where} without data: [DONE]; the answer may be cut short",
            api=self._api,
        )

    def _handle(self, data: str, out: list[StreamEvent]) -> None:
        if data[:1] != "{" and data.strip() == "[DONE]":
            self._finished = True
            return
        rid = text_chunk_events(data, out)
        if rid is None:
            self._handle_chunk(data, out)
        elif rid:
            self._response_id = rid

    def _handle_chunk(self, data: str, out: list[StreamEvent]) -> None:
        """Any chunk, by the generic parse (a plain text chunk gives the same events)."""
        chunk = self._load(data)
        get = chunk.get
        choices = get("choices")
        if not choices:
            error = self._chunk_error(chunk)
            if error is not None:
                raise error
        rid = get("id")
        if type(rid) is str and rid:
            self._response_id = rid
        else:
            rid = ""
        model = get("model")
        out.append(
            ChunkMeta(rid, int_or_none(get("created")), None, model if type(model) is str else None)
        )
        finish: FinishEvent | None = None
        tail: list[StreamEvent] = []
        if choices:
            if type(choices) is not list:
                raise _malformed("choices is not a list", chunk)
            for choice in choices:
                if type(choice) is not dict:
                    raise _malformed("choice is not an object", chunk)
                if choice.get("index", 0) != 0:
                    tail.append(UnknownFieldsEvent(freeze({"choices": [choice]})))
                    continue
                finish = self._choice(choice, out, tail) or finish
        search = get("search_results")
        if search is not None:
            info = freeze({"search_results": search})
            out.append(SearchInfoEvent(info, search_results_of(info)))
        if not _V2_KNOWN.issuperset(chunk):
            fields = self._extras(chunk, _V2_KNOWN)
            if fields:
                out.append(UnknownFieldsEvent(freeze(fields)))
        out.extend(tail)
        if finish is not None:
            out.append(finish)
        usage = get("usage")
        if usage is not None:
            self._usage = parse_usage(usage, api="v2")
            out.append(UsageEvent(self._usage))

    def _choice(
        self, choice: dict[str, Any], out: list[StreamEvent], tail: list[StreamEvent]
    ) -> FinishEvent | None:
        delta = choice.get("delta")
        if delta:
            if type(delta) is not dict:
                raise _malformed("delta is not an object", choice)
            reasoning = delta.get("reasoning_content")
            if reasoning:
                out.append(ReasoningDelta(_text(reasoning, "delta.reasoning_content")))
            content = delta.get("content")
            if content:
                out.append(TextDelta(_text(content, "delta.content")))
            tool_calls = delta.get("tool_calls")
            if tool_calls:
                self._tool_calls(tool_calls, out)
            function_call = delta.get("function_call")
            if function_call:
                call = parse_function_call(function_call, api="v2")
                assert call is not None
                out.append(FunctionCallEvent(call.name, call.arguments, call.thoughts))
            if not _MESSAGE_KNOWN.issuperset(delta):
                _delta_extras(delta, bool(reasoning), out, tail, self._extras)
        flag = int_or_none(choice.get("flag"))
        ban_round = int_or_none(choice.get("ban_round"))
        clear = bool(choice.get("need_clear_history"))
        if flag or ban_round is not None or clear:
            out.append(SafetyEvent(clear, ban_round, flag))
        if not _CHOICE_KNOWN.issuperset(choice):
            if choice.get("delta_tag") == SEARCH_STATUS_TAG:
                _as_status(out)
            fields = self._extras(choice, _CHOICE_HANDLED)
            if fields:
                tail.append(UnknownFieldsEvent(freeze(fields), "choice"))
        reason = choice.get("finish_reason")
        if not reason:
            return None
        if type(reason) is not str:
            raise _malformed("finish_reason is not a string", choice)
        self._raw_reason = reason
        self._finish_reason = FinishReason.from_raw(reason)
        return FinishEvent(self._finish_reason, reason)

    def _tool_calls(self, tool_calls: object, out: list[StreamEvent]) -> None:
        if type(tool_calls) is not list:
            raise _malformed("delta.tool_calls is not a list", tool_calls)
        for call in tool_calls:
            if type(call) is not dict:
                raise _malformed("tool call delta is not an object", call)
            function = call.get("function") or {}
            if type(function) is not dict:
                raise _malformed("tool call delta function is not an object", call)
            call_id = call.get("id")
            if type(call_id) is not str or not call_id:
                call_id = None
            index = call.get("index")
            if index is None:  # see the theory of operation: a new id starts a new call
                if self._tool_index < 0 or (call_id is not None and call_id != self._tool_id):
                    index = self._tool_next
                else:
                    index = self._tool_index
            elif type(index) is not int or index < 0:
                raise _malformed("tool call delta index is not an integer", call)
            if index != self._tool_index:
                self._tool_index = index
                self._tool_id = call_id
            elif call_id is not None:
                self._tool_id = call_id
            if index >= self._tool_next:
                self._tool_next = index + 1
            arguments = function.get("arguments")
            if arguments is not None and type(arguments) is not str:
                arguments = json.dumps(arguments, ensure_ascii=False)
            name = function.get("name")
            kind = call.get("type")
            out.append(
                ToolCallDelta(
                    index,
                    call_id,
                    name if type(name) is str and name else None,
                    arguments or "",
                    kind if type(kind) is str and kind else None,
                )
            )
