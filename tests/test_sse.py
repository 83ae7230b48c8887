"""Tests of the SSE codec (wenxin_stream._sse): WHATWG parsing, chunking, limits, encoder."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wenxin_stream._exceptions import (
    LocalProtocolError,
    RemoteProtocolError,
    SSELimitError,
)
from wenxin_stream._sse import (
    DONE_EVENT,
    ServerSentEvent,
    SSEDecoder,
    encode_comment,
    encode_event,
    encode_event_bytes,
    encode_retry,
)

E = ServerSentEvent


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def decode(chunks: Iterable[bytes], **limits: int) -> list[ServerSentEvent]:
    """Feed every chunk, then close; return all events."""
    dec = SSEDecoder(**limits)
    events: list[ServerSentEvent] = []
    for chunk in chunks:
        events += dec.feed(chunk)
    events += dec.close()
    return events


def split_at(data: bytes, cuts: Sequence[int]) -> list[bytes]:
    """Cut data at the given offsets (sorted, within 0..len)."""
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


def feed_all(dec: SSEDecoder, chunks: Iterable[bytes]) -> list[ServerSentEvent]:
    """Feed every chunk (without closing); return all events."""
    return [event for chunk in chunks for event in dec.feed(chunk)]


def one_byte(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


def reference(stream: bytes) -> tuple[list[ServerSentEvent], str, int | None, bool]:
    """A literal transcription of WHATWG "Interpreting an event stream", on decoded text.

    Returns (events, last event id, reconnection time, whether close() discards something).
    """
    text = stream.decode("utf-8", "replace")
    if text.startswith("\ufeff"):
        text = text[1:]
    lines = re.split(r"\r\n|\r|\n", text)
    tail = lines.pop()
    events: list[ServerSentEvent] = []
    data = ""
    event_type = ""
    event_seen = False
    last_id = ""
    retry: int | None = None
    block_retry: int | None = None
    for line in lines:
        if line == "":
            if data != "":
                if data.endswith("\n"):
                    data = data[:-1]
                events.append(E(data, event_type or "message", last_id, block_retry))
            data = ""
            event_type = ""
            event_seen = False
            block_retry = None
            continue
        if line.startswith(":"):
            continue
        if ":" in line:
            name, _, value = line.partition(":")
            if value.startswith(" "):
                value = value[1:]
        else:
            name, value = line, ""
        if name == "event":
            event_type = value
            event_seen = True
        elif name == "data":
            data += value + "\n"
        elif name == "id":
            if "\x00" not in value:
                last_id = value
        elif name == "retry" and re.fullmatch(r"[0-9]+", value, re.ASCII):
            retry = block_retry = int(value)
    return events, last_id, retry, bool(tail or data or event_seen)


# A frame exercising most of the grammar: BOM, CRLF/CR/LF, comments, fields without colon or
# space, id/retry/event, an id-only and a retry-only block, multi-byte text, U+2028.
FRAME = (
    b"\xef\xbb\xbf: hello\r\n"
    b"id: 1\r\n"
    b'data: {"r":"\xe4\xbd\xa0\xe5\xa5\xbd"}\r\n'
    b"\r\n"
    b"event: delta\rdata:x\rdata\rretry: 3000\r\r"
    b"retry: 10\n\n"
    b"id: 2\n\n"
    b"data: \xf0\x9f\x98\x80 \xe2\x80\xa8 end\n"
    b": note\n"
    b"\n"
    b"data: [DONE]\n\n"
)
FRAME_EVENTS = [
    E('{"r":"你好"}', "message", "1", None),
    E("x\n", "delta", "1", 3000),
    E("😀 \u2028 end", "message", "2", None),
    E("[DONE]", "message", "2", None),
]


# --------------------------------------------------------------------------------------------
# Chunking independence
# --------------------------------------------------------------------------------------------


def test_frame_in_one_piece() -> None:
    dec = SSEDecoder()
    assert dec.feed(FRAME) == FRAME_EVENTS
    assert dec.close() == []
    assert dec.truncated is False
    assert dec.last_event_id == "2"
    assert dec.retry == 10
    assert reference(FRAME) == (FRAME_EVENTS, "2", 10, False)


def test_frame_split_in_two_at_every_offset() -> None:
    for cut in range(len(FRAME) + 1):
        assert decode(split_at(FRAME, [cut])) == FRAME_EVENTS, cut


def test_frame_split_in_three_over_a_grid() -> None:
    offsets = range(len(FRAME) + 1)
    for i, j in itertools.combinations_with_replacement(offsets, 2):
        assert decode(split_at(FRAME, [i, j])) == FRAME_EVENTS, (i, j)


def test_frame_one_byte_at_a_time() -> None:
    dec = SSEDecoder()
    events: list[ServerSentEvent] = []
    for chunk in one_byte(FRAME):
        events += dec.feed(chunk)
    assert events == FRAME_EVENTS
    assert dec.close() == []
    assert dec.truncated is False


def test_events_are_returned_by_the_feed_that_completes_them() -> None:
    dec = SSEDecoder()
    assert dec.feed(b"data: a\n") == []
    assert dec.feed(b"\ndata: b") == [E("a")]
    assert dec.feed(b"\n\ndata: c\n\n") == [E("b"), E("c")]


def test_bytes_like_input() -> None:
    dec = SSEDecoder()
    assert dec.feed(bytearray(b"data: a\n")) == []  # type: ignore[arg-type]
    assert dec.feed(memoryview(b"\ndata: b\n\n")) == [E("a"), E("b")]  # type: ignore[arg-type]
    assert dec.feed(b"") == []


# --------------------------------------------------------------------------------------------
# Line ends
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("eol", [b"\n", b"\r", b"\r\n"])
def test_each_line_end(eol: bytes) -> None:
    stream = b"data: a" + eol + b"data: b" + eol + eol + b"data: c" + eol + eol
    assert decode([stream]) == [E("a\nb"), E("c")]
    assert decode(one_byte(stream)) == [E("a\nb"), E("c")]


def test_mixed_line_ends() -> None:
    stream = b"data: a\r\ndata: b\rdata: c\n\r\n" + b"data: d\n\r" + b"data: e\r\r\n"
    expected = [E("a\nb\nc"), E("d"), E("e")]
    assert decode([stream]) == expected
    assert decode(one_byte(stream)) == expected


def test_cr_at_chunk_end_then_lf_is_one_line_end() -> None:
    dec = SSEDecoder()
    assert dec.feed(b"data: a\r") == []
    assert dec.feed(b"\n") == []  # not a second (blank) line: no dispatch
    assert dec.feed(b"\n") == [E("a")]


def test_cr_terminated_line_is_interpreted_at_once() -> None:
    dec = SSEDecoder()
    # The blank line ends with a CR at the end of the chunk: dispatch now, not on the next feed.
    assert dec.feed(b"data: a\r\r") == [E("a")]
    assert dec.feed(b"\ndata: b\r\n\r\n") == [E("b")]
    assert dec.feed(b"id: 7\r") == []
    assert dec.last_event_id == "7"  # the id line took effect before the LF arrived
    assert dec.feed(b"\n") == []
    assert dec.close() == []
    assert dec.truncated is False


def test_cr_at_chunk_end_then_other_byte() -> None:
    dec = SSEDecoder()
    assert dec.feed(b"data: a\r") == []
    assert dec.feed(b"data: b\r") == []
    assert dec.feed(b"\r") == [E("a\nb")]
    assert dec.feed(b"\r") == []  # a blank line with no data: nothing


def test_lone_lf_after_cr_after_other_feed() -> None:
    # The CR flag only swallows an LF at the very start of the next chunk.
    assert decode([b"data: a\r", b"data: b\n\n"]) == [E("a\nb")]
    assert decode([b"data: a\r", b"", b"\n\n"]) == [E("a")]


def test_unicode_line_separators_are_not_line_ends() -> None:
    text = "a\u2028b\u2029c\x85d\x0ce\x0bf\x1cg\x1dh\x1ei"
    stream = b"data: " + text.encode() + b"\n\n"
    assert decode([stream]) == [E(text)]
    assert decode(one_byte(stream)) == [E(text)]
    # ... nor in field names or comments.
    assert decode([b"event\x85: x\ndata: y\n\n"]) == [E("y")]
    assert decode([b": c\xe2\x80\xa8data: z\ndata: y\n\n"]) == [E("y")]


# --------------------------------------------------------------------------------------------
# BOM and UTF-8
# --------------------------------------------------------------------------------------------


def test_bom_is_stripped_once() -> None:
    assert decode([b"\xef\xbb\xbfdata: x\n\n"]) == [E("x")]
    # A second BOM is part of the first field name ("\ufeffdata"), an unknown field.
    dec = SSEDecoder()
    assert dec.feed(b"\xef\xbb\xbf\xef\xbb\xbfdata: x\n\ndata: y\n\n") == [E("y")]
    # A BOM later in the stream is text.
    assert decode([b"data: \xef\xbb\xbfx\n\n"]) == [E("\ufeffx")]


@pytest.mark.parametrize(
    "chunks",
    [
        [b"\xef", b"\xbb", b"\xbf", b"data: x\n\n"],
        [b"\xef\xbb", b"\xbfdata: x\n\n"],
        [b"\xef", b"\xbb\xbfdata: x\n\n"],
        [b"", b"\xef", b"", b"\xbb\xbf", b"data: x\n\n"],
    ],
)
def test_bom_split_across_feeds(chunks: list[bytes]) -> None:
    assert decode(chunks) == [E("x")]


def test_partial_bom_is_not_a_bom() -> None:
    # EF BB followed by something else is an invalid sequence in the first line's field name.
    assert decode([b"\xef\xbb", b"data: x\n\ndata: y\n\n"]) == [E("y")]
    assert decode([b"\xef", b"\n", b"data: y\n\n"]) == [E("y")]
    dec = SSEDecoder()
    dec.feed(b"\xef\xbb")
    assert dec.close() == []
    assert dec.truncated is True
    dec = SSEDecoder()
    dec.feed(b"\xef\xbb\xbf")
    dec.close()
    assert dec.truncated is False


@pytest.mark.parametrize("char", ["中", "😀", "é"])
def test_multibyte_character_split_at_every_offset(char: str) -> None:
    stream = f"event: {char}\nid: {char}\ndata: {char}{char}\n\n".encode()
    expected = [E(char * 2, char, char)]
    for cut in range(len(stream) + 1):
        assert decode(split_at(stream, [cut])) == expected, cut
    assert decode(one_byte(stream)) == expected


def test_invalid_utf8_is_replaced() -> None:
    assert decode([b"data: a\xffb\xe4\xb8\n\n"]) == [E("a\ufffdb\ufffd")]
    # A truncated sequence ending one data line does not swallow the joining LF.
    assert decode([b"data: \xe4\xb8\ndata: x\n\n"]) == [E("\ufffd\nx")]


# --------------------------------------------------------------------------------------------
# Fields and dispatch
# --------------------------------------------------------------------------------------------


def test_comments_are_ignored() -> None:
    assert decode([b": hi\n:\n::x\ndata: a\n: mid\n\n"]) == [E("a")]
    assert decode([b": only a comment\n\n"]) == []


def test_retry_only_block() -> None:
    dec = SSEDecoder()
    assert dec.feed(b"retry: 1500\n\n") == []
    assert dec.retry == 1500
    assert dec.feed(b"data: a\n\n") == [E("a")]  # retry belonged to the previous block
    assert dec.feed(b"retry: 20\ndata: b\n\n") == [E("b", retry=20)]
    assert dec.retry == 20
    assert dec.feed(b"retry: 007\n\n") == []
    assert dec.retry == 7
    dec.close()
    assert dec.truncated is False


@pytest.mark.parametrize(
    "value",
    [b"1x", b"", b"  1", b" 1 ", b"-1", b"+1", b"1.5", b"1_000", b"\xd9\xa1", b"\xef\xbc\x91"],
)
def test_invalid_retry_is_ignored(value: bytes) -> None:
    dec = SSEDecoder()
    assert dec.feed(b"retry: 5\n\nretry:" + value + b"\ndata: a\n\n") == [E("a")]
    assert dec.retry == 5


def test_huge_retry_is_ignored() -> None:
    dec = SSEDecoder()
    assert dec.feed(b"retry: " + b"9" * 5000 + b"\ndata: a\n\n") == [E("a")]
    assert dec.retry is None
    assert dec.feed(b"retry: " + b"0" * 5000 + b"42\n\n") == []
    assert dec.retry == 42


def test_id_only_block_and_persistence() -> None:
    dec = SSEDecoder()
    assert dec.feed(b"id: 1\n\n") == []
    assert dec.last_event_id == "1"
    assert dec.feed(b"data: a\n\n") == [E("a", id="1")]
    assert dec.feed(b"data: b\nid: 2\n\n") == [E("b", id="2")]
    assert dec.feed(b"data: c\n\n") == [E("c", id="2")]
    assert dec.feed(b"id\ndata: d\n\n") == [E("d", id="")]  # an empty id resets it
    assert dec.last_event_id == ""


def test_id_with_nul_is_ignored() -> None:
    dec = SSEDecoder()
    assert dec.feed(b"id: 1\n\nid: a\x00b\ndata: x\n\n") == [E("x", id="1")]
    assert dec.last_event_id == "1"


def test_event_field() -> None:
    dec = SSEDecoder()
    assert dec.feed(b"event: add\ndata: 1\n\ndata: 2\n\n") == [E("1", "add"), E("2")]
    # The event type is cleared by a blank line even when nothing is dispatched.
    assert dec.feed(b"event: x\n\ndata: 3\n\n") == [E("3")]
    assert dec.feed(b"event:\ndata: 4\n\n") == [E("4")]
    assert dec.feed(b"event: a\nevent: b\ndata: 5\n\n") == [E("5", "b")]


def test_field_parsing() -> None:
    assert decode([b"data\n\n"]) == [E("")]  # no colon: the whole line is the name
    assert decode([b"data:\n\n"]) == [E("")]
    assert decode([b"data: \n\n"]) == [E("")]
    assert decode([b"data:x\n\n"]) == [E("x")]  # no space after the colon
    assert decode([b"data:  x\n\n"]) == [E(" x")]  # only one space removed
    assert decode([b"data: a:b: c\n\n"]) == [E("a:b: c")]
    assert decode([b"data: a\ndata\ndata: b\n\n"]) == [E("a\n\nb")]
    assert decode([b"data:\ndata:\n\n"]) == [E("\n")]
    assert decode([b"Data: x\n\n"]) == []  # field names are case-sensitive
    assert decode([b"data : x\n\n"]) == []
    assert decode([b"foo: bar\ndata: x\nbaz\n\n"]) == [E("x")]
    assert decode([b"data: a\t \n\n"]) == [E("a\t ")]  # trailing whitespace is kept


def test_blank_lines_without_data() -> None:
    assert decode([b"\n\n\r\n\r\r"]) == []


def test_json() -> None:
    (event,) = decode([b'data: {"a": [1, "\xe6\x96\x87"]}\n\n'])
    assert event.json() == {"a": [1, "文"]}
    with pytest.raises(ValueError, match="Expecting value"):
        E("[DONE]").json()


def test_event_is_frozen() -> None:
    event = E("x")
    with pytest.raises(AttributeError):
        event.data = "y"  # type: ignore[misc]


# --------------------------------------------------------------------------------------------
# End of input
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "stream",
    [
        b"data: a\n\ndata: b",  # unterminated line
        b"data: a\n\ndata: b\n",  # complete line, event not dispatched
        b"data: a\n\ndata: b\r",
        b"data: a\n\nevent: x\n",  # event field not dispatched
        b"data: a\n\n:partial comment",
        b"data: a\n\nid: 5",  # the id line never ended
    ],
)
def test_close_discards_a_trailing_partial_event(stream: bytes) -> None:
    for chunks in ([stream], one_byte(stream)):
        dec = SSEDecoder()
        events = [e for c in chunks for e in dec.feed(c)]
        assert events == [E("a")]
        truncated_before_close = dec.truncated
        assert dec.close() == []
        assert (truncated_before_close, dec.truncated) == (False, True)
        assert dec.last_event_id == ""


@pytest.mark.parametrize(
    "stream", [b"", b"data: a\n\n", b"data: a\r\n\r\n", b"id: 3\n", b"retry: 5\n", b": c\n"]
)
def test_close_after_clean_end(stream: bytes) -> None:
    dec = SSEDecoder()
    dec.feed(stream)
    assert dec.close() == []
    assert dec.truncated is False


def test_feed_after_close() -> None:
    dec = SSEDecoder()
    dec.feed(b"data: a\n\n")
    dec.close()
    assert dec.close() == []  # idempotent
    with pytest.raises(RuntimeError):
        dec.feed(b"data: b\n\n")
    with pytest.raises(RuntimeError):
        dec.feed(b"")


# --------------------------------------------------------------------------------------------
# Limits
# --------------------------------------------------------------------------------------------


def test_line_limit() -> None:
    ok = b"data: 1234\n"  # 10-byte line
    assert decode([ok + b"\n"], max_line_bytes=10) == [E("1234")]
    assert decode(one_byte(ok + b"\n"), max_line_bytes=10) == [E("1234")]
    for chunks in ([b"data: 12345\n\n"], one_byte(b"data: 12345\n\n"), [b"data: 1", b"2345\r"]):
        dec = SSEDecoder(max_line_bytes=10)
        with pytest.raises(SSELimitError) as info:
            feed_all(dec, chunks)
        assert isinstance(info.value, RemoteProtocolError)
        assert (info.value.kind, info.value.limit) == ("line", 10)


def test_line_limit_in_the_middle_of_a_chunk() -> None:
    dec = SSEDecoder(max_line_bytes=10)
    assert dec.feed(b"data: 1234\n") == []
    # Long chunk, short lines: fine.
    assert dec.feed(b"\ndata: 1234\ndata: 5678\n\n") == [E("1234"), E("1234\n5678")]
    with pytest.raises(SSELimitError, match="line"):
        dec.feed(b"data: 1\n\n: a comment that is too long\ndata: 2\n\n")


def test_line_that_never_ends_fails_as_soon_as_it_passes_the_limit() -> None:
    limit = 1 << 20
    dec = SSEDecoder(max_line_bytes=limit)
    chunk = b"x" * (64 << 10)
    fed: list[int] = []

    def chunks() -> Iterable[bytes]:
        for _ in range(1600):  # 100 MiB, if it were all buffered
            yield chunk
            fed.append(len(chunk))

    with pytest.raises(SSELimitError) as info:
        feed_all(dec, chunks())
    assert (info.value.kind, info.value.limit) == ("line", limit)
    assert sum(fed) == limit  # the 17th chunk, which would pass the limit, raised
    assert len(dec._buf) <= limit


def test_decoder_is_unusable_after_a_limit_error() -> None:
    dec = SSEDecoder(max_line_bytes=4)
    with pytest.raises(SSELimitError):
        dec.feed(b"data: x\n\n")
    with pytest.raises(SSELimitError) as info:
        dec.feed(b"\n")
    assert (info.value.kind, info.value.limit) == ("line", 4)
    with pytest.raises(SSELimitError):
        dec.close()


def test_event_limit() -> None:
    # "12345\n1234" is 10 bytes of data.
    ok = b"data: 12345\ndata: 1234\n\n"
    assert decode([ok], max_event_bytes=10) == [E("12345\n1234")]
    assert decode(one_byte(ok * 3), max_event_bytes=10) == [E("12345\n1234")] * 3
    for chunks in ([b"data: 12345\ndata: 12345\n\n"], one_byte(b"data: 123\n" * 3)):
        dec = SSEDecoder(max_event_bytes=10)
        with pytest.raises(SSELimitError) as info:
            feed_all(dec, chunks)
        assert (info.value.kind, info.value.limit) == ("event", 10)
        with pytest.raises(SSELimitError, match="event"):
            dec.feed(b"\n")


def test_event_limit_counts_utf8_bytes_and_resets_per_event() -> None:
    dec = SSEDecoder(max_event_bytes=6)
    assert dec.feed("data: 中文\n\ndata: 中文\n\n".encode()) == [E("中文"), E("中文")]
    with pytest.raises(SSELimitError):
        dec.feed("data: 中文a\n\n".encode())


def test_negative_limits_rejected() -> None:
    with pytest.raises(ValueError, match="negative"):
        SSEDecoder(max_line_bytes=-1)
    with pytest.raises(ValueError, match="negative"):
        SSEDecoder(max_event_bytes=-1)


# --------------------------------------------------------------------------------------------
# Encoder
# --------------------------------------------------------------------------------------------


def test_encode_simple() -> None:
    assert encode_event("hello") == b"data: hello\n\n"
    assert encode_event("") == b"data: \n\n"
    assert encode_event("文心") == "data: 文心\n\n".encode()
    assert encode_event("[DONE]") == DONE_EVENT == b"data: [DONE]\n\n"
    assert decode([encode_event("")]) == [E("")]


def test_encode_fields() -> None:
    encoded = encode_event("x", event="delta", id="42", retry=3000)
    assert encoded == b"event: delta\nid: 42\nretry: 3000\ndata: x\n\n"
    assert decode([encoded]) == [E("x", "delta", "42", 3000)]
    assert encode_event("x", event="") == b"data: x\n\n"
    assert encode_event("x", id="") == b"id: \ndata: x\n\n"
    assert encode_event("x", retry=0) == b"retry: 0\ndata: x\n\n"
    assert decode([encode_event(" x ", event=" e", id=" i")]) == [E(" x ", " e", " i")]


def test_encode_multiline_data() -> None:
    assert encode_event("a\nb") == b"data: a\ndata: b\n\n"
    assert encode_event("a\n") == b"data: a\ndata: \n\n"
    assert encode_event("\n") == b"data: \ndata: \n\n"
    assert decode([encode_event("\n\na\n")]) == [E("\n\na\n")]


def test_encode_normalises_cr() -> None:
    assert encode_event("a\r\nb\rc\n\rd") == b"data: a\ndata: b\ndata: c\ndata: \ndata: d\n\n"
    assert decode([encode_event("a\r\nb\r")]) == [E("a\nb\n")]


def test_encode_keeps_non_line_breaks() -> None:
    text = "a\u2028b\x85c\x0cd\x00e"
    assert encode_event(text) == b"data: " + text.encode() + b"\n\n"
    assert decode([encode_event(text)]) == [E(text)]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"event": "a\nb"},
        {"event": "a\r"},
        {"id": "1\n"},
        {"id": "\r1"},
        {"id": "1\x002"},
        {"retry": -1},
    ],
)
def test_encode_rejects_what_sse_cannot_carry(kwargs: dict[str, object]) -> None:
    with pytest.raises(LocalProtocolError):
        encode_event("x", **kwargs)  # type: ignore[arg-type]


def test_encode_rejects_unencodable_text() -> None:
    with pytest.raises(LocalProtocolError):
        encode_event("\ud800")
    with pytest.raises(LocalProtocolError):
        encode_event("x", event="\udfff")
    with pytest.raises(LocalProtocolError):
        encode_comment("\ud800")


@pytest.mark.parametrize("retry", [1.5, "5", True])
def test_encode_retry_type(retry: object) -> None:
    with pytest.raises(TypeError):
        encode_event("x", retry=retry)  # type: ignore[arg-type]


def test_encode_event_with_nul_in_name_is_allowed() -> None:
    assert decode([encode_event("x", event="a\x00b")]) == [E("x", "a\x00b")]


def test_encode_comment() -> None:
    assert encode_comment("ping") == b": ping\n\n"
    assert encode_comment() == b": \n\n"
    assert encode_comment("a\nb\r\nc\rd") == b": a\n: b\n: c\n: d\n\n"
    assert encode_comment("文") == ": 文\n\n".encode()
    stream = encode_event("1", id="i") + encode_comment("a\ndata: no") + encode_event("2")
    assert decode([stream]) == [E("1", id="i"), E("2", id="i")]


def test_encode_bytes_fast_path() -> None:
    data = '{"text":"文心"}'.encode()
    assert encode_event_bytes(data) == b"data: " + data + b"\n\n"
    assert encode_event_bytes(b"[DONE]") == DONE_EVENT
    framed = encode_event_bytes(data, b"delta", b"s_1:7")
    assert framed == b"event: delta\nid: s_1:7\ndata: " + data + b"\n\n"
    assert framed == encode_event(data.decode(), event="delta", id="s_1:7")
    assert decode([framed]) == [E('{"text":"文心"}', "delta", "s_1:7")]
    assert encode_event_bytes(b"x", b"", None) == b"data: x\n\n"  # as event="" is omitted
    assert encode_event_bytes(b"x", None, b"") == b"id: \ndata: x\n\n"
    assert encode_event_bytes(b"a\r\nb\rc", b"e") == b"event: e\ndata: a\ndata: b\ndata: c\n\n"
    assert encode_event_bytes(b"") == b"data: \n\n"


@pytest.mark.parametrize(
    ("event", "id"),
    [(b"a\nb", None), (b"a\r", b"1"), (None, b"1\n"), (b"e", b"\r1"), (None, b"1\x002")],
)
def test_encode_bytes_rejects_what_sse_cannot_carry(event: bytes | None, id: bytes | None) -> None:
    with pytest.raises(LocalProtocolError):
        encode_event_bytes(b"x", event, id)
    with pytest.raises(LocalProtocolError):
        encode_event_bytes(b"x\ny", event, id)  # the multi-line path checks them too


def test_encode_retry() -> None:
    assert encode_retry(1000) == b"retry: 1000\n\n"
    dec = SSEDecoder()
    assert dec.feed(encode_retry(0) + encode_event("x")) == [E("x")]  # a block of its own
    assert dec.retry == 0
    with pytest.raises(LocalProtocolError):
        encode_retry(-1)
    with pytest.raises(TypeError):
        encode_retry(True)


@settings(max_examples=300, deadline=None)
@given(
    text=st.text(max_size=40),
    event=st.none() | st.text(st.characters(exclude_categories=["Cs"]), max_size=8),
    id=st.none() | st.text(st.characters(exclude_categories=["Cs"]), max_size=8),
)
def test_both_doors_of_the_encoder_agree(text: str, event: str | None, id: str | None) -> None:
    """``encode_event_bytes`` is ``encode_event`` for pre-encoded data: the same bytes, or the
    same error."""
    try:
        expected: bytes | type[LocalProtocolError] = encode_event(text, event=event, id=id)
    except LocalProtocolError:
        expected = LocalProtocolError
    raw_event = None if event is None else event.encode()
    raw_id = None if id is None else id.encode()
    try:
        got: bytes | type[LocalProtocolError] = encode_event_bytes(text.encode(), raw_event, raw_id)
    except LocalProtocolError:
        got = LocalProtocolError
    assert got == expected


# --------------------------------------------------------------------------------------------
# Property-based
# --------------------------------------------------------------------------------------------

_no_breaks = st.text(
    st.characters(exclude_characters="\r\n\x00", exclude_categories=["Cs"]), max_size=12
)
_event_specs = st.lists(
    st.tuples(
        st.text(max_size=30),  # data: anything, CR and LF included
        st.none() | _no_breaks.filter(bool),  # event
        st.none() | _no_breaks,  # id
        st.none() | st.integers(min_value=0, max_value=10**12),  # retry
    ),
    max_size=8,
)


@st.composite
def _cuts(draw: st.DrawFn, size: int) -> list[int]:
    return sorted(draw(st.lists(st.integers(0, size), max_size=8)))


@settings(max_examples=300, deadline=None)
@given(specs=_event_specs, data=st.data())
def test_round_trip(
    specs: list[tuple[str, str | None, str | None, int | None]], data: st.DataObject
) -> None:
    stream = b"".join(encode_event(d, event=ev, id=i, retry=r) for d, ev, i, r in specs)
    expected = []
    last_id = ""
    for d, ev, i, r in specs:
        if i is not None:
            last_id = i
        normalised = d.replace("\r\n", "\n").replace("\r", "\n")
        expected.append(E(normalised, ev or "message", last_id, r))
    cuts = data.draw(_cuts(len(stream)))
    dec = SSEDecoder()
    events = [e for chunk in split_at(stream, cuts) for e in dec.feed(chunk)]
    assert events == expected
    assert dec.close() == []
    assert dec.truncated is False
    assert dec.last_event_id == last_id


_TOKENS = [
    b"data", b"data:", b"data: ", b"event:", b"event: ", b"id:", b"id: ", b"retry:", b"retry: ",
    b":", b" ", b"\r", b"\n", b"\r\n", b"\n\n", b"\xef\xbb\xbf", b"\x00", b"0", b"12", b"x",
    b"\xe4\xb8\xad", b"\xe4", b"\xb8", b"\xf0\x9f\x98\x80", b"\xf0\x9f", b"\xc2\x85",
    b"\xe2\x80\xa8", b"\x0b\x0c", b"\xff",
]  # fmt: skip
_streams = st.lists(st.sampled_from(_TOKENS) | st.binary(max_size=3), max_size=40).map(b"".join)


@settings(max_examples=400, deadline=None)
@given(stream=_streams, data=st.data())
def test_matches_the_reference_on_arbitrary_bytes(stream: bytes, data: st.DataObject) -> None:
    events, last_id, retry, truncated = reference(stream)
    cuts = data.draw(_cuts(len(stream)))
    dec = SSEDecoder()
    got = [e for chunk in split_at(stream, cuts) for e in dec.feed(chunk)]
    assert got == events
    assert (dec.last_event_id, dec.retry) == (last_id, retry)
    assert dec.close() == []
    assert dec.truncated is truncated


@settings(max_examples=100, deadline=None)
@given(stream=_streams)
def test_one_byte_feeding_matches_the_reference(stream: bytes) -> None:
    assert decode(one_byte(stream)) == reference(stream)[0]
