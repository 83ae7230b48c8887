"""ERNIE API v1 ("wenxinworkshop") responses: bytes and dicts in, typed events out. No I/O.

The stream machinery both generations share (the sniffer for bare JSON lines in front of the
SSE decoder, deferred errors, the terminal-event check) is in ``_stream_parser``; this module
holds what is v1's own: the non-stream answer and the chunk → events rules.
"""

# Theory of operation (v1 specifics)
# ==================================
#
# Non-stream: ``parse_v1_response`` turns the JSON body into a ChatResult. Any body with
# ``error_code`` is an error, whatever the HTTP status (v1 answers errors with HTTP 200).
#
# Stream: per SSE event, one ``json.loads``; ``error_code`` in the object raises the APIError
# (an error sent as ``data: {...}`` mid-stream); otherwise the chunk becomes events. A failing
# stream request is answered with a bare JSON body (``{"error_code":…}``, HTTP 200, no
# ``data:``): the shared parser's sniffer catches it (see ``_stream_parser``).
#
# Order of events per chunk: ChunkMeta, TextDelta, FunctionCallEvent, SearchInfoEvent,
# SafetyEvent, TruncatedEvent, UnknownFieldsEvent, then on the terminal chunk FinishEvent and
# UsageEvent. v1 sends ``usage`` in every chunk, but intermediate values may be 0 or running
# counts, so only the ``is_end`` chunk's usage is reported. ``finish_reason`` ("normal") is also
# in every chunk; the FinishEvent is emitted once, at ``is_end``, keeping any non-normal reason
# an earlier chunk reported.
#
# Terminal event: the chunk with ``is_end: true`` (there is no ``[DONE]``); close() without it
# raises IncompleteStreamError.

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from ._events import (
    EMPTY_MAPPING,
    ChatResult,
    ChunkMeta,
    FinishEvent,
    FinishReason,
    FunctionCallEvent,
    SafetyEvent,
    SearchInfoEvent,
    StreamEvent,
    TextDelta,
    TruncatedEvent,
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
    api_error_from_v1,
)
from ._stream_parser import (
    StreamParser,
    dump_json,
    int_or_none,
    load_json_object,
    parse_function_call,
    parse_usage,
)

__all__ = ["V1StreamParser", "parse_v1_body", "parse_v1_response"]


def _search_info(value: object, *, api: ApiGeneration) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise MalformedResponseError("search_info is not a JSON object", dump_json(value), api=api)
    frozen: Mapping[str, Any] = freeze(dict(value))
    return frozen


def _v1_finish(raw: object, *, function_call: bool, truncated: bool) -> FinishEvent:
    """The finish of a v1 answer. ``normal``/``stop`` (or no reason) are refined by what the
    answer holds: a function call gives FUNCTION_CALL, ``is_truncated`` gives LENGTH."""
    text = raw if isinstance(raw, str) else ""
    if text and text not in ("normal", "stop"):
        return FinishEvent(FinishReason.from_raw(text), text)
    if function_call:
        return FinishEvent(FinishReason.FUNCTION_CALL, text)
    if truncated:
        return FinishEvent(FinishReason.LENGTH, text)
    return FinishEvent(FinishReason.STOP, text)


# The chunk fields v1 documents; any other field is passed on as an UnknownFieldsEvent.
_V1_KNOWN = frozenset(
    {"id", "object", "created", "sentence_id", "is_end", "is_truncated", "result", "usage"}
    | {"need_clear_history", "ban_round", "flag", "finish_reason", "function_call", "search_info"}
)


def parse_v1_response(
    body: Mapping[str, Any], *, headers: Mapping[str, str] | None = None
) -> ChatResult:
    """A non-stream v1 answer as a :class:`ChatResult`.

    Raises the matching :class:`~wenxin_stream._exceptions.APIError` if the body carries
    ``error_code`` (v1 sends errors with HTTP 200), and MalformedResponseError if it is not
    shaped like an answer.
    """
    if not isinstance(body, Mapping):
        raise MalformedResponseError("v1 response is not a JSON object", dump_json(body), api="v1")
    if "error_code" in body:
        raise api_error_from_v1(body, headers=headers)
    result = body.get("result")
    if result is None:
        result = ""
    elif not isinstance(result, str):
        raise MalformedResponseError("v1 result is not a string", dump_json(body), api="v1")
    function_call = parse_function_call(body.get("function_call"), api="v1")
    truncated = bool(body.get("is_truncated"))
    finish = _v1_finish(
        body.get("finish_reason"), function_call=bool(function_call), truncated=truncated
    )
    usage = body.get("usage")
    search = body.get("search_info")
    info = None if search is None else _search_info(search, api="v1")
    unknown = {key: value for key, value in body.items() if key not in _V1_KNOWN}
    rid = body.get("id")
    return ChatResult(
        id=rid if isinstance(rid, str) else "",
        content=result,
        finish_reason=finish.reason,
        raw_finish_reason=finish.raw_reason or None,
        usage=None if usage is None else parse_usage(usage, api="v1"),
        need_clear_history=bool(body.get("need_clear_history")),
        ban_round=int_or_none(body.get("ban_round")),
        flag=int_or_none(body.get("flag")) or 0,
        is_truncated=truncated,
        function_call=function_call,
        search_info=info,
        search_results=() if info is None else search_results_of(info),
        extra=freeze(unknown) if unknown else EMPTY_MAPPING,
        created=int_or_none(body.get("created")),
    )


def parse_v1_body(
    status: int, raw: bytes | str, *, headers: Mapping[str, str] | None = None
) -> ChatResult:
    """A whole non-stream v1 response (status and body bytes) as a :class:`ChatResult`, or the
    APIError it carries (also for a non-200 status, e.g. from a gateway)."""
    if status != 200:
        raise api_error_from_v1(raw, headers=headers, status_code=status)
    return parse_v1_response(load_json_object(raw, api="v1"), headers=headers)


class V1StreamParser(StreamParser):
    """Sans-I/O parser of a v1 chat stream: feed it the response body, get typed events.

    Args:
        headers: The response headers, used for the request id of errors.
        max_line_bytes, max_event_bytes: Limits handed to the SSE decoder.
        max_error_bytes: The largest bare JSON (error) line accepted.

    The terminal event is the chunk with ``is_end: true``; :meth:`close` without it raises
    :class:`~wenxin_stream._exceptions.IncompleteStreamError`. See the module comment for the
    details (bare JSON error lines, usage, errors, data after the end).
    """

    _api: ClassVar[ApiGeneration] = "v1"

    __slots__ = ("_function_called", "_reason", "_truncated")

    def _init_state(self) -> None:
        self._reason: str | None = None  # a finish reason other than normal/stop, once seen
        self._function_called = False
        self._truncated = False

    def _error_from(self, value: dict[str, Any]) -> WenxinError | None:
        return api_error_from_v1(value, headers=self._headers) if "error_code" in value else None

    def _incomplete(self, where: str) -> IncompleteStreamError:
        return IncompleteStreamError(
            f"v1 stream ended{where} without a chunk with is_end: true; "
            "the answer may be cut short",
            api="v1",
        )

    def _handle(self, data: str, out: list[StreamEvent]) -> None:
        chunk = self._load(data)
        if "error_code" in chunk:
            raise api_error_from_v1(chunk, headers=self._headers)
        get = chunk.get
        rid = get("id")
        if type(rid) is str and rid:
            self._response_id = rid
        else:
            rid = ""
        out.append(ChunkMeta(rid, int_or_none(get("created")), int_or_none(get("sentence_id"))))
        result = get("result")
        if result:
            if type(result) is not str:
                raise MalformedResponseError("v1 result is not a string", data, api="v1")
            out.append(TextDelta(result))
        function_call = get("function_call")
        if function_call:
            call = parse_function_call(function_call, api="v1")
            assert call is not None
            self._function_called = True
            out.append(FunctionCallEvent(call.name, call.arguments, call.thoughts))
        search = get("search_info")
        if search is not None:
            info = _search_info(search, api="v1")
            out.append(SearchInfoEvent(info, search_results_of(info)))
        clear = bool(get("need_clear_history"))
        ban_round = int_or_none(get("ban_round"))
        flag = int_or_none(get("flag"))
        if clear or ban_round is not None or flag:
            out.append(SafetyEvent(clear, ban_round, flag))
        if get("is_truncated"):
            self._truncated = True
            out.append(TruncatedEvent())
        if not _V1_KNOWN.issuperset(chunk):
            unknown = {key: value for key, value in chunk.items() if key not in _V1_KNOWN}
            out.append(UnknownFieldsEvent(freeze(unknown)))
        reason = get("finish_reason")
        if reason is not None and reason not in ("normal", "stop") and isinstance(reason, str):
            self._reason = reason
        if get("is_end"):
            finish = _v1_finish(
                self._reason or reason,
                function_call=self._function_called,
                truncated=self._truncated,
            )
            out.append(finish)
            usage = get("usage")
            if usage is not None:
                self._usage = parse_usage(usage, api="v1")
                out.append(UsageEvent(self._usage))
            self._finish_reason = finish.reason
            self._finished = True
