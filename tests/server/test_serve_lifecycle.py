"""Start-up and shutdown: crash clean-up (``server_crashed``), graceful drain
(``server_shutdown``), the CLI."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from server_helpers import EventReader, new_conversation, paced, running, server_config, wait_for

from wenxin_stream.emulator import ServerHandle
from wenxin_stream.emulator._server import base_url_of, bind_socket
from wenxin_stream.server import Server, ServerState, create_app, uvicorn_server
from wenxin_stream.server._store import Checkpoint, SQLiteStore


@contextmanager
def draining_server(app: Server) -> Iterator[tuple[str, threading.Thread, object]]:
    """The app under the CLI's uvicorn server (drain first, then close) in a thread."""
    server = uvicorn_server(app)
    sock = bind_socket("127.0.0.1", 0)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    wait_for(lambda: server.started or not thread.is_alive(), timeout=10)
    try:
        yield base_url_of(sock), thread, server
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def _messages(db: Path) -> list[tuple[str, str, str | None]]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT role, status, end_reason FROM messages ORDER BY created_at")
        return list(rows)


def test_graceful_shutdown_ends_in_flight_streams_as_server_shutdown(
    tmp_path: Path, emu: ServerHandle
) -> None:
    app = create_app(server_config(tmp_path / "d", emu.base_url, shutdown_grace=0.8))
    with draining_server(app) as (url, thread, server), httpx.Client(base_url=url, timeout=10) as c:
        cid = new_conversation(c)
        request = c.build_request(
            "POST",
            f"/api/conversations/{cid}/messages",
            json={"content": paced("无尽", "endless=1;interval=0.01")},
        )
        response = c.send(request, stream=True)
        reader = EventReader(response)
        assert reader.next() is not None
        assert reader.next() is not None
        with httpx.Client(base_url=url, timeout=10) as keepalive:
            assert keepalive.get("/readyz").status_code == 200  # a pooled keep-alive connection
            server.should_exit = True  # type: ignore[attr-defined]
            wait_for(lambda: app.state is ServerState.STOPPING)
            # not ready: a request on the idle keep-alive connection is answered (a proxy may
            # have sent it before it knew), as that connection's last; then the port refuses
            ready = keepalive.get("/readyz")
            assert (ready.status_code, ready.headers["connection"]) == (503, "close")
            with pytest.raises(httpx.ConnectError):
                keepalive.post(f"/api/conversations/{cid}/messages", json={"content": "再问"})
        t0 = time.monotonic()
        rest = reader.rest()
        waited = time.monotonic() - t0
        response.close()
        thread.join(10)
    end = json.loads(rest[-1].data)
    assert rest[-1].event == "end"
    assert end["end_reason"] == "server_shutdown"
    assert waited < 1.5  # the grace, not the endless answer
    assert _messages(tmp_path / "d" / "wenxin.db")[-1] == (
        "assistant",
        "partial",
        "server_shutdown",
    )


def test_plain_uvicorn_stop_also_marks_streams(tmp_path: Path, emu: ServerHandle) -> None:
    with running(tmp_path / "d", emu.base_url, shutdown_grace=0.2) as srv, srv.client() as c:
        cid = new_conversation(c)
        request = c.build_request(
            "POST",
            f"/api/conversations/{cid}/messages",
            json={"content": paced("无尽", "endless=1;interval=0.01")},
        )
        response = c.send(request, stream=True)
        assert EventReader(response).next() is not None
        srv.handle.stop()
        response.close()
    assert _messages(tmp_path / "d" / "wenxin.db")[-1] == (
        "assistant",
        "partial",
        "server_shutdown",
    )


def test_start_up_after_a_crash_marks_answers_left_streaming_as_server_crashed(
    tmp_path: Path, emu: ServerHandle, caplog: pytest.LogCaptureFixture
) -> None:
    async def crashed() -> None:  # a run that died with an answer checkpointed mid-stream
        async with SQLiteStore(tmp_path / "d" / "wenxin.db") as store:
            conv = await store.create_conversation("local", title=None, model="m", system=None)
            _, answer = await store.add_exchange("local", conv.id, question="q", model="m")
            await store.checkpoint([Checkpoint(answer.id, "半", 1, 1, 20.0)])

    asyncio.run(crashed())
    with (
        caplog.at_level(logging.WARNING, "wenxin_stream.server"),
        running(tmp_path / "d", emu.base_url) as srv,
        srv.client() as c,
    ):
        metrics = c.get("/metrics").text
    assert 'wenxin_stream_ends_total{reason="server_crashed"} 1\n' in metrics
    assert "1 answers were cut by a crash of the previous run" in caplog.text
    with sqlite3.connect(tmp_path / "d" / "wenxin.db") as conn:
        row = conn.execute(
            "SELECT role, status, end_reason, content, generated_chars, delivered_chars "
            "FROM messages ORDER BY seq DESC LIMIT 1"
        ).fetchone()
    assert row == ("assistant", "partial", "server_crashed", "半", 1, 1)  # the checkpoint kept


def _serve_cli(tmp_path: Path, *args: str) -> subprocess.Popen[str]:
    # not measured by coverage: its signal handling in the child would change the exit
    # path under test (run_server itself is covered in-process below)
    skip = ("QIANFAN_", "WENXIN_", "COV_", "COVERAGE_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(skip)}
    env["WENXIN_EMULATOR_TTFT"] = "0"
    return subprocess.Popen(
        [
            str(Path(sys.executable).with_name("wenxin")),
            "serve",
            "--port",
            "0",
            "--data-dir",
            str(tmp_path / "data"),
            *args,
        ],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_cli_start_line_and_graceful_exit(tmp_path: Path) -> None:
    for sig in (signal.SIGTERM, signal.SIGINT):
        proc = _serve_cli(tmp_path)
        try:
            assert proc.stderr is not None
            line = proc.stderr.readline()
            assert line.startswith("wenxin serve on http://127.0.0.1:"), line
            assert line.rstrip().endswith(
                "— upstream: embedded ERNIE emulator (offline; set QIANFAN_* for real ERNIE)"
            )
            url = line.split(" on ", 1)[1].split(" ", 1)[0]
            info = httpx.get(url + "/api/info", timeout=10).json()
            assert info["upstream"] == "emulator"
            assert info["auth_required"] is False
            proc.send_signal(sig)
            status = proc.wait(15)
            err = proc.stderr.read()
            assert status == 0, err[-2000:]
            assert "Traceback" not in err
        finally:
            proc.kill()
            proc.wait()


def test_cli_refuses_bad_settings(tmp_path: Path) -> None:
    proc = _serve_cli(tmp_path, "--host", "0.0.0.0")
    assert proc.wait(15) == 2
    assert proc.stderr is not None
    assert "loopback" in proc.stderr.read()
    proc = _serve_cli(tmp_path, "--resume-grace", "-1")
    assert proc.wait(15) == 2
    assert proc.stderr is not None
    assert "resume_grace" in proc.stderr.read()


def _free_port() -> int:
    sock = bind_socket("127.0.0.1", 0)
    port: int = sock.getsockname()[1]
    sock.close()
    return port


def _ready(url: str) -> bool:
    try:
        return httpx.get(url + "/readyz", timeout=1).status_code == 200
    except httpx.TransportError:  # not listening yet
        return False


def _stop_when_up(url: str, seen: list[str]) -> threading.Thread:
    def stop() -> None:
        try:
            wait_for(lambda: _ready(url), timeout=10)
            seen.append(httpx.get(url + "/api/info", timeout=5).json()["upstream"])
        finally:  # a server that never became ready is stopped too (the test then fails)
            os.kill(os.getpid(), signal.SIGTERM)

    thread = threading.Thread(target=stop, daemon=True)
    thread.start()
    return thread


def test_run_server_in_the_foreground(tmp_path: Path, emu: ServerHandle) -> None:
    from wenxin_stream.server import run_server

    port = _free_port()
    lines: list[str] = []
    seen: list[str] = []
    thread = _stop_when_up(f"http://127.0.0.1:{port}", seen)
    config = server_config(tmp_path / "d", emu.base_url, port=port)
    assert run_server(config, announce=lines.append) == 0  # SIGTERM: graceful, status 0
    thread.join(5)
    assert lines == [
        f"wenxin serve on http://127.0.0.1:{port} — upstream: ERNIE emulator at "
        f"{emu.base_url} (API v2)"
    ]
    assert seen == ["emulator"]


def test_cli_in_process_with_qianfan_credentials(
    tmp_path: Path,
    emu: ServerHandle,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from wenxin_stream.cli import main

    monkeypatch.setenv("QIANFAN_BEARER_TOKEN", "bce-v3/ALTAK-cli/secret")
    monkeypatch.setenv("QIANFAN_CONSOLE_API_BASE_URL", emu.base_url)
    port = _free_port()
    seen: list[str] = []
    thread = _stop_when_up(f"http://127.0.0.1:{port}", seen)
    assert main(["serve", "--port", str(port), "--data-dir", str(tmp_path / "d")]) == 0
    thread.join(5)
    err = capsys.readouterr().err
    assert f"— upstream: ERNIE API v2 at {emu.base_url}" in err
    assert seen == ["ernie"]
    assert "ALTAK-cli" not in err


async def test_before_the_start_up_every_request_is_503_starting(tmp_path: Path) -> None:
    """Without the lifespan start-up (an ASGI host that skips it) there are no routes yet:
    every HTTP request is answered 503 ``starting`` and a WebSocket is refused."""
    app = create_app(server_config(tmp_path / "d", "http://127.0.0.1:9"))
    sent: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    for path in ("/readyz", "/api/conversations"):
        sent.clear()
        await app({"type": "http", "method": "GET", "path": path, "headers": []}, receive, send)
        assert sent[0]["status"] == 503
        assert json.loads(sent[1]["body"])["error"]["code"] == "starting"  # type: ignore[arg-type]
    sent.clear()
    await app({"type": "websocket", "path": "/api/ws", "headers": []}, receive, send)
    assert sent == [{"type": "websocket.close", "code": 1008}]
