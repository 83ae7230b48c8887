"""Garbage collection while serving (server/_gc.py): the relay makes no cyclic garbage, so the
automatic collector can be off; the scheduled collections run when quiet or when overdue."""

from __future__ import annotations

import asyncio
import gc
import json
from pathlib import Path

import httpx
import pytest
from server_helpers import draining, paced, running, server_config
from websockets.sync.client import connect

from wenxin_stream.emulator import ServerHandle
from wenxin_stream.server import create_app
from wenxin_stream.server._gc import Collector
from wenxin_stream.server._metrics import Metrics

OURS = ("wenxin_stream", "aiohttp", "asyncio", "_asyncio", "uvicorn", "uvloop")
"""Modules whose objects must never be cyclic garbage after a stream (httpx, the tests'
own client, makes some: it is not ours)."""
FRAMES = {"frame", "coroutine", "traceback", "async_generator"}
"""Kinds of objects that are garbage of whichever code they run: counted when that code is
in one of :data:`OURS` (pytest keeps the traceback of an earlier failed or xfailed test in a
cycle that may become garbage during this test: not ours)."""
_OUR_FILES = tuple(f"/{name}/" for name in OURS)


def _code_is_ours(obj: object) -> bool:
    frame = getattr(obj, "tb_frame", obj)
    code = getattr(frame, "f_code", None) or getattr(obj, "cr_code", None)
    code = code or getattr(obj, "ag_code", None)
    filename = getattr(code, "co_filename", "")
    return any(part in filename for part in _OUR_FILES)


def _our_garbage() -> dict[str, int]:
    gc.set_debug(gc.DEBUG_SAVEALL)
    gc.collect()
    kinds: dict[str, int] = {}
    for obj in gc.garbage:
        kind = type(obj)
        if kind.__module__.startswith(OURS) or (kind.__name__ in FRAMES and _code_is_ours(obj)):
            name = f"{kind.__module__}.{kind.__qualname__}"
            kinds[name] = kinds.get(name, 0) + 1
    gc.garbage.clear()
    gc.set_debug(0)
    return kinds


def test_streams_leave_no_cyclic_garbage(
    tmp_path: Path, emu: ServerHandle, collector_off: None
) -> None:
    question = paced("讲讲流式输出", "ttft=0;interval=0.001;chunks=12")
    with running(tmp_path, emu.base_url, resume_grace=0.05) as srv, srv.client() as client:
        # warm up (first-use caches, pools), then start from a clean slate
        body = {"model": "ernie-4.0-8k", "stream": True}
        body["messages"] = [{"role": "user", "content": question}]
        client.post("/v1/chat/completions", json=body).read()
        _our_garbage()
        for _ in range(20):
            response = client.post("/v1/chat/completions", json=body)
            assert response.status_code == 200
            assert b"data: [DONE]" in response.content
            conversation = client.post("/api/conversations", json={}).json()["id"]
            answer = client.post(
                f"/api/conversations/{conversation}/messages", json={"content": question}
            )
            assert b"event: end" in answer.content
        slow = paced("讲讲流式输出", "ttft=0;interval=0.05;chunks=40")
        for _ in range(12):  # clients that leave mid-answer: generations cancelled
            request = {**body, "messages": [{"role": "user", "content": slow}]}
            with client.stream("POST", "/v1/chat/completions", json=request) as leaving:
                next(leaving.iter_bytes())
        response = client.post("/v1/chat/completions", json={**body, "stream": False})
        assert response.status_code == 200
        asyncio.run(asyncio.sleep(0.3))  # past the resume grace; cancelled streams finalized
        # per stream: 53 streams ran; a one-off (uvicorn configures logging lazily) is not
        repeated = {kind: n for kind, n in _our_garbage().items() if n >= 10}
        assert repeated == {}


def test_vanishing_websockets_and_upstream_failures_leave_no_cyclic_garbage(
    tmp_path: Path, emu: ServerHandle, collector_off: None
) -> None:
    """What the soak found at 1,000 streams (a full collection every 10 minutes let RSS grow
    by the garbage of 10 minutes): a WebSocket client that vanishes mid-answer left its
    cancelled task in a cycle with its frame; an upstream failure left the generation in a
    cycle with the SDK stream's kept error; every closed or upgraded connection left uvicorn's
    protocol in a cycle with its parser. Served as ``wenxin serve`` serves (its uvicorn
    server and HTTP protocol)."""
    slow = paced("讲讲流式输出", "ttft=0;interval=0.05;chunks=40")
    broken = paced("讲讲流式输出", "ttft=0;interval=0.001;chunks=12;cut_after=4")
    app = create_app(server_config(tmp_path, emu.base_url, resume_grace=0.05))
    with draining(app) as (url, _, _), httpx.Client(base_url=url, timeout=10) as client:
        ws_url = url.replace("http://", "ws://") + "/api/ws"
        body = {"model": "ernie-4.0-8k", "stream": True}

        def vanish() -> None:
            ws = connect(ws_url, open_timeout=10)
            ws.send(json.dumps({"type": "ask", "id": "r", "content": slow}))
            while json.loads(ws.recv(timeout=10))["type"] != "delta":
                pass
            ws.socket.close()  # gone without a close frame
            ws.close()

        def fail() -> None:
            request = {**body, "messages": [{"role": "user", "content": broken}]}
            with httpx.Client(base_url=url, timeout=10) as fresh:  # a connection each
                response = fresh.post("/v1/chat/completions", json=request)
            assert b'"error"' in response.content  # the cut, in-band

        client.get("/healthz")
        vanish()
        fail()
        asyncio.run(asyncio.sleep(0.3))
        _our_garbage()
        for _ in range(12):
            vanish()
            fail()
        asyncio.run(asyncio.sleep(0.5))  # past the resume grace: every generation finalized
        repeated = {kind: n for kind, n in _our_garbage().items() if n >= 10}
        assert repeated == {}


def test_collector_schedule_and_metrics() -> None:
    metrics = Metrics()
    open_streams = [1000]
    collector = Collector(
        metrics, lambda: open_streams[0], check_interval=0.01, quiet_streams=5, max_interval=60
    )
    was = gc.isenabled()
    assert b"wenxin_gc_collections_total 0" in metrics.render()

    async def scenario() -> tuple[int, int, bool]:
        collector.start(asyncio.get_running_loop())
        enabled_while_serving = gc.isenabled()
        await asyncio.sleep(0.1)
        busy = int(collector.collections.labels().value)  # busy: nothing collected
        open_streams[0] = 3
        for _ in range(200):
            await asyncio.sleep(0.01)
            if collector.collections.labels().value >= 2:
                break
        quiet = int(collector.collections.labels().value)
        collector.stop()
        return busy, quiet, enabled_while_serving

    try:
        busy, quiet, enabled_while_serving = asyncio.run(scenario())
    finally:
        gc.enable() if was else gc.disable()
    assert not enabled_while_serving
    assert busy == 0
    assert quiet >= 2
    assert gc.isenabled() == was  # stop() gave the collector back
    text = metrics.render().decode()
    assert f"wenxin_gc_collections_total {quiet}" in text
    assert "wenxin_gc_pause_seconds " in text


def test_collector_runs_when_overdue_however_busy() -> None:
    metrics = Metrics()
    collector = Collector(metrics, lambda: 10_000, check_interval=0.01, max_interval=0.0)
    was = gc.isenabled()

    async def scenario() -> int:
        collector.start(asyncio.get_running_loop())
        for _ in range(200):  # a full collection of the test process may take a while
            await asyncio.sleep(0.01)
            if collector.collections.labels().value >= 2:
                break
        collector.stop()
        return int(collector.collections.labels().value)

    try:
        assert asyncio.run(scenario()) >= 2
    finally:
        gc.enable() if was else gc.disable()


def test_closed_websockets_are_freed_without_a_collection(
    tmp_path: Path, emu: ServerHandle, collector_off: None
) -> None:
    """What the soak's run 4 found: every WebSocket connection, closed the ordinary way, left
    websockets' sans-I/O protocol in a cycle with its parser (a generator suspended for good),
    so 10 minutes of them waited for the overdue full collection."""
    question = paced("讲讲流式输出", "ttft=0;interval=0.001;chunks=5")
    app = create_app(server_config(tmp_path, emu.base_url, resume_grace=0.05))

    def protocols() -> int:
        return sum(1 for o in gc.get_objects() if type(o).__name__ == "ServerProtocol")

    with draining(app) as (url, _, _):
        ws_url = url.replace("http://", "ws://") + "/api/ws"

        def ask() -> None:
            with connect(ws_url, open_timeout=10) as ws:
                ws.send(json.dumps({"type": "ask", "id": "r", "content": question}))
                while json.loads(ws.recv(timeout=10))["type"] != "end":
                    pass

        ask()
        asyncio.run(asyncio.sleep(0.3))
        gc.collect()
        before = protocols()
        for _ in range(20):
            ask()
        asyncio.run(asyncio.sleep(0.5))  # every connection lost on the server's side
        assert protocols() - before < 5  # (20 before the fix)


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "whole"])
def test_answers_failed_before_their_first_token_leave_no_cyclic_garbage(
    tmp_path: Path, emu: ServerHandle, collector_off: None, stream: bool
) -> None:
    """The soak's run 6 leftover: on the OpenAI route, an answer whose upstream failed before
    any text is answered with the generation's kept error as an HTTP status; raising that
    very object gave it a traceback through the route's frames, which hold the generation,
    which holds the error: a cycle per failed request, freed only by a full collection."""
    failing = paced("讲讲流式输出", "error=336100")
    body = {"model": "ernie-4.0-8k", "stream": stream}
    body["messages"] = [{"role": "user", "content": failing}]
    with running(tmp_path, emu.base_url, resume_grace=0.05) as srv, srv.client() as client:
        first = client.post("/v1/chat/completions", json=body)
        assert first.status_code >= 500, first.text  # an HTTP error status, nothing streamed
        asyncio.run(asyncio.sleep(0.3))
        _our_garbage()
        for _ in range(12):
            response = client.post("/v1/chat/completions", json=body)
            assert response.status_code == first.status_code, response.text
        asyncio.run(asyncio.sleep(0.3))  # past the resume grace: every generation finalized
        repeated = {kind: n for kind, n in _our_garbage().items() if n >= 10}
        assert repeated == {}
