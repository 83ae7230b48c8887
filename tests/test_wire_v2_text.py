"""The v2 plain-text-chunk path (``_wire_v2_text``) against the generic parse: which chunks it
takes, and the same streams fed through both (split at every byte, and at random points) giving
the same events, the same parser state and the same errors."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from unittest import mock

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fuzz_settings import cut, fuzz
from wenxin_stream import _wire_v2
from wenxin_stream._events import ChunkMeta, StreamEvent, TextDelta
from wenxin_stream._wire_openai import OpenAIStreamParser
from wenxin_stream._wire_v2 import V2StreamParser
from wenxin_stream._wire_v2_text import text_chunk_events
from wire_helpers import bytewise, feed_until_error, splits

HEAD = '{"id":"as-1","object":"chat.completion.chunk","created":1717488564,"model":"ernie-4.0-8k",'


PLAIN = ',"finish_reason":null,"flag":0'
USAGE = ',"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}'


def chunk(content: str, *, choice_tail: str = PLAIN, tail: str = "") -> str:
    """A chunk whose content is the JSON string ``content`` (already encoded, quotes included)."""
    return f'{HEAD}"choices":[{{"index":0,"delta":{{"content":{content}}}{choice_tail}}}]{tail}}}'


def dumps(value: object, *, ascii: bool = False) -> str:
    return json.dumps(value, ensure_ascii=ascii, separators=(",", ":"))


@contextmanager
def generic_only() -> Iterator[None]:
    """Every chunk through the generic parse (the fast path never matches)."""
    with mock.patch.object(_wire_v2, "text_chunk_events", return_value=None):
        yield


# -- which chunks the fast path takes ------------------------------------------------------

TAKEN = {
    "emulator": chunk('"我无法直接获取实时的天气信息。"'),
    "emulator first": chunk('"很"').replace('"delta":{', '"delta":{"role":"assistant",'),
    "qianfan": chunk('"很抱歉，"', choice_tail=',"flag":0'),
    "bare": chunk('"x"', choice_tail=""),
    "usage null": chunk('"x"', tail=',"usage":null'),
    "empty content": chunk('""'),
    "escapes": chunk(dumps('q"\\/\n\r\t\b\f\u2028\x01 我', ascii=True)),
    "escaped pair": chunk('"\\ud83d\\ude00"'),
    "lone surrogate": chunk('"a\\ud800b"'),
    "raw u2028": chunk('"a\u2028b"'),
    "created 0": chunk('"x"').replace("1717488564", "0"),
    "empty id": chunk('"x"').replace('"as-1"', '""'),
    "empty model": chunk('"x"').replace('"ernie-4.0-8k"', '""'),
}

LEFT = {
    "finish": chunk('""', choice_tail=',"finish_reason":"stop","flag":0'),
    "flag": chunk('"x"', choice_tail=',"flag":1'),
    "usage": chunk('"x"', tail=USAGE),
    "reasoning": chunk('"x"').replace('"delta":{', '"delta":{"reasoning_content":"r",'),
    "unknown key": chunk('"x"', tail=',"system_fingerprint":"fp"'),
    "second choice": chunk('"x"').replace('"index":0', '"index":1'),
    "whitespace": chunk('"x"').replace('"created":', '"created": '),
    "leading zero": chunk('"x"').replace("1717488564", "01717488564"),
    "non-ascii digit": chunk('"x"').replace("1717488564", "１"),
    "float created": chunk('"x"').replace("1717488564", "1.5"),
    "raw control": chunk('"a\x01b"'),
    "bad escape": chunk('"a\\xb"'),
    "short unicode escape": chunk('"a\\u12"'),
    "escaped id": chunk('"x"').replace('"as-1"', '"as\\u002d1"'),
    "duplicate content": chunk('"x"').replace('"delta":{', '"delta":{"content":"y",'),
    "truncated": chunk('"x"')[:-1],
    "trailing": chunk('"x"') + "x",
    "other role": chunk('"x"').replace('"delta":{', '"delta":{"role":"user",'),
}


@pytest.mark.parametrize("data", TAKEN.values(), ids=TAKEN.keys())
def test_plain_text_chunks_take_the_fast_path_with_the_generic_events(data: str) -> None:
    out: list[StreamEvent] = []
    assert text_chunk_events(data, out) is not None
    with generic_only():
        expected: list[StreamEvent] = []
        V2StreamParser()._handle(data, expected)
    assert out == expected
    assert [type(e) for e in out] == [type(e) for e in expected]


@pytest.mark.parametrize("data", LEFT.values(), ids=LEFT.keys())
def test_other_chunks_are_left_to_the_generic_parse(data: str) -> None:
    out: list[StreamEvent] = []
    assert text_chunk_events(data, out) is None
    assert out == []


def test_the_fast_events_are_ordinary_frozen_events() -> None:
    out: list[StreamEvent] = []
    text_chunk_events(chunk('"a\\"b"'), out)
    assert out == [ChunkMeta("as-1", 1717488564, None, "ernie-4.0-8k"), TextDelta('a"b')]
    assert repr(out[1]) == repr(TextDelta('a"b'))
    assert hash(out[0]) == hash(ChunkMeta("as-1", 1717488564, None, "ernie-4.0-8k"))
    with pytest.raises(AttributeError):
        out[1].text = "changed"  # type: ignore[misc]


# -- the same streams through both paths ---------------------------------------------------

ERROR = '{"error":{"code":"rate_limit_exceeded","message":"slow","type":"rate_limit"},"id":"x"}'

STREAMS = {
    "text then finish": [
        chunk('"很抱歉，"'),
        chunk(dumps("我无法\u2028直接获取", ascii=True)),
        chunk('""'),
        chunk('"\\ud83d\\ude00 \\ud800"'),
        LEFT["finish"],
        LEFT["usage"],
        "[DONE]",
    ],
    "error in stream": [chunk('"a"'), ERROR, chunk('"b"'), "[DONE]"],
    "malformed": [chunk('"a"'), LEFT["truncated"], "[DONE]"],
    "raw control": [chunk('"a"'), LEFT["raw control"], "[DONE]"],
    "empty model and id": [TAKEN["empty model"], TAKEN["empty id"], "[DONE]"],
    "reasoning and flags": [LEFT["reasoning"], LEFT["flag"], TAKEN["qianfan"], "[DONE]"],
    "trailing after done": [chunk('"a"'), "[DONE]", chunk('"late"')],
    "no done": [chunk('"a"'), LEFT["finish"]],
}


def sse(datas: list[str], *, line_end: str = "\n") -> bytes:
    return "".join(f"data: {d}{line_end}{line_end}" for d in datas).encode()


def outcome(make: type[V2StreamParser], chunks: list[bytes]) -> tuple[object, ...]:
    parser = make()
    events, error = feed_until_error(parser, chunks)
    return (
        events,
        [type(e) for e in events],
        None if error is None else (type(error), str(error)),
        parser.response_id,
        parser.finish_reason,
        parser.usage,
        parser.finished,
        parser.trailing_data,
    )


def both(make: type[V2StreamParser], chunks: list[bytes]) -> None:
    fast = outcome(make, chunks)
    with generic_only():
        generic = outcome(make, chunks)
    assert fast == generic


@pytest.mark.parametrize("line_end", ["\n", "\r\n", "\r"])
@pytest.mark.parametrize("make", [V2StreamParser, OpenAIStreamParser])
@pytest.mark.parametrize("datas", STREAMS.values(), ids=STREAMS.keys())
def test_streams_split_at_every_byte_give_the_generic_outcome(
    datas: list[str], make: type[V2StreamParser], line_end: str
) -> None:
    body = sse(datas, line_end=line_end)
    for chunks in splits(body):
        both(make, chunks)
    both(make, bytewise(body))


def test_multi_line_data_gives_the_generic_outcome() -> None:
    # data lines are joined with LF: whitespace the fast path does not take
    body = ("data: " + chunk('"a"').replace(',"model"', '\ndata: ,"model"') + "\n\n").encode()
    body += b"data: [DONE]\n\n"
    for chunks in splits(body):
        both(V2StreamParser, chunks)


_TEXT = st.text(max_size=12)
_CONTENT = st.one_of(
    _TEXT.map(lambda t: dumps(t)),
    _TEXT.map(lambda t: dumps(t, ascii=True)),
    st.sampled_from(['"\\ud800"', '"\\udc00x"', '"\\ud83d\\ude00"', '"\\u2028"', '"a\\/b"']),
)
_SHAPE = st.sampled_from(
    [
        {},
        {"choice_tail": ',"flag":0'},
        {"choice_tail": ""},
        {"tail": ',"usage":null'},
        {"choice_tail": ',"finish_reason":"stop","flag":0'},
        {"tail": USAGE},
    ]
)


@st.composite
def _datas(draw: st.DrawFn) -> list[str]:
    datas: list[str] = []
    for _ in range(draw(st.integers(1, 5))):
        shape: dict[str, Any] = draw(_SHAPE)
        kind = draw(st.sampled_from(["chunk", "chunk", "chunk", "error", "junk"]))
        if kind == "chunk":
            datas.append(chunk(draw(_CONTENT), **shape))
        elif kind == "error":
            datas.append(ERROR)
        else:
            datas.append(draw(_TEXT.map(lambda t: chunk(dumps(t))[: len(t) + 40])))
    if draw(st.booleans()):
        datas.append("[DONE]")
    return datas


@fuzz
@given(datas=_datas(), points=st.lists(st.integers(0, 4000), max_size=8))
def test_random_streams_give_the_generic_outcome(datas: list[str], points: list[int]) -> None:
    body = sse(datas)
    both(V2StreamParser, cut(body, points))
    both(OpenAIStreamParser, cut(body, points))
