"""Per-stream measurement: lateness (stamp and schedule), gaps, TTFT, loss and end status."""

from __future__ import annotations

import json

import pytest

from wenxin_stream.bench._client import StreamAbort
from wenxin_stream.bench._http import ResponseHead
from wenxin_stream.bench._recorder import (
    NativeRecorder,
    OpenAIRecorder,
    Pacing,
    StreamRecorder,
    V1Recorder,
)
from wenxin_stream.bench._stats import Collector

SSE = ResponseHead(200, "OK", "HTTP/1.1", (("content-type", "text/event-stream"),))
T0 = 1000.0


def oa_chunk(text: str, stamp: float | None = None, **extra: object) -> bytes:
    obj: dict[str, object] = {
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}],
        **extra,
    }
    data = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    if stamp is not None:
        data = data[:-1] + f',"wenxin_emitted_at":{stamp:.6f}}}'
    return f"data: {data}\n\n".encode()


def v1_chunk(i: int, end: bool, stamp: float | None = None, tokens: int = 0) -> bytes:
    obj = {
        "sentence_id": i,
        "is_end": end,
        "result": "" if end else f"第{i}句。",
        "usage": {"prompt_tokens": 1, "completion_tokens": tokens, "total_tokens": 1 + tokens},
    }
    data = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    if stamp is not None:
        data = data[:-1] + f',"wenxin_emitted_at":{stamp:.6f}}}'
    return f"data: {data}\n\n".encode()


def drive(
    rec: StreamRecorder,
    timed: list[tuple[float, bytes]],
    *,
    end: float | None = None,
    head: ResponseHead = SSE,
) -> None:
    rec.on_head(head, T0)
    for now, data in timed:
        rec.on_body([data], now)
    if end is not None:
        rec.on_end(end)


def test_openai_stamped_lateness_gaps_ttft_and_usage() -> None:
    col = Collector()
    rec = OpenAIRecorder(col, T0, Pacing("x", 0.2, 0.05, 3), measured=True)
    drive(
        rec,
        [
            (
                T0 + 0.201,
                oa_chunk("", None).replace(b'"content":""', b'"role":"assistant","content":""'),
            ),
            (T0 + 0.203, oa_chunk("你好", T0 + 0.200)),
            (T0 + 0.255, oa_chunk("世界", T0 + 0.250)),
            (T0 + 0.301, oa_chunk("！", T0 + 0.300, usage={"completion_tokens": 7})),
            (T0 + 0.302, b"data: [DONE]\n\n"),
        ],
        end=T0 + 0.303,
    )
    assert rec.done
    assert not rec.failed
    assert col.completed == 1
    assert col.chunks == 3
    assert col.late_by_stamp == 3
    assert [round(x * 1000, 3) for x in col.lateness] == [3.0, 5.0, 1.0]
    assert [round(x * 1000, 3) for x in col.behind] == [3.0, 5.0, 1.0]  # schedule kept
    assert [round(x * 1000, 3) for x in col.gaps] == [52.0, 46.0]
    assert [round(x, 3) for x in col.ttft] == [0.203]
    assert [round(x, 3) for x in col.total] == [0.302]
    assert col.tokens == 7
    assert col.all_tokens == 7
    assert col.chunks_lost == 0


def test_openai_schedule_lateness_when_the_relay_drops_the_stamp() -> None:
    col = Collector()
    rec = OpenAIRecorder(col, T0, Pacing("x", 0.5, 0.4, 4), measured=True)
    drive(
        rec,
        [
            (T0 + 0.51, oa_chunk("a")),
            (T0 + 0.93, oa_chunk("b")),
            (T0 + 1.30, oa_chunk("c")),
            (T0 + 1.31, b"data: [DONE]\n\n"),
        ],
        end=T0 + 1.31,
    )
    assert col.late_by_schedule == 3
    assert col.late_by_stamp == 0
    assert [round(x * 1000, 3) for x in col.lateness] == [10.0, 30.0, 0.0]
    assert col.chunks_lost == 1  # 4 promised, 3 arrived, and the stream said it was complete
    assert col.streams_with_loss == 1
    assert col.completed == 1


def test_no_lateness_without_pacing_and_warm_streams_are_apart() -> None:
    col = Collector()
    rec = OpenAIRecorder(col, T0, None, measured=True)
    drive(rec, [(T0 + 0.1, oa_chunk("a")), (T0 + 0.2, b"data: [DONE]\n\n")], end=T0 + 0.2)
    assert len(col.lateness) == 0
    assert col.completed == 1
    warm = OpenAIRecorder(col, T0, Pacing("x", 0.0, 0.1, 1), measured=False)
    drive(
        warm, [(T0 + 0.1, oa_chunk("a", T0 + 0.05)), (T0 + 0.2, b"data: [DONE]\n\n")], end=T0 + 0.2
    )
    assert col.completed == 1
    assert col.all_completed == 2
    assert [round(x, 3) for x in col.warm_lateness] == [0.05]


def test_events_split_across_reads_and_crlf() -> None:
    col = Collector()
    rec = OpenAIRecorder(col, T0, Pacing("x", 0.0, 0.0), measured=True)
    wire = (oa_chunk("甲", T0) + oa_chunk("乙", T0) + b"data: [DONE]\n\n").replace(b"\n", b"\r\n")
    rec.on_head(SSE, T0)
    for i in range(len(wire)):
        rec.on_body([wire[i : i + 1]], T0 + 0.001)
    rec.on_end(T0 + 0.002)
    assert col.chunks == 2
    assert col.completed == 1


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b'data: {"error":{"code":"x","message":"m"}}\n\ndata: [DONE]\n\n', "stream_error"),
        (b"", "incomplete"),
    ],
)
def test_openai_failures(body: bytes, reason: str) -> None:
    col = Collector()
    rec = OpenAIRecorder(col, T0, None, measured=True)
    drive(rec, [(T0 + 0.1, oa_chunk("a")), (T0 + 0.2, body)], end=T0 + 0.3)
    assert rec.failed
    assert col.failures == {reason: 1}


@pytest.mark.parametrize(
    "body",
    [
        b"data: {malformed json from the wenxin emulator\n\n",
        b"data: [1]\n\n",
        b'data: {"a":1,"wenxin_emitted_at":"x"}\n\n',
    ],
)
def test_openai_protocol_errors(body: bytes) -> None:
    rec = OpenAIRecorder(Collector(), T0, None, measured=True)
    rec.on_head(SSE, T0)
    if body.startswith(b'data: {"a"'):
        rec.on_body([oa_chunk("first")], T0)
        body = oa_chunk("x")[:-3] + b',"wenxin_emitted_at":"x"}\n\n'
    with pytest.raises(StreamAbort) as exc:
        rec.on_body([body], T0)
    assert exc.value.reason == "protocol_error"


def test_content_detection_is_cheap_but_right() -> None:
    col = Collector()
    rec = OpenAIRecorder(col, T0, None, measured=True)
    rec.on_head(SSE, T0)
    rec.on_body([b'data: {"choices":[{"delta":{"role":"assistant"}}]}\n\n'], T0)
    rec.on_body([b'data: {"choices":[{"delta":{"content":null}}]}\n\n'], T0)
    rec.on_body([b'data: {"choices":[{"delta":{"reasoning_content":"think"}}]}\n\n'], T0)
    rec.on_body([b'data: {"choices":[{"delta":{"content": "spaced"}}]}\n\n'], T0)
    rec.on_body([b'data: {"choices":[{"delta":{"content":"say \\"content\\":\\"x\\""}}]}\n\n'], T0)
    rec.on_body([b'data: {"choices":[],"usage": {"completion_tokens":3}}\n\n'], T0)
    rec.on_body([b"data: [DONE]\n\ndata: ignored\n\n"], T0)
    rec.on_end(T0)
    assert col.chunks == 2
    assert col.tokens == 3


def test_v1_stream_and_errors() -> None:
    col = Collector()
    rec = V1Recorder(col, T0, Pacing("x", 0.1, 0.1, 2), measured=True)
    drive(
        rec,
        [
            (T0 + 0.11, v1_chunk(0, False, T0 + 0.1)),
            (T0 + 0.21, v1_chunk(1, False, T0 + 0.2)),
            (T0 + 0.22, v1_chunk(2, True, T0 + 0.21, tokens=9)),
        ],
        end=T0 + 0.22,
    )
    assert col.completed == 1
    assert col.chunks == 2
    assert col.tokens == 9
    assert [round(x * 1000, 3) for x in col.lateness] == [10.0, 10.0]

    mid = V1Recorder(col, T0, None, measured=True)
    drive(
        mid,
        [
            (T0, v1_chunk(0, False)),
            (T0, b'data: {"error_code":336100,"error_msg":"busy","id":"as-1"}\n\n'),
        ],
        end=T0 + 1,
    )
    assert col.failures == {"api_error:336100": 1}

    with pytest.raises(StreamAbort, match="is_end"):
        drive(V1Recorder(col, T0, None, measured=True), [(T0, b'data: {"result":"x"}\n\n')])


def test_error_bodies() -> None:
    col = Collector()
    json_head = ResponseHead(200, "OK", "HTTP/1.1", (("content-type", "application/json"),))
    drive(
        OpenAIRecorder(col, T0, None, True),
        [(T0, b'{"error_code":110,"error_msg":"bad token"}')],
        end=T0,
        head=json_head,
    )
    drive(
        OpenAIRecorder(col, T0, None, True),
        [(T0, b'{"error":{"code":"invalid_model","message":"no"}}')],
        end=T0,
        head=json_head,
    )
    drive(OpenAIRecorder(col, T0, None, True), [(T0, b"<html>")], end=T0, head=json_head)
    status = ResponseHead(429, "Too Many", "HTTP/1.1", ())
    drive(OpenAIRecorder(col, T0, None, True), [(T0, b"x" * 100_000)], end=T0, head=status)
    assert col.failures == {
        "api_error:110": 1,
        "api_error:invalid_model": 1,
        "protocol_error": 1,
        "http_429": 1,
    }
    assert col.error_samples["api_error:110"] == ["bad token"]
    assert len(col.error_samples["http_429"][0]) == 300


def test_connection_errors_after_and_before_the_end() -> None:
    col = Collector()
    ok = OpenAIRecorder(col, T0, None, True)
    drive(ok, [(T0, oa_chunk("a")), (T0, b"data: [DONE]\n\n")])
    ok.on_error("incomplete", "connection lost", T0)  # the answer was already complete
    ok.on_error("incomplete", "again", T0)  # ignored: already settled
    cut = OpenAIRecorder(col, T0, None, True)
    drive(cut, [(T0, oa_chunk("a"))])
    cut.on_error("cut_at_end", "drain over", T0)
    timed_out = OpenAIRecorder(col, T0, None, True)
    drive(timed_out, [])
    timed_out.on_error("timeout", "idle", T0)
    assert col.completed == 1
    assert col.cut_at_end == 1
    assert col.failures == {"timeout": 1}


def test_native_stream() -> None:
    col = Collector()
    rec = NativeRecorder(col, T0, Pacing("x", 0.1, 0.1, 2), measured=True)
    end = {"end_reason": "completed", "usage": {"completion_tokens": 5}}
    drive(
        rec,
        [
            (T0 + 0.05, b'retry: 1000\n\nid: s:0\nevent: start\ndata: {"stream_id":"s"}\n\n'),
            (T0 + 0.12, b'id: s:1\nevent: delta\ndata: {"text":"a"}\n\n: ping\n\n'),
            (T0 + 0.22, b'id: s:2\nevent: delta\ndata: {"text":"b"}\n\n'),
            (T0 + 0.23, b"id: s:3\nevent: end\ndata: " + json.dumps(end).encode() + b"\n\n"),
        ],
        end=T0 + 0.23,
    )
    assert col.completed == 1
    assert col.late_by_schedule == 2
    assert [round(x * 1000, 3) for x in col.lateness] == [20.0, 20.0]
    assert col.tokens == 5

    bad = NativeRecorder(col, T0, None, measured=True)
    end_err = {"end_reason": "upstream_error", "error": {"code": "x", "message": "y"}}
    drive(bad, [(T0, b"event: end\ndata: " + json.dumps(end_err).encode() + b"\n\n")], end=T0)
    assert col.failures == {"end:upstream_error": 1}
    with pytest.raises(StreamAbort):
        drive(NativeRecorder(col, T0, None, True), [(T0, b"event: end\ndata: [1]\n\n")])


def test_sse_limit_is_a_protocol_error() -> None:
    rec = OpenAIRecorder(Collector(), T0, None, True)
    rec.on_head(SSE, T0)
    with pytest.raises(StreamAbort) as exc:
        rec.on_body([b"data: " + b"x" * (2 << 20)], T0)
    assert exc.value.reason == "protocol_error"


def test_pacing_schedule_flag() -> None:
    assert Pacing("x", 0.1, 0.2).has_schedule
    assert not Pacing("x", ttft=0.1).has_schedule


def test_spaced_json_and_invalid_error_json() -> None:
    col = Collector()
    rec = V1Recorder(col, T0, None, True)
    drive(
        rec,
        [
            (T0, b'data: {"is_end": false, "result": "a"}\n\n'),
            (T0, b'data: {"is_end": true, "usage": {"completion_tokens": 2}}\n\n'),
        ],
        end=T0,
    )
    assert col.completed == 1
    assert col.tokens == 2
    bad = OpenAIRecorder(col, T0, None, True)
    bad.on_head(SSE, T0)
    bad.on_body([oa_chunk("a")], T0)
    with pytest.raises(StreamAbort, match="invalid JSON"):
        bad.on_body([b'data: {"error": {"code": x}}\n\n'], T0)
