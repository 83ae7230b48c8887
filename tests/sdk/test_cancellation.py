"""Leaving a stream early — ``break``, an exception, task cancellation, Ctrl-C — closes the
HTTP response at once: the server sees the disconnect (the emulator's count of open streams
drops) and the stream's end reason is CANCELLED.

The emulator here is a module-wide one that only these tests use, so its count of open
streams is exactly theirs.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator

import pytest
from sdk_helpers import Emu, Factory, build_client, credentials, fault, serve_emulator

from wenxin_stream import AsyncClient, Client, EndReason, TextDelta
from wenxin_stream._transport_mock import MockResponse, Pause
from wenxin_stream._transport_mock_async import AsyncMockTransport
from wenxin_stream._transport_mock_sync import MockTransport

ENDLESS = fault("无尽的回答", "endless=1;interval=0.005")
SLOW = fault("慢慢地回答", "endless=1;interval=0.4")


@pytest.fixture(scope="module")
def quiet_emu() -> Iterator[Emu]:
    with serve_emulator() as emu:
        yield emu


async def test_break_closes_the_stream(make: Factory, quiet_emu: Emu) -> None:
    h = make(url=quiet_emu.base_url)
    out = await h.stream(ENDLESS, stop_after=12)
    assert out.error is None
    assert out.consumer_error is None
    assert len(out.events) == 12
    assert out.end_reason is EndReason.CANCELLED
    assert out.result.finish_reason is None
    took = await quiet_emu.await_streams(0, within=1.0)
    assert took is not None, "the emulator still sends the abandoned stream"
    assert len(h.wire.chat()) == 1
    after = await h.stream(fault("之后", "chunks=3"))  # the pool hands out a sound connection
    after.raise_error()
    assert after.end_reason is EndReason.COMPLETED


async def test_exception_inside_the_block_closes_the_stream(make: Factory, quiet_emu: Emu) -> None:
    h = make(url=quiet_emu.base_url)
    out = await h.stream(ENDLESS, raise_after=5)
    assert out.consumer_error is not None  # it propagated out of the with block
    assert out.error is None
    assert out.end_reason is EndReason.CANCELLED
    assert await quiet_emu.await_streams(0, within=1.0) is not None


async def test_closing_before_iterating_sends_nothing(make: Factory, quiet_emu: Emu) -> None:
    h = make(url=quiet_emu.base_url)
    client = h.client
    if isinstance(client, AsyncClient):
        astream = client.chat.stream(messages=ENDLESS)
        async with astream:
            pass
        end = astream.end_reason
    else:
        stream = client.chat.stream(messages=ENDLESS)
        with stream:
            pass
        end = stream.end_reason
    assert end is EndReason.CANCELLED
    assert h.wire.chat() == []


async def test_leaving_stream_chat_early_closes_the_stream(make: Factory, quiet_emu: Emu) -> None:
    h = make(url=quiet_emu.base_url)
    client = h.client
    if isinstance(client, AsyncClient):
        pieces = []
        texts = client.stream_chat(ENDLESS)
        async for piece in texts:
            pieces.append(piece)
            if len(pieces) == 5:
                break
        del texts  # no explicit aclose(): the loop finalises the abandoned generator
    else:

        def run() -> list[str]:
            got = []
            for piece in client.stream_chat(ENDLESS):
                got.append(piece)
                if len(got) == 5:
                    break
            return got

        pieces = await h.call(run)
    assert len(pieces) == 5
    assert await quiet_emu.await_streams(0, within=1.0) is not None


@pytest.mark.parametrize("api", ["v1", "v2"])
async def test_task_cancellation_while_waiting_for_the_next_event(api: str, quiet_emu: Emu) -> None:
    h = build_client("async", **credentials("v1" if api == "v1" else "v2", quiet_emu.base_url))
    client = h.client
    assert isinstance(client, AsyncClient)
    stream = client.chat.stream(messages=SLOW)
    got: list[object] = []
    first_text = asyncio.Event()

    async def consume() -> None:
        async with stream:
            async for event in stream:
                got.append(event)
                if type(event) is TextDelta:
                    first_text.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(first_text.wait(), 5)
    await asyncio.sleep(0.05)  # now inside the read, waiting ~0.35 s for the next chunk
    assert quiet_emu.active_streams == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert stream.end_reason is EndReason.CANCELLED
    assert stream.text  # what was delivered stays readable
    assert await quiet_emu.await_streams(0, within=1.0) is not None
    await h.close()


async def test_task_cancellation_before_the_first_byte(quiet_emu: Emu) -> None:
    h = build_client("async", **credentials("v2", quiet_emu.base_url))
    client = h.client
    assert isinstance(client, AsyncClient)
    stream = client.chat.stream(messages=fault("等待", "ttft=5"))

    async def consume() -> None:
        async with stream:
            await stream.until_done()

    task = asyncio.create_task(consume())
    for _ in range(200):
        if quiet_emu.active_streams:
            break
        await asyncio.sleep(0.005)
    assert quiet_emu.active_streams == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert stream.end_reason is EndReason.CANCELLED
    assert stream.time_to_first_token is None
    assert await quiet_emu.await_streams(0, within=1.0) is not None
    await h.close()


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_leaving_early_drops_the_connection(mode: str) -> None:
    """Through the mock transport: an unfinished response is closed, not returned to the pool
    (it cannot be reused); a finished one is released."""
    chunk = b'data: {"choices":[{"index":0,"delta":{"content":"%d"}}]}\n\n'
    endless = [chunk % i for i in range(50)] + [Pause(10.0)]
    whole = [chunk % 1, b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n']
    whole.append(b"data: [DONE]\n\n")
    responses = [MockResponse(body=endless), MockResponse(body=whole)]
    transport = (MockTransport if mode == "sync" else AsyncMockTransport)(responses)
    h = build_client(
        "sync" if mode == "sync" else "async",
        bearer_token="bce-v3/ALTAK-mock/x",
        v2_base_url="http://mock.invalid",
        transport=transport,
    )
    early = await h.stream("hi", stop_after=3)
    full = await h.stream("hi")
    await h.close()
    assert early.end_reason is EndReason.CANCELLED
    assert full.end_reason is EndReason.COMPLETED
    first, second = transport.responses
    assert first.aborted
    assert not first.released
    assert second.released
    assert transport.closed


CTRL_C_SCRIPT = textwrap.dedent(
    """
    import signal, sys
    # Ctrl-C as a terminal's user has it: a shell starting pytest in the background (`&`)
    # gives its children SIGINT ignored, and Python then installs no KeyboardInterrupt
    signal.signal(signal.SIGINT, signal.default_int_handler)
    from wenxin_stream import Client

    client = Client(environ={}, bearer_token="bce-v3/ALTAK-ctrl-c/x", v2_base_url=sys.argv[1])
    stream = client.chat.stream(messages=sys.argv[2])
    try:
        with stream:
            for index, event in enumerate(stream):
                if index == 3:
                    print("streaming", flush=True)
    except KeyboardInterrupt:
        print("interrupted", stream.end_reason.value, flush=True)
        client.close()
        sys.exit(0)
    print("ended", stream.end_reason, flush=True)
    sys.exit(1)
    """
)


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to a child process is POSIX")
def test_ctrl_c_stops_a_sync_stream_promptly(quiet_emu: Emu) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", CTRL_C_SCRIPT, quiet_emu.base_url, ENDLESS],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # blocks until the stream runs (or the child dies)
        assert line.strip() == "streaming", proc.stderr.read() if proc.stderr else line
        assert quiet_emu.active_streams == 1
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=5)
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "interrupted cancelled" in out
    assert "Traceback" not in err
    assert took < 1.5
    assert quiet_emu.wait_for_streams(0, timeout=1.0) is not None


def test_break_in_the_calling_thread_closes_a_sync_stream() -> None:
    """The sync twin outside any event loop or worker thread: a plain ``break``."""
    with serve_emulator() as emu:
        client = Client(environ={}, **credentials("v2", emu.base_url))
        with client.chat.stream(messages=ENDLESS) as stream:
            for index, _ in enumerate(stream):
                if index == 20:
                    break
        assert stream.end_reason is EndReason.CANCELLED
        assert emu.wait_for_streams(0, timeout=1.0) is not None
        client.close()
