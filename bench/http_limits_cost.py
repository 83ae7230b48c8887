"""What the limits of ``_http_limits`` cost: uvicorn's ``HttpToolsProtocol`` against
``LimitedHttpToolsProtocol``, in one process, one run, the two taking turns in each repeat.

Rows, in microseconds (the best of ``--repeat`` timeit runs, each of ``--number`` calls):

- ``chunk``: one response body chunk through the request's ``send`` (an SSE delta of ~100
  bytes, chunked framing, one transport write) — the per-chunk path of every stream;
- ``request``: one connection's life with one typical request: the protocol made, the
  connection made, a 300-byte head fed (parsed, the app task created), the response sent in
  one piece, the connection lost. The task is not run: only the protocol's work is timed.

The transport is a stand-in that keeps nothing; the event loop is uvloop's when installed.

    .venv/bin/python bench/http_limits_cost.py [--number N] [--repeat R]
"""

from __future__ import annotations

import argparse
import asyncio
import timeit
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from wenxin_stream._http_limits import HTTPLimits, LimitedConfig

HEAD = (
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nAccept: */*\r\n"
    b"Accept-Encoding: gzip, deflate\r\nConnection: keep-alive\r\nUser-Agent: OpenAI/Python 1.0\r\n"
    b"Authorization: Bearer wx-0123456789abcdef0123456789abcdef01234567\r\n"
    b"Content-Type: application/json\r\nContent-Length: 0\r\n\r\n"
)
CHUNK = {
    "type": "http.response.body",
    "body": 'data: {"id":"chatcmpl-1","choices":[{"delta":{"content":"你好"}}]}\n\n'.encode(),
    "more_body": True,
}
START = {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]}
END = {"type": "http.response.body", "body": b"ok", "more_body": False}


class Transport(asyncio.Transport):
    """A transport that accepts everything and keeps nothing."""

    def __init__(self) -> None:
        super().__init__()
        self.closing = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8000)}.get(name)

    def write(self, data: Any) -> None:
        pass

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def app(scope: Any, receive: Any, send: Any) -> None:
    """Never run: the tasks are cancelled before they start."""


def configs() -> dict[str, uvicorn.Config]:
    plain = uvicorn.Config(app, http="httptools", log_level="warning")
    limited = LimitedConfig(app, HTTPLimits(), log_level="warning")
    for config in (plain, limited):
        config.load()
    return {"uvicorn": plain, "limited": limited}


def now(coroutine: Any) -> None:
    """Run a coroutine that never waits (a ``send`` while writing is not paused)."""
    try:
        coroutine.send(None)
    except StopIteration:
        return
    raise RuntimeError("the coroutine waited")  # pragma: no cover


def protocol_of(
    config: uvicorn.Config, state: ServerState, loop: asyncio.AbstractEventLoop
) -> HttpToolsProtocol:
    """A connection made, its head fed, the app's task cancelled before it runs."""
    make = config.http_protocol_class
    protocol = make(config=config, server_state=state, app_state={}, _loop=loop)  # type: ignore[call-arg]
    assert isinstance(protocol, HttpToolsProtocol)
    protocol.connection_made(Transport())
    protocol.data_received(HEAD)
    for task in state.tasks:
        task.cancel()
    state.tasks.clear()
    return protocol


def one_request(
    config: uvicorn.Config, state: ServerState, loop: asyncio.AbstractEventLoop
) -> None:
    protocol = protocol_of(config, state, loop)
    now(protocol.cycle.send(START))  # type: ignore[arg-type]
    now(protocol.cycle.send(END))  # type: ignore[arg-type]
    protocol.connection_lost(None)


def requests(n: int, config: uvicorn.Config, loop: asyncio.AbstractEventLoop) -> None:
    state = ServerState()
    for i in range(n):
        one_request(config, state, loop)
        if i % 500 == 499:  # let the cancelled tasks and the timers go
            loop.run_until_complete(asyncio.sleep(0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--number", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    try:
        import uvloop

        loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    except ImportError:  # pragma: no cover
        loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    best: dict[tuple[str, str], float] = {}
    chosen = configs()
    streams = {}
    for name, config in chosen.items():
        state = ServerState()
        cycle = protocol_of(config, state, loop).cycle
        now(cycle.send({"type": "http.response.start", "status": 200, "headers": []}))

        def chunks(n: int, send: Any = cycle.send) -> Any:
            async def run() -> None:
                for _ in range(n):
                    await send(CHUNK)

            return run()

        streams[name] = (chunks, state)
    quarter = args.number // 4
    for _ in range(args.repeat):
        for name, config in chosen.items():
            chunks, _state = streams[name]
            started = timeit.default_timer()
            loop.run_until_complete(chunks(args.number))
            took = (timeit.default_timer() - started) / args.number * 1e6
            best[("chunk", name)] = min(best.get(("chunk", name), took), took)
            started = timeit.default_timer()
            requests(quarter, config, loop)
            took = (timeit.default_timer() - started) / quarter * 1e6
            best[("request", name)] = min(best.get(("request", name), took), took)
    print(f"µs per call, best of {args.repeat} × {args.number} (request: × {args.number // 4})")
    print(f"{'':10}{'uvicorn':>10}{'limited':>10}")
    for row in ("chunk", "request"):
        print(f"{row:10}{best[(row, 'uvicorn')]:10.2f}{best[(row, 'limited')]:10.2f}")
    loop.close()


if __name__ == "__main__":
    main()
