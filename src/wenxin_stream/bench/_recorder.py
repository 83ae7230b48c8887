"""Per-stream measurement: a sink that reads one streamed answer and times every chunk.

Theory of operation
===================

A :class:`StreamRecorder` is the :class:`~._client.Sink` of one streaming request. It is
created just before the request is written (``t_send``) and, from ``on_head`` on, decides
what the response is:

- a non-2xx status: the body is kept (bounded) and the stream fails as ``http_<status>``;
- a 2xx that is not ``text/event-stream``: the body is kept and read at the end (a v1 error
  arrives like this, as ``{"error_code": …}`` with status 200 → ``api_error:<code>``);
- an event stream: bytes go through :class:`~wenxin_stream._sse.SSEDecoder` and each event to
  the wire format's :meth:`StreamRecorder._event`.

The subclasses know their wire formats and parse as little as possible. A content chunk is
recognised by a substring test (``"content":"x`` for OpenAI chunks, ``"is_end":false`` for v1,
the ``delta`` event name for the native API), its timestamp by ``str.find`` of
``"wenxin_emitted_at":`` and a float parse of the number after it. Full JSON parsing happens
only for the first event (to validate it), for chunks carrying ``usage``, for errors and for
terminal chunks that carry an outcome (v1 ``is_end``, native ``end``).

Per content chunk :meth:`StreamRecorder._content` records the inter-chunk gap and the lateness:
arrival minus the chunk's ``wenxin_emitted_at`` when stamped (the emulator's own clock — same
host, same clock), otherwise arrival minus the schedule the pacing promised,
``t_send + ttft + i × interval`` (when pacing was requested). The delay against that schedule is
also recorded for every chunk, stamped or not ("behind schedule"): a stamp measures only what
happens after the emulator wrote the chunk, so an emulator too busy to keep its own schedule
shows up there and not in the stamped lateness. The per-stream values (TTFT,
total latency, chunks lost) are added to the :class:`~._stats.Collector` when the stream ends,
together with the end status: ``completed`` (the terminal event arrived) or a failure reason —
``http_<status>``, ``api_error:<code>``, ``stream_error`` (an error event mid-stream),
``incomplete`` (the body or connection ended without the terminal event), ``timeout``,
``protocol_error``, or ``end:<end_reason>`` (a native stream that ended otherwise than
``completed``/``length``). Streams the runner cuts at the end of a run (``cut_at_end``) are
counted apart and are not failures.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from .._exceptions import SSELimitError
from .._sse import ServerSentEvent, SSEDecoder
from ._client import StreamAbort
from ._http import ResponseHead
from ._stats import Collector

__all__ = [
    "NativeRecorder",
    "OpenAIRecorder",
    "Pacing",
    "StreamRecorder",
    "V1Recorder",
]

STAMP_KEY = '"wenxin_emitted_at":'
_STAMP_LEN = len(STAMP_KEY)
_NUMBER = re.compile(r"\s*(-?[0-9]+(?:\.[0-9]*)?(?:[eE][-+]?[0-9]+)?)")
_MAX_ERROR_BODY = 65536


@dataclass(frozen=True, slots=True)
class Pacing:
    """The pacing requested from the emulator: the SPEC sent, and what it promises."""

    spec: str
    ttft: float | None = None
    interval: float | None = None
    chunks: int | None = None

    @property
    def has_schedule(self) -> bool:
        """Whether a chunk's due time can be computed (both ``ttft`` and ``interval`` known)."""
        return self.ttft is not None and self.interval is not None

    @property
    def answer_seconds(self) -> float | None:
        """How long an answer lasts at this pacing, from the request to its end event: the
        TTFT and one interval per chunk (the emulator sends the end event an interval after
        the last chunk); ``None`` when the SPEC leaves any of the three to the emulator.
        A load's starts spread over this long come evenly (``bench/compare``)."""
        if self.ttft is None or self.interval is None or self.chunks is None:
            return None
        return self.ttft + self.chunks * self.interval


def _text_after(data: str, key: str) -> bool:
    """Whether ``key`` (e.g. ``'"content":'``) is followed by a non-empty JSON string."""
    at = data.find(key)
    if at < 0:
        return False
    at += len(key)
    if data[at : at + 1] == " ":
        at += 1
    return data[at : at + 1] == '"' and data[at + 1 : at + 2] != '"'


def _true_after(data: str, key: str) -> bool | None:
    """``True``/``False`` for a JSON boolean after ``key``; ``None`` when the key is absent."""
    at = data.find(key)
    if at < 0:
        return None
    at += len(key)
    if data[at : at + 1] == " ":
        at += 1
    return data[at : at + 1] == "t"


def _loads(data: str) -> Any:
    try:
        return json.loads(data)
    except ValueError:
        raise StreamAbort(
            "protocol_error", f"invalid JSON in a data event: {data[:120]!r}"
        ) from None


def _completion_tokens(obj: Any) -> int | None:
    usage = obj.get("usage") if isinstance(obj, dict) else None
    if isinstance(usage, dict):
        tokens = usage.get("completion_tokens")
        if isinstance(tokens, int):
            return tokens
    return None


class StreamRecorder:
    """Measures one streamed answer; subclasses read one wire format (see module docstring)."""

    __slots__ = (
        "_behind",
        "_body",
        "_decoder",
        "_due0",
        "_gap",
        "_interval",
        "_late",
        "col",
        "done",
        "ended_ok",
        "error",
        "expected",
        "failed",
        "first_seen",
        "measured",
        "n",
        "n_scheduled",
        "n_stamped",
        "status",
        "t_first",
        "t_last",
        "t_send",
        "t_terminal",
        "tokens",
    )

    def __init__(
        self, col: Collector, t_send: float, pacing: Pacing | None, measured: bool
    ) -> None:
        self.col = col
        self.t_send = t_send
        self.measured = measured
        self._late = (col.lateness if measured else col.warm_lateness).append
        self._behind = (col.behind if measured else col.warm_behind).append
        self._gap = (col.gaps if measured else col.warm_gaps).append
        if pacing is not None and pacing.ttft is not None and pacing.interval is not None:
            self._due0: float | None = t_send + pacing.ttft
            self._interval = pacing.interval
        else:
            self._due0 = None
            self._interval = 0.0
        self.expected = pacing.chunks if pacing is not None else None
        self._decoder: SSEDecoder | None = None
        self._body: bytearray | None = None
        self.status = 0
        self.n = 0
        self.n_stamped = 0
        self.n_scheduled = 0
        self.t_first = 0.0
        self.t_last = 0.0
        self.t_terminal = 0.0
        self.tokens: int | None = None
        self.first_seen = False
        self.ended_ok = False  # the terminal event arrived
        self.error: tuple[str, str] | None = None  # an error event arrived mid-stream
        self.done = False
        self.failed = False

    # -- the Sink interface ------------------------------------------------------------------

    def on_head(self, head: ResponseHead, now: float) -> None:
        """Choose how to read the body from the status and content type."""
        self.status = head.status
        if head.status == 200 and head.get("content-type").startswith("text/event-stream"):
            self._decoder = SSEDecoder()
        else:
            self._body = bytearray()

    def on_body(self, pieces: list[bytes], now: float) -> None:
        """Decode events and hand each to the wire format."""
        decoder = self._decoder
        if decoder is None:
            body = self._body
            assert body is not None
            for piece in pieces:
                if len(body) < _MAX_ERROR_BODY:
                    body += piece[: _MAX_ERROR_BODY - len(body)]
            return
        event = self._event
        try:
            for piece in pieces:
                for ev in decoder.feed(piece):
                    event(ev, now)
        except SSELimitError as exc:
            raise StreamAbort("protocol_error", str(exc)) from None

    def on_end(self, now: float) -> None:
        """The HTTP response ended cleanly: settle the outcome."""
        if self._body is not None:
            self._settle_body(now)
        elif self.error is not None:
            self._finish_failed(*self.error)
        elif self.ended_ok:
            self._finish_ok()
        else:
            self._finish_failed("incomplete", "the stream ended without its terminal event")

    def on_error(self, reason: str, detail: str, now: float) -> None:
        """The response failed (or was cut by the runner at the end of the run)."""
        if self.done:
            return
        if reason == "cut_at_end":
            self.done = True
            self.col.cut_at_end += 1
        elif self.ended_ok and self.error is None:
            self._finish_ok()  # the answer was complete; only the connection broke afterwards
        else:
            self._finish_failed(*(self.error or (reason, detail)))

    # -- per event ---------------------------------------------------------------------------

    def _event(self, ev: ServerSentEvent, now: float) -> None:
        raise NotImplementedError

    def _content(self, data: str, now: float) -> None:
        """One content chunk arrived: gap, lateness, counters."""
        n = self.n
        if n:
            self._gap(now - self.t_last)
        else:
            self.t_first = now
        self.t_last = now
        due = self._due0
        if due is not None:
            behind = now - (due + n * self._interval)
            self._behind(behind)
        at = data.find(STAMP_KEY)
        if at >= 0:
            match = _NUMBER.match(data, at + _STAMP_LEN)
            if match is None:
                raise StreamAbort("protocol_error", "wenxin_emitted_at is not a number")
            self._late(now - float(match.group(1)))
            self.n_stamped += 1
        elif due is not None:
            self._late(behind)
            self.n_scheduled += 1
        self.n = n + 1
        self.col.all_chunks += 1

    def _terminal(self, now: float) -> None:
        if not self.ended_ok:
            self.ended_ok = True
            self.t_terminal = now

    def _stream_error(self, obj: Any, data: str) -> None:
        if self.error is None:
            self.error = ("stream_error", data[:300])

    def _first(self, data: str) -> Any:
        """Validate the first event's data as a JSON object (the only unconditional parse)."""
        self.first_seen = True
        obj = _loads(data)
        if not isinstance(obj, dict):
            raise StreamAbort("protocol_error", f"first data event is not an object: {data[:80]!r}")
        return obj

    # -- the end -----------------------------------------------------------------------------

    def _settle_body(self, now: float) -> None:
        body = bytes(self._body or b"")
        text = body.decode("utf-8", "replace")
        if self.status != 200:
            self._finish_failed(f"http_{self.status}", text[:300])
            return
        try:
            obj = json.loads(text)
        except ValueError:
            obj = None
        if isinstance(obj, dict) and "error_code" in obj:
            self._finish_failed(f"api_error:{obj['error_code']}", str(obj.get("error_msg", "")))
        elif isinstance(obj, dict) and isinstance(obj.get("error"), dict):
            code = obj["error"].get("code", "")
            self._finish_failed(f"api_error:{code}", str(obj["error"].get("message", "")))
        else:
            self._finish_failed(
                "protocol_error", f"status 200 but not an event stream: {text[:120]}"
            )

    def _finish_ok(self) -> None:
        self.done = True
        col = self.col
        col.all_completed += 1
        if self.tokens is not None:
            col.all_tokens += self.tokens
        if not self.measured:
            return
        col.completed += 1
        col.chunks += self.n
        col.late_by_stamp += self.n_stamped
        col.late_by_schedule += self.n_scheduled
        if self.n:
            col.ttft.append(self.t_first - self.t_send)
        col.total.append((self.t_terminal or self.t_last) - self.t_send)
        if self.expected is not None and self.n < self.expected:
            col.chunks_lost += self.expected - self.n
            col.streams_with_loss += 1
        if self.tokens is not None:
            col.tokens += self.tokens
            col.streams_with_usage += 1

    def _finish_failed(self, reason: str, detail: str) -> None:
        self.done = True
        self.failed = True
        self.col.fail(reason, detail, measured=self.measured)


class OpenAIRecorder(StreamRecorder):
    """OpenAI ``chat.completion.chunk`` streams (``openai`` and ``ernie-v2`` targets)."""

    __slots__ = ()

    def _event(self, ev: ServerSentEvent, now: float) -> None:
        data = ev.data
        if self.ended_ok:
            return
        if data == "[DONE]":
            self._terminal(now)
            return
        if data[:1] != "{" or data[-1:] != "}":
            raise StreamAbort("protocol_error", f"data event is not a JSON object: {data[:80]!r}")
        obj = self._first(data) if not self.first_seen else None
        if '"error"' in data:
            obj = obj if obj is not None else _loads(data)
            if isinstance(obj, dict) and obj.get("error") is not None:
                self._stream_error(obj, data)
                return
        if _text_after(data, '"content":'):
            self._content(data, now)
        if '"usage":{' in data or '"usage": {' in data:
            tokens = _completion_tokens(obj if obj is not None else _loads(data))
            if tokens is not None:
                self.tokens = tokens


class V1Recorder(StreamRecorder):
    """ERNIE API v1 (``wenxinworkshop``) streams: sentence chunks, then ``is_end: true``."""

    __slots__ = ()

    def _event(self, ev: ServerSentEvent, now: float) -> None:
        data = ev.data
        if self.ended_ok:
            return
        if data[:1] != "{" or data[-1:] != "}":
            raise StreamAbort("protocol_error", f"data event is not a JSON object: {data[:80]!r}")
        if not self.first_seen:
            self._first(data)
        if '"error_code"' in data:
            obj = _loads(data)
            if isinstance(obj, dict) and "error_code" in obj:
                self.error = (f"api_error:{obj['error_code']}", str(obj.get("error_msg", "")))
                return
        is_end = _true_after(data, '"is_end":')
        if is_end is None:
            raise StreamAbort("protocol_error", f"v1 chunk without is_end: {data[:80]!r}")
        if not is_end:
            self._content(data, now)
            return
        self.tokens = _completion_tokens(_loads(data))
        self._terminal(now)


_NATIVE_OK = frozenset({"completed", "length"})


class NativeRecorder(StreamRecorder):
    """The server's native SSE API: ``start``, ``delta`` …, ``end``."""

    __slots__ = ()

    def _event(self, ev: ServerSentEvent, now: float) -> None:
        kind = ev.event
        if self.ended_ok:
            return
        if kind == "delta":
            self._content(ev.data, now)
        elif kind == "end":
            obj = _loads(ev.data)
            if not isinstance(obj, dict):
                raise StreamAbort("protocol_error", "end event is not an object")
            self.tokens = _completion_tokens(obj)
            reason = str(obj.get("end_reason", ""))
            if reason not in _NATIVE_OK:
                message = obj.get("error") or ""
                self.error = (f"end:{reason or 'unknown'}", json.dumps(message, ensure_ascii=False))
            self._terminal(now)
        elif kind == "start" and not self.first_seen:
            self._first(ev.data)
