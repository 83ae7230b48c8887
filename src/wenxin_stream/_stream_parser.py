"""The stream parser both ERNIE generations share: bytes in, typed events out. No I/O.

:class:`StreamParser` is the machinery of ``_wire_v1.V1StreamParser`` and
``_wire_v2.V2StreamParser``: the sniffer for bare JSON lines in front of the SSE decoder,
deferred errors, the terminal-event bookkeeping and ``close()``; each generation adds its chunk
rules through four hooks. Next to it, the generation-neutral helpers of the wire modules: the
check that tells an SSE stream from a JSON error (:func:`classify_stream_response`), JSON
loading with typed failures (:func:`load_json_object`, :func:`parse_usage`) and the
``function_call`` field.
"""

# Theory of operation
# ===================
#
# A stream parser is fed the raw response bytes and returns typed events. It is two layers:
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
# 2. Per SSE event: the generation's ``_handle`` hook turns the data into events (raising the
#    APIError of an error sent as ``data: {...}``). Events whose data is blank are ignored
#    (keep-alives); comment-only and ``retry:``-only blocks produce no SSE event at all.
#    ``event:`` names are not used: every data payload is parsed alike.
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

from ._events import EMPTY_MAPPING, FinishReason, FunctionCall, StreamEvent, Usage, freeze
from ._exceptions import (
    ApiGeneration,
    IncompleteStreamError,
    MalformedResponseError,
    WenxinError,
    detached,
)
from ._sse import ServerSentEvent, SSEDecoder

__all__ = [
    "StreamParser",
    "classify_stream_response",
    "dump_json",
    "int_or_none",
    "load_json_object",
    "parse_function_call",
    "parse_usage",
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


def dump_json(value: object) -> str:
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
        raise MalformedResponseError("usage is not a JSON object", dump_json(value), api=api)
    counts: list[int] = []
    for key in _USAGE_COUNTS:
        count = value.get(key)
        if count is None:
            count = 0
        elif type(count) is not int:
            raise MalformedResponseError(
                f"usage.{key} is not an integer", dump_json(value), api=api
            )
        counts.append(count)
    extra = {key: item for key, item in value.items() if key not in _USAGE_COUNTS}
    return Usage(counts[0], counts[1], counts[2], freeze(extra) if extra else EMPTY_MAPPING)


def int_or_none(value: object) -> int | None:
    return value if type(value) is int else None


def parse_function_call(value: object, *, api: ApiGeneration) -> FunctionCall | None:
    """A FunctionCall from a wire ``function_call`` object (``arguments`` that are not a string
    are re-serialised as JSON)."""
    if not value:
        return None
    if not isinstance(value, Mapping) or not isinstance(value.get("name"), str):
        raise MalformedResponseError("function_call has no name", dump_json(value), api=api)
    arguments = value.get("arguments", "")
    if not isinstance(arguments, str):
        arguments = json.dumps(arguments, ensure_ascii=False)
    thoughts = value.get("thoughts")
    return FunctionCall(value["name"], arguments, thoughts if isinstance(thoughts, str) else None)


def _first_json_object(raw: bytearray) -> dict[str, Any] | None:
    """Parse the JSON object ``raw`` starts with (it starts with ``{``); None if it is not
    complete yet, or invalid."""
    try:
        value, _ = _JSON_DECODER.raw_decode(raw.decode("utf-8", "replace"))
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


class StreamParser:
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
        # A kept error is raised as a fresh copy, and kept without its traceback: raised
        # itself, its traceback (→ this frame → self → it) would be a reference cycle.
        if self._error is not None:
            raise detached(self._error)
        if self._pending is not None:
            self._error, self._pending = self._pending, None
            raise detached(self._error)
        try:
            return self._feed(data)
        except WenxinError as exc:
            self._error = detached(exc)
            raise

    def close(self) -> list[StreamEvent]:
        """Signal the end of the body. Returns ``[]`` when the stream ended properly.

        Raises:
            IncompleteStreamError: The terminal event never came.
            APIError, MalformedResponseError: An error is pending or the body ended with a
                bare JSON line.
        """
        if self._error is not None:
            raise detached(self._error)
        if self._closed:
            return []
        self._closed = True
        try:
            self._close()
        except WenxinError as exc:
            self._error = detached(exc)
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
            self._pending = detached(exc)
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
            dump_json(value),
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
                self._pending = detached(exc)
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
            raise detached(self._pending)
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
