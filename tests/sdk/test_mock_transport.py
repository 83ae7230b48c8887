"""Exact chunk boundaries and wire situations a real server will not produce on demand, through
both twins and both API generations, with the scripted transports of ``_transport_mock``."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sdk_helpers import Api, Harness, Mode, build_client, on_clock, sse_body

from wenxin_stream import (
    APIConnectionError,
    APIError,
    BadRequestError,
    EndReason,
    IncompleteStreamError,
    InternalServerError,
    MalformedResponseError,
    RetryPolicy,
    TextDelta,
    Timeout,
    TokenExpiredError,
)
from wenxin_stream._clock import FakeClock
from wenxin_stream._transport_mock import (
    MockResponse,
    MockTransportExhausted,
    Pause,
    every_byte,
    split_at,
)
from wenxin_stream._transport_mock_async import AsyncMockResponse, AsyncMockTransport
from wenxin_stream._transport_mock_sync import MockSyncResponse, MockTransport

PIECES = ["你好，", "世界！😀", "中文「测试」", "é ß ✓ 𠀀。"]
TEXT = "".join(PIECES)


def harness(
    api: Api, mode: Mode, responses: Any, clock: FakeClock | None = None, **kwargs: Any
) -> tuple[Harness, Any]:
    """A client on a mock transport; with ``clock``, both run on that fake clock."""
    time = on_clock(mode, clock) if clock is not None else {}
    transport_type = MockTransport if mode == "sync" else AsyncMockTransport
    transport = transport_type(responses, **{k: v for k, v in time.items() if k == "sleep"})
    kwargs.update(time)
    creds: dict[str, Any] = (
        {"access_token": "24.fixed-token-for-the-mock", "base_url": "http://mock.invalid"}
        if api == "v1"
        else {"bearer_token": "bce-v3/ALTAK-mock/secret", "v2_base_url": "http://mock.invalid"}
    )
    kwargs.setdefault("retry", 0)
    return build_client(mode, transport=transport, **creds, **kwargs), transport


async def run(api: Api, mode: Mode, responses: Any, message: str = "hi", **kwargs: Any) -> Any:
    h, transport = harness(api, mode, responses, **kwargs)
    out = await h.stream(message)
    await h.close()
    return out, transport


# --- chunk boundaries -----------------------------------------------------------------------


async def test_one_byte_per_read(api: Api, mode: Mode) -> None:
    body = sse_body(api, PIECES)
    out, transport = await run(api, mode, [MockResponse(body=every_byte(body))])
    out.raise_error()
    assert out.texts == PIECES
    assert out.end_reason is EndReason.COMPLETED
    assert transport.responses[0].reads == len(body)
    assert transport.responses[0].released


async def test_every_split_inside_multibyte_characters(api: Api, mode: Mode) -> None:
    body = sse_body(api, PIECES)
    inside = [i for i, byte in enumerate(body) if 0x80 <= byte < 0xC0]  # continuation bytes
    assert len(inside) > 20
    responses = [MockResponse.split(body, [cut]) for cut in inside]
    h, _ = harness(api, mode, responses)
    outs = [await h.stream("hi") for _ in inside]
    await h.close()
    for cut, out in zip(inside, outs, strict=True):
        assert out.error is None, cut
        assert out.text == TEXT, cut
        assert "\ufffd" not in out.text


async def test_splits_inside_the_data_prefix(api: Api, mode: Mode) -> None:
    body = sse_body(api, PIECES)
    starts = [i for i in range(len(body)) if body.startswith(b"data: ", i)]
    cuts = sorted({s + k for s in starts for k in range(1, 6)})  # d|ata: … data:| …
    out, _ = await run(api, mode, [MockResponse.split(body, cuts)])
    out.raise_error()
    assert out.texts == PIECES


async def test_crlf_split_between_cr_and_lf(api: Api, mode: Mode) -> None:
    body = sse_body(api, PIECES).replace(b"\n", b"\r\n")
    cuts = [i + 1 for i in range(len(body)) if body[i : i + 2] == b"\r\n"]
    out, _ = await run(api, mode, [MockResponse.split(body, cuts, pause=0.001)])
    out.raise_error()
    assert out.texts == PIECES
    assert out.end_reason is EndReason.COMPLETED


async def test_bare_cr_line_endings(api: Api, mode: Mode) -> None:
    body = sse_body(api, PIECES).replace(b"\n", b"\r")
    out, _ = await run(api, mode, [MockResponse(body=split_at(body, range(0, len(body), 7)))])
    out.raise_error()
    assert out.text == TEXT


async def test_keepalives_comments_and_bom(api: Api, mode: Mode) -> None:
    """A BOM, comment pings, a ``retry:``-only block and an empty event before and between
    the chunks produce no events and no errors (LESSONS 6)."""
    events = sse_body(api, PIECES).split(b"\n\n")
    noise = b": ping\n\nretry: 1000\n\nid: 7\n\ndata:\n\n"
    body = b"\xef\xbb\xbf" + noise + (b"\n\n" + noise).join(events)
    out, _ = await run(api, mode, [MockResponse.split(body, [1, 2, 3])])
    out.raise_error()
    assert out.texts == PIECES


async def test_many_chunks_in_one_read(api: Api, mode: Mode) -> None:
    pieces = [f"第{i}句。" for i in range(300)]
    out, transport = await run(api, mode, [MockResponse(body=[sse_body(api, pieces)])])
    out.raise_error()
    assert out.texts == pieces
    assert transport.responses[0].reads == 1


async def test_leaving_in_the_middle_of_one_read(api: Api, mode: Mode) -> None:
    """One read holds 300 chunks; the caller leaves after three texts: the stream's text and
    final message hold exactly what the caller was given, not the rest of the read."""
    pieces = [f"第{i}句。" for i in range(300)]
    h, transport = harness(api, mode, [MockResponse(body=[sse_body(api, pieces)])])
    out = await h.stream("hi", stop_after=6)  # ChunkMeta, TextDelta × 3
    await h.close()
    shown = "".join(e.text for e in out.events if type(e) is TextDelta)
    assert shown == "".join(pieces[:3])
    assert out.text == shown
    assert out.result.content == shown
    assert out.end_reason is EndReason.CANCELLED
    assert transport.responses[0].closed


# --- bodies that are not a stream -----------------------------------------------------------


@pytest.mark.parametrize("cut", [None, 5, 17])
async def test_v1_json_error_labelled_as_event_stream(mode: Mode, cut: int | None) -> None:
    body = json.dumps({"error_code": 336003, "error_msg": "Invalid Argument", "id": "as-err"})
    data = body.encode()
    chunks = [data] if cut is None else split_at(data, [cut])
    headers = {"Content-Type": "text/event-stream", "X-Baidu-Request-Id": "rid-1"}
    out, _ = await run("v1", mode, [MockResponse(200, headers, chunks)])
    assert isinstance(out.error, BadRequestError)
    assert out.error.code == 336003
    assert out.error.request_id == "as-err"
    assert out.error.status_code == 200
    assert out.end_reason is EndReason.UPSTREAM_ERROR


async def test_v1_token_error_labelled_as_event_stream_is_not_refreshed_for_a_fixed_token(
    mode: Mode,
) -> None:
    body = b'{"error_code":110,"error_msg":"Access token invalid or no longer valid"}'
    out, transport = await run("v1", mode, [MockResponse(body=[body])])
    assert isinstance(out.error, TokenExpiredError)
    assert out.error.code == 110
    assert len(transport.requests) == 1


async def test_v2_error_object_inside_an_event_stream(mode: Mode) -> None:
    event = {"error": {"code": "invalid_argument", "message": "bad", "type": "x"}, "id": "as-e"}
    body = b"data: " + json.dumps(event).encode() + b"\n\n"
    out, _ = await run("v2", mode, [MockResponse(body=[body])])
    assert isinstance(out.error, BadRequestError)
    assert out.error.code == "invalid_argument"
    assert out.error.request_id == "as-e"


async def test_gateway_html_error_page(api: Api, mode: Mode) -> None:
    page = b"<html><body><h1>502 Bad Gateway</h1></body></html>"
    headers = {"Content-Type": "text/html", "X-Baidu-Request-Id": "gw-1"}
    out, transport = await run(api, mode, [MockResponse(502, headers, [page])])
    assert isinstance(out.error, InternalServerError)
    assert out.error.status_code == 502
    assert "502" in str(out.error)
    assert transport.responses[0].released  # the error body was read to its end


async def test_empty_200_body_is_an_incomplete_stream(api: Api, mode: Mode) -> None:
    out, _ = await run(api, mode, [MockResponse(body=[])])
    assert isinstance(out.error, IncompleteStreamError)
    assert out.error.partial_text == ""
    assert out.end_reason is EndReason.INCOMPLETE
    assert out.events == []


async def test_empty_200_body_is_retried_before_anything_was_shown(api: Api, mode: Mode) -> None:
    policy = RetryPolicy(max_attempts=3, initial_delay=0.001, jitter=0)
    responses = [MockResponse(body=[]), MockResponse(body=[sse_body(api, PIECES)])]
    out, transport = await run(api, mode, responses, retry=policy)
    out.raise_error()
    assert out.text == TEXT
    assert len(transport.requests) == 2


async def test_clean_eof_without_the_terminal_event(api: Api, mode: Mode) -> None:
    policy = RetryPolicy(max_attempts=3, initial_delay=0.001, jitter=0)
    body = sse_body(api, PIECES, complete=False)
    out, transport = await run(api, mode, [MockResponse(body=[body])], retry=policy)
    assert isinstance(out.error, IncompleteStreamError)
    assert out.error.partial_text == TEXT
    assert out.end_reason is EndReason.INCOMPLETE
    assert len(transport.requests) == 1  # text was shown: never replayed


async def test_connection_broken_mid_body(api: Api, mode: Mode) -> None:
    body = sse_body(api, PIECES, complete=False)
    cut = body.index(b"data:", 10) + 9  # inside the second event
    script = MockResponse(body=[body[:cut], APIConnectionError("connection reset by peer")])
    out, _ = await run(api, mode, [script])
    assert isinstance(out.error, APIConnectionError)
    assert out.error.partial_text == PIECES[0]
    assert out.end_reason is EndReason.INCOMPLETE


async def test_a_server_slow_to_close_after_the_terminal_event(api: Api, mode: Mode) -> None:
    """The terminal event makes the answer whole: a body that then stays open longer than
    the idle limit does not turn it into a timeout, and is not waited for either."""
    clock = FakeClock()
    script = MockResponse(body=[sse_body(api, PIECES), Pause(3.0), b"\n"])
    out, transport = await run(
        api, mode, [script], clock=clock, timeout=Timeout(first_token=1, idle=0.3)
    )
    out.raise_error()
    assert out.end_reason is EndReason.COMPLETED
    assert out.text == TEXT
    assert out.result.usage is not None
    assert clock.sleeps == pytest.approx(
        [0.3]
    )  # one idle limit for the close, not the 3 s of silence
    assert transport.responses[0].aborted  # not read to its end: not reused


async def test_a_connection_reset_after_the_terminal_event(api: Api, mode: Mode) -> None:
    script = MockResponse(body=[sse_body(api, PIECES), APIConnectionError("reset by peer")])
    out, transport = await run(api, mode, [script])
    out.raise_error()
    assert out.end_reason is EndReason.COMPLETED
    assert out.text == TEXT
    assert len(transport.requests) == 1


async def test_garbage_instead_of_json(api: Api, mode: Mode) -> None:
    out, _ = await run(api, mode, [MockResponse(body=[b"data: {not json\n\n"])])
    assert isinstance(out.error, MalformedResponseError)


# --- the request ----------------------------------------------------------------------------


async def test_the_request_on_the_wire(api: Api, mode: Mode) -> None:
    out, transport = await run(api, mode, [MockResponse(body=[sse_body(api, PIECES)])], "问题")
    out.raise_error()
    (request,) = transport.requests
    body = json.loads(request.body)
    assert body["stream"] is True
    assert body["messages"] == [{"role": "user", "content": "问题"}]
    assert request.method == "POST"
    if api == "v1":
        assert "access_token=24.fixed-token-for-the-mock" in request.url
        assert "/wenxinworkshop/chat/" in request.url
        assert "24.fixed" not in repr(request)
    else:
        assert request.url == "http://mock.invalid/v2/chat/completions"
        assert request.headers["Authorization"] == "Bearer bce-v3/ALTAK-mock/secret"
        assert body["stream_options"] == {"include_usage": True}


# --- the mock itself ------------------------------------------------------------------------


def test_the_mock_keeps_the_read_timeout_contract() -> None:
    clock = FakeClock()
    response = MockSyncResponse(MockResponse(body=[b"a", Pause(0.2), b"b"]), clock.sleep)
    assert response.read(1) == b"a"
    with pytest.raises(TimeoutError):
        response.read(0.05)  # the pause is longer: it waits the timeout, then raises
    assert clock.sleeps == [0.05]
    with pytest.raises(TimeoutError):
        response.read(0)  # at once
    assert clock.sleeps == [0.05]
    assert response.read(1) == b"b"  # the rest of the pause, then the bytes
    assert clock.sleeps == [0.05, pytest.approx(0.15)]
    assert response.read(1) == b""
    response.close()
    assert response.released
    assert not response.aborted


async def test_the_async_mock_keeps_the_read_timeout_contract() -> None:
    response = AsyncMockResponse(MockResponse(body=[Pause(0.2), b"x", ValueError("boom")]))
    with pytest.raises(TimeoutError):
        await response.read(0.05)
    assert await response.read(None) == b"x"
    with pytest.raises(ValueError, match="boom"):
        await response.read(1)
    await response.aclose()
    assert response.aborted


async def test_the_mock_delays_open(mode: Mode) -> None:
    clock = FakeClock()
    h, transport = harness(
        "v2",
        mode,
        [
            MockResponse(head_delay=1.0),
            MockResponse(head_delay=0.05, body=[sse_body("v2", ["好"])]),
        ],
        clock=clock,
        timeout=Timeout(connect=1, first_token=0.2, idle=1),
        retry=RetryPolicy(max_attempts=2, initial_delay=0.001, jitter=0),
    )
    out = await h.stream("hi")
    await h.close()
    out.raise_error()
    assert out.text == "好"
    # one first-token timeout, the backoff, then the answer's own head delay
    assert clock.sleeps == pytest.approx([0.2, 0.001, 0.05])
    assert len(transport.requests) == 2


async def test_the_mock_refuses_to_invent_responses(mode: Mode) -> None:
    h, _ = harness("v2", mode, [])
    with pytest.raises(MockTransportExhausted):
        await h.stream("hi")
    await h.close()


async def test_a_responder_function(mode: Mode) -> None:
    def respond(request: Any) -> MockResponse:
        question = json.loads(request.body)["messages"][-1]["content"]
        return MockResponse(body=[sse_body("v2", [question[::-1]])])

    h, transport = harness("v2", mode, respond)
    outs = [await h.stream(q) for q in ("abc", "xyz")]
    await h.close()
    assert [o.text for o in outs] == ["cba", "zyx"]
    assert len(transport.requests) == 2


async def test_the_mock_pauses_between_pieces(mode: Mode) -> None:
    body = sse_body("v2", ["一", "二", "三"])
    cuts = [i for i in range(len(body)) if body.startswith(b"data:", i)]
    out, _ = await run("v2", mode, [MockResponse.split(body, cuts, pause=0.05)])
    out.raise_error()
    texts = [t for t, e in zip(out.times, out.events, strict=True) if type(e) is TextDelta]
    assert texts[1] - texts[0] >= 0.04
    assert texts[2] - texts[1] >= 0.04


async def test_a_raising_item_ends_the_stream(api: Api, mode: Mode) -> None:
    error = APIError("synthetic", api="v1", code=336100, status_code=200)
    script = MockResponse(body=[sse_body(api, PIECES[:1], complete=False), error])
    out, _ = await run(api, mode, [script])
    assert isinstance(out.error, APIError)
    assert out.error.partial_text == PIECES[0]
