"""The paced SSE pump shared by both chat routes, with every transport-level fault applied.

Theory of operation
===================

A route decides *what* to say and describes it as a :class:`StreamPlan`: the number of content
chunks, a function rendering content chunk ``i`` as compact JSON bytes, a function rendering
the v1 end chunk (if any) given the number of content chunks sent, whether a
``data: [DONE]`` follows (v2), the error JSON for ``error_after``, and the pacing.
:func:`pump` decides *when* and *how* the bytes go out:

- timing is scheduled against absolute deadlines (``start + ttft + i × interval``), with one
  ``asyncio.sleep`` per chunk, so a late chunk does not delay the ones after it and lateness
  never accumulates; a ``stall`` shifts every later deadline; the first ``think_count`` chunks
  (a reasoning model's thinking, a search-status signal) are ``think_interval`` apart instead;
- each chunk's JSON is produced once and framed by :func:`wenxin_stream._sse.encode_event_bytes`
  (compact JSON holds no line break, so that is one ``data:`` line and two concatenations), then
  sent with one ``send`` (no helper coroutine in between unless ``split_utf8`` applies);
- fault positions count *content* chunks: ``cut_after=N`` sends the first N (at most all) and
  then returns without completing the response, so the terminal event (v1's ``is_end`` chunk,
  v2's ``[DONE]``) never arrives and the chunked body is left unterminated; ``error_after=N``
  sends a ``data:`` line carrying the error JSON after N chunks and ends the response (with
  ``done_after_error``, the OpenAI-compatible servers' habit, a ``data: [DONE]`` follows it);
  ``malformed_after=N`` inserts one invalid ``data:`` line after N chunks and carries on;
  ``stall_after=N`` pauses before chunk N+1 (or before the terminal event);
- ``big_line`` pads the first chunk, ``stamp`` splices the emission time into each JSON
  chunk just before it is written, ``split_utf8`` writes every multi-byte character in two
  separate ``send()`` calls :data:`SPLIT_PAUSE` apart (each becomes its own TCP segment under
  uvicorn, whose sockets have ``TCP_NODELAY``).

The pump holds O(1) state per stream (counters and a deadline) and never logs per chunk. It
runs in a :func:`~wenxin_stream._aio.race` against
:func:`~wenxin_stream._asgi.wait_for_disconnect`, which cancels it when the client goes away.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from .._aio import sleep_until
from .._asgi import Headers, Send
from .._sse import DONE_EVENT, encode_event_bytes
from ._faults import FaultSpec

SPLIT_PAUSE = 0.005
"""Pause between the two halves of a split UTF-8 character (fault ``split_utf8``)."""

MALFORMED_LINE = encode_event_bytes(b"{malformed json from the wenxin emulator")
"""The invalid ``data:`` line of fault ``malformed_after``."""

ENDLESS_CAP = 1_000_000
"""Most content chunks an ``endless=1`` stream sends before ending normally."""

_PAD_KEY = b',"wenxin_padding":"'


@dataclass(slots=True)
class StreamPlan:
    """What a stream says; see the module docstring for how :func:`pump` sends it."""

    count: int
    render: Callable[[int], bytes]
    end_json: Callable[[int], bytes] | None
    done_marker: bool
    error_json: bytes
    ttft: float
    interval: float
    fault: FaultSpec
    think_count: int = 0
    think_interval: float = 0.0
    done_after_error: bool = False


def stamp(json_obj: bytes) -> bytes:
    """Splice ``"wenxin_emitted_at": <now>`` into a JSON object's bytes (fault ``stamp``)."""
    return b'%s,"wenxin_emitted_at":%.6f}' % (json_obj[:-1], time.time())


def pad(json_obj: bytes, size: int) -> bytes:
    """Pad a JSON object with ``"wenxin_padding": "xxx…"`` to at least ``size`` bytes."""
    if len(json_obj) >= size:
        return json_obj
    missing = max(0, size - len(json_obj) - len(_PAD_KEY) - 1)
    return json_obj[:-1] + _PAD_KEY + b"x" * missing + b'"}'


def utf8_split_points(data: bytes) -> list[int]:
    """Offsets that cut every multi-byte UTF-8 character of ``data`` after its lead byte."""
    return [index + 1 for index, byte in enumerate(data) if byte >= 0xC0]


async def write(send: Send, data: bytes, *, split_utf8: bool, more: bool = True) -> None:
    """Send ``data`` as body bytes; with ``split_utf8`` every multi-byte character is cut in
    two separate sends, :data:`SPLIT_PAUSE` seconds apart."""
    if split_utf8:
        start = 0
        for point in utf8_split_points(data):
            await send({"type": "http.response.body", "body": data[start:point], "more_body": True})
            await asyncio.sleep(SPLIT_PAUSE)
            start = point
        data = data[start:]
    await send({"type": "http.response.body", "body": data, "more_body": more})


def sse_headers(extra: Headers, *, charset: bool) -> Headers:
    """The response headers of an event stream."""
    content_type = b"text/event-stream;charset=utf-8" if charset else b"text/event-stream"
    return [(b"content-type", content_type), (b"cache-control", b"no-cache"), *extra]


async def pump(send: Send, plan: StreamPlan) -> None:
    """Send the body of an event stream (the response has already started)."""
    fault = plan.fault
    split = fault.split_utf8
    loop = asyncio.get_running_loop()
    deadline = loop.time() + plan.ttft
    count = plan.count
    cut_at = -1 if fault.cut_after is None else min(fault.cut_after, count)
    error_at = -1 if fault.error is None or fault.error_after is None else fault.error_after
    error_at = min(error_at, count) if error_at >= 0 else -1
    malformed_at = -1 if fault.malformed_after is None else min(fault.malformed_after, count)
    stall_at = -1
    if fault.stall is not None:
        stall_at = min(fault.stall_after or 0, count)
    interval = plan.interval
    think_count = plan.think_count
    think_interval = plan.think_interval
    for index in range(count + 1):
        if index == stall_at:
            assert fault.stall is not None
            deadline += fault.stall
        if index == cut_at:
            await sleep_until(loop, deadline)
            return  # leave the response incomplete: the connection is aborted
        if index == error_at:
            await sleep_until(loop, deadline)
            frame = encode_event_bytes(plan.error_json)
            if plan.done_after_error:  # vLLM and FastDeploy end a failed stream with [DONE]
                frame += DONE_EVENT
            await write(send, frame, split_utf8=split, more=False)
            return
        if index == malformed_at:
            await write(send, MALFORMED_LINE, split_utf8=False)
        await sleep_until(loop, deadline)
        if index == count:
            break
        chunk = plan.render(index)
        if index == 0 and fault.big_line is not None:
            chunk = pad(chunk, fault.big_line)
        if fault.stamp:
            chunk = stamp(chunk)
        frame = encode_event_bytes(chunk)
        if split:
            await write(send, frame, split_utf8=True)
        else:  # the common case: one send, no helper coroutine per chunk
            await send({"type": "http.response.body", "body": frame, "more_body": True})
        deadline += think_interval if index < think_count else interval
    tail = b""
    if plan.end_json is not None:
        end = plan.end_json(count)
        if fault.stamp:
            end = stamp(end)
        tail = encode_event_bytes(end)
    if plan.done_marker:
        tail += DONE_EVENT
    await write(send, tail, split_utf8=split, more=False)


async def deliver(send: Send, plan: StreamPlan, status: int, headers: Headers, body: bytes) -> None:
    """Send a non-stream answer after the time generating it would take (``ttft``, one
    ``think_interval`` per thinking chunk and one ``interval`` per further chunk), with the
    faults that apply to a plain body: ``stall``
    (added to the wait), ``big_line``, ``stamp``, ``malformed_after`` (the body is cut in half:
    invalid JSON, consistent ``Content-Length``), ``cut_after`` (the headers promise the whole
    body, half of it is sent, the connection is aborted) and ``split_utf8``."""
    fault = plan.fault
    thinking = plan.think_interval * plan.think_count
    wait = plan.ttft + thinking + plan.interval * max(0, plan.count - plan.think_count - 1)
    wait += fault.stall or 0.0
    await asyncio.sleep(wait)
    if fault.big_line is not None:
        body = pad(body, fault.big_line)
    if fault.stamp:
        body = stamp(body)
    if fault.malformed_after is not None:
        body = body[: len(body) // 2]
    all_headers: Headers = [
        (b"content-type", b"application/json"),
        (b"content-length", b"%d" % len(body)),
        *headers,
    ]
    await send({"type": "http.response.start", "status": status, "headers": all_headers})
    if fault.cut_after is not None:
        await write(send, body[: len(body) // 2], split_utf8=fault.split_utf8)
        return
    await write(send, body, split_utf8=fault.split_utf8, more=False)
