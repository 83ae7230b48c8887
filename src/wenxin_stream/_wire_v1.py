"""ERNIE API v1 ("wenxinworkshop") responses: bytes and dicts in, typed events out. No I/O.

This module also holds the generation-neutral pieces ``_wire_v2`` builds on: the check that
tells an SSE stream from a JSON error (:func:`classify_stream_response`), JSON loading with
typed failures (:func:`load_json_object`, :func:`parse_usage`) and the stream parser base.
"""

# Theory of operation
# ===================
#
# Non-stream: ``parse_v1_response`` turns the JSON body into a ChatResult. Any body with
# ``error_code`` is an error, whatever the HTTP status (v1 answers errors with HTTP 200).
#
# Stream: a stream parser is fed the raw response bytes and returns typed events. It is two
# layers:
#
# 1. A sniffer in front of the SSE decoder. v1 answers a failing stream request with a plain
#    JSON body (``{"error_code":…}``, HTTP 200, no ``data:``), and SSE would silently read such
#    a line as a field named ``{"error_code"`` and drop it. So the parser watches for a LINE
#    STARTING WITH ``{``: at the start of the body (after whitespace/BOM), at the start of a
#    chunk that follows a line end, or after a CR/LF inside a chunk (two ``bytes.find`` calls
#    per chunk, in C). SSE lines start with a field name, never with ``{``, so this cannot fire
#    on a well-formed stream. From that line on the bytes go to a small bounded buffer instead
#    of the decoder; as soon as it holds a complete JSON value the parser raises the APIError it
#    describes (or MalformedResponseError if it is not an error object), and at close() whatever
#    is there is parsed one last time.
#
# 2. Per SSE event: one ``json.loads``; ``error_code`` in the object raises the APIError (an
#    error sent as ``data: {...}`` mid-stream); otherwise the chunk becomes events. Events whose
#    data is blank are ignored (keep-alives); comment-only and ``retry:``-only blocks produce no
#    SSE event at all. ``event:`` names are not used: every data payload is parsed alike.
#
# Order of events per chunk: ChunkMeta, TextDelta, FunctionCallEvent, SearchInfoEvent,
# SafetyEvent, TruncatedEvent, UnknownFieldsEvent, then on the terminal chunk FinishEvent and
# UsageEvent. v1 sends ``usage`` in every chunk, but intermediate values may be 0 or running
# counts, so only the ``is_end`` chunk's usage is reported. ``finish_reason`` ("normal") is also
# in every chunk; the FinishEvent is emitted once, at ``is_end``, keeping any non-normal reason
# an earlier chunk reported.
#
# Errors found while handling the events of one feed() call do not swallow the events that came
# before them in the same call: those are returned, and the error is raised by the next feed()
# or close(). Once an error was raised, every later call raises it again.
#
# Terminal event: v1's is the chunk with ``is_end: true`` (there is no ``[DONE]``); v2's is
# ``data: [DONE]``. Anything after it is IGNORED: the answer is complete and the server is about
# to close, and a stray trailing line must not turn a finished answer into an error. Whether
# anything non-blank came after is kept in ``trailing_data``. close() without the terminal event
# raises IncompleteStreamError: a truncated answer is never mistaken for a finished one.

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from ._events import (
    EMPTY_MAPPING,
    ChatResult,
    ChunkMeta,
    FinishEvent,
    FinishReason,
    FunctionCall,
    FunctionCallEvent,
    SafetyEvent,
    SearchInfoEvent,
    StreamEvent,
    TextDelta,
    TruncatedEvent,
    UnknownFieldsEvent,
    Usage,
    UsageEvent,
    freeze,
)
from ._exceptions import (
    ApiGeneration,
    IncompleteStreamError,
    MalformedResponseError,
    WenxinError,
    api_error_from_v1,
)
from ._sse import ServerSentEvent, SSEDecoder

__all__ = [
    "V1StreamParser",
    "classify_stream_response",
    "load_json_object",
    "parse_usage",
    "parse_v1_body",
    "parse_v1_response",
]

_LEADING = b" \t\r\n\xef\xbb\xbf"  # whitespace and BOM bytes before a body's first character
_JSON_DECODER = json.JSONDecoder()


def classify_stream_response(
    status: int, content_type: str | None, head: bytes
) -> Literal["sse", "json"]:
    """Whether the response to a STREAM request is an SSE stream or a JSON (error) body.

    ``head`` is the first bytes of the body (any amount, possibly none). A non-2xx status is
    always ``"json"`` (an error body, whatever its shape); ``text/event-stream`` is ``"sse"``;
    ``application/json`` (or ``*+json``) is ``"json"``; any other or missing content type is
    ``"json"`` when the body starts with ``{`` after whitespace, else ``"sse"``.
    """
    if not 200 <= status < 300:
        return "json"
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media == "text/event-stream":
        return "sse"
    if media == "application/json" or media.endswith("+json"):
        return "json"
    return "json" if head.lstrip(_LEADING)[:1] == b"{" else "sse"


def _dump(value: object) -> str:
    """Compact JSON text of ``value`` for an error excerpt."""
    try:
        return json.dumps(value, ensure_ascii=False, default=str)
    except (ValueError, TypeError, RecursionError):
        return repr(value)


def load_json_object(
    raw: bytes | bytearray | str, *, api: ApiGeneration | None = None
) -> dict[str, Any]:
    """Parse a response body that must be one JSON object, or raise MalformedResponseError
    (which quotes a short, redacted excerpt, never the whole body)."""
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise MalformedResponseError("response body is not valid JSON", raw, api=api) from exc
    if not isinstance(value, dict):
        raise MalformedResponseError("response body is not a JSON object", raw, api=api)
    return value


_USAGE_COUNTS = ("prompt_tokens", "completion_tokens", "total_tokens")


def parse_usage(value: object, *, api: ApiGeneration | None = None) -> Usage:
    """A :class:`Usage` from a wire ``usage`` object; missing counts are 0, further fields go
    to ``extra``. Counts that are not integers raise MalformedResponseError."""
    if not isinstance(value, Mapping):
        raise MalformedResponseError("usage is not a JSON object", _dump(value), api=api)
    counts: list[int] = []
    for key in _USAGE_COUNTS:
        count = value.get(key)
        if count is None:
            count = 0
        elif type(count) is not int:
            raise MalformedResponseError(f"usage.{key} is not an integer", _dump(value), api=api)
        counts.append(count)
    extra = {key: item for key, item in value.items() if key not in _USAGE_COUNTS}
    return Usage(counts[0], counts[1], counts[2], freeze(extra) if extra else EMPTY_MAPPING)


def _int_or_none(value: object) -> int | None:
    return value if type(value) is int else None


def _function_call(value: object, *, api: ApiGeneration) -> FunctionCall | None:
    """A FunctionCall from a wire ``function_call`` object (``arguments`` that are not a string
    are re-serialised as JSON)."""
    if not value:
        return None
    if not isinstance(value, Mapping) or not isinstance(value.get("name"), str):
        raise MalformedResponseError("function_call has no name", _dump(value), api=api)
    arguments = value.get("arguments", "")
    if not isinstance(arguments, str):
        arguments = json.dumps(arguments, ensure_ascii=False)
    thoughts = value.get("thoughts")
    return FunctionCall(value["name"], arguments, thoughts if isinstance(thoughts, str) else None)


def _search_info(value: object, *, api: ApiGeneration) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise MalformedResponseError("search_info is not a JSON object", _dump(value), api=api)
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
        raise MalformedResponseError("v1 response is not a JSON object", _dump(body), api="v1")
    if "error_code" in body:
        raise api_error_from_v1(body, headers=headers)
    result = body.get("result")
    if result is None:
        result = ""
    elif not isinstance(result, str):
        raise MalformedResponseError("v1 result is not a string", _dump(body), api="v1")
    function_call = _function_call(body.get("function_call"), api="v1")
    truncated = bool(body.get("is_truncated"))
    finish = _v1_finish(
        body.get("finish_reason"), function_call=bool(function_call), truncated=truncated
    )
    usage = body.get("usage")
    search = body.get("search_info")
    unknown = {key: value for key, value in body.items() if key not in _V1_KNOWN}
    rid = body.get("id")
    return ChatResult(
        id=rid if isinstance(rid, str) else "",
        content=result,
        finish_reason=finish.reason,
        raw_finish_reason=finish.raw_reason or None,
        usage=None if usage is None else parse_usage(usage, api="v1"),
        need_clear_history=bool(body.get("need_clear_history")),
        ban_round=_int_or_none(body.get("ban_round")),
        flag=_int_or_none(body.get("flag")) or 0,
        is_truncated=truncated,
        function_call=function_call,
        search_info=None if search is None else _search_info(search, api="v1"),
        extra=freeze(unknown) if unknown else EMPTY_MAPPING,
        created=_int_or_none(body.get("created")),
    )


def parse_v1_body(
    status: int, raw: bytes | str, *, headers: Mapping[str, str] | None = None
) -> ChatResult:
    """A whole non-stream v1 response (status and body bytes) as a :class:`ChatResult`, or the
    APIError it carries (also for a non-200 status, e.g. from a gateway)."""
    if status != 200:
        raise api_error_from_v1(raw, headers=headers, status_code=status)
    return parse_v1_response(load_json_object(raw, api="v1"), headers=headers)


def _first_json_object(raw: bytearray) -> dict[str, Any] | None:
    """Parse the JSON object ``raw`` starts with (it starts with ``{``); None if it is not
    complete yet, or invalid."""
    try:
        value, _ = _JSON_DECODER.raw_decode(raw.decode("utf-8", "replace"))
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


class _StreamParser:
    """The machinery both generations' stream parsers share: the sniffer for bare JSON lines,
    the SSE decoder, deferred errors, the terminal-event bookkeeping and close()."""

    _api: ClassVar[ApiGeneration]

    __slots__ = (
        "_closed",
        "_decoder",
        "_error",
        "_finish_reason",
        "_finished",
        "_headers",
        "_line_start",
        "_max_raw",
        "_pending",
        "_raw",
        "_response_id",
        "_started",
        "_trailing",
        "_usage",
    )

    def __init__(
        self,
        *,
        headers: Mapping[str, str] | None = None,
        max_line_bytes: int = 1 << 20,
        max_event_bytes: int = 4 << 20,
        max_error_bytes: int = 64 << 10,
    ) -> None:
        self._decoder = SSEDecoder(max_line_bytes=max_line_bytes, max_event_bytes=max_event_bytes)
        self._headers = headers
        self._max_raw = max_error_bytes
        self._started = False  # a non-whitespace byte has arrived
        self._line_start = True  # the last byte fed ended a line
        self._raw: bytearray | None = None  # bytes from a bare JSON line on
        self._finished = False
        self._closed = False
        self._trailing = False
        self._pending: WenxinError | None = None  # to raise at the next call
        self._error: WenxinError | None = None  # raised; raised again at every call
        self._finish_reason: FinishReason | None = None
        self._usage: Usage | None = None
        self._response_id: str | None = None
        self._init_state()

    @property
    def finished(self) -> bool:
        """Whether the terminal event has arrived (v1 ``is_end``, v2 ``[DONE]``)."""
        return self._finished

    @property
    def finish_reason(self) -> FinishReason | None:
        """The normalised finish reason, once the answer finished."""
        return self._finish_reason

    @property
    def usage(self) -> Usage | None:
        """The token counts reported so far (v1: the final chunk's; v2: the latest)."""
        return self._usage

    @property
    def response_id(self) -> str | None:
        """The response (request) id of the last chunk that carried one."""
        return self._response_id

    @property
    def trailing_data(self) -> bool:
        """Whether non-blank data arrived after the terminal event (it is ignored)."""
        return self._trailing

    def feed(self, data: bytes) -> list[StreamEvent]:
        """Add the next bytes of the response body; return the events they complete.

        Raises:
            APIError: The server sent an error (in an SSE event or as a bare JSON line).
            MalformedResponseError: An event's data is not a JSON object of the right shape.
            SSELimitError: A line or event exceeded the configured limit.
            RuntimeError: close() was already called.
        """
        if self._closed:
            raise RuntimeError(f"{type(self).__name__}.feed() called after close()")
        if self._error is not None:
            raise self._error
        if self._pending is not None:
            self._error, self._pending = self._pending, None
            raise self._error
        try:
            return self._feed(data)
        except WenxinError as exc:
            self._error = exc
            raise

    def close(self) -> list[StreamEvent]:
        """Signal the end of the body. Returns ``[]`` when the stream ended properly.

        Raises:
            IncompleteStreamError: The terminal event never came.
            APIError, MalformedResponseError: An error is pending or the body ended with a
                bare JSON line.
        """
        if self._error is not None:
            raise self._error
        if self._closed:
            return []
        self._closed = True
        try:
            self._close()
        except WenxinError as exc:
            self._error = exc
            raise
        return []

    def _feed(self, data: bytes) -> list[StreamEvent]:
        if not data:
            return []
        if self._finished:
            if not self._trailing and data.strip():
                self._trailing = True
            return []
        if self._raw is not None:
            self._take_raw(data)
            return []
        pos = self._json_line_start(data)
        if pos < 0:
            return self._dispatch(self._decoder.feed(data))
        out = self._dispatch(self._decoder.feed(data[:pos])) if pos else []
        return self._enter_raw(out, data[pos:])

    def _enter_raw(self, out: list[StreamEvent], rest: bytes) -> list[StreamEvent]:
        """Switch to buffering a bare JSON line (``rest`` starts with it), unless the events
        before it ended the stream or failed."""
        if self._finished:
            self._trailing = True
            return out
        if self._pending is not None:
            return out
        self._raw = bytearray()
        try:
            self._take_raw(rest)
        except WenxinError as exc:
            if not out:
                raise
            self._pending = exc
        return out

    def _json_line_start(self, data: bytes) -> int:
        """The offset of a line starting with ``{`` in ``data``, or -1."""
        if not self._started:
            lead = data.lstrip(_LEADING)
            if not lead:
                return -1
            self._started = True
            if lead[0] == 0x7B:
                return len(data) - len(lead)
        elif self._line_start and data[0] == 0x7B:
            return 0
        self._line_start = data[-1] in (0x0A, 0x0D)
        lf = data.find(b"\n{")
        cr = data.find(b"\r{")
        if lf < 0 and cr < 0:
            return -1
        if lf < 0 or 0 <= cr < lf:
            return cr + 1
        return lf + 1

    def _take_raw(self, data: bytes) -> None:
        raw = self._raw
        assert raw is not None
        if len(raw) + len(data) > self._max_raw:
            raise MalformedResponseError(
                f"a non-SSE line in the {self._api} stream exceeds {self._max_raw} bytes",
                raw + data[:256],
                api=self._api,
            )
        raw += data
        if b"}" in data:  # only then can the object have become complete
            value = _first_json_object(raw)
            if value is not None:
                raise self._bare_json_error(value)

    def _bare_json_error(self, value: dict[str, Any]) -> WenxinError:
        error = self._error_from(value)
        if error is not None:
            return error
        return MalformedResponseError(
            f"expected an SSE event stream, got a bare JSON line in the {self._api} stream",
            _dump(value),
            api=self._api,
        )

    def _dispatch(self, events: list[ServerSentEvent]) -> list[StreamEvent]:
        out: list[StreamEvent] = []
        handle = self._handle
        for sse in events:
            if self._finished:
                self._trailing = True
                break
            data = sse.data
            if data[:1] != "{" and not data.strip():
                continue  # a blank keep-alive event
            mark = len(out)
            try:
                handle(data, out)
            except WenxinError as exc:
                del out[mark:]
                if not out:
                    raise
                self._pending = exc
                break
        return out

    def _load(self, data: str) -> dict[str, Any]:
        try:
            value = json.loads(data)
        except (ValueError, RecursionError) as exc:
            raise MalformedResponseError(
                f"{self._api} stream event data is not valid JSON", data, api=self._api
            ) from exc
        if type(value) is not dict:
            raise MalformedResponseError(
                f"{self._api} stream event data is not a JSON object", data, api=self._api
            )
        return value

    def _close(self) -> None:
        if self._pending is not None:
            raise self._pending
        if self._raw is not None:
            # feed() raised as soon as the bare JSON line was a complete object, so at the end
            # of the body it is known to be incomplete or invalid.
            raise MalformedResponseError(
                f"the {self._api} stream ended with a line that is neither SSE nor JSON",
                self._raw,
                api=self._api,
            )
        if self._finished:
            return
        self._decoder.close()
        raise self._incomplete(" in the middle of an event" if self._decoder.truncated else "")

    # Hooks for the two generations.

    def _init_state(self) -> None:
        raise NotImplementedError

    def _handle(self, data: str, out: list[StreamEvent]) -> None:
        raise NotImplementedError

    def _error_from(self, value: dict[str, Any]) -> WenxinError | None:
        raise NotImplementedError

    def _incomplete(self, where: str) -> IncompleteStreamError:
        raise NotImplementedError


class V1StreamParser(_StreamParser):
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
        out.append(ChunkMeta(rid, _int_or_none(get("created")), _int_or_none(get("sentence_id"))))
        result = get("result")
        if result:
            if type(result) is not str:
                raise MalformedResponseError("v1 result is not a string", data, api="v1")
            out.append(TextDelta(result))
        function_call = get("function_call")
        if function_call:
            call = _function_call(function_call, api="v1")
            assert call is not None
            self._function_called = True
            out.append(FunctionCallEvent(call.name, call.arguments, call.thoughts))
        search = get("search_info")
        if search is not None:
            out.append(SearchInfoEvent(_search_info(search, api="v1")))
        clear = bool(get("need_clear_history"))
        ban_round = _int_or_none(get("ban_round"))
        flag = _int_or_none(get("flag"))
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
