"""What the stream parsers' tests share: feeding a parser chunk by chunk and the chunkings
(every two-way split, byte by byte) that make a test see every read boundary."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from wenxin_stream._events import StreamEvent
from wenxin_stream._exceptions import WenxinError


class Parser(Protocol):
    def feed(self, data: bytes) -> list[StreamEvent]: ...

    def close(self) -> list[StreamEvent]: ...


def feed_all(parser: Parser, chunks: Iterable[bytes]) -> list[StreamEvent]:
    """Every event ``parser`` gives for ``chunks`` and its close (an error propagates)."""
    events: list[StreamEvent] = []
    for chunk in chunks:
        events += parser.feed(chunk)
    events += parser.close()
    return events


def feed_until_error(
    parser: Parser, chunks: Iterable[bytes]
) -> tuple[list[StreamEvent], WenxinError | None]:
    """The events ``parser`` gave before it raised, and the error (None: it did not)."""
    events: list[StreamEvent] = []
    try:
        for chunk in chunks:
            events += parser.feed(chunk)
        events += parser.close()
    except WenxinError as exc:
        return events, exc
    return events, None


def splits(data: bytes) -> Iterable[list[bytes]]:
    """``data`` cut in two at every position (the empty halves included)."""
    for i in range(len(data) + 1):
        yield [data[:i], data[i:]]


def bytewise(data: bytes) -> list[bytes]:
    """``data`` one byte at a time."""
    return [data[i : i + 1] for i in range(len(data))]
