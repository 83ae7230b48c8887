"""Access tokens through the clients: one fetch however many streams start at once, refresh
ahead of expiry (no 111 ever reaches the wire), and the refresh-once rule on 110/111."""

from __future__ import annotations

import asyncio
import threading
import time
from urllib.parse import parse_qs, urlsplit

import pytest
from sdk_helpers import Emu, build_client, credentials, fault, serve_emulator

from wenxin_stream import AsyncClient, Client, EndReason, TokenExpiredError

PROMPT = "令牌测试"


async def test_fifty_concurrent_async_streams_fetch_one_token(sdk_emu: Emu) -> None:
    h = build_client("async", **credentials("v1", sdk_emu.base_url))
    try:
        outs = await asyncio.gather(*(h.stream(PROMPT) for _ in range(50)))
    finally:
        await h.close()
    assert all(o.error is None and o.end_reason is EndReason.COMPLETED for o in outs)
    assert len({o.text for o in outs}) == 1
    assert len(h.wire.oauth()) == 1
    assert len(h.wire.chat()) == 50


async def test_twenty_threads_on_a_sync_client_fetch_one_token(sdk_emu: Emu) -> None:
    h = build_client("sync", **credentials("v1", sdk_emu.base_url))
    client = h.client
    assert isinstance(client, Client)
    barrier = threading.Barrier(20)
    texts: list[str] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            barrier.wait(5)
            with client.chat.stream(messages=PROMPT) as stream:
                texts.append("".join(stream.text_stream))
        except BaseException as exc:  # collected and re-raised by the test
            errors.append(exc)

    def run_all() -> None:
        threads = [threading.Thread(target=worker) for _ in range(20)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(20)

    try:
        await asyncio.to_thread(run_all)
    finally:
        await h.close()
    assert errors == []
    assert len(texts) == 20
    assert len(set(texts)) == 1
    assert len(h.wire.oauth()) == 1
    assert len(h.wire.chat()) == 20


@pytest.mark.parametrize("kind", ["v1", "iam"])
async def test_concurrent_rejections_of_one_stale_token_refresh_once(
    sdk_emu: Emu, kind: str
) -> None:
    """Ten streams rejected with the same expired token cause one refresh, not ten."""
    creds = credentials("v1", sdk_emu.base_url)
    if kind == "iam":
        creds = {
            "access_key": "ak-" + creds["api_key"],
            "secret_access_key": creds["secret_key"],
            "iam_base_url": sdk_emu.base_url,
            "v2_base_url": sdk_emu.base_url,
        }
    h = build_client("async", **creds)
    try:
        (await h.stream(PROMPT)).raise_error()  # fetches the first token
        first = h.wire.chat()[0].request
        # expire that token at the emulator through another client that uses it as is
        if kind == "v1":
            stale = parse_qs(urlsplit(first.url).query)["access_token"][0]
            other = build_client("async", access_token=stale, base_url=sdk_emu.base_url)
        else:
            stale = first.headers["Authorization"].removeprefix("Bearer ")
            other = build_client("async", bearer_token=stale, v2_base_url=sdk_emu.base_url)
        expired = await other.stream(fault(PROMPT, "expire_token=1"))
        await other.close()
        assert isinstance(expired.error, TokenExpiredError)
        outs = await asyncio.gather(*(h.stream(PROMPT) for _ in range(10)))
    finally:
        await h.close()
    assert all(o.error is None for o in outs), [o.error for o in outs]
    fetches = h.wire.oauth() if kind == "v1" else h.wire.mints()
    assert len(fetches) == 2
    assert len(h.wire.chat()) == 1 + 10 + 10  # every stream was rejected once, then replayed


async def test_tokens_are_refreshed_ahead_of_expiry() -> None:
    """With 2-second tokens, both twins stream back to back for 2.5 s: each fetches a new
    token before the old one expires, so the emulator never answers 111 (a 111 would show as
    a replayed chat request)."""
    with serve_emulator(token_ttl=2) as emu:
        sync = build_client("sync", **credentials("v1", emu.base_url))
        asyn = build_client("async", **credentials("v1", emu.base_url))
        sync_client = sync.client
        async_client = asyn.client
        assert isinstance(sync_client, Client)
        assert isinstance(async_client, AsyncClient)
        until = time.monotonic() + 2.5

        def sync_loop() -> int:
            count = 0
            while time.monotonic() < until:
                with sync_client.chat.stream(messages=PROMPT) as stream:
                    stream.until_done()
                assert stream.end_reason is EndReason.COMPLETED
                count += 1
                time.sleep(0.03)
            return count

        async def async_loop() -> int:
            count = 0
            while time.monotonic() < until:
                async with async_client.chat.stream(messages=PROMPT) as stream:
                    await stream.until_done()
                assert stream.end_reason is EndReason.COMPLETED
                count += 1
                await asyncio.sleep(0.03)
            return count

        try:
            sync_count, async_count = await asyncio.gather(
                asyncio.to_thread(sync_loop), async_loop()
            )
        finally:
            await sync.close()
            await asyn.close()
    for harness, count in ((sync, sync_count), (asyn, async_count)):
        assert count >= 10
        assert len(harness.wire.chat()) == count  # no replay: no 111 was ever answered
        assert len(harness.wire.oauth()) >= 2  # refreshed at least once, ahead of expiry


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_unknown_fixed_token_is_not_refreshed(sdk_emu: Emu, mode: str) -> None:
    h = build_client(
        "sync" if mode == "sync" else "async",
        access_token="24.not-issued-here",
        base_url=sdk_emu.base_url,
    )
    try:
        out = await h.stream(PROMPT)
    finally:
        await h.close()
    assert isinstance(out.error, TokenExpiredError)
    assert out.error.code == 110
    assert len(h.wire.chat()) == 1
    assert h.wire.oauth() == []
