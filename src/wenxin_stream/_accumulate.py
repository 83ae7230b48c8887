"""Folding a stream's events into the :class:`~wenxin_stream._events.ChatResult` they add up to.

The SDK's ``get_final_message()`` and the gateway's bookkeeping are this fold and nothing more,
and the result equals what the non-stream parser returns for the same answer (so a stream and a
non-stream call can be compared field by field).

:class:`Accumulator` is the working form: it collects text in lists (linear time however many
deltas arrive) and :meth:`Accumulator.result` returns a new frozen ``ChatResult`` each time.
:func:`accumulate` is the pure form, ``accumulate(snapshot, event) -> ChatResult``, convenient
for folds over a few events; it copies the snapshot on each call.

Rules: text and reasoning deltas are concatenated (each into its own field: reasoning is never
answer text); tool-call fragments are merged by ``index`` (``id``, ``name`` and ``type`` from the
first fragment that has them, ``arguments`` concatenated) and listed by index; the latest usage,
finish reason, function call and ``ban_round`` win; ``need_clear_history`` and ``is_truncated``
stay set once set and ``flag`` keeps its highest value; search info and unknown fields are merged
key by key, later values winning, and search results by their ``index``; the id is the latest
non-empty one, ``created`` the first, ``model`` the latest. Event types this module does not
know (and the search-status signal) are ignored, so new event types never break the fold.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any

from ._events import (
    EMPTY_MAPPING,
    ChatResult,
    ChunkMeta,
    FinishEvent,
    FinishReason,
    FunctionCall,
    FunctionCallEvent,
    ReasoningDelta,
    SafetyEvent,
    SearchInfoEvent,
    SearchResult,
    StreamEvent,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    TruncatedEvent,
    UnknownFieldsEvent,
    Usage,
    UsageEvent,
)

__all__ = ["Accumulator", "accumulate", "accumulate_all"]


class _ToolCallParts:
    __slots__ = ("arguments", "id", "name", "type", "typed")

    def __init__(self, id: str = "", name: str = "", type: str | None = None) -> None:
        self.id = id
        self.name = name
        self.type = type or "function"
        self.typed = type is not None  # a fragment (or the snapshot) said which type
        self.arguments: list[str] = []


class Accumulator:
    """Collects a stream's events into a :class:`ChatResult`.

    Args:
        snapshot: A result to continue from (``None`` starts empty).
    """

    __slots__ = (
        "_ban_round",
        "_clear",
        "_created",
        "_extra",
        "_finish",
        "_flag",
        "_function_call",
        "_id",
        "_model",
        "_raw_finish",
        "_reasoning",
        "_search",
        "_sources",
        "_text",
        "_tools",
        "_truncated",
        "_usage",
    )

    def __init__(self, snapshot: ChatResult | None = None) -> None:
        start = snapshot or ChatResult()
        self._id = start.id
        self._text: list[str] = [start.content] if start.content else []
        self._reasoning: list[str] = [start.reasoning] if start.reasoning else []
        self._finish: FinishReason | None = start.finish_reason
        self._raw_finish = start.raw_finish_reason
        self._usage: Usage | None = start.usage
        self._clear = start.need_clear_history
        self._ban_round = start.ban_round
        self._flag = start.flag
        self._truncated = start.is_truncated
        self._function_call: FunctionCall | None = start.function_call
        self._tools: dict[int, _ToolCallParts] = {}
        for call in start.tool_calls:
            parts = self._tools[call.index] = _ToolCallParts(call.id, call.name, call.type)
            parts.arguments.append(call.arguments)
        self._search: dict[str, Any] | None = (
            None if start.search_info is None else dict(start.search_info)
        )
        self._sources: dict[int, SearchResult] = {r.index: r for r in start.search_results}
        self._extra: dict[str, Any] = dict(start.extra)
        self._model = start.model
        self._created = start.created

    @property
    def text(self) -> str:
        """The answer text so far (what the SDK attaches to errors as ``partial_text``)."""
        return "".join(self._text)

    @property
    def usage(self) -> Usage | None:
        """The latest usage reported so far (``None``: none yet)."""
        return self._usage

    @property
    def reasoning(self) -> str:
        """The reasoning text so far."""
        return "".join(self._reasoning)

    @property
    def finish_reason(self) -> FinishReason | None:
        """The finish reason so far (``None``: none yet)."""
        return self._finish

    def add(self, event: StreamEvent) -> None:
        """Take one event into account (unknown event types are ignored)."""
        handler = _HANDLERS.get(type(event))
        if handler is not None:
            handler(self, event)

    def extend(self, events: Iterable[StreamEvent]) -> None:
        """Take several events into account, in order."""
        for event in events:
            self.add(event)

    def result(self) -> ChatResult:
        """The answer so far, as a new frozen :class:`ChatResult`."""
        tools = tuple(
            ToolCall(parts.id, parts.name, "".join(parts.arguments), parts.type, index)
            for index, parts in sorted(self._tools.items())
        )
        search = None if self._search is None else MappingProxyType(dict(self._search))
        return ChatResult(
            id=self._id,
            content="".join(self._text),
            finish_reason=self._finish,
            raw_finish_reason=self._raw_finish,
            usage=self._usage,
            need_clear_history=self._clear,
            ban_round=self._ban_round,
            flag=self._flag,
            is_truncated=self._truncated,
            function_call=self._function_call,
            tool_calls=tools,
            search_info=search,
            reasoning="".join(self._reasoning),
            search_results=tuple(self._sources.values()),
            extra=MappingProxyType(dict(self._extra)) if self._extra else EMPTY_MAPPING,
            model=self._model,
            created=self._created,
        )

    # One handler per event type.

    def _meta(self, event: ChunkMeta) -> None:
        if event.id:
            self._id = event.id
        if self._created is None:
            self._created = event.created
        if event.model is not None:
            self._model = event.model

    def _text_delta(self, event: TextDelta) -> None:
        self._text.append(event.text)

    def _reasoning_delta(self, event: ReasoningDelta) -> None:
        self._reasoning.append(event.text)

    def _usage_event(self, event: UsageEvent) -> None:
        self._usage = event.usage

    def _finish_event(self, event: FinishEvent) -> None:
        self._finish = event.reason
        self._raw_finish = event.raw_reason or None

    def _safety(self, event: SafetyEvent) -> None:
        self._clear = self._clear or event.need_clear_history
        if event.ban_round is not None:
            self._ban_round = event.ban_round
        if event.flag is not None and event.flag > self._flag:
            self._flag = event.flag

    def _truncated_event(self, event: TruncatedEvent) -> None:
        self._truncated = True

    def _function_call_event(self, event: FunctionCallEvent) -> None:
        self._function_call = FunctionCall(event.name, event.arguments, event.thoughts)

    def _tool_call_delta(self, event: ToolCallDelta) -> None:
        parts = self._tools.get(event.index)
        if parts is None:
            parts = self._tools[event.index] = _ToolCallParts()
        if event.id and not parts.id:
            parts.id = event.id
        if event.name and not parts.name:
            parts.name = event.name
        if event.type and not parts.typed:
            parts.type = event.type
            parts.typed = True
        if event.arguments_delta:
            parts.arguments.append(event.arguments_delta)

    def _search_info(self, event: SearchInfoEvent) -> None:
        if self._search is None:
            self._search = {}
        self._search.update(event.info)
        for source in event.results:
            self._sources[source.index] = source

    def _unknown(self, event: UnknownFieldsEvent) -> None:
        prefix = "" if event.scope == "chunk" else f"{event.scope}."
        for key, value in event.fields.items():
            self._extra[prefix + key] = value


_HANDLERS: Mapping[type, Any] = {
    ChunkMeta: Accumulator._meta,
    TextDelta: Accumulator._text_delta,
    ReasoningDelta: Accumulator._reasoning_delta,
    UsageEvent: Accumulator._usage_event,
    FinishEvent: Accumulator._finish_event,
    SafetyEvent: Accumulator._safety,
    TruncatedEvent: Accumulator._truncated_event,
    FunctionCallEvent: Accumulator._function_call_event,
    ToolCallDelta: Accumulator._tool_call_delta,
    SearchInfoEvent: Accumulator._search_info,
    UnknownFieldsEvent: Accumulator._unknown,
}


def accumulate(snapshot: ChatResult | None, event: StreamEvent) -> ChatResult:
    """The result after ``event``, given the result ``snapshot`` before it (pure; ``None``
    means nothing yet). Costs a copy of the snapshot: for whole streams use
    :class:`Accumulator` or :func:`accumulate_all`."""
    accumulator = Accumulator(snapshot)
    accumulator.add(event)
    return accumulator.result()


def accumulate_all(events: Iterable[StreamEvent]) -> ChatResult:
    """The result a sequence of events adds up to."""
    accumulator = Accumulator()
    accumulator.extend(events)
    return accumulator.result()
