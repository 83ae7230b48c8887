"""Errors the SDK keeps and raises again (a failed stream parser, a failed token fetch shared by
its waiters) make no reference cycle: each raise is of a fresh copy (``detached``), and the
kept error has no traceback through the frames that hold its keeper. With the cyclic collector
off (as ``wenxin serve`` runs it), such a cycle would live until the next full collection."""

from __future__ import annotations

import asyncio
import gc
import json
import threading

import pytest

from wenxin_stream._exceptions import (
    MalformedResponseError,
    RateLimitError,
    WenxinError,
    detached,
)
from wenxin_stream._synchronization import AsyncFlight, Flight
from wenxin_stream._tokens import AccessToken
from wenxin_stream._tokens_async import AsyncTokenManager
from wenxin_stream._tokens_sync import TokenManager
from wenxin_stream._wire_v2 import V2StreamParser

KEEPERS = (V2StreamParser, Flight, AsyncFlight, TokenManager, AsyncTokenManager, BaseException)


def cyclic_garbage() -> list[str]:
    """The keepers and exceptions that only the cyclic collector would free."""
    gc.set_debug(gc.DEBUG_SAVEALL)
    gc.collect()
    found = sorted(type(o).__name__ for o in gc.garbage if isinstance(o, KEEPERS))
    gc.garbage.clear()
    gc.set_debug(0)
    return found


def sse(*payloads: object) -> bytes:
    return b"".join(
        b"data: %s\n\n" % (p if isinstance(p, str) else json.dumps(p)).encode() for p in payloads
    )


CHUNK = {
    "id": "as-1",
    "object": "chat.completion.chunk",
    "created": 1,
    "model": "m",
    "choices": [{"index": 0, "delta": {"content": "你好"}, "finish_reason": None}],
}


# --- detached -----------------------------------------------------------------------------------


class Odd(Exception):
    """An exception that copy.copy cannot rebuild (a keyword-only constructor argument)."""

    def __init__(self, *, code: int) -> None:
        super().__init__(f"code {code}")


def test_detached_is_a_copy_without_traceback_keeping_the_details() -> None:
    try:
        try:
            json.loads("{nope")
        except ValueError as cause:
            raise RateLimitError(
                "slow down", api="v2", code=429, status_code=429, retry_after=3.0
            ) from cause
    except RateLimitError as raised:
        raised.partial_text = "半句"
        exc, twin = raised, detached(raised)
    assert exc.__traceback__ is not None
    assert twin is not exc
    assert type(twin) is RateLimitError
    assert (str(twin), twin.status_code, twin.retry_after, twin.partial_text) == (
        str(exc), 429, 3.0, "半句"
    )  # fmt: skip
    assert twin.__traceback__ is None
    cause = twin.__cause__  # copied the same way
    original = exc.__cause__
    assert isinstance(cause, json.JSONDecodeError)
    assert isinstance(original, json.JSONDecodeError)
    assert cause is not original
    assert (cause.msg, cause.pos, cause.__traceback__) == (original.msg, 1, None)
    assert original.__traceback__ is not None  # the original is untouched


def test_detached_drops_a_cause_it_cannot_copy_and_keeps_such_an_error_itself() -> None:
    try:
        try:
            raise Odd(code=1)
        except Odd as cause:
            raise MalformedResponseError("bad", b"{x", api="v2") from cause
    except MalformedResponseError as raised:
        exc, twin = raised, detached(raised)
    assert (str(twin), twin.excerpt, twin.api) == (str(exc), "{x", "v2")
    assert twin.__cause__ is None  # never kept with its traceback
    assert twin.__context__ is None
    odd = Odd(code=2)
    assert detached(odd) is odd


# --- the stream parser --------------------------------------------------------------------------


def test_a_failed_parser_raises_its_error_again_without_a_cycle(collector_off: None) -> None:
    parser = V2StreamParser()
    seen: list[WenxinError] = []
    with pytest.raises(MalformedResponseError, match="not valid JSON") as caught:
        parser.feed(sse("{broken"))
    seen.append(caught.value)
    with pytest.raises(MalformedResponseError, match="not valid JSON") as caught:
        parser.feed(b"")
    seen.append(caught.value)
    with pytest.raises(MalformedResponseError, match="not valid JSON") as caught:
        parser.close()
    seen.append(caught.value)
    assert len({id(e) for e in seen}) == 3  # each raise its own copy
    del parser, seen, caught
    assert cyclic_garbage() == []


def test_a_pending_error_is_raised_later_without_a_cycle(collector_off: None) -> None:
    parser = V2StreamParser()
    events = parser.feed(sse(CHUNK, "{broken"))  # the chunk is delivered, the error waits
    assert events
    with pytest.raises(MalformedResponseError):
        parser.feed(b"")
    with pytest.raises(MalformedResponseError):
        parser.close()
    closing = V2StreamParser()
    assert closing.feed(sse(CHUNK, "{broken"))
    with pytest.raises(MalformedResponseError):
        closing.close()  # the pending error, raised by close
    del parser, closing, events
    assert cyclic_garbage() == []


# --- flights and token managers -----------------------------------------------------------------


def test_a_failed_flight_gives_every_waiter_its_own_copy_without_a_cycle(
    collector_off: None,
) -> None:
    flight: Flight[int] = Flight()
    caught: list[BaseException] = []

    def wait(flight: Flight[int], caught: list[BaseException]) -> None:
        try:
            flight.wait()
        except OSError as exc:  # (its traceback → this frame → caught → it: dropped)
            caught.append(exc.with_traceback(None))

    waiters = [threading.Thread(target=wait, args=(flight, caught)) for _ in range(3)]
    for t in waiters:
        t.start()
    try:
        raise OSError("auth server down")
    except OSError as exc:
        flight.finish(None, exc)
    for t in waiters:
        t.join(5)
    assert [str(e) for e in caught] == ["auth server down"] * 3
    assert len({id(e) for e in caught}) == 3
    del flight, caught, waiters
    assert cyclic_garbage() == []


def test_a_failed_async_flight_gives_every_waiter_its_own_copy_without_a_cycle(
    collector_off: None,
) -> None:
    async def scenario() -> list[BaseException]:
        flight: AsyncFlight[int] = AsyncFlight()
        waiters = [asyncio.create_task(flight.wait()) for _ in range(3)]
        await asyncio.sleep(0)
        try:
            raise OSError("auth server down")
        except OSError as exc:
            flight.finish(None, exc)
        return list(await asyncio.gather(*waiters, return_exceptions=True))

    outcomes = asyncio.run(scenario())
    assert [str(e) for e in outcomes] == ["auth server down"] * 3
    assert len({id(e) for e in outcomes}) == 3
    del outcomes
    shared = Flight[int]()  # a flight that succeeded keeps nothing either
    shared.finish(1)
    assert shared.wait() == 1
    assert cyclic_garbage() == []


def test_a_failed_token_fetch_leaves_no_cycle(collector_off: None) -> None:
    def fetch() -> AccessToken:
        raise OSError("auth server down")

    manager = TokenManager(fetch)
    with pytest.raises(OSError, match="auth server down"):
        manager.get()
    assert isinstance(manager.last_error, OSError)
    assert manager.last_error.__traceback__ is None

    async def afetch() -> AccessToken:
        raise OSError("auth server down")

    async def scenario() -> AsyncTokenManager:
        amanager = AsyncTokenManager(afetch)
        with pytest.raises(OSError, match="auth server down"):
            await amanager.get()
        return amanager

    amanager = asyncio.run(scenario())
    assert isinstance(amanager.last_error, OSError)
    del manager, amanager
    assert cyclic_garbage() == []
