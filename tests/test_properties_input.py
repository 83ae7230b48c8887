"""Properties of what reads a client's request: the server's body reader and field readers
(``server/_http.py``), the request validators (``_validation.py``, ``_parameters.py``), the
image data-URL parser (``_images.py``) and the emulator's fault directives (``_faults.py``).
Whatever arrives, each gives a value or its one typed refusal (an ``HTTPError`` with a 4xx, a
``Problem``, an ``ImageProblem``, a ``FaultSpecError``), never anything else."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from fuzz_settings import cut, fuzz
from wenxin_stream._asgi import ClientDisconnected, Request
from wenxin_stream._images import ImageInfo, ImageProblem, describe_image_url
from wenxin_stream._models import CATALOGUE
from wenxin_stream._parameters import check_capabilities, check_v2_params
from wenxin_stream._validation import (
    Problem,
    check_stop,
    check_v1_messages,
    check_v1_params,
    check_v2_messages,
)
from wenxin_stream.emulator._faults import (
    FaultSpec,
    FaultSpecError,
    find_directives,
    parse_fault_spec,
    strip_directives,
)
from wenxin_stream.server._http import HTTPError, check_text, parse_count, read_json

SCALARS = (
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats()
    | st.text(max_size=10) | st.sampled_from(["\ud800", "user", "assistant", "system", "tool"])
)  # fmt: skip
KEYS = st.sampled_from(
    ["messages", "role", "content", "model", "stream", "temperature", "top_p", "max_tokens",
     "max_completion_tokens", "stop", "tools", "function", "name", "parameters", "type", "text",
     "image_url", "url", "tool_calls", "tool_call_id", "enable_thinking", "thinking_budget",
     "web_search", "enable", "response_format", "penalty_score", "system", "functions",
     "stream_options", "include_usage", "user_id", "seed", "\ud800"]
) | st.text(max_size=6)  # fmt: skip
JSON: st.SearchStrategy[Any] = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=5),
    max_leaves=12,
)
BODIES = st.dictionaries(KEYS, JSON, max_size=8)


# -- server/_http.py -------------------------------------------------------------------------


@fuzz
@given(st.text(max_size=12), st.integers(0, 10), st.integers(0, 10**6))
def test_parse_count_gives_a_number_in_range_or_400(text: str, low: int, span: int) -> None:
    try:
        value = parse_count(text, "n", low, low + span)
    except HTTPError as exc:
        refused = exc
    else:
        refused = None
    if refused is not None:
        assert (refused.status, refused.code) == (400, "invalid_field")
        return
    assert low <= value <= low + span
    assert text.strip().isascii()
    assert text.strip().isdigit()


async def _read(chunks: list[bytes], length: str | None, limit: int) -> dict[str, Any]:
    messages = [{"type": "http.request", "body": c, "more_body": True} for c in chunks]
    messages.append({"type": "http.request", "body": b"", "more_body": False})

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    headers = [] if length is None else [(b"content-length", length.encode())]
    scope = {"type": "http", "method": "POST", "path": "/", "query_string": b"", "headers": headers}
    return await read_json(receive, Request.from_scope(scope), limit, empty_ok=True)


@fuzz
@given(
    st.one_of(
        st.binary(max_size=80),
        JSON.map(lambda v: json.dumps(v).encode()),
        BODIES.map(lambda v: json.dumps(v, ensure_ascii=False).encode("utf-8", "surrogatepass")),
    ),
    st.lists(st.integers(min_value=0), max_size=6),
    st.none() | st.sampled_from(["", "x", "²", "-1", "5", "9" * 40]),
    st.integers(1, 400),
)
def test_read_json_gives_an_object_or_a_4xx(
    body: bytes, points: list[int], length: str | None, limit: int
) -> None:
    try:
        got = asyncio.run(_read(cut(body, points), length, limit))
    except HTTPError as exc:
        got = exc
    except ClientDisconnected:  # pragma: no cover - the fake client never leaves
        raise AssertionError("no disconnect was sent") from None
    if isinstance(got, HTTPError):
        assert 400 <= got.status < 500
        return
    assert isinstance(got, dict)
    json.dumps(got).encode()  # every string in it is encodable UTF-8


@fuzz
@given(BODIES)
def test_check_text_refuses_exactly_the_bodies_with_a_lone_surrogate(body: dict[str, Any]) -> None:
    raw = json.dumps(body)  # ASCII: every surrogate as a \u escape
    try:
        check_text(body, raw)
    except HTTPError as exc:
        refused: HTTPError | None = exc
    else:
        refused = None
    if refused is not None:
        assert (refused.status, refused.code) == (400, "invalid_field")
        assert "\\ud800" in raw
        return
    json.dumps(body, ensure_ascii=False).encode("utf-8")  # encodable: no surrogate in it


# -- _validation.py, _parameters.py ----------------------------------------------------------


@fuzz
@given(BODIES, st.sampled_from(sorted(CATALOGUE.v2_ids())))
def test_the_validators_give_a_problem_or_none(body: dict[str, Any], model: str) -> None:
    messages = body.get("messages", body)
    for result in (
        check_v1_messages(messages),
        check_v2_messages(messages),
        check_v2_messages(messages, alternation=True),
        check_v1_params(body),
        check_stop(body.get("stop")),
        check_v2_params(body),
    ):
        assert result is None or isinstance(result, Problem)
    if check_v2_params(body) is None:
        spec = CATALOGUE.lookup(model)
        assert spec is not None
        for switches in (True, False):
            result = check_capabilities(body, spec, thinking_switches=switches)
            assert result is None or isinstance(result, Problem)


# -- _images.py ------------------------------------------------------------------------------

IMAGE_HEADS = st.sampled_from(
    [b"", b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR", b"GIF89a", b"GIF87a", b"\xff\xd8\xff", b"\xff\xd8",
     b"RIFF\0\0\0\0WEBPVP8 ", b"BM"]
)  # fmt: skip


@fuzz
@given(
    st.sampled_from(["data:image/png;base64,", "data:image/jpeg;base64,", "DATA:image/gif;BASE64,",
                     "data:image/webp;base64,", "data:text/plain;base64,", "data:image/png,",
                     "data:image/png;base64", "https://", "ftp://", ""]),
    IMAGE_HEADS,
    st.binary(max_size=64),
    st.sampled_from(["", "=", "==", "!", " ", "\n", "\ud800"]),
)  # fmt: skip
def test_an_image_url_is_described_or_refused(
    prefix: str, head: bytes, rest: bytes, tail: str
) -> None:
    url = prefix + base64.b64encode(head + rest).decode() + tail
    for value in (url, url[: len(url) // 2], prefix + tail):
        try:
            info = describe_image_url(value)
        except ImageProblem:
            continue
        assert isinstance(info, ImageInfo)
        assert info.kind in ("link", "data")


# -- emulator/_faults.py ---------------------------------------------------------------------

SPEC_TEXT = st.lists(
    st.tuples(
        st.sampled_from(["error", "error_after", "times", "cut_after", "stall", "stall_after",
                         "split_utf8", "ttft", "interval", "chunks", "safety", "truncate",
                         "tool_pieces", "big_line", "x", " cut_after ", ""]),
        st.sampled_from(["", "=", "=1", "=0", "=3", "=336003", "=0.5", "=-1", "=nan", "=inf",
                         "=1e400", "=yes", "=model_offline", "=²", "=+7", "= 2 ", "=99999999999"]),
    ),
    max_size=5,
).map(lambda items: ";".join(k + v for k, v in items))  # fmt: skip


@fuzz
@given(SPEC_TEXT | st.text(max_size=30))
def test_a_fault_spec_parses_or_is_refused_and_its_canonical_text_parses_back(text: str) -> None:
    try:
        spec: FaultSpec | FaultSpecError = parse_fault_spec(text)
    except FaultSpecError as exc:
        spec = exc
    if isinstance(spec, FaultSpecError):
        assert str(spec)  # a message for the client
        return
    assert parse_fault_spec(spec.canonical()) == spec


@fuzz
@given(st.text(max_size=20), SPEC_TEXT, st.text(max_size=20))
def test_directives_are_found_and_stripped_whole(before: str, spec: str, after: str) -> None:
    message = f"{before}[[wenxin:fault {spec}]]{after}"
    assert spec.strip() in [s.strip() for s in find_directives(message)]
    stripped = strip_directives(message)
    assert find_directives(stripped) == [] or "[[wenxin:fault" in before + after
