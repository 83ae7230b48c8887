"""Access tokens: refresh-ahead timing, single flight under threads and tasks, invalidation,
cancellation, errors, and the owner-only disk cache."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from wenxin_stream._clock import FakeClock
from wenxin_stream._tokens import (
    REFRESH_RETRY_INTERVAL,
    AccessToken,
    TokenCache,
    cache_key,
    refresh_due,
)
from wenxin_stream._tokens_async import AsyncTokenManager
from wenxin_stream._tokens_sync import TokenManager

NOW = 1_700_000_000.0
DAY = 86_400.0
SECRET = "24.0123456789abcdef0123456789abcdef.2592000.1700000000.282335-1"
OLD = "24.old-token-value"


def token(value: str = SECRET, *, at: float = NOW, life: float = 30 * DAY) -> AccessToken:
    return AccessToken(value, expires_at=at + life, obtained_at=at)


class Fetcher:
    """A fetch callable that counts its calls and mints a new token each time."""

    def __init__(self, clock: Callable[[], float], life: float = 30 * DAY) -> None:
        self.clock = clock
        self.life = life
        self.calls = 0
        self.lock = threading.Lock()

    def __call__(self) -> AccessToken:
        with self.lock:
            self.calls += 1
            n = self.calls
        return token(f"token-{n}", at=self.clock(), life=self.life)


# --- AccessToken and refresh_due ---------------------------------------------------------------


def test_repr_masks_the_value() -> None:
    t = token()
    assert SECRET not in repr(t)
    assert SECRET not in str(t)
    assert "***" in repr(t)
    assert t.lifetime == 30 * DAY
    assert not t.expired(NOW)
    assert t.expired(NOW + 30 * DAY)


def test_refresh_due_without_a_token() -> None:
    assert refresh_due(None, NOW)


def test_refresh_ahead_of_a_30_day_token_by_one_hour() -> None:
    t = token()
    assert not refresh_due(t, NOW)
    assert not refresh_due(t, t.expires_at - 3600.001)
    assert refresh_due(t, t.expires_at - 3600)
    assert refresh_due(t, t.expires_at + 1)


def test_refresh_ahead_of_a_short_token_by_ten_percent() -> None:
    t = token(life=60)
    assert not refresh_due(t, NOW + 53.9)
    assert refresh_due(t, NOW + 54)


def test_refresh_margin_can_be_set() -> None:
    t = token(life=1000)
    assert not refresh_due(t, NOW + 989, margin=10)
    assert refresh_due(t, NOW + 990, margin=10)
    assert refresh_due(t, NOW + 1000, margin=0)


def test_a_token_that_never_expires_is_never_due() -> None:
    assert not refresh_due(AccessToken("fixed", float("inf"), NOW), NOW + 100 * DAY)


def test_cache_key_hides_the_api_key() -> None:
    key = cache_key("my-api-key", "https://aip.baidubce.com/")
    assert len(key) == 64
    assert int(key, 16) >= 0
    assert "my-api-key" not in key
    assert key == cache_key("my-api-key", "https://aip.baidubce.com")
    assert key != cache_key("other-key", "https://aip.baidubce.com")
    assert key != cache_key("my-api-key", "http://127.0.0.1:8000")


# --- TokenManager (threads) --------------------------------------------------------------------


def test_get_fetches_once_then_serves_until_due() -> None:
    clock = FakeClock(NOW)
    fetch = Fetcher(clock)
    manager = TokenManager(fetch, clock=clock)
    assert manager.current is None
    first = manager.get()
    assert manager.get() is first
    assert manager.current is first
    clock.advance(30 * DAY - 3601)
    assert manager.get() is first
    clock.advance(1)  # one hour before expiry: due
    second = manager.get()
    assert second.value == "token-2"
    assert fetch.calls == 2


def test_single_flight_with_50_threads() -> None:
    clock = FakeClock(NOW)
    started, release = threading.Event(), threading.Event()
    calls = 0

    def fetch() -> AccessToken:
        nonlocal calls
        calls += 1
        started.set()
        release.wait(5)
        return token(at=clock())

    manager = TokenManager(fetch, clock=clock)
    barrier = threading.Barrier(50)
    results: list[AccessToken] = []

    def worker() -> None:
        barrier.wait()
        results.append(manager.get())

    threads = [threading.Thread(target=worker) for _ in range(50)]
    for t in threads:
        t.start()
    assert started.wait(5)
    time.sleep(0.02)  # let the other 49 reach the flight
    release.set()
    for t in threads:
        t.join(5)
    assert calls == 1
    assert len(results) == 50
    assert all(r is results[0] for r in results)


def test_invalidate_drops_only_the_current_token() -> None:
    clock = FakeClock(NOW)
    fetch = Fetcher(clock)
    manager = TokenManager(fetch, clock=clock)
    stale = manager.get()
    manager.invalidate(stale)
    fresh = manager.get()
    assert fresh.value == "token-2"
    manager.invalidate(stale)  # a late 111 for the old token: nothing happens
    assert manager.get() is fresh
    assert fetch.calls == 2


def test_50_concurrent_rejections_cause_one_refresh() -> None:
    clock = FakeClock(NOW)
    fetch = Fetcher(clock)
    manager = TokenManager(fetch, clock=clock)
    stale = manager.get()
    barrier = threading.Barrier(50)
    seen: list[AccessToken] = []

    def worker() -> None:
        barrier.wait()
        manager.invalidate(stale)
        seen.append(manager.get())

    threads = [threading.Thread(target=worker) for _ in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    # Some threads may invalidate after the refresh: only the stale token is ever dropped.
    assert fetch.calls == 2
    assert {t.value for t in seen} == {"token-2"}


def test_fetch_error_reaches_every_waiter_then_the_next_get_retries() -> None:
    clock = FakeClock(NOW)
    started, release = threading.Event(), threading.Event()
    calls = 0

    def fetch() -> AccessToken:
        nonlocal calls
        calls += 1
        if calls == 1:
            started.set()
            release.wait(5)
            raise OSError("auth server down")
        return token("recovered", at=clock())

    manager = TokenManager(fetch, clock=clock)
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            manager.get()
        except OSError as exc:
            errors.append(exc)

    first = threading.Thread(target=worker)
    first.start()
    assert started.wait(5)
    others = [threading.Thread(target=worker) for _ in range(5)]
    for t in others:
        t.start()
    time.sleep(0.02)
    release.set()
    for t in [first, *others]:
        t.join(5)
    assert len(errors) == 6
    assert calls == 1
    assert isinstance(manager.last_error, OSError)
    assert manager.get().value == "recovered"
    assert manager.last_error is None
    assert calls == 2


def test_refresh_ahead_lets_others_use_the_valid_token_meanwhile() -> None:
    clock = FakeClock(NOW)
    started, release = threading.Event(), threading.Event()
    values = iter(["old", "new"])

    def fetch() -> AccessToken:
        value = next(values)
        if value == "new":
            started.set()
            release.wait(5)
        return token(value, at=clock(), life=1000)

    manager = TokenManager(fetch, clock=clock)
    assert manager.get().value == "old"
    clock.advance(950)  # due (margin 100 s) but valid for 50 s more
    refresher = threading.Thread(target=manager.get)
    refresher.start()
    assert started.wait(5)
    assert manager.get().value == "old"  # does not wait for the refresh
    release.set()
    refresher.join(5)
    assert manager.get().value == "new"


def test_failed_refresh_ahead_keeps_the_old_token_and_backs_off(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock(NOW)
    calls = 0

    def fetch() -> AccessToken:
        nonlocal calls
        calls += 1
        if calls == 1:
            return token(OLD, at=clock(), life=1000)
        raise OSError("auth server down")

    manager = TokenManager(fetch, clock=clock)
    manager.get()
    clock.advance(950)
    with caplog.at_level(logging.WARNING, logger="wenxin_stream.tokens"):
        assert manager.get().value == OLD
    assert "OSError" in caplog.text
    assert OLD not in caplog.text
    assert isinstance(manager.last_error, OSError)
    assert manager.get().value == OLD  # no new attempt during the back-off
    assert calls == 2
    clock.advance(REFRESH_RETRY_INTERVAL)
    assert manager.get().value == OLD
    assert calls == 3
    clock.advance(100)  # now expired: the error reaches the caller
    with pytest.raises(OSError, match="down"):
        manager.get()


def test_an_abandoned_fetch_is_retried_by_a_waiter() -> None:
    clock = FakeClock(NOW)
    started, release = threading.Event(), threading.Event()
    calls = 0

    class Interrupted(BaseException):
        pass

    def fetch() -> AccessToken:
        nonlocal calls
        calls += 1
        if calls == 1:
            started.set()
            release.wait(5)
            raise Interrupted
        return token("second", at=clock())

    manager = TokenManager(fetch, clock=clock)
    outcome: list[object] = []

    def owner() -> None:
        try:
            manager.get()
        except Interrupted:
            outcome.append("interrupted")

    def waiter() -> None:
        outcome.append(manager.get().value)

    first = threading.Thread(target=owner)
    first.start()
    assert started.wait(5)
    second = threading.Thread(target=waiter)
    second.start()
    time.sleep(0.02)
    release.set()
    first.join(5)
    second.join(5)
    assert sorted(map(str, outcome)) == ["interrupted", "second"]
    assert calls == 2


def test_manager_reads_the_cache_before_fetching(tmp_path: Path) -> None:
    clock = FakeClock(NOW)
    cache = TokenCache(tmp_path)
    key = cache_key("ak", "https://aip.baidubce.com")
    cache.store(key, token("cached", at=NOW - DAY))
    fetch = Fetcher(clock)
    manager = TokenManager(fetch, clock=clock, cache=cache, cache_key=key)
    assert manager.get().value == "cached"
    assert fetch.calls == 0
    manager.invalidate(manager.get())  # the server rejected it: gone from the cache too
    assert cache.load(key, now=NOW) is None
    assert manager.get().value == "token-1"
    assert cache.load(key, now=NOW) == manager.get()


def test_manager_survives_a_cache_it_cannot_write(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    cache = TokenCache(blocker / "sub")
    manager = TokenManager(Fetcher(time.time), cache=cache, cache_key="k")
    with caplog.at_level(logging.WARNING, logger="wenxin_stream.tokens"):
        assert manager.get().value == "token-1"
    assert "could not write the token cache" in caplog.text
    manager.invalidate(manager.get())  # discard fails quietly too
    assert manager.get().value == "token-2"


def test_cache_and_key_go_together(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="together"):
        TokenManager(Fetcher(time.time), cache=TokenCache(tmp_path))
    with pytest.raises(ValueError, match="together"):
        AsyncTokenManager(Fetcher(time.time), cache_key="k")  # type: ignore[arg-type]


# --- AsyncTokenManager (tasks) -----------------------------------------------------------------


class AsyncFetcher:
    def __init__(self, clock: Callable[[], float], gate: asyncio.Event | None = None) -> None:
        self.clock = clock
        self.gate = gate
        self.calls = 0
        self.fail_next: BaseException | None = None

    async def __call__(self) -> AccessToken:
        self.calls += 1
        n = self.calls
        if self.gate is not None:
            await self.gate.wait()
        if self.fail_next is not None:
            exc, self.fail_next = self.fail_next, None
            raise exc
        return token(f"token-{n}", at=self.clock())


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_async_single_flight_with_50_tasks() -> None:
    clock = FakeClock(NOW)
    gate = asyncio.Event()
    fetch = AsyncFetcher(clock, gate)
    manager = AsyncTokenManager(fetch, clock=clock)
    tasks = [asyncio.create_task(manager.get()) for _ in range(50)]
    await settle()
    gate.set()
    results = await asyncio.gather(*tasks)
    assert fetch.calls == 1
    assert all(r is results[0] for r in results)
    assert await manager.get() is results[0]


async def test_async_refresh_ahead_and_invalidate() -> None:
    clock = FakeClock(NOW)
    fetch = AsyncFetcher(clock)
    manager = AsyncTokenManager(fetch, clock=clock)
    stale = await manager.get()
    clock.advance(30 * DAY - 3600)
    fresh = await manager.get()
    assert fresh.value == "token-2"
    manager.invalidate(stale)  # not current any more
    assert await manager.get() is fresh
    manager.invalidate(fresh)
    assert (await manager.get()).value == "token-3"


async def test_async_concurrent_rejections_cause_one_refresh() -> None:
    clock = FakeClock(NOW)
    gate = asyncio.Event()
    gate.set()
    fetch = AsyncFetcher(clock, gate)
    manager = AsyncTokenManager(fetch, clock=clock)
    stale = await manager.get()

    async def rejected() -> AccessToken:
        manager.invalidate(stale)
        return await manager.get()

    results = await asyncio.gather(*(rejected() for _ in range(50)))
    assert fetch.calls == 2
    assert {r.value for r in results} == {"token-2"}


async def test_cancelling_the_fetching_task_does_not_strand_the_waiters() -> None:
    clock = FakeClock(NOW)
    gate = asyncio.Event()
    fetch = AsyncFetcher(clock, gate)
    manager = AsyncTokenManager(fetch, clock=clock)
    fetcher = asyncio.create_task(manager.get())
    await settle()
    waiters = [asyncio.create_task(manager.get()) for _ in range(5)]
    await settle()
    assert fetch.calls == 1
    fetcher.cancel()
    with pytest.raises(asyncio.CancelledError):
        await fetcher
    await settle()
    assert fetch.calls == 2  # exactly one waiter took over
    gate.set()
    results = await asyncio.wait_for(asyncio.gather(*waiters), 5)
    assert {r.value for r in results} == {"token-2"}


async def test_cancelling_a_waiter_does_not_cancel_the_fetch() -> None:
    clock = FakeClock(NOW)
    gate = asyncio.Event()
    fetch = AsyncFetcher(clock, gate)
    manager = AsyncTokenManager(fetch, clock=clock)
    fetcher = asyncio.create_task(manager.get())
    await settle()
    waiter = asyncio.create_task(manager.get())
    await settle()
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    gate.set()
    assert (await fetcher).value == "token-1"
    assert fetch.calls == 1


async def test_async_fetch_error_reaches_all_waiters_then_recovers() -> None:
    clock = FakeClock(NOW)
    gate = asyncio.Event()
    fetch = AsyncFetcher(clock, gate)
    fetch.fail_next = OSError("auth server down")
    manager = AsyncTokenManager(fetch, clock=clock)
    tasks = [asyncio.create_task(manager.get()) for _ in range(10)]
    await settle()
    gate.set()
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(o, OSError) for o in outcomes)
    assert fetch.calls == 1
    assert isinstance(manager.last_error, OSError)
    assert (await manager.get()).value == "token-2"


async def test_async_fetch_error_without_waiters_is_not_logged_as_unretrieved(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fetch = AsyncFetcher(time.time)
    fetch.fail_next = OSError("down")
    manager = AsyncTokenManager(fetch)
    with pytest.raises(OSError, match="down"):
        await manager.get()
    await settle()
    assert "never retrieved" not in caplog.text


async def test_async_failed_refresh_ahead_keeps_the_old_token() -> None:
    clock = FakeClock(NOW)
    fetch = AsyncFetcher(clock)
    manager = AsyncTokenManager(fetch, clock=clock)
    old = await manager.get()
    clock.advance(30 * DAY - 60)
    fetch.fail_next = OSError("down")
    assert await manager.get() is old
    assert isinstance(manager.last_error, OSError)


# --- TokenCache --------------------------------------------------------------------------------


def test_cache_is_private_to_its_owner(tmp_path: Path) -> None:
    cache = TokenCache(tmp_path / "cache")
    cache.store("k", token())
    assert stat.S_IMODE(os.stat(cache.directory).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(cache.path).st_mode) == 0o600
    assert json.loads(cache.path.read_text()) == {
        "k": {"value": SECRET, "expires_at": NOW + 30 * DAY, "obtained_at": NOW}
    }
    assert cache.load("k", now=NOW) == token()
    assert cache.load("other", now=NOW) is None
    assert [p.name for p in cache.directory.iterdir()] == ["tokens.json"]  # no temp files
    assert SECRET not in repr(cache)


def test_cache_ignores_a_world_readable_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = TokenCache(tmp_path)
    cache.store("k", token())
    os.chmod(cache.path, 0o644)
    with caplog.at_level(logging.WARNING, logger="wenxin_stream.tokens"):
        assert cache.load("k", now=NOW) is None
    assert "not private" in caplog.text
    assert SECRET not in caplog.text
    cache.store("k", token())  # rewriting makes it private again
    assert stat.S_IMODE(os.stat(cache.path).st_mode) == 0o600
    assert cache.load("k", now=NOW) is not None


def test_cache_refuses_a_symlink(tmp_path: Path) -> None:
    real = TokenCache(tmp_path / "real")
    real.store("k", token())
    linked = TokenCache(tmp_path / "linked")
    linked.directory.mkdir(mode=0o700)
    linked.path.symlink_to(real.path)
    assert linked.load("k", now=NOW) is None


@pytest.mark.parametrize(
    "content",
    [
        "",
        "{not json",
        "[1, 2]",
        '"text"',
        '{"k": "just a string"}',
        '{"k": {"value": 5, "expires_at": 1e20, "obtained_at": 0}}',
        '{"k": {"value": "", "expires_at": 1e20, "obtained_at": 0}}',
        '{"k": {"value": "v", "expires_at": "soon", "obtained_at": 0}}',
        '{"k": {"value": "v", "expires_at": true, "obtained_at": 0}}',
        '{"k": {"value": "v", "expires_at": 1e20}}',
        "[" * 100_000,
    ],
)
def test_corrupt_cache_is_treated_as_empty(tmp_path: Path, content: str) -> None:
    cache = TokenCache(tmp_path)
    fd = os.open(cache.path, os.O_WRONLY | os.O_CREAT, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(content)
    assert cache.load("k", now=NOW) is None
    cache.store("k", token())  # and can be overwritten
    assert cache.load("k", now=NOW) == token()


def test_cache_ignores_and_prunes_expired_entries(tmp_path: Path) -> None:
    cache = TokenCache(tmp_path)
    old = AccessToken("old", expires_at=time.time() - 10, obtained_at=time.time() - 100)
    cache.store("old", old)
    assert cache.load("old") is None
    cache.store("new", token(at=time.time()))
    assert set(json.loads(cache.path.read_text())) == {"new"}


def test_cache_discard_only_removes_the_given_token(tmp_path: Path) -> None:
    cache = TokenCache(tmp_path)
    cache.store("k", token("current"))
    cache.discard("k", token("something else"))
    assert cache.load("k", now=NOW) is not None
    cache.discard("missing")
    cache.discard("k", token("current"))
    assert cache.load("k", now=NOW) is None
    cache.store("k", token("current"))
    cache.discard("k")
    assert cache.load("k", now=NOW) is None


def test_cache_default_directory(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert TokenCache().path == tmp_path / "wenxin-stream" / "tokens.json"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert TokenCache().directory == tmp_path / "home" / ".cache" / "wenxin-stream"


def test_failed_write_leaves_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = TokenCache(tmp_path)

    def broken_replace(src: object, dst: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        cache.store("k", token())
    assert list(tmp_path.iterdir()) == []
