"""Two instances behind the nginx of ``deploy/nginx.conf`` (that very file, only its ports and
paths rewritten), sharing one Redis and one database: the page, SSE, a cut and a resume, the
WebSocket upgrade and the OpenAI route all pass through it, and per-key limits hold for the
fleet, not per instance."""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
import redis
from server_helpers import EventReader, Running, paced, running, texts
from websockets.sync.client import connect

from services import (
    Service,
    ServiceUnavailable,
    deploy_nginx_conf,
    free_port,
    nginx_server,
    unavailable,
)
from wenxin_stream.emulator import ServerHandle

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "nginx.conf"
_databases = itertools.count(11)


def _redis_db(redis_service: Service) -> str:
    url = redis_service.url.rsplit("/", 1)[0] + f"/{next(_databases) % 16}"
    with redis.Redis.from_url(url) as client:
        client.flushdb()
    return url


@pytest.fixture
def fleet(
    tmp_path: Path, emu: ServerHandle, redis_service: Service, request: pytest.FixtureRequest
) -> Iterator[tuple[str, Running, Running]]:
    overrides = getattr(request, "param", {})
    shared = {"redis_url": _redis_db(redis_service), "max_connections_per_ip": 0, **overrides}
    data = tmp_path / "data"  # one database for both, as one PostgreSQL would be
    with (
        running(data, emu.base_url, **shared) as a,
        running(data, emu.base_url, **shared) as b,
    ):
        listen = free_port()
        ports = [int(server.url.rsplit(":", 1)[1]) for server in (a, b)]
        conf = deploy_nginx_conf(DEPLOY.read_text(), listen, ports)
        try:
            with nginx_server(conf, listen) as nginx:
                yield nginx.url, a, b
        except ServiceUnavailable as exc:
            unavailable(str(exc))


def _ask(client: httpx.Client, cid: str, content: str) -> httpx.Response:
    request = client.build_request(
        "POST", f"/api/conversations/{cid}/messages", json={"content": content}
    )
    return client.send(request, stream=True)


def test_page_sse_cut_and_resume_websocket_and_openai_through_nginx(
    fleet: tuple[str, Running, Running],
) -> None:
    url, _, _ = fleet
    with httpx.Client(base_url=url, timeout=20) as client:
        page = client.get("/")
        assert page.status_code == 200
        assert "text/html" in page.headers["content-type"]

        # SSE passes through unbuffered: the first delta comes long before the end
        cid = client.post("/api/conversations", json={}).json()["id"]
        began = time.monotonic()
        response = _ask(client, cid, paced("讲个故事", "interval=0.03;chunks=40"))
        reader = EventReader(response)
        start = reader.next()
        assert start is not None
        assert start.event == "start"
        stream_id = json.loads(start.data)["stream_id"]
        first = reader.next()
        assert first is not None
        assert first.event == "delta"
        first_at = time.monotonic() - began
        seen = [start, first]
        while len(seen) < 6:
            event = reader.next()
            assert event is not None
            seen.append(event)
        response.close()  # the client's connection is cut mid-answer
        last = seen[-1].id
        assert last is not None

        # resumed through nginx, on whichever instance it lands: nothing lost or repeated
        with client.stream(
            "GET", f"/api/streams/{stream_id}", headers={"Last-Event-ID": last}
        ) as resumed:
            assert resumed.status_code == 200
            rest = EventReader(resumed).rest()
        ended_at = time.monotonic() - began
        assert rest[-1].event == "end"
        end = json.loads(rest[-1].data)
        assert end["end_reason"] == "completed"
        assert first_at < ended_at - 0.5  # 40 chunks × 30 ms: the first came early
        text = texts(seen) + texts(rest)
        stored = client.get(f"/api/conversations/{cid}").json()["messages"][-1]
        assert stored["content"] == text
        assert stored["status"] == "complete"

    # the WebSocket upgrade passes through nginx
    ws_url = url.replace("http://", "ws://") + "/api/ws"
    with connect(ws_url, open_timeout=10) as ws:
        ws.send(json.dumps({"type": "ask", "id": "r1", "content": "你好"}))
        frames = []
        while not frames or frames[-1]["type"] != "end":
            frames.append(json.loads(ws.recv(timeout=20)))
    assert frames[0]["type"] == "start"
    assert frames[-1]["end_reason"] == "completed"
    assert "".join(f["text"] for f in frames if f["type"] == "delta")

    # the OpenAI route streams through it, ending with [DONE]
    with (
        httpx.Client(base_url=url, timeout=20) as client,
        client.stream(
            "POST",
            "/v1/chat/completions",
            json={
                "model": "ernie-lite-8k",
                "stream": True,
                "messages": [{"role": "user", "content": "你好"}],
            },
        ) as streamed,
    ):
        lines = [line for line in streamed.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    finishes = [
        choice.get("finish_reason")
        for line in lines[:-1]
        for choice in json.loads(line[6:])["choices"]
    ]
    assert "stop" in finishes


@pytest.mark.parametrize("fleet", [{"default_rpm": 4}], indirect=True)
def test_a_per_key_limit_holds_for_the_fleet_behind_nginx(
    fleet: tuple[str, Running, Running],
) -> None:
    url, a, b = fleet
    body = {"model": "ernie-lite-8k", "messages": [{"role": "user", "content": "你好"}]}
    statuses: list[int] = []
    refusals: list[httpx.Response] = []
    began = time.monotonic()
    for _ in range(10):  # a new connection each: nginx spreads them over both instances
        with httpx.Client(base_url=url, timeout=20) as client:
            response = client.post("/v1/chat/completions", json=body)
        statuses.append(response.status_code)
        if response.status_code == 429:
            refusals.append(response)
    elapsed = time.monotonic() - began
    admitted = statuses.count(200)
    assert 4 <= admitted <= 4 + int(elapsed / 15), statuses  # one token per 15 s refills
    assert statuses.count(429) == 10 - admitted
    assert all(1 <= int(r.headers["retry-after"]) <= 15 for r in refusals)
    # both instances answered some of them (else the test would not show a shared limit)
    served = [
        sum(
            float(line.rsplit(" ", 1)[1])
            for line in httpx.get(f"{server.url}/metrics").text.splitlines()
            if line.startswith("wenxin_http_requests_total{") and "chat/completions" in line
        )
        for server in (a, b)
    ]
    assert all(count > 0 for count in served), served


def test_nginx_pools_no_connection_that_carried_a_stream() -> None:
    """What ``deploy/nginx.conf`` tells an instance in ``Connection``: ``close`` for a request
    whose answer streams (its response may have begun before a drain could say so: had nginx
    pooled the connection, it might write a request on it as the instance closes it, and a
    POST so cut is a 502), ``upgrade`` for a WebSocket, nothing for the rest — which share
    pooled connections."""
    seen: list[tuple[str, str, str, int]] = []

    class Instance(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def answer(self) -> None:
            self.rfile.read(int(self.headers.get("content-length") or 0))
            seen.append(
                (
                    self.command,
                    self.path,
                    self.headers.get("connection", ""),
                    self.client_address[1],
                )
            )
            self.send_response(200)
            self.send_header("content-length", "2")
            if self.close_connection:  # told `close`: say so, as uvicorn does
                self.send_header("connection", "close")
            self.end_headers()
            self.wfile.write(b"{}")

        do_GET = do_POST = answer

        def log_message(self, format: str, *args: object) -> None:
            pass

    instance = ThreadingHTTPServer(("127.0.0.1", 0), Instance)
    threading.Thread(target=instance.serve_forever, daemon=True).start()
    asks = [
        ("GET", "/api/info", {}),
        ("POST", "/api/conversations", {}),
        ("POST", "/api/conversations/c_1/messages", {}),
        ("GET", "/api/streams/s_1", {}),
        ("POST", "/api/streams/s_1/cancel", {}),
        ("POST", "/v1/chat/completions", {}),
        ("GET", "/v1/models", {}),
        ("GET", "/api/ws", {"upgrade": "websocket", "connection": "upgrade"}),
        ("GET", "/api/conversations/c_1", {}),
    ]
    try:
        listen = free_port()
        conf = deploy_nginx_conf(DEPLOY.read_text(), listen, [instance.server_port])
        with nginx_server(conf, listen) as nginx, httpx.Client(base_url=nginx.url) as client:
            for method, path, headers in asks:
                assert client.request(method, path, headers=headers).status_code == 200
    except ServiceUnavailable as exc:
        unavailable(str(exc))
    finally:
        instance.shutdown()
        instance.server_close()
    told = {(method, path): connection.lower() for method, path, connection, _ in seen}
    assert told == {
        ("GET", "/api/info"): "",
        ("POST", "/api/conversations"): "",
        ("POST", "/api/conversations/c_1/messages"): "close",
        ("GET", "/api/streams/s_1"): "close",
        ("POST", "/api/streams/s_1/cancel"): "",
        ("POST", "/v1/chat/completions"): "close",
        ("GET", "/v1/models"): "",
        ("GET", "/api/ws"): "upgrade",
        ("GET", "/api/conversations/c_1"): "",
    }
    by_connection: dict[int, list[str]] = {}
    for _, _, connection, port in seen:
        by_connection.setdefault(port, []).append(connection.lower())
    # a stream may take a pooled connection, but nothing comes on one after a stream
    assert all("close" not in told[:-1] for told in by_connection.values()), seen
    assert any(len(told) > 1 for told in by_connection.values()), seen  # and pooling works
