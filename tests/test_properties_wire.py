"""Properties of ERNIE's wire parsers (``_stream_parser.py``, ``_wire_v1.py``, ``_wire_v2.py``):
whatever the network delivers, they give events or raise one of our typed errors, and a
well-formed stream gives the same events however it is cut into chunks."""

from __future__ import annotations

import json
from contextlib import suppress
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from fuzz_settings import cut, fuzz
from wenxin_stream import WenxinError, encode_event
from wenxin_stream._stream_parser import StreamParser
from wenxin_stream._wire_v1 import V1StreamParser, parse_v1_body, parse_v1_response
from wenxin_stream._wire_v2 import V2StreamParser, parse_v2_body, parse_v2_response
from wire_helpers import feed_until_error

PARSERS: dict[str, type[StreamParser]] = {"v1": V1StreamParser, "v2": V2StreamParser}
SCALARS = (
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats() | st.text(max_size=8)
)
KEYS = st.sampled_from(
    ["id", "result", "is_end", "sentence_id", "finish_reason", "usage", "error_code", "error_msg",
     "choices", "delta", "content", "reasoning_content", "tool_calls", "index", "error", "code",
     "message", "prompt_tokens", "function_call", "arguments", "name", "flag", "ban_round"]
) | st.text(max_size=5)  # fmt: skip
JSON: st.SearchStrategy[Any] = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=5),
    max_leaves=12,
)
OBJECTS = st.dictionaries(KEYS, JSON, max_size=6)
CUTS = st.lists(st.integers(min_value=0), max_size=12)


def _parse(api: str, chunks: list[bytes]) -> tuple[list[Any], str | None]:
    """The events, and the class of the typed error that ended the parse (None: none)."""
    events, error = feed_until_error(PARSERS[api](), chunks)
    return list(events), None if error is None else type(error).__name__


def _body(objects: list[Any]) -> bytes:
    return b"".join(encode_event(json.dumps(o, ensure_ascii=False)) for o in objects)


@fuzz
@given(st.sampled_from(["v1", "v2"]), st.binary(max_size=200), CUTS)
def test_any_bytes_give_events_or_a_typed_error(api: str, data: bytes, points: list[int]) -> None:
    _parse(api, cut(data, points))


@fuzz
@given(st.sampled_from(["v1", "v2"]), st.lists(OBJECTS, max_size=5), st.booleans(), CUTS)
def test_any_json_chunks_give_events_or_a_typed_error(
    api: str, objects: list[Any], done: bool, points: list[int]
) -> None:
    body = _body(objects) + (b"data: [DONE]\n\n" if done else b"")
    _parse(api, cut(body, points))
    _parse(api, [body[:1], body[1:]] if body else [body])  # a bare-JSON sniff on the first byte


def _stream(api: str, pieces: list[str]) -> bytes:
    if api == "v1":
        chunks: list[Any] = [
            {"id": "as-1", "sentence_id": i, "is_end": False, "result": p}
            for i, p in enumerate(pieces)
        ]
        usage = {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}
        end = {
            "id": "as-1",
            "sentence_id": len(pieces),
            "is_end": True,
            "result": "",
            "usage": usage,
        }
        chunks.append(end)
        return _body(chunks)
    chunks = [{"id": "as-1", "choices": [{"index": 0, "delta": {"content": p}}]} for p in pieces]
    chunks.append({"id": "as-1", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    return _body(chunks) + b"data: [DONE]\n\n"


@fuzz
@given(st.sampled_from(["v1", "v2"]), st.lists(st.text(max_size=12), max_size=6), CUTS)
def test_a_well_formed_stream_gives_the_same_events_however_it_is_cut(
    api: str, pieces: list[str], points: list[int]
) -> None:
    pieces = [p.encode("utf-8", "replace").decode("utf-8") for p in pieces]  # no surrogates
    body = _stream(api, pieces)
    whole, error = _parse(api, [body])
    assert error is None
    assert _parse(api, cut(body, points)) == (whole, None)
    assert _parse(api, [bytes([b]) for b in body]) == (whole, None)


@fuzz
@given(OBJECTS, st.sampled_from([200, 400, 401, 429, 500, 503]))
def test_any_non_stream_body_gives_an_answer_or_a_typed_error(
    body: dict[str, Any], status: int
) -> None:
    for parse in (parse_v1_response, parse_v2_response):
        with suppress(WenxinError):
            parse(body)
    raw = json.dumps(body).encode()
    for parse_body in (parse_v1_body, parse_v2_body):
        for data in (raw, raw[: len(raw) // 2]):
            with suppress(WenxinError):
                parse_body(status, data)
