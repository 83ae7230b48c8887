"""A kept-alive connection the server closes as the client reuses it (issue 9, the soak's
``ServerDisconnectedError``s): the request is sent once more on a new connection, on both
transports and through both clients, and never once any byte of an answer has arrived.

The upstream here is a raw socket server (``stale_upstream.Upstream``), so what it does on
each connection is exact, not a matter of timing: ``one_per_connection`` answers the first
request on a connection in full — HTTP/1.1, ``Content-Length``, no ``Connection: close``, so
the client keeps the connection — and answers the next request on the same connection by
reading it and closing the socket without a byte (or with a reset): what a server whose
keep-alive timer fires while the client's request is on the wire looks like from the client.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable, Iterator

import pytest
from sdk_helpers import Mode, build_client, credentials, sse_body

from stale_upstream import Action, Plan, Upstream, one_per_connection
from wenxin_stream import APIConnectionError, RetryPolicy, WenxinError
from wenxin_stream._transport import HTTPRequest, Limits
from wenxin_stream._transport_aiohttp import AiohttpTransport
from wenxin_stream._transport_urllib3 import Urllib3Transport

ANSWER = ("长城", "很长。")
BODY = sse_body("v2", ANSWER)


@pytest.fixture
def upstream() -> Iterator[Callable[[Plan], Upstream]]:
    made: list[Upstream] = []

    def start(plan: Plan) -> Upstream:
        made.append(Upstream(plan, BODY))
        return made[-1]

    yield start
    for server in made:
        server.close()


def _answered(server: Upstream) -> list[bytes]:
    """The bodies of the requests the server answered, in order."""
    return [body for c, r, body in server.requests if server.plan(c, r) == "answer"]


def _resent_on_new_connections(server: Upstream) -> int:
    """How many requests were dropped on a reused connection; each must come next as the
    first request of a new connection, with the same body."""
    dropped = 0
    for i, (c, r, body) in enumerate(server.requests):
        if server.plan(c, r) != "answer":
            assert r > 0, "a request dropped on a new connection"
            assert server.requests[i + 1][1:] == (0, body), server.requests
            dropped += 1
    return dropped


def _request(url: str, n: int) -> HTTPRequest:
    return HTTPRequest("POST", f"{url}/v2/chat/completions", {}, f'{{"n": {n}}}'.encode())


async def _exchange(transport: AiohttpTransport | Urllib3Transport, url: str, n: int) -> bytes:
    """One POST through ``transport``, its body read to the end (connection back to the pool)."""
    if isinstance(transport, AiohttpTransport):
        response = await transport.open(_request(url, n), connect_timeout=5, head_timeout=5)
        body = b""
        try:
            while data := await response.read(5):
                body += data
        finally:
            await response.aclose()
        return body

    def sync() -> bytes:
        assert isinstance(transport, Urllib3Transport)
        response = transport.open(_request(url, n), connect_timeout=5, head_timeout=5)
        body = b""
        try:
            while data := response.read(5):
                body += data
        finally:
            response.close()
        return body

    return await asyncio.to_thread(sync)


async def _close(transport: AiohttpTransport | Urllib3Transport) -> None:
    if isinstance(transport, AiohttpTransport):
        await transport.aclose()
    else:
        transport.close()


def _transport(mode: Mode) -> AiohttpTransport | Urllib3Transport:
    return AiohttpTransport() if mode == "async" else Urllib3Transport()


@pytest.mark.parametrize("action", ["close", "reset"])
async def test_a_request_on_a_connection_the_server_closed_is_sent_again_on_a_new_one(
    mode: Mode, upstream: Callable[[Plan], Upstream], action: Action
) -> None:
    server = upstream(lambda connection, request: "answer" if request == 0 else action)
    transport = _transport(mode)
    try:
        assert await _exchange(transport, server.url, 1) == BODY
        assert await _exchange(transport, server.url, 2) == BODY
        assert await _exchange(transport, server.url, 3) == BODY
    finally:
        await _close(transport)
    # each later request that met a kept-alive connection was read there and dropped, then
    # sent again at once as the first request of a new connection, and answered there
    assert _answered(server) == [b'{"n": 1}', b'{"n": 2}', b'{"n": 3}']
    assert _resent_on_new_connections(server) == transport.stale_resends >= 1


async def test_a_new_connection_closed_without_an_answer_is_not_sent_again(
    mode: Mode, upstream: Callable[[Plan], Upstream]
) -> None:
    server = upstream(lambda connection, request: "close")
    transport = _transport(mode)
    try:
        with pytest.raises(APIConnectionError):
            await _exchange(transport, server.url, 1)
    finally:
        await _close(transport)
    assert len(server.requests) == 1  # not reused: the server may have acted on it
    assert transport.stale_resends == 0


@pytest.mark.parametrize("action", ["partial_head", "cut_body"])
async def test_a_connection_lost_after_bytes_of_the_answer_is_not_sent_again(
    mode: Mode, upstream: Callable[[Plan], Upstream], action: Action
) -> None:
    server = upstream(lambda connection, request: "answer" if request == 0 else action)
    transport = _transport(mode)
    try:
        assert await _exchange(transport, server.url, 1) == BODY
        with pytest.raises(APIConnectionError):
            await _exchange(transport, server.url, 2)  # reused, but the server had answered
    finally:
        await _close(transport)
    assert [(c, r) for c, r, _ in server.requests] == [(0, 0), (0, 1)]
    assert transport.stale_resends == 0


async def test_only_one_resend_per_request(
    mode: Mode, upstream: Callable[[Plan], Upstream]
) -> None:
    # the new connection fails the same way: raised, not sent a third time
    server = upstream(lambda connection, request: "answer" if connection == 0 else "close")
    transport = _transport(mode)
    try:
        assert await _exchange(transport, server.url, 1) == BODY
        server.plan = lambda connection, request: "close"
        with pytest.raises(APIConnectionError):
            await _exchange(transport, server.url, 2)
    finally:
        await _close(transport)
    assert [(c, r) for c, r, _ in server.requests] == [(0, 0), (0, 1), (1, 0)]
    assert transport.stale_resends == 1


async def test_the_client_gets_the_answer_without_spending_a_retry(
    mode: Mode, upstream: Callable[[Plan], Upstream]
) -> None:
    server = upstream(one_per_connection)
    h = build_client(mode, record=False, retry=RetryPolicy.none(), **credentials("v2", server.url))
    try:
        for _ in range(3):
            out = await h.stream("介绍一下长城")
            out.raise_error()
            assert out.text == "".join(ANSWER)
    finally:
        await h.close()
    assert len(_answered(server)) == 3
    assert _resent_on_new_connections(server) >= 1  # with no retry to spend


async def test_an_answer_cut_on_a_reused_connection_reaches_the_caller_once(
    mode: Mode, upstream: Callable[[Plan], Upstream]
) -> None:
    # after part of the answer arrived, the client's own rule holds: nothing is replayed
    server = upstream(lambda connection, request: "answer" if request == 0 else "cut_body")
    h = build_client(
        mode, record=False, retry=RetryPolicy(max_attempts=3, initial_delay=0.01, jitter=0),
        **credentials("v2", server.url),
    )  # fmt: skip
    try:
        (await h.stream("一")).raise_error()
        out = await h.stream("二")
    finally:
        await h.close()
    assert isinstance(out.error, WenxinError)
    assert out.text == ANSWER[0]  # the half body's one event, once: no resend, no retry
    assert len(server.requests) == 2


async def test_a_connection_idle_past_the_expiry_is_not_reused(
    mode: Mode, upstream: Callable[[Plan], Upstream]
) -> None:
    server = upstream(one_per_connection)
    limits = Limits(keepalive_expiry=0.2)
    transport = AiohttpTransport(limits) if mode == "async" else Urllib3Transport(limits)
    try:
        assert await _exchange(transport, server.url, 1) == BODY
        await asyncio.sleep(0.5)
        assert await _exchange(transport, server.url, 2) == BODY
    finally:
        await _close(transport)
    assert [(c, r) for c, r, _ in server.requests] == [(0, 0), (1, 0)]  # nothing dropped
    assert transport.stale_resends == 0


def test_the_default_idle_expiry_is_below_common_server_keepalives() -> None:
    assert Limits().keepalive_expiry < 5.0  # uvicorn's and Node's keep-alive


@pytest.mark.parametrize("action", ["close", "cut_body"])
async def test_failed_connections_leave_no_cycles_behind(
    upstream: Callable[[Plan], Upstream], action: Action
) -> None:
    """``wenxin serve`` runs with the cyclic collector off: a failed upstream connection must
    be freed by reference counting (the soak's run 4 found every stale-connection failure
    alive, with its protocol and transport, until the 10-minute collection)."""
    server = upstream(lambda connection, request: "answer" if request == 0 else action)
    transport = AiohttpTransport()

    def handlers() -> int:
        return sum(1 for o in gc.get_objects() if type(o).__name__ == "ResponseHandler")

    gc.collect()
    gc.disable()
    try:
        before = handlers()
        for n in range(10):
            try:
                await _exchange(transport, server.url, n)
                await _exchange(transport, server.url, n)
            except APIConnectionError:
                pass  # cut_body: raised, as it must be
        await transport.aclose()
        await asyncio.sleep(0.1)
        assert handlers() - before < 3  # (10–20 before the fix)
    finally:
        gc.enable()
