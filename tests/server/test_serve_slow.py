"""Slow and stalled consumers: coalesced deltas, bounded memory, dropped stalls."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator

import pytest
from server_helpers import Running, new_conversation, paced, raw_request, sse_events, wait_for

from servers import emulator
from wenxin_stream.emulator import ServerHandle, parse_scenarios
from wenxin_stream.server._relay import MAX_DELTA_CHARS

SMALL = 4096
FLOOD = "endless=1;interval=0;chunks=10"
"""Chunks of about 6,000 characters, as fast as possible: fills any socket buffer at once."""
STEADY = "endless=1;interval=0.001;chunks=100"
"""About 600,000 characters a second: the socket buffers fill within a few seconds."""


@pytest.fixture(scope="module")
def big_emu() -> Iterator[ServerHandle]:
    """An emulator whose answer to 洪水 is 60,000 characters long."""
    text = "".join(f"第{i}句话，内容很多。" for i in range(6000))
    with emulator(scenarios=parse_scenarios([{"match": "洪水", "answer": text}])) as handle:
        yield handle


def _chunked_body(raw: bytes) -> bytes:
    """The payload of a chunked HTTP/1.1 response body (possibly cut short)."""
    _head, _, rest = raw.partition(b"\r\n\r\n")
    out = bytearray()
    while rest:
        size_line, sep, rest = rest.partition(b"\r\n")
        if not sep or not size_line:
            break
        size = int(size_line, 16)
        if size == 0:
            break
        out += rest[:size]
        rest = rest[size + 2 :]
    return bytes(out)


def test_a_lagging_reader_gets_fewer_larger_deltas(
    make_server: Callable[..., Running], big_emu: ServerHandle
) -> None:
    srv = make_server(upstream=big_emu.base_url, stall_timeout=30.0, max_answer_chars=3_000_000)
    with srv.client() as c:
        cid = new_conversation(c)
    body = json.dumps({"content": paced("洪水", FLOOD)}).encode()
    sock = raw_request(srv.url, "POST", f"/api/conversations/{cid}/messages", body, rcvbuf=SMALL)
    with sock:
        sock.settimeout(10)
        raw = bytearray(sock.recv(SMALL))
        gen = wait_for(lambda: next(iter(srv.app.relay.running), None))
        # stop reading until the server's writes block and text piles up in the log, coalesced
        # (unclaimed entries alone are not enough: under CPU contention a reader that is woken
        # but not yet scheduled also leaves entries unclaimed, uncoalesced by design)
        wait_for(lambda: any(e.size > 10_000 for e in gen.entries[gen.claimed + 1 :]), timeout=10)
        while not raw.endswith(b"\r\n0\r\n\r\n"):  # the end of the chunked body
            data = sock.recv(65536)
            if not data:
                break
            raw += data
    events = sse_events(_chunked_body(bytes(raw)))
    deltas = [e for e in events if e.event == "delta"]
    assert events[-1].event == "end"
    assert json.loads(events[-1].data)["end_reason"] == "length"
    assert [int(e.id.rsplit(":", 1)[1]) for e in events] == list(range(len(events)))
    longest = max(len(json.loads(e.data)["text"]) for e in deltas)
    assert longest > 10_000  # upstream chunks are about 6,000 characters: coalesced
    assert longest < MAX_DELTA_CHARS + 7_000  # …but bounded
    stored = wait_for(lambda: c_get(srv, cid))
    assert stored["content"] == "".join(json.loads(e.data)["text"] for e in deltas)


def c_get(srv: Running, cid: str) -> dict[str, object] | None:
    with srv.client() as c:
        answer: dict[str, object] = c.get(f"/api/conversations/{cid}").json()["messages"][-1]
    return None if answer["status"] == "streaming" else answer


def test_a_stalled_reader_is_dropped_and_memory_stays_bounded(
    make_server: Callable[..., Running], big_emu: ServerHandle
) -> None:
    limit = 200_000_000
    srv = make_server(
        upstream=big_emu.base_url, stall_timeout=0.5, resume_grace=0.0, max_answer_chars=limit
    )
    with srv.client() as c:
        cid = new_conversation(c)
    body = json.dumps({"content": paced("洪水", STEADY)}).encode()
    sock = raw_request(srv.url, "POST", f"/api/conversations/{cid}/messages", body, rcvbuf=SMALL)
    with sock:
        sock.settimeout(10)
        sock.recv(SMALL)  # and never again
        t0 = time.monotonic()
        gen = wait_for(lambda: next(iter(srv.app.relay.running), None))
        wait_for(lambda: gen.end_reason, timeout=10)  # the stall was noticed: upstream stopped
        dropped_after = time.monotonic() - t0
        stored = wait_for(lambda: c_get(srv, cid), timeout=30)  # (megabytes to store)
    assert stored["status"] == "partial"
    assert stored["end_reason"] == "client_disconnected"
    delivered, generated = stored["delivered_chars"], stored["generated_chars"]
    assert isinstance(delivered, int)
    assert isinstance(generated, int)
    assert delivered < generated < limit  # stopped by the stall, not by the answer limit
    assert dropped_after < 3
    assert not srv.app.relay.running
    assert not srv.app.relay.streams
