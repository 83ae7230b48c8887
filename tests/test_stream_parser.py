"""The generation-neutral pieces of the wire layer: stream classification and JSON helpers.
(The stream machinery itself is tested through both generations' parsers, in
``test_wire_v1`` and ``test_wire_v2``.)"""

from __future__ import annotations

from typing import Any

import pytest

from wenxin_stream._events import Usage
from wenxin_stream._exceptions import MalformedResponseError
from wenxin_stream._stream_parser import classify_stream_response, load_json_object, parse_usage

# --- classification -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "content_type", "head", "expected"),
    [
        (200, "text/event-stream", b"data: {}", "sse"),
        (200, "text/event-stream; charset=utf-8", b"", "sse"),
        (200, "TEXT/EVENT-STREAM", b'{"error_code":1}', "sse"),
        (200, "application/json", b"data: x", "json"),
        (200, "application/json;charset=utf-8", b"", "json"),
        (200, "application/problem+json", b"", "json"),
        (200, None, b'  \n{"error_code":110}', "json"),
        (200, "text/plain", b'\xef\xbb\xbf{"error_code":110}', "json"),
        (200, None, b"data: {}", "sse"),
        (200, None, b"", "sse"),
        (500, "text/event-stream", b"data: {}", "json"),
        (404, None, b"<html>", "json"),
        (204, "", b"", "sse"),
    ],
)
def test_classify_stream_response(
    status: int, content_type: str | None, head: bytes, expected: str
) -> None:
    assert classify_stream_response(status, content_type, head) == expected


# --- helpers --------------------------------------------------------------------------------


def test_load_json_object() -> None:
    assert load_json_object(b'{"a": 1}') == {"a": 1}
    with pytest.raises(MalformedResponseError, match="not valid JSON"):
        load_json_object(b"{nope", api="v1")
    with pytest.raises(MalformedResponseError, match="not a JSON object"):
        load_json_object("[1]")


def test_parse_usage() -> None:
    usage = parse_usage(
        {
            "prompt_tokens": 1,
            "completion_tokens": 2,
            "total_tokens": 3,
            "plugins": [{"name": "search", "total_tokens": 5}],
        }
    )
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (1, 2, 3)
    assert usage.extra["plugins"][0]["name"] == "search"
    with pytest.raises(TypeError):
        usage.extra["x"] = 1  # type: ignore[index]
    assert parse_usage({"prompt_tokens": None}) == Usage()
    with pytest.raises(MalformedResponseError, match=r"usage\.total_tokens is not an integer"):
        parse_usage({"total_tokens": "3"})
    with pytest.raises(MalformedResponseError, match="not an integer"):
        parse_usage({"total_tokens": True})
    with pytest.raises(MalformedResponseError, match="usage is not a JSON object"):
        parse_usage([1])


def test_excerpt_of_unserialisable_values() -> None:
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(MalformedResponseError, match=r"\[\[\.\.\.\]\]"):
        parse_usage(loop)
