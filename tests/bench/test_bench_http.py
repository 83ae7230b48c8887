"""The load generator's sans-I/O HTTP/1.1 response parser: every split point, every framing."""

from __future__ import annotations

import pytest

from wenxin_stream.bench._http import (
    ChunkedDecoder,
    HTTPProtocolError,
    IncompleteResponse,
    ResponseParser,
    parse_head,
)

PAYLOADS = [b'data: {"a":1}\n\n', b"x" * 300, "中文字符".encode(), b"\r\n\r\n", b"0\r\n"]


def chunked(payloads: list[bytes], *, ext: bool = False, trailer: bytes = b"") -> bytes:
    out = b""
    for p in payloads:
        size = b"%x" % len(p)
        out += size + (b";name=value" if ext else b"") + b"\r\n" + p + b"\r\n"
    return out + b"0\r\n" + trailer + b"\r\n"


def decode_all(decoder: ChunkedDecoder, pieces: list[bytes]) -> bytes:
    return b"".join(b"".join(decoder.feed(p)) for p in pieces)


@pytest.mark.parametrize("ext", [False, True])
def test_chunked_every_split_point(ext: bool) -> None:
    wire = chunked(PAYLOADS, ext=ext, trailer=b"X-Trailer: 1\r\n")
    expected = b"".join(PAYLOADS)
    for cut in range(len(wire) + 1):
        decoder = ChunkedDecoder()
        assert decode_all(decoder, [wire[:cut], wire[cut:]]) == expected, cut
        assert decoder.done
        assert decoder.trailing == b""


def test_chunked_every_pair_of_split_points() -> None:
    wire = chunked([b"hello", b"\xe4\xb8\xad", b"world!"])
    for i in range(len(wire) + 1):
        for j in range(i, len(wire) + 1):
            decoder = ChunkedDecoder()
            assert (
                decode_all(decoder, [wire[:i], wire[i:j], wire[j:]]) == b"hello\xe4\xb8\xadworld!"
            )
            assert decoder.done


def test_chunked_one_byte_at_a_time_and_trailing_bytes() -> None:
    wire = chunked(PAYLOADS) + b"EXTRA"
    decoder = ChunkedDecoder()
    body = b""
    for i in range(len(wire)):
        if decoder.done:
            break
        body += b"".join(decoder.feed(wire[i : i + 1]))
    assert body == b"".join(PAYLOADS)
    whole = ChunkedDecoder()
    assert b"".join(whole.feed(wire)) == b"".join(PAYLOADS)
    assert whole.trailing == b"EXTRA"


def test_chunked_single_payload_is_not_copied() -> None:
    decoder = ChunkedDecoder()
    decoder.feed(b"5\r\n")
    piece = b"hello"
    assert decoder.feed(piece)[0] is piece


def test_chunked_accepts_bare_lf_and_uppercase_hex() -> None:
    decoder = ChunkedDecoder()
    assert b"".join(decoder.feed(b"A\n0123456789\n0\n\n")) == b"0123456789"
    assert decoder.done


@pytest.mark.parametrize(
    "wire",
    [b"zz\r\n", b"-1\r\n", b"+5\r\n", b"0x5\r\n", b"1_0\r\n", b"\r\n", b"12345678901234567\r\n"],
)
def test_chunked_rejects_bad_sizes(wire: bytes) -> None:
    with pytest.raises(HTTPProtocolError, match="bad chunk size"):
        ChunkedDecoder().feed(wire)


def test_chunked_rejects_missing_crlf_long_lines_and_data_after_end() -> None:
    with pytest.raises(HTTPProtocolError, match="CRLF"):
        ChunkedDecoder().feed(b"3\r\nabcX\r\n")
    with pytest.raises(HTTPProtocolError, match="too long"):
        ChunkedDecoder(max_line_bytes=8).feed(b"1" * 20)
    with pytest.raises(HTTPProtocolError, match="too long"):
        ChunkedDecoder(max_line_bytes=8).feed(b"1;" + b"e" * 20 + b"\r\n")
    done = ChunkedDecoder()
    done.feed(b"0\r\n\r\n")
    with pytest.raises(HTTPProtocolError, match="after the end"):
        done.feed(b"x")


HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"


def test_response_every_split_point() -> None:
    wire = HEAD + chunked(PAYLOADS)
    for cut in range(len(wire) + 1):
        parser = ResponseParser("POST")
        body = b"".join(parser.feed(wire[:cut]) + parser.feed(wire[cut:]))
        assert body == b"".join(PAYLOADS)
        assert parser.done
        assert parser.keep_alive
        assert parser.head is not None
        assert parser.head.get("content-type") == "text/event-stream"


def test_response_content_length_and_interim_responses() -> None:
    parser = ResponseParser()
    wire = (
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 404 Not Found\r\nContent-Length: 5\r\n\r\nhelloXY"
    )
    assert b"".join(parser.feed(wire)) == b"hello"
    assert parser.done
    assert parser.trailing == b"XY"
    assert parser.head is not None
    assert parser.head.status == 404
    assert parser.head.reason == "Not Found"
    parser = ResponseParser()
    parser.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nab")
    assert parser.feed(b"cd") == [b"cd"]
    with pytest.raises(HTTPProtocolError):
        parser.feed(b"e")


def test_response_without_body() -> None:
    for status in (204, 304):
        parser = ResponseParser()
        parser.feed(b"HTTP/1.1 %d X\r\n\r\n" % status)
        assert parser.done
    parser = ResponseParser("HEAD")
    parser.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nzz")
    assert parser.done
    assert parser.trailing == b"zz"


def test_response_close_delimited() -> None:
    parser = ResponseParser()
    assert parser.feed(b"HTTP/1.0 200 OK\r\n\r\nabc") == [b"abc"]
    assert parser.feed(b"def") == [b"def"]
    assert not parser.done
    assert not parser.keep_alive
    parser.feed_eof()
    assert parser.done
    gzip = ResponseParser()
    gzip.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n")
    assert not gzip.keep_alive


def test_response_keep_alive_rules() -> None:
    parser = ResponseParser()
    parser.feed(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
    assert parser.done
    assert not parser.keep_alive
    parser = ResponseParser()
    parser.feed(b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n")
    assert parser.keep_alive


def test_response_incomplete() -> None:
    for wire in (
        b"",
        b"HTTP/1.1 200 OK\r\n",
        HEAD + b"5\r\nab",
        b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nab",
    ):
        parser = ResponseParser()
        parser.feed(wire)
        with pytest.raises(IncompleteResponse):
            parser.feed_eof()


@pytest.mark.parametrize(
    "wire",
    [
        b"HTTP/2 200\r\n\r\n",
        b"HTTP/1.1 abc OK\r\n\r\n",
        b"HTTP/1.1 2000 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nA: b\r\n folded\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nName : value\r\n\r\n",
        b"HTTP/1.1 101 Switching\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
    ],
)
def test_response_rejects_bad_heads(wire: bytes) -> None:
    with pytest.raises(HTTPProtocolError):
        ResponseParser().feed(wire)


def test_response_head_limit() -> None:
    parser = ResponseParser(max_head_bytes=64)
    with pytest.raises(HTTPProtocolError, match="too large"):
        parser.feed(b"HTTP/1.1 200 OK\r\nX: " + b"y" * 100)
    with pytest.raises(HTTPProtocolError, match="too large"):
        ResponseParser(max_head_bytes=64).feed(b"HTTP/1.1 200 OK\r\nX: " + b"y" * 100 + b"\r\n\r\n")


def test_parse_head_values() -> None:
    head = parse_head(b"HTTP/1.1 200\r\nSet-Cookie: a\r\nset-cookie: b\r\nX-Empty:")
    assert head.reason == ""
    assert head.get_all("set-cookie") == ["a", "b"]
    assert head.get("x-empty") == ""
    assert head.get("missing", "d") == "d"


def test_bare_lf_head_before_a_crlf_body() -> None:
    parser = ResponseParser()
    body = parser.feed(b"HTTP/1.1 200 OK\nTransfer-Encoding: chunked\n\n2\r\nab\r\n0\r\n\r\n")
    assert b"".join(body) == b"ab"
    assert parser.done
