"""Helpers for the emulator tests: request bodies, tokens, raw-socket HTTP, SSE parsing."""

from __future__ import annotations

import json
import socket
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx

from wenxin_stream._sse import SSEDecoder

V1 = "/rpc/2.0/ai_custom/v1/wenxinworkshop/chat/"
V1_CHAT = V1 + "completions"
V2_CHAT = "/v2/chat/completions"


def unique(prefix: str = "t") -> str:
    """A unique string, for credentials that must not share state with other tests."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def get_token(client: httpx.Client, client_id: str | None = None) -> str:
    """Fetch an OAuth access token for a fresh (or given) client id."""
    params = {
        "grant_type": "client_credentials",
        "client_id": client_id or unique("app"),
        "client_secret": "secret",
    }
    response = client.post("/oauth/2.0/token", params=params)
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


def v1_body(prompt: str = "你好", *, stream: bool = False, **extra: Any) -> dict[str, Any]:
    """A minimal v1 chat body."""
    return {"messages": [{"role": "user", "content": prompt}], "stream": stream, **extra}


def v2_body(prompt: str = "你好", *, stream: bool = False, **extra: Any) -> dict[str, Any]:
    """A minimal v2 chat body."""
    return {
        "model": "ernie-4.0-8k",
        "messages": [{"role": "user", "content": prompt}],
        "stream": stream,
        **extra,
    }


def bearer(key: str | None = None) -> dict[str, str]:
    """v2 auth headers with a fresh (or given) API key."""
    return {"Authorization": f"Bearer {key or 'bce-v3/ALTAK-' + unique('k') + '/x'}"}


def events(body: bytes) -> list[str]:
    """The ``data`` of every complete SSE event in ``body``."""
    decoder = SSEDecoder(max_line_bytes=1 << 26, max_event_bytes=1 << 26)
    result = [event.data for event in decoder.feed(body)]
    decoder.close()
    return result


def json_events(body: bytes) -> list[dict[str, Any]]:
    """The parsed JSON of every SSE event except ``[DONE]``."""
    return [json.loads(data) for data in events(body) if data != "[DONE]"]


@dataclass
class RawResponse:
    """A response read from a raw socket: every ``recv`` result with its arrival time."""

    reads: list[tuple[float, bytes]] = field(default_factory=list)
    started: float = 0.0

    @property
    def raw(self) -> bytes:
        return b"".join(data for _, data in self.reads)

    @property
    def head(self) -> bytes:
        return self.raw.partition(b"\r\n\r\n")[0]

    @property
    def status(self) -> int:
        return int(self.head.split(b" ", 2)[1])

    def header(self, name: str) -> str | None:
        for line in self.head.split(b"\r\n")[1:]:
            key, _, value = line.partition(b":")
            if key.strip().lower() == name.lower().encode():
                return value.strip().decode("latin-1")
        return None

    def body(self) -> tuple[bytes, bool]:
        """The body (chunked encoding decoded) and whether it was complete."""
        rest = self.raw.partition(b"\r\n\r\n")[2]
        if self.header("transfer-encoding") != "chunked":
            length = int(self.header("content-length") or 0)
            return rest, len(rest) == length
        out = bytearray()
        while True:
            size_line, sep, rest = rest.partition(b"\r\n")
            if not sep:
                return bytes(out), False
            size = int(size_line, 16)
            if size == 0:
                return bytes(out), rest.startswith(b"\r\n")
            if len(rest) < size + 2:
                out += rest[:size]
                return bytes(out), False
            out += rest[:size]
            rest = rest[size + 2 :]


def raw_request(
    base_url: str,
    method: str,
    path: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
    *,
    timeout: float = 10.0,
    read_limit: int | None = None,
) -> RawResponse:
    """Send one HTTP/1.1 request over a plain socket and record every read until EOF (or
    until ``read_limit`` bytes, after which the socket is closed)."""
    host, port = base_url.removeprefix("http://").rsplit(":", 1)
    payload = b"" if body is None else json.dumps(body, ensure_ascii=False).encode()
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}", "Connection: close"]
    if body is not None:
        lines += ["Content-Type: application/json", f"Content-Length: {len(payload)}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode() + payload
    result = RawResponse(started=time.monotonic())
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(request)
        total = 0
        while True:
            data = sock.recv(65536)
            if not data:
                break
            result.reads.append((time.monotonic(), data))
            total += len(data)
            if read_limit is not None and total >= read_limit:
                break
    return result


def timed_events(
    client: httpx.Client, method: str, url: str, **kwargs: Any
) -> tuple[httpx.Response, list[tuple[float, str]]]:
    """Stream a response and return each SSE event's data with the time its bytes arrived
    (seconds since the request was sent)."""
    decoder = SSEDecoder(max_line_bytes=1 << 26, max_event_bytes=1 << 26)
    result: list[tuple[float, str]] = []
    start = time.monotonic()
    with client.stream(method, url, **kwargs) as response:
        for piece in response.iter_raw():
            now = time.monotonic() - start
            result.extend((now, event.data) for event in decoder.feed(piece))
    return response, result
