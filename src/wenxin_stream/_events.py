"""The typed events a chat stream yields, and the result a whole answer adds up to.

Both API generations are normalised to the same vocabulary, so the SDK, the gateway and user
code never look at wire JSON:

==================== ===================================================================
event                 what it carries
==================== ===================================================================
``ChunkMeta``         first event of every chunk: response ``id``, ``created``, v1
                      ``sentence_id``, v2 ``model``
``TextDelta``         new answer text (v1 ``result``, v2 ``delta.content``)
``ReasoningDelta``    new reasoning ("deep thinking") text: v2 ``delta.reasoning_content``
                      (vLLM's newer name ``reasoning`` too); never part of the answer text
``ToolCallDelta``     a fragment of a v2 tool call; fragments with one ``index`` add up to
                      one call
``FunctionCallEvent`` a whole v1 ``function_call``
``SearchInfoEvent``   v1 ``search_info`` / v2 ``search_results`` (as ``{"search_results": …}``),
                      with the typed :class:`SearchResult` items
``SearchStatusEvent`` v2's "searching…" signal chunk (``delta_tag: "search_status"``): not
                      answer text
``SafetyEvent``       ``need_clear_history`` / ``ban_round`` / ``flag`` said something
``TruncatedEvent``    v1 ``is_truncated``: the output was cut
``UnknownFieldsEvent`` fields this layer does not model, passed on, never dropped
``FinishEvent``       the answer finished, with a normalised :class:`FinishReason`
``UsageEvent``        token counts (v1: from the final ``is_end`` chunk only)
==================== ===================================================================

Everything here is immutable: frozen dataclasses with slots, tuples, and
:class:`types.MappingProxyType` for mappings (:func:`freeze` converts parsed JSON, :func:`thaw`
converts back; ``json.dumps(value, default=dict)`` also serialises frozen values). The set of
events is open-ended: a consumer must ignore event types it does not know.

:class:`ChatResult` is one complete answer; the wire modules parse non-stream responses into it,
and ``_accumulate`` folds a stream's events into the same shape.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Any, TypeAlias

__all__ = [
    "EMPTY_MAPPING",
    "ChatResult",
    "ChunkMeta",
    "EndReason",
    "FinishEvent",
    "FinishReason",
    "FunctionCall",
    "FunctionCallEvent",
    "ReasoningDelta",
    "SafetyEvent",
    "SearchInfoEvent",
    "SearchResult",
    "SearchStatusEvent",
    "StreamEvent",
    "TextDelta",
    "ToolCall",
    "ToolCallDelta",
    "TruncatedEvent",
    "UnknownFieldsEvent",
    "Usage",
    "UsageEvent",
    "end_reason_for",
    "freeze",
    "search_results_of",
    "thaw",
]

EMPTY_MAPPING: Mapping[str, Any] = MappingProxyType({})
"""An empty read-only mapping, the default of every mapping field."""


def _empty() -> Mapping[str, Any]:
    return EMPTY_MAPPING


def freeze(value: Any) -> Any:
    """A read-only deep copy of parsed JSON: dicts become ``MappingProxyType``, lists tuples."""
    if isinstance(value, dict):
        return MappingProxyType({key: freeze(item) for key, item in value.items()})
    if isinstance(value, list):
        return tuple(freeze(item) for item in value)
    return value


def thaw(value: Any) -> Any:
    """The inverse of :func:`freeze`: plain dicts and lists, ready for ``json.dumps``."""
    if isinstance(value, Mapping):
        return {key: thaw(item) for key, item in value.items()}
    if isinstance(value, tuple | list):
        return [thaw(item) for item in value]
    return value


class FinishReason(StrEnum):
    """Why the model stopped, normalised across both generations.

    v1 ``normal`` and ``stop`` and v2 ``stop`` and (2024) ``normal`` are all :attr:`STOP`; a
    reason neither generation documents is :attr:`OTHER` (the raw text stays available).
    """

    STOP = "stop"
    LENGTH = "length"
    CONTENT_FILTER = "content_filter"
    FUNCTION_CALL = "function_call"
    TOOL_CALLS = "tool_calls"
    OTHER = "other"

    @classmethod
    def from_raw(cls, raw: str) -> FinishReason:
        """Normalise a wire ``finish_reason`` string."""
        return _FINISH_REASONS.get(raw, cls.OTHER)


_FINISH_REASONS: dict[str, FinishReason] = {
    "normal": FinishReason.STOP,
    "stop": FinishReason.STOP,
    "length": FinishReason.LENGTH,
    "content_filter": FinishReason.CONTENT_FILTER,
    "function_call": FinishReason.FUNCTION_CALL,
    "tool_calls": FinishReason.TOOL_CALLS,
}


class EndReason(StrEnum):
    """How a whole stream ended, as the SDK reports it."""

    COMPLETED = "completed"
    """The answer finished normally (including with a function or tool call)."""
    LENGTH = "length"
    """The answer was cut at the output length limit."""
    CONTENT_FILTERED = "content_filtered"
    """The answer was cut or masked by content safety."""
    CANCELLED = "cancelled"
    """The caller stopped the stream."""
    TIMED_OUT = "timed_out"
    """A timeout expired."""
    UPSTREAM_ERROR = "upstream_error"
    """The server answered with an error."""
    INCOMPLETE = "incomplete"
    """The stream ended without its terminal event."""


def end_reason_for(finish: FinishReason | None) -> EndReason:
    """The :class:`EndReason` of a stream that ended properly with finish reason ``finish``."""
    if finish is FinishReason.LENGTH:
        return EndReason.LENGTH
    if finish is FinishReason.CONTENT_FILTER:
        return EndReason.CONTENT_FILTERED
    return EndReason.COMPLETED


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts. ``extra`` holds any further usage fields (v1 ``plugins``, ``tool_tokens``,
    v2 ``prompt_tokens_details``…), frozen."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    extra: Mapping[str, Any] = field(default_factory=_empty)


@dataclass(frozen=True, slots=True)
class FunctionCall:
    """A v1 function call: the function ``name``, its ``arguments`` (a JSON string) and the
    model's ``thoughts`` when given."""

    name: str
    arguments: str
    thoughts: str | None = None


@dataclass(frozen=True, slots=True)
class SearchResult:
    """One web-search source: its ``index`` (the ``n`` of the ``^[n]^`` citation markers the
    answer text carries, unchanged), ``url`` and ``title``."""

    index: int
    url: str
    title: str


def search_results_of(info: Mapping[str, Any]) -> tuple[SearchResult, ...]:
    """The well-formed ``{index, url, title}`` items of a search-info object's
    ``search_results`` (v1 ``search_info`` and v2 alike); other items stay only in the raw
    object."""
    items = info.get("search_results")
    if not isinstance(items, tuple | list):
        return ()
    results = []
    for item in items:
        if isinstance(item, Mapping):
            index, url, title = item.get("index"), item.get("url"), item.get("title")
            if type(index) is int and isinstance(url, str):
                results.append(SearchResult(index, url, title if isinstance(title, str) else ""))
    return tuple(results)


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A complete v2 tool call: ``id``, function ``name``, ``arguments`` (a JSON string),
    ``type`` (``"function"``) and its ``index`` among the answer's tool calls (the key streamed
    fragments are merged by)."""

    id: str
    name: str
    arguments: str
    type: str = "function"
    index: int = 0


# --- stream events ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChunkMeta:
    """The identity of one chunk, emitted first for every chunk: the response ``id`` (the
    request id, e.g. ``as-g91d6f1yyv``), ``created`` (Unix seconds), the v1 ``sentence_id``
    and the v2 ``model`` (``None`` where the generation has none)."""

    id: str
    created: int | None = None
    sentence_id: int | None = None
    model: str | None = None


@dataclass(frozen=True, slots=True)
class TextDelta:
    """New answer text (never cumulative)."""

    text: str


@dataclass(frozen=True, slots=True)
class ReasoningDelta:
    """New reasoning text of a reasoning model (v2 ``reasoning_content``, or vLLM's
    ``reasoning``). It comes before the answer and is not part of it: ``text_stream`` leaves it
    out, ``reasoning_stream`` yields it, and the final message has it as ``reasoning``."""

    text: str


@dataclass(frozen=True, slots=True)
class UsageEvent:
    """Token counts. In v1 only the final ``is_end`` chunk's usage is reported; in v2 every
    non-null ``usage`` (the last one is the total)."""

    usage: Usage


@dataclass(frozen=True, slots=True)
class FinishEvent:
    """The answer finished: the normalised ``reason`` and the ``raw_reason`` as sent (``""``
    when the server sent none and the reason was inferred)."""

    reason: FinishReason
    raw_reason: str


@dataclass(frozen=True, slots=True)
class SafetyEvent:
    """Content safety spoke: v1 ``need_clear_history`` (end the session, clear history) with
    ``ban_round`` (the offending turn, -1 = the current one), and the v2 ``flag`` (1 low risk,
    2 stop chatting, 3 also hide, 4 retract what was shown)."""

    need_clear_history: bool = False
    ban_round: int | None = None
    flag: int | None = None


@dataclass(frozen=True, slots=True)
class TruncatedEvent:
    """v1 ``is_truncated``: the output was cut short."""


@dataclass(frozen=True, slots=True)
class FunctionCallEvent:
    """A whole v1 ``function_call``: ``name``, ``arguments`` (JSON string) and ``thoughts``."""

    name: str
    arguments: str
    thoughts: str | None = None


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """A fragment of a streamed v2 tool call. Fragments with the same ``index`` add up to one
    :class:`ToolCall`: ``id``, ``name`` and ``type`` usually come in the first fragment only,
    and the ``arguments_delta`` strings are concatenated. When the server sends no ``index``
    the parser assigns one: a fragment with a new non-empty ``id`` starts the next call, any
    other continues the last one."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments_delta: str = ""
    type: str | None = None


@dataclass(frozen=True, slots=True)
class SearchInfoEvent:
    """Web search information: ``info`` is v1 ``search_info`` as is, or v2's top-level
    ``search_results`` as ``{"search_results": …}`` (frozen); ``results`` its well-formed
    sources, typed. The citation markers (``^[1]^``, ``^[1][2]^``) stay in the answer text as
    the server sent them; their numbers are the ``index`` of these results."""

    info: Mapping[str, Any]
    results: tuple[SearchResult, ...] = ()


@dataclass(frozen=True, slots=True)
class SearchStatusEvent:
    """The server's "searching…" signal (v2 ``web_search.enable_status``: a chunk tagged
    ``delta_tag: "search_status"``), with the signal's ``text``; it is not answer text."""

    text: str = ""


@dataclass(frozen=True, slots=True)
class UnknownFieldsEvent:
    """Fields this layer does not model, passed on rather than dropped (a field Baidu added
    later, a gateway's stamp such as ``wenxin_emitted_at``…); frozen.

    ``scope`` says where they were: ``"chunk"`` (top level), ``"choice"`` (a v2 choice) or
    ``"message"`` (a v2 ``delta`` or ``message``).
    """

    fields: Mapping[str, Any]
    scope: str = "chunk"


StreamEvent: TypeAlias = (
    ChunkMeta
    | TextDelta
    | ReasoningDelta
    | UsageEvent
    | FinishEvent
    | SafetyEvent
    | TruncatedEvent
    | FunctionCallEvent
    | ToolCallDelta
    | SearchInfoEvent
    | SearchStatusEvent
    | UnknownFieldsEvent
)
"""Any event a stream parser yields."""


@dataclass(frozen=True, slots=True)
class ChatResult:
    """One complete answer, from a non-stream response or accumulated from a stream.

    ``content`` is the answer text (citation markers included, as sent), ``reasoning`` the
    reasoning model's thinking before it (never part of ``content``), ``tool_calls`` the
    complete tool calls (``finish_reason`` is then ``TOOL_CALLS``), ``search_results`` the web
    sources the markers refer to (``search_info`` the raw object). ``flag`` is 0 when safe or
    absent; ``extra`` holds unknown fields, top-level ones under their own name and those of a
    v2 choice or message as ``"choice.<name>"`` / ``"message.<name>"``.
    """

    id: str = ""
    content: str = ""
    finish_reason: FinishReason | None = None
    raw_finish_reason: str | None = None
    usage: Usage | None = None
    need_clear_history: bool = False
    ban_round: int | None = None
    flag: int = 0
    is_truncated: bool = False
    function_call: FunctionCall | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    search_info: Mapping[str, Any] | None = None
    reasoning: str = ""
    search_results: tuple[SearchResult, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=_empty)
    model: str | None = None
    created: int | None = None
