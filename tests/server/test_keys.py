"""API keys: format, hash, header parsing, and the TTL cache in front of the store."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import pytest

from wenxin_stream._clock import FakeClock
from wenxin_stream.server._keys import (
    KeyCache,
    KeyRecord,
    generate_key,
    hash_key,
    key_prefix,
    looks_like_key,
    parse_bearer,
    same_digest,
)
from wenxin_stream.server._limits import KeyLimits
from wenxin_stream.server._store import SQLiteStore, SyncKeyAdmin


def _record(key_id: str = "k_1", **changes: object) -> KeyRecord:
    fields: dict[str, object] = {
        "id": key_id, "name": "n", "prefix": "abcdefgh", "created_at": "t",
        "revoked_at": None, "rpm": None, "tpm": None, "max_streams": None,
    }  # fmt: skip
    fields.update(changes)
    return KeyRecord(**fields)  # type: ignore[arg-type]


class FakeStore:
    """A KeyLookup that counts calls and can be told to wait or fail."""

    def __init__(self) -> None:
        self.keys: dict[str, KeyRecord] = {}
        self.calls = 0
        self.count_calls = 0
        self.gate: asyncio.Event | None = None
        self.fail: Exception | None = None

    async def find_key(self, secret: str) -> KeyRecord | None:
        self.calls += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        return self.keys.get(secret)

    async def count_active_keys(self) -> int:
        self.count_calls += 1
        return len(self.keys)


def test_key_format() -> None:
    keys = {generate_key() for _ in range(200)}
    assert len(keys) == 200
    for key in keys:
        assert key.startswith("wx-")
        assert len(key) == 43
        assert looks_like_key(key)
        assert key_prefix(key) == key[3:11]
    assert hash_key("wx-abc") == hashlib.sha256(b"wx-abc").hexdigest()
    assert not looks_like_key("wx-" + "a" * 39)
    assert not looks_like_key("wx-" + "a" * 41)
    assert not looks_like_key("wx-" + "a" * 39 + "!")
    assert not looks_like_key("sk-" + "a" * 40)
    assert same_digest(hash_key("a"), hash_key("a"))
    assert not same_digest(hash_key("a"), "0")


def test_parse_bearer() -> None:
    key = generate_key()
    assert parse_bearer(f"Bearer {key}") == key
    assert parse_bearer(f"  bearer   {key}  ") == key
    assert parse_bearer(f"BEARER {key}") == key
    for bad in (None, "", key, f"Basic {key}", "Bearer", "Bearer wx-short", f"Bearer {key}x"):
        assert parse_bearer(bad) is None


def test_record_properties() -> None:
    record = _record(rpm=10, max_streams=2)
    assert record.active
    assert record.display_prefix == "wx-abcdefgh…"
    assert record.limits == KeyLimits(rpm=10, tpm=None, max_streams=2)
    assert not _record(revoked_at="2025").active


async def test_cache_hits_do_not_ask_the_store() -> None:
    store, clock = FakeStore(), FakeClock()
    key = generate_key()
    store.keys[key] = _record()
    cache = KeyCache(store, ttl=5, clock=clock)
    for _ in range(100):
        assert await cache.authenticate(f"Bearer {key}") == store.keys[key]
    assert store.calls == 1
    assert cache.lookups == 1
    assert len(cache) == 1


async def test_wrong_and_malformed_keys() -> None:
    store, clock = FakeStore(), FakeClock()
    cache = KeyCache(store, ttl=5, clock=clock)
    wrong = generate_key()
    for _ in range(10):
        assert await cache.authenticate(f"Bearer {wrong}") is None
    assert store.calls == 1  # negative answers are cached too
    for header in (None, "Bearer nope", "Basic xyz"):
        assert await cache.authenticate(header) is None
    assert await cache.lookup("wx-short") is None
    assert store.calls == 1  # malformed keys never reach the store


async def test_revocation_takes_effect_within_the_ttl() -> None:
    store, clock = FakeStore(), FakeClock()
    old, new = generate_key(), generate_key()
    store.keys[old] = _record("k_old")
    cache = KeyCache(store, ttl=5, clock=clock)
    assert await cache.lookup(old) is not None
    store.keys[new] = _record("k_new")  # rotation: create the new key...
    assert await cache.lookup(new) is not None  # ...valid at once (never seen before)
    del store.keys[old]  # ...then revoke the old one
    clock.advance(4.9)
    assert await cache.lookup(old) is not None  # still cached
    clock.advance(0.2)
    assert await cache.lookup(old) is None
    assert await cache.lookup(new) is not None
    cache.invalidate()
    assert len(cache) == 0


async def test_concurrent_misses_share_one_lookup() -> None:
    store, clock = FakeStore(), FakeClock()
    key = generate_key()
    store.keys[key] = _record()
    store.gate = asyncio.Event()
    cache = KeyCache(store, ttl=5, clock=clock)
    waiters = [asyncio.ensure_future(cache.lookup(key)) for _ in range(50)]
    await asyncio.sleep(0)
    waiters[0].cancel()  # one caller leaving does not cancel the others' lookup
    store.gate.set()
    results = await asyncio.gather(*waiters[1:])
    assert all(r is store.keys[key] for r in results)
    assert store.calls == 1
    assert waiters[0].cancelled()


async def test_store_failures_propagate_and_are_not_cached() -> None:
    store, clock = FakeStore(), FakeClock()
    key = generate_key()
    store.keys[key] = _record()
    store.fail = RuntimeError("disk on fire")
    cache = KeyCache(store, ttl=5, clock=clock)
    with pytest.raises(RuntimeError, match="disk on fire"):
        await cache.lookup(key)
    store.fail = None
    assert await cache.lookup(key) is not None
    assert store.calls == 2


async def test_cache_is_bounded() -> None:
    store, clock = FakeStore(), FakeClock()
    cache = KeyCache(store, ttl=60, max_entries=10, clock=clock)
    keys = [generate_key() for _ in range(25)]
    for key in keys:
        await cache.lookup(key)
    assert len(cache) == 10
    calls = store.calls
    await cache.lookup(keys[-1])  # the newest are kept
    await cache.lookup(keys[0])  # the oldest were dropped
    assert store.calls == calls + 1


async def test_keys_exist_is_cached() -> None:
    store, clock = FakeStore(), FakeClock()
    cache = KeyCache(store, ttl=5, clock=clock)
    assert await cache.keys_exist() is False
    store.keys[generate_key()] = _record()
    assert await cache.keys_exist() is False  # cached
    clock.advance(5)
    assert await cache.keys_exist() is True
    assert store.count_calls == 2


def test_cache_arguments() -> None:
    with pytest.raises(ValueError, match="ttl"):
        KeyCache(FakeStore(), ttl=-1)
    with pytest.raises(ValueError, match="max_entries"):
        KeyCache(FakeStore(), max_entries=0)
    assert KeyCache(FakeStore(), ttl=2).ttl == 2


async def test_cache_over_a_real_store_and_the_cli_admin(tmp_path: Path) -> None:
    path = tmp_path / "wenxin.db"
    clock = FakeClock()
    async with SQLiteStore(path) as store:
        cache = KeyCache(store, ttl=5, clock=clock)
        with SyncKeyAdmin(path) as admin:  # `wenxin keys` in another process
            record, secret = admin.create_key("app", rpm=None, tpm=None, max_streams=3)
            assert await cache.keys_exist() is True
            found = await cache.authenticate(f"Bearer {secret}")
            assert found == record
            assert found.limits.max_streams == 3
            admin.revoke_key(record.id)
        assert await cache.authenticate(f"Bearer {secret}") == record  # within the TTL
        clock.advance(5)
        assert await cache.authenticate(f"Bearer {secret}") is None
        assert await cache.keys_exist() is False
