"""Server-sent events (``text/event-stream``): a sans-I/O decoder and encoder.

:class:`SSEDecoder` turns the bytes of an event stream, in chunks of any size, into
:class:`ServerSentEvent` objects, following the WHATWG HTML standard's "Interpreting an event
stream" exactly. :func:`encode_event` (text), :func:`encode_event_bytes` (pre-encoded data: the
per-chunk path), :func:`encode_comment`, :func:`encode_retry` and :data:`DONE_EVENT` produce bytes
that any conforming client decodes back to the same events. Nothing here does I/O: feed it the
bytes you read and write out the bytes it gives you.
"""

# Theory of operation
# ===================
#
# The decoder is a small state machine with two layers: a LINE SPLITTER that works on bytes, and a
# FIELD INTERPRETER that works on complete lines.
#
# Line splitter
# -------------
# The spec decodes the whole stream as UTF-8 first and then splits it into lines at CRLF, LF or
# CR. We split the BYTES first and decode each line afterwards. The two are equivalent because
# the bytes 0x0D and 0x0A never occur inside a UTF-8 sequence, and a truncated sequence followed
# by one of them is replaced by U+FFFD exactly as if the input had ended there. Splitting bytes
# first means a multi-byte character cut in half by a chunk boundary simply waits in the partial
# line buffer; it is never decoded in pieces.
#
# Only CR (0x0D) and LF (0x0A) end lines. U+2028, U+2029, NEL (C2 85), FF and VT do not, so
# str.splitlines() and bytes.splitlines() are never used.
#
# ``_buf`` (a bytearray) holds the current partial line and nothing else, so it never contains a
# CR or LF. That invariant makes it the scan offset: a new chunk is searched for line ends on its
# own (the buffered bytes were already scanned and are never rescanned), the first complete line
# is ``_buf + chunk[:first_end]``, the lines wholly inside the chunk are sliced out of the chunk,
# and whatever follows the last line end becomes the new partial line (the buffer is cleared, i.e.
# compacted, each time a line completes). Every byte is therefore copied into the buffer at most
# once and out of it at most once: decoding is linear in the input whatever the chunking,
# including one byte per feed() call.
#
# CRLF split across two chunks: a chunk ending in CR ends its line at once (the line is
# interpreted immediately, not held back) and sets ``_after_cr``; if the next chunk starts with
# LF, that LF is the second half of the same line end and is dropped.
#
# The spec strips one U+FEFF (EF BB BF) at the start of the stream. Until three bytes have arrived
# (``_bom_pending``) a prefix of the BOM is held in ``_buf``; once the question is settled the
# BOM, if present, is dropped and the stream is processed normally. A later U+FEFF is ordinary
# text.
#
# Fast paths: a chunk with no CR (the norm: servers send LF) is split with bytes.split(b"\n"),
# which is a memchr loop in C; chunks with a CR go through one precompiled regex. When the partial
# line plus the chunk is within the line limit, no per-line length check is needed at all. A
# chunk that is exactly one ``data: …`` line and the blank line after it, arriving with nothing
# pending (no partial line, no data, event type or retry of an open block), is one event at once
# (``_one_event``): the event the line splitter and the interpreter would make of it, without
# them (tests/test_properties_sse.py holds the two paths equal).
#
# Field interpreter
# -----------------
# Fields are parsed on bytes too. A field name ends at the first 0x3A (":"), which cannot occur
# inside a UTF-8 sequence, and one leading 0x20 is removed from the value, so the result is the
# same as doing it on decoded text. Values are decoded only when they are used: ``data`` values
# are kept as a list of bytes and joined with LF and decoded once, at dispatch; ``event`` is
# decoded at dispatch; ``id`` is decoded when it is set; ``retry`` is checked with bytes.isdigit(),
# which accepts only ASCII 0-9. The common line ``data: {...}`` skips the general field parsing.
#
# Dispatch on a blank line follows the spec: no ``data`` field since the last blank line means no
# event (so blocks holding only ``retry:``, ``id:`` or comments produce nothing); otherwise one
# event with the data (one trailing LF removed, which the join does by construction), the event
# type or "message", and the last event ID in force. The event type buffer is cleared at every
# blank line; the last event ID persists until an ``id`` field changes it.
#
# Limits and errors
# -----------------
# ``max_line_bytes`` bounds a line (terminator excluded), including a line that has not ended
# yet: a chunk that would grow the partial line past the limit raises before it is buffered.
# ``max_event_bytes`` bounds the data of one event (the bytes the event's ``data`` will hold,
# before UTF-8 decoding). Passing either raises SSELimitError (a RemoteProtocolError) and leaves
# the decoder in an error state: every later feed() or close() raises the same error again. Events
# completed earlier in the same feed() call are discarded with the error; the stream is broken at
# that point anyway. Memory is bounded by max_line_bytes (partial line) plus max_event_bytes
# (pending data), plus whatever a single chunk holds.
#
# End of input: the spec discards an incomplete event and an unterminated last line, so close()
# returns nothing; it records in ``truncated`` whether anything was thrown away.
#
# Encoder
# -------
# Fields are written as ``name: value`` with one space, so values that begin with a space survive
# (the decoder removes exactly one). SSE data can only carry LF line breaks: CRLF and lone CR in
# data are normalised to LF, and the data is split at LF into one ``data:`` line per line. Values
# that cannot be carried (CR/LF in an event name or id, NUL in an id, a negative retry, text that
# cannot be encoded as UTF-8) raise LocalProtocolError.
#
# There is one encoder with two doors: encode_event takes text (and encodes it as UTF-8), and
# encode_event_bytes takes bytes that are already UTF-8. The second is the per-chunk path of the
# emulator's pump, the server's relay log and its OpenAI route, whose data is compact JSON made
# once per chunk: it looks for CR and LF with two memchr scans (``10 in data``: an int operand
# is a plain byte search, much cheaper than a bytes operand), and with neither present it frames
# the data with two concatenations (one join when an event name and an id come with it). Both
# doors share the checks of ``event`` and ``id`` and the line splitting, so their output is byte
# for byte the same.

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, NoReturn

from ._exceptions import LocalProtocolError, SSELimitError

__all__ = [
    "DONE_EVENT",
    "SSEDecoder",
    "ServerSentEvent",
    "encode_comment",
    "encode_event",
    "encode_event_bytes",
    "encode_retry",
]

_BOM = b"\xef\xbb\xbf"
_LINE_END = re.compile(rb"\r\n?|\n")
# A retry value with more significant digits than this is ignored: it is far beyond any useful
# reconnection time, and converting it would hit (or approach) CPython's int/str conversion limit,
# whose smallest allowed setting is 640 digits.
_MAX_RETRY_DIGITS = 640


@dataclass(frozen=True, slots=True)
class ServerSentEvent:
    """One dispatched server-sent event.

    Attributes:
        data: The event's data: the values of its ``data`` fields joined with LF.
        event: The event type; ``"message"`` when the event had no (or an empty) ``event`` field.
        id: The last event ID in force when the event was dispatched, as the spec's
            ``lastEventId``: set by this event's ``id`` field or by an earlier one; ``""`` if no
            ``id`` field was ever seen (or the last one was empty).
        retry: The reconnection time in milliseconds from a valid ``retry`` field in this event's
            own block of lines, or ``None`` if the block had none. (The reconnection time in force
            for the whole stream is :attr:`SSEDecoder.retry`.)
    """

    data: str
    event: str = "message"
    id: str = ""
    retry: int | None = None

    def json(self) -> Any:
        """Parse :attr:`data` as JSON and return the result.

        Raises:
            json.JSONDecodeError: If the data is not valid JSON (for example ``[DONE]``).
        """
        return json.loads(self.data)


_new_event = ServerSentEvent.__new__
_slots = vars(ServerSentEvent)  # the slot descriptors
_set_data, _set_event = _slots["data"].__set__, _slots["event"].__set__
_set_id, _set_retry = _slots["id"].__set__, _slots["retry"].__set__


def _event(data: str, event: str, id: str, retry: int | None) -> ServerSentEvent:
    """``ServerSentEvent(data, event, id, retry)`` for the decoder's per-event path: the slots
    set through their descriptors, without the frozen dataclass's ``__init__`` (four
    ``object.__setattr__`` calls in a Python frame, ~1.6× the cost). The same object."""
    sse = _new_event(ServerSentEvent)
    _set_data(sse, data)
    _set_event(sse, event)
    _set_id(sse, id)
    _set_retry(sse, retry)
    return sse


class SSEDecoder:
    """Incremental, sans-I/O decoder of a ``text/event-stream`` byte stream.

    Feed it the bytes of the response body in chunks of any size with :meth:`feed`, which returns
    the events completed by each chunk, and call :meth:`close` at the end of the body. The result
    does not depend on how the stream is cut into chunks. Parsing follows the WHATWG HTML
    standard's "Interpreting an event stream": lines end at CRLF, LF or CR; a leading BOM is
    dropped; lines are decoded as UTF-8 with invalid bytes replaced by U+FFFD; a blank line
    dispatches an event if any ``data`` field was seen since the previous blank line.

    Args:
        max_line_bytes: The longest line accepted, in bytes, terminator excluded. A line still
            being received counts too, so an endless line fails as soon as it passes the limit.
        max_event_bytes: The most data one event may accumulate, in bytes (the UTF-8 size of its
            :attr:`ServerSentEvent.data`).

    When a limit is exceeded, :meth:`feed` raises :class:`~wenxin_stream._exceptions.SSELimitError`
    and the decoder becomes unusable: every later :meth:`feed` or :meth:`close` call raises the
    same error again. Events completed earlier in the failing :meth:`feed` call are lost with it.
    """

    __slots__ = (
        "_after_cr",
        "_block_retry",
        "_bom_pending",
        "_buf",
        "_closed",
        "_data",
        "_data_size",
        "_error",
        "_event_type",
        "_last_id",
        "_last_id_raw",
        "_max_event",
        "_max_line",
        "_retry",
        "_truncated",
    )

    def __init__(self, *, max_line_bytes: int = 1 << 20, max_event_bytes: int = 4 << 20) -> None:
        if max_line_bytes < 0 or max_event_bytes < 0:
            raise ValueError("SSE size limits must not be negative")
        self._max_line = max_line_bytes
        self._max_event = max_event_bytes
        # Line splitter state.
        self._buf = bytearray()  # the current partial line (never holds CR or LF)
        self._after_cr = False  # the last byte fed was a CR ending a line
        self._bom_pending = True  # the first three bytes have not been seen yet
        # Field interpreter state.
        self._data: list[bytes] = []  # values of this block's data fields
        self._data_size = 0  # sum of (len(value) + 1) over self._data
        self._event_type: bytes | None = None  # None: no event field in this block
        self._block_retry: int | None = None  # valid retry from this block
        self._last_id = ""
        self._last_id_raw = b""
        self._retry: int | None = None
        # Lifecycle.
        self._error: tuple[str, int] | None = None
        self._closed = False
        self._truncated = False

    @property
    def last_event_id(self) -> str:
        """The last event ID string: the value of the most recent valid ``id`` field, or ``""``."""
        return self._last_id

    @property
    def retry(self) -> int | None:
        """The reconnection time (ms) from the most recent valid ``retry`` field, or ``None``."""
        return self._retry

    @property
    def truncated(self) -> bool:
        """Whether :meth:`close` discarded anything.

        ``True`` after :meth:`close` if the stream ended with an unterminated line or with
        ``data`` or ``event`` fields not yet dispatched by a blank line; ``False`` after a clean
        end, and always ``False`` before :meth:`close`.
        """
        return self._truncated

    def _fail(self, kind: str) -> NoReturn:
        limit = self._max_line if kind == "line" else self._max_event
        self._error = (kind, limit)
        raise SSELimitError(kind, limit)

    def feed(self, data: bytes) -> list[ServerSentEvent]:
        """Add the next chunk of the stream and return the events it completes.

        Args:
            data: The next bytes of the stream, of any length (bytes-like objects are copied
                to ``bytes``).

        Returns:
            The events dispatched by blank lines in this chunk, in order (often empty).

        Raises:
            SSELimitError: A line or an event's data exceeded its limit (now, or in an earlier
                call: the decoder stays failed).
            RuntimeError: :meth:`close` was already called.
        """
        if self._closed:
            raise RuntimeError("SSEDecoder.feed() called after close()")
        if self._error is not None:
            raise SSELimitError(*self._error)
        if type(data) is not bytes:
            data = bytes(data)
        if not data:
            return []
        if self._after_cr:
            self._after_cr = False
            if data[0] == 0x0A:  # second half of a CRLF split across chunks
                data = data[1:]
                if not data:
                    return []
        if self._bom_pending:
            data = self._strip_bom(data)
            if not data:
                return []

        if not self._data and not self._buf:
            event = self._one_event(data)
            if event is not None:
                return event

        buf = self._buf
        if b"\r" in data:
            parts = _LINE_END.split(data)
            if data[-1] == 0x0D:
                self._after_cr = True
        elif b"\n" in data:
            parts = data.split(b"\n")
        else:  # no line end: the partial line grows
            if len(buf) + len(data) > self._max_line:
                self._fail("line")
            buf += data
            return []

        max_line = self._max_line
        if len(buf) + len(data) > max_line and (
            len(buf) + len(parts[0]) > max_line or max(map(len, parts)) > max_line
        ):
            self._fail("line")
        tail = parts.pop()
        if buf:
            buf += parts[0]
            parts[0] = bytes(buf)
            buf.clear()
        buf += tail
        return self._interpret(parts)

    def _one_event(self, data: bytes) -> list[ServerSentEvent] | None:
        """The event of a chunk that is exactly ``data: …`` LF LF when no line or event is
        pending (the norm: one upstream write per event); None for anything else."""
        if (
            data.startswith(b"data: ")
            and data.find(10) == len(data) - 2  # its only LFs are the last two bytes
            and data[-1] == 0x0A
            and 13 not in data
            and self._event_type is None
            and self._block_retry is None
            and len(data) - 2 <= self._max_line
            and len(data) - 8 <= self._max_event
        ):
            return [_event(data[6:-2].decode("utf-8", "replace"), "message", self._last_id, None)]
        return None

    def _strip_bom(self, data: bytes) -> bytes:
        """Settle whether the stream starts with a BOM; return the bytes left to process."""
        buf = self._buf
        head = bytes(buf) + data if buf else data
        if len(head) < 3 and _BOM.startswith(head):
            buf[:] = head  # still undecided: hold the prefix as the partial line
            return b""
        self._bom_pending = False
        buf.clear()
        return head[3:] if head.startswith(_BOM) else head

    def _interpret(self, lines: list[bytes]) -> list[ServerSentEvent]:
        """Apply complete lines (terminators removed) to the state; return dispatched events."""
        events: list[ServerSentEvent] = []
        data_parts = self._data
        data_size = self._data_size
        event_type = self._event_type
        block_retry = self._block_retry
        max_event = self._max_event
        for line in lines:
            if not line:  # blank line: dispatch
                if data_parts:
                    raw = data_parts[0] if len(data_parts) == 1 else b"\n".join(data_parts)
                    events.append(
                        _event(
                            raw.decode("utf-8", "replace"),
                            event_type.decode("utf-8", "replace") if event_type else "message",
                            self._last_id,
                            block_retry,
                        )
                    )
                    data_parts = []
                    data_size = 0
                event_type = None
                block_retry = None
                continue
            if line.startswith(b"data: "):  # the common case, short-circuited
                value = line[6:]
            elif line[0] == 0x3A:  # ":" comment
                continue
            else:
                name, colon, value = line.partition(b":")
                if colon and value[:1] == b" ":
                    value = value[1:]
                if name != b"data":
                    if name == b"event":
                        event_type = value
                    elif name == b"id":
                        if b"\x00" not in value and value != self._last_id_raw:
                            self._last_id_raw = value
                            self._last_id = value.decode("utf-8", "replace")
                    elif name == b"retry" and value.isdigit():
                        digits = value.lstrip(b"0")
                        if len(digits) <= _MAX_RETRY_DIGITS:
                            block_retry = self._retry = int(digits) if digits else 0
                    continue
            data_size += len(value) + 1
            if data_size - 1 > max_event:
                self._fail("event")
            data_parts.append(value)
        self._data = data_parts
        self._data_size = data_size
        self._event_type = event_type
        self._block_retry = block_retry
        return events

    def close(self) -> list[ServerSentEvent]:
        """Signal the end of the stream.

        Per the spec, an event not yet dispatched by a blank line is discarded, and so is an
        unterminated last line; so this always returns ``[]``. Whether anything was discarded is
        then available as :attr:`truncated`. Calling :meth:`close` again returns ``[]``;
        calling :meth:`feed` afterwards raises :class:`RuntimeError`.

        Returns:
            An empty list (returned for symmetry with :meth:`feed`).

        Raises:
            SSELimitError: The decoder had already failed on a size limit.
        """
        if self._error is not None:
            raise SSELimitError(*self._error)
        if self._closed:
            return []
        self._closed = True
        self._truncated = bool(self._buf or self._data) or self._event_type is not None
        self._buf = bytearray()
        self._data = []
        self._data_size = 0
        self._event_type = None
        self._block_retry = None
        return []


def _encode_text(text: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise LocalProtocolError(f"SSE text cannot be encoded as UTF-8: {exc}") from exc


def _lines(text: str) -> list[str]:
    """Split text into lines at CRLF, CR or LF (and nothing else)."""
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text.split("\n")


def _data_lines(data: bytes) -> bytes:
    """``data`` (which holds a CR or LF) as one ``data:`` line per line: CRLF and lone CR
    normalised to LF, then split at LF; the blank line that ends the event included."""
    if 13 in data:
        data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    return b"data: " + data.replace(b"\n", b"\ndata: ") + b"\n\n"


def _head(event: bytes | None, id: bytes | None) -> bytes:
    """The ``event`` and ``id`` lines, checked (see :func:`encode_event`)."""
    head = b""
    if event:
        if 10 in event or 13 in event:
            raise LocalProtocolError(f"SSE event name must not contain CR or LF: {event!r}")
        head = b"event: " + event + b"\n"
    if id is not None:
        if 10 in id or 13 in id or 0 in id:
            raise LocalProtocolError(f"SSE event id must not contain CR, LF or NUL: {id!r}")
        head += b"id: " + id + b"\n"
    return head


def encode_event(
    data: str,
    *,
    event: str | None = None,
    id: str | None = None,
    retry: int | None = None,
) -> bytes:
    """Encode one event as a block of ``text/event-stream`` lines ending in a blank line.

    Fields are written as ``name: value`` (one space after the colon, which the decoder removes,
    so a value's own leading spaces survive), in the order ``event``, ``id``, ``retry``, ``data``,
    in UTF-8. SSE data can only carry LF line breaks: CRLF and lone CR in ``data`` are
    normalised to LF, and the data is split at LF into one ``data:`` line per line, which a
    conforming decoder joins back with LF. Empty data is encoded as ``data: `` and decodes as an
    event with data ``""``. :func:`encode_event_bytes` is the same encoder for data that is
    already bytes.

    Args:
        data: The event's data.
        event: The event type; omitted when ``None`` or ``""`` (both decode as ``"message"``).
        id: The event ID; ``""`` is written (it resets the receiver's last event ID), ``None``
            is omitted.
        retry: The reconnection time in milliseconds; omitted when ``None``.

    Returns:
        The encoded block, e.g. ``b"data: hello\\n\\n"`` for ``encode_event("hello")``.

    Raises:
        LocalProtocolError: ``event`` or ``id`` contains CR or LF, ``id`` contains NUL,
            ``retry`` is negative, or a string cannot be encoded as UTF-8 (lone surrogates).
        TypeError: ``retry`` is not an ``int``.
    """
    head = _head(_encode_text(event) if event else None, None if id is None else _encode_text(id))
    if retry is not None:
        head += encode_retry(retry)[:-1]  # the line, without the block's blank line
    raw = _encode_text(data)
    if 10 in raw or 13 in raw:
        return head + _data_lines(raw)
    return head + b"data: " + raw + b"\n\n"


def encode_event_bytes(data: bytes, event: bytes | None = None, id: bytes | None = None) -> bytes:
    """:func:`encode_event` for data that is already UTF-8 bytes (compact JSON, typically),
    with the event name and id as bytes: the per-chunk path of the emulator and the server.

    The result is exactly ``encode_event(data.decode(), event=…, id=…)``: the same field order,
    the same line-break rules for ``data``, the same checks of ``event`` and ``id``. Data
    without CR or LF (compact ``json.dumps`` output never has one: it escapes control
    characters) goes out as one ``data:`` line without being copied more than once; the
    positional parameters keep the call cheap.

    Raises:
        LocalProtocolError: ``event`` or ``id`` contains CR or LF, or ``id`` contains NUL.
    """
    if 10 in data or 13 in data:  # not one line: split as encode_event does
        return _head(event, id) + _data_lines(data)
    if event is None and id is None:  # the emulator's and the OpenAI route's frames
        return b"data: " + data + b"\n\n"
    if event and id is not None:  # the relay's frames: one join, no intermediate head
        if 10 in event or 13 in event or 10 in id or 13 in id or 0 in id:
            _head(event, id)  # raises, naming the field at fault
        return b"".join((b"event: ", event, b"\nid: ", id, b"\ndata: ", data, b"\n\n"))
    return _head(event, id) + b"data: " + data + b"\n\n"


def encode_retry(milliseconds: int) -> bytes:
    """A block that sets the receiver's reconnection time and dispatches nothing:
    ``encode_retry(1000)`` is ``b"retry: 1000\\n\\n"``.

    Raises:
        LocalProtocolError: ``milliseconds`` is negative.
        TypeError: ``milliseconds`` is not an ``int``.
    """
    if not isinstance(milliseconds, int) or isinstance(milliseconds, bool):
        raise TypeError(f"SSE retry must be an int, not {type(milliseconds).__name__}")
    if milliseconds < 0:
        raise LocalProtocolError(f"SSE retry must not be negative: {milliseconds}")
    return b"retry: %d\n\n" % milliseconds


def encode_comment(text: str = "") -> bytes:
    """Encode a comment block, which every decoder ignores (useful as a keep-alive).

    Each line of ``text`` (split at CRLF, CR or LF) becomes one ``: line`` line, and a blank
    line ends the block: ``encode_comment("ping")`` is ``b": ping\\n\\n"`` and
    ``encode_comment()`` is ``b": \\n\\n"``. The blank line dispatches nothing, since every block
    this module encodes is complete.

    Raises:
        LocalProtocolError: ``text`` cannot be encoded as UTF-8 (lone surrogates).
    """
    return _encode_text("".join(f": {line}\n" for line in _lines(text)) + "\n")


DONE_EVENT: bytes = b"data: [DONE]\n\n"
"""The end-of-stream marker of OpenAI-compatible streams (ERNIE v2): ``data: [DONE]``, encoded."""
