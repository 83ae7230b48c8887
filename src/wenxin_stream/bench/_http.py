"""A sans-I/O HTTP/1.1 response parser for the load generator: bytes in, head and body pieces out.

Theory of operation
===================

:class:`ResponseParser` is fed the bytes a connection receives for one response, in pieces of
any size, and returns the body bytes each piece completes. It has two phases:

- **head**: bytes are buffered (at most ``max_head_bytes``) until a blank line ends the status
  line and the header fields; interim ``1xx`` responses are skipped. The head decides the body
  framing, as RFC 9112 §6.3 does: no body (``HEAD``, ``1xx``, ``204``, ``304``), ``chunked``
  transfer coding, ``Content-Length``, or — for anything else — a body delimited by the
  connection closing (:meth:`ResponseParser.feed_eof` ends it).
- **body**: one small decoder per framing. :class:`ChunkedDecoder` is the hot path of a
  streaming benchmark; it walks each piece with an index and slices payload bytes straight out
  of it (a piece holding exactly one payload is passed on without a copy), so its cost is one
  ``bytes.find`` per line and one slice per payload. Chunk-size lines, the CRLF after each
  payload and the trailer section are read by the same line reader, so a CR and its LF may
  arrive in different pieces. Lines are bounded (``max_line_bytes``).

Errors are split by blame, as in h11: :class:`HTTPProtocolError` means the peer broke HTTP
(bad status line, bad chunk size, bytes after the end of a response nobody asked for),
:class:`IncompleteResponse` means the connection ended before the body did. Nothing here
does I/O or reads a clock.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "ChunkedDecoder",
    "HTTPProtocolError",
    "IncompleteResponse",
    "ResponseHead",
    "ResponseParser",
]

_HEAD_END = re.compile(rb"\r?\n\r?\n")


class HTTPProtocolError(Exception):
    """The peer sent something that is not valid HTTP/1.1 (its fault, not ours)."""


class IncompleteResponse(HTTPProtocolError):
    """The connection ended before the response did."""


@dataclass(frozen=True, slots=True)
class ResponseHead:
    """The status line and header fields of a response (names lower-cased, in order)."""

    status: int
    reason: str
    version: str
    headers: tuple[tuple[str, str], ...]

    def get(self, name: str, default: str = "") -> str:
        """The value of the first header field called ``name`` (lower case), or ``default``."""
        for key, value in self.headers:
            if key == name:
                return value
        return default

    def get_all(self, name: str) -> list[str]:
        """The values of every header field called ``name`` (lower case)."""
        return [value for key, value in self.headers if key == name]


def parse_head(raw: bytes) -> ResponseHead:
    """Parse a response head (status line and fields, without the blank line).

    Raises:
        HTTPProtocolError: a malformed status line or header field.
    """
    text = raw.decode("latin-1")
    lines = (text.replace("\r\n", "\n") if "\r" in text else text).split("\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise HTTPProtocolError(f"bad status line {lines[0][:80]!r}")
    if len(parts[1]) != 3 or not parts[1].isascii():
        raise HTTPProtocolError(f"bad status code {parts[1][:10]!r}")
    headers = []
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon or not name or name[-1] in " \t" or line[0] in " \t":
            raise HTTPProtocolError(f"bad header line {line[:80]!r}")
        headers.append((name.lower(), value.strip()))
    reason = parts[2] if len(parts) == 3 else ""
    return ResponseHead(int(parts[1]), reason, parts[0], tuple(headers))


_SIZE, _DATA, _DATA_END, _TRAILER, _DONE = range(5)


class ChunkedDecoder:
    """Decoder of a ``Transfer-Encoding: chunked`` body (RFC 9112 §7.1).

    :meth:`feed` returns the payload bytes in the piece; :attr:`done` turns true after the
    last chunk and the trailer section, and :attr:`trailing` then holds any bytes that followed.
    Chunk extensions and trailer fields are read and ignored.
    """

    __slots__ = ("_line", "_max_line", "_remaining", "_state", "trailing")

    def __init__(self, *, max_line_bytes: int = 4096) -> None:
        self._state = _SIZE
        self._remaining = 0
        self._line = b""
        self._max_line = max_line_bytes
        self.trailing = b""

    @property
    def done(self) -> bool:
        """Whether the terminating zero-size chunk and the trailer section have arrived."""
        return self._state == _DONE

    def feed(self, data: bytes) -> list[bytes]:
        """Decode the next piece of the body; return the payload bytes it holds.

        Raises:
            HTTPProtocolError: a bad chunk size, a payload not followed by CRLF, an overlong
                line, or data fed after the end.
        """
        if self._state == _DONE:
            if not data:
                return []
            raise HTTPProtocolError("data after the end of a chunked body")
        out: list[bytes] = []
        pos = 0
        end = len(data)
        state = self._state
        while pos < end:
            if state == _DATA:
                stop = pos + self._remaining
                if stop <= end:
                    out.append(data if pos == 0 and stop == end else data[pos:stop])
                    pos = stop
                    self._remaining = 0
                    state = _DATA_END
                else:
                    out.append(data[pos:] if pos else data)
                    self._remaining -= end - pos
                    pos = end
                continue
            if state == _DATA_END and not self._line and data[pos : pos + 2] == b"\r\n":
                pos += 2  # the usual case: the CRLF after a payload, in one piece
                state = _SIZE
                continue
            newline = data.find(b"\n", pos)
            if newline < 0:
                self._line += data[pos:]
                if len(self._line) > self._max_line:
                    raise HTTPProtocolError("chunked-body line too long")
                break
            line = data[pos:newline]
            if self._line:
                line = self._line + line
                self._line = b""
            pos = newline + 1
            if line.endswith(b"\r"):
                line = line[:-1]
            if len(line) > self._max_line:
                raise HTTPProtocolError("chunked-body line too long")
            if state == _SIZE:
                size_text = line.split(b";", 1)[0].strip(b" \t") if b";" in line else line
                # isalnum() (ASCII only) rules out the signs, "_" and spaces that int() would
                # accept; only an "0x" prefix is left for the check below to refuse.
                try:
                    if (
                        not size_text.isalnum()
                        or size_text[1:2] in (b"x", b"X")
                        or len(size_text) > 16
                    ):
                        raise ValueError
                    self._remaining = int(size_text, 16)
                except ValueError:
                    raise HTTPProtocolError(f"bad chunk size {line[:40]!r}") from None
                state = _DATA if self._remaining else _TRAILER
            elif state == _DATA_END:
                if line:
                    raise HTTPProtocolError("chunk payload not followed by CRLF")
                state = _SIZE
            elif not line:  # _TRAILER: a blank line ends the body
                state = _DONE
                self.trailing = data[pos:]
                break
        self._state = state
        return out


class _LengthDecoder:
    """Decoder of a ``Content-Length`` body."""

    __slots__ = ("_remaining", "trailing")

    def __init__(self, length: int) -> None:
        self._remaining = length
        self.trailing = b""

    @property
    def done(self) -> bool:
        return self._remaining == 0

    def feed(self, data: bytes) -> list[bytes]:
        if self._remaining == 0:
            if not data:
                return []
            raise HTTPProtocolError("data after the end of a Content-Length body")
        if len(data) <= self._remaining:
            self._remaining -= len(data)
            return [data]
        body = data[: self._remaining]
        self.trailing = data[self._remaining :]
        self._remaining = 0
        return [body]


class _CloseDecoder:
    """A body that ends when the connection closes."""

    __slots__ = ("done", "trailing")

    def __init__(self) -> None:
        self.done = False
        self.trailing = b""

    def feed(self, data: bytes) -> list[bytes]:
        return [data]


_BodyDecoder = ChunkedDecoder | _LengthDecoder | _CloseDecoder


class ResponseParser:
    """Incremental parser of one HTTP/1.1 response.

    Args:
        method: The request method (``HEAD`` responses have no body).
        max_head_bytes: The largest status line plus header section accepted.

    After the head has arrived, :attr:`head` is set; :attr:`done` turns true when the body is
    complete, and :attr:`keep_alive` says whether the connection may carry another request.
    """

    __slots__ = ("_body", "_buf", "_max_head", "_method", "head", "keep_alive")

    def __init__(self, method: str = "GET", *, max_head_bytes: int = 65536) -> None:
        self._method = method
        self._max_head = max_head_bytes
        self._buf = b""
        self._body: _BodyDecoder | None = None
        self.head: ResponseHead | None = None
        self.keep_alive = False

    @property
    def done(self) -> bool:
        """Whether the whole response (head and body) has been parsed."""
        return self._body is not None and self._body.done

    @property
    def trailing(self) -> bytes:
        """Bytes received after the end of the response (unsolicited: a protocol error)."""
        return self._body.trailing if self._body is not None else b""

    def feed(self, data: bytes) -> list[bytes]:
        """Parse the next piece of the response; return the body bytes it completes.

        Raises:
            HTTPProtocolError: malformed head or body framing, or a head over the limit.
        """
        body = self._body
        if body is not None:
            return body.feed(data)
        buf = self._buf + data if self._buf else data
        while True:
            end = buf.find(b"\r\n\r\n")  # the norm; bare-LF heads take the regex
            if end >= 0 and buf.find(b"\n\n", 0, end) < 0:
                start, stop = end, end + 4
            else:
                match = _HEAD_END.search(buf)
                if match is None:
                    if len(buf) > self._max_head:
                        raise HTTPProtocolError("response head too large")
                    self._buf = buf
                    return []
                start, stop = match.start(), match.end()
            if start > self._max_head:
                raise HTTPProtocolError("response head too large")
            head = parse_head(buf[:start])
            buf = buf[stop:]
            if 100 <= head.status < 200:
                if head.status == 101:
                    raise HTTPProtocolError("unexpected 101 Switching Protocols")
                continue  # interim response: the real one follows
            break
        self._buf = b""
        self.head = head
        self._body = body = self._framing(head)
        if not buf:
            return []
        if body.done:
            body.trailing = buf
            return []
        return body.feed(buf)

    def _framing(self, head: ResponseHead) -> _BodyDecoder:
        connection: list[str] = []
        codings: list[str] = []
        lengths: set[str] = set()
        for name, value in head.headers:  # one pass over the fields
            if name == "connection":
                connection += (t.strip().lower() for t in value.split(","))
            elif name == "transfer-encoding":
                codings += (t.strip().lower() for t in value.split(",") if t.strip())
            elif name == "content-length":
                lengths.add(value)
        if head.version == "HTTP/1.1":
            self.keep_alive = "close" not in connection
        else:
            self.keep_alive = "keep-alive" in connection
        if self._method == "HEAD" or head.status in (204, 304):
            return _LengthDecoder(0)
        if codings:
            if codings[-1] != "chunked":
                self.keep_alive = False
                return _CloseDecoder()
            return ChunkedDecoder()
        if lengths:
            text = lengths.pop()
            if lengths or not (text.isdigit() and text.isascii() and len(text) <= 18):
                raise HTTPProtocolError("bad Content-Length")
            return _LengthDecoder(int(text))
        self.keep_alive = False
        return _CloseDecoder()

    def feed_eof(self) -> None:
        """The connection closed: end a close-delimited body.

        Raises:
            IncompleteResponse: the head or a length-delimited or chunked body was cut short.
        """
        body = self._body
        if isinstance(body, _CloseDecoder):
            body.done = True
            return
        if body is None or not body.done:
            raise IncompleteResponse("connection closed before the end of the response")
