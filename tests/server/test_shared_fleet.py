"""Two ``wenxin serve`` instances sharing one Redis: limits count for the fleet, the stream
slots of a ``kill -9``-ed instance come back within the lease TTL, and a Redis that is gone
is 503 ``shared_state_unavailable`` (and ``/readyz`` says so) — never per-process limits."""

from __future__ import annotations

import contextlib
import itertools
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from serve_process import Serve
from server_helpers import EventReader, paced, running, wait_for
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from servers import FAST, serving
from services import Service, redis_server
from wenxin_stream import AsyncClient
from wenxin_stream.emulator import EmulatorConfig, ServerHandle
from wenxin_stream.emulator import create_app as create_emulator
from wenxin_stream.server._revocations import announce_revocation
from wenxin_stream.server._store import SyncKeyAdmin

_databases = itertools.count(1)


@pytest.fixture
def redis_url(redis_service: Service) -> str:
    """A Redis database of this test's own (numbers 1…15 of the session's server, flushed)."""
    db = next(_databases) % 16 or 1
    url = redis_service.url.rsplit("/", 1)[0] + f"/{db}"
    with redis.Redis.from_url(url) as client:
        client.flushdb()
    return url


def _completion(url: str, content: str = "你好", *, key: str | None = None) -> httpx.Response:
    headers = {} if key is None else {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=url, timeout=10, headers=headers) as c:
        return c.post(
            "/v1/chat/completions",
            json={"model": "ernie-lite-8k", "messages": [{"role": "user", "content": content}]},
        )


def test_rpm_counts_for_the_fleet_not_per_instance(
    tmp_path: Path, emu: ServerHandle, redis_url: str
) -> None:
    limits = {"redis_url": redis_url, "default_rpm": 4}
    with (
        running(tmp_path / "a", emu.base_url, **limits) as a,
        running(tmp_path / "b", emu.base_url, **limits) as b,
    ):
        started = time.monotonic()
        statuses = [_completion(srv.url).status_code for srv in (a, b) * 6]
        elapsed = time.monotonic() - started
        refused = _completion(b.url)
    admitted = statuses.count(200)
    # 4 at once from a full bucket, plus what refilled meanwhile (one per 15 s)
    assert 4 <= admitted <= 4 + int(elapsed / 15), statuses
    assert statuses.count(429) == 12 - admitted
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "rate_limited"
    assert 1 <= int(refused.headers["retry-after"]) <= 15


def test_a_killed_instances_stream_slots_free_themselves_within_the_lease_ttl(
    tmp_path: Path, emu: ServerHandle, redis_url: str
) -> None:
    ttl = 1.5
    config = tmp_path / "victim.toml"
    config.write_text(f"default_max_streams = 1\nlease_ttl = {ttl}\nredis_timeout = 0.3\n")
    victim = Serve(
        tmp_path / "victim", emu.base_url, "--redis-url", redis_url, "--config", str(config)
    )
    try:
        with httpx.Client(base_url=victim.url, timeout=10) as c:
            request = c.build_request(
                "POST",
                f"/api/conversations/{_conversation(victim.url)}/messages",
                json={"content": paced("长", "interval=0.05;chunks=400")},
            )
            response = c.send(request, stream=True)
            reader = EventReader(response)  # kept: a dropped reader closes the response
            assert reader.next() is not None  # streaming: the slot is taken
            with running(
                tmp_path / "b",
                emu.base_url,
                redis_url=redis_url,
                default_max_streams=1,
                lease_ttl=ttl,
                redis_timeout=0.3,
            ) as b:
                time.sleep(ttl)  # longer than one TTL: the victim's renewals keep its lease
                refused = _completion(b.url)
                assert refused.status_code == 429
                assert refused.json()["error"]["code"] == "too_many_streams"
                victim.kill()
                killed = time.monotonic()
                wait_for(lambda: _completion(b.url).status_code == 200, timeout=ttl + 3)
                freed_after = time.monotonic() - killed
            response.close()
    finally:
        if victim.proc.poll() is None:
            victim.kill()
    assert freed_after <= ttl + 0.5


def _conversation(url: str) -> str:
    with httpx.Client(base_url=url, timeout=10) as c:
        return str(c.post("/api/conversations", json={}).json()["id"])


def test_a_redis_that_is_gone_is_503_and_not_ready(tmp_path: Path, emu: ServerHandle) -> None:
    with contextlib.ExitStack() as stack:
        with redis_server() as service:  # a Redis of its own, stopped under the server
            srv = stack.enter_context(
                running(
                    tmp_path / "a",
                    emu.base_url,
                    redis_url=service.url,
                    default_rpm=100,
                    redis_timeout=0.3,
                )
            )
            assert _completion(srv.url).status_code == 200
            with httpx.Client(base_url=srv.url, timeout=10) as c:
                assert c.get("/readyz").status_code == 200
        r = _completion(srv.url)
        assert r.status_code == 503
        assert r.json()["error"]["code"] == "shared_state_unavailable"
        assert r.headers["retry-after"] == "1"
        with httpx.Client(base_url=srv.url, timeout=10) as c:
            ready = c.get("/readyz")
            assert ready.status_code == 503
            assert ready.json()["error"]["code"] == "shared_state_unavailable"
            cid = c.post("/api/conversations", json={}).json()["id"]
            r = c.post(f"/api/conversations/{cid}/messages", json={"content": "在吗"})
            assert r.status_code == 503
            assert r.json()["error"]["code"] == "shared_state_unavailable"


def test_one_upstream_token_refresh_for_the_fleet_also_after_a_111(
    tmp_path: Path, redis_url: str
) -> None:
    emulator = create_emulator(EmulatorConfig(**FAST))
    auth = emulator.shared.auth
    issued: list[int] = []
    issue = auth.issue_token

    def counted(*args: Any) -> Any:
        issued.append(1)
        return issue(*args)

    auth.issue_token = counted  # type: ignore[method-assign]
    with serving(emulator) as upstream, contextlib.ExitStack() as stack:
        instances = [
            stack.enter_context(
                running(
                    tmp_path / name,
                    upstream.base_url,
                    client=AsyncClient(
                        api_key="fleet-ak",
                        secret_key="fleet-sk",
                        base_url=upstream.base_url,
                        api="v1",
                        retry=0,
                    ),
                    upstream_api="v1",
                    redis_url=redis_url,
                )
            )
            for name in ("a", "b")
        ]

        def burst() -> list[int]:
            with ThreadPoolExecutor(8) as pool:
                urls = [srv.url for srv in instances] * 4
                return [r.status_code for r in pool.map(_completion, urls)]

        assert burst() == [200] * 8  # 8 concurrent answers on 2 instances: one OAuth call
        assert len(issued) == 1
        with redis.Redis.from_url(redis_url) as shared:
            [key] = [k for k in shared.keys("wenxin:token:*") if not k.endswith(b":lock")]
            assert shared.pttl(key) > 0  # a secret kept no longer than it is valid
            token = json.loads(shared.get(key))
        auth.expire_token(token["value"])  # ERNIE now answers 111 to every instance
        assert burst() == [200] * 8
        assert len(issued) == 2  # one refresh, used by both


def test_a_revocation_is_enforced_on_every_instance_at_once(
    tmp_path: Path, emu: ServerHandle, redis_url: str
) -> None:
    database = str(tmp_path / "shared.db")
    with contextlib.ExitStack() as stack:
        a, b = (
            stack.enter_context(
                running(tmp_path / name, emu.base_url, redis_url=redis_url, database_url=database)
            )
            for name in ("a", "b")
        )
        with SyncKeyAdmin(database) as admin:
            first, first_secret = admin.create_key("first", rpm=None, tpm=None, max_streams=None)
            second, second_secret = admin.create_key("second", rpm=None, tpm=None, max_streams=None)
            admin.create_key("keeper", rpm=None, tpm=None, max_streams=None)  # no dev mode
        a.app.keys._ttl = 0.0  # A asks the store every time; B trusts its cache for 5 s
        for srv in (a, b):
            srv.app.keys.invalidate()  # dev mode seen before the keys existed
            for secret in (first_secret, second_secret):
                assert _completion(srv.url, key=secret).status_code == 200  # cached as valid
        socket = stack.enter_context(
            connect(
                b.url.replace("http://", "ws://") + "/api/ws",
                additional_headers={"Authorization": f"Bearer {first_secret}"},
            )
        )
        # revoked on A: A's cache (TTL 0 here) finds it revoked and tells the fleet
        with SyncKeyAdmin(database) as admin:
            admin.revoke_key(first.id)
        assert _completion(a.url, key=first_secret).status_code == 401
        wait_for(lambda: b.app.revocations is not None and b.app.revocations.received, 2.0)
        assert _completion(b.url, key=first_secret).status_code == 401  # B's TTL is 5 s
        socket.send(json.dumps({"type": "ask", "id": "after", "content": "还在吗"}))
        frame = json.loads(socket.recv(timeout=5))
        assert (frame["type"], frame["code"]) == ("error", "invalid_api_key")
        with pytest.raises(ConnectionClosed) as closed:
            socket.recv(timeout=5)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 1008
        # revoked by `wenxin keys revoke` (the database, then the notice)
        with SyncKeyAdmin(database) as admin:
            admin.revoke_key(second.id)
        assert announce_revocation(redis_url, second.id) == 2  # both instances listen
        for srv in (a, b):
            wait_for(
                lambda srv=srv: _completion(srv.url, key=second_secret).status_code == 401, 2.0
            )


def test_a_start_sent_before_its_decision_is_cut_when_another_instance_took_the_room(
    tmp_path: Path, emu: ServerHandle, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from wenxin_stream.server import _limits_redis

    monkeypatch.setattr(_limits_redis, "ROOM_AGE", 60.0)  # however slow this machine is
    limits = {"redis_url": redis_url, "default_max_streams": 10}
    body = {
        "model": "ernie-lite-8k",
        "stream": True,
        "messages": [{"role": "user", "content": paced("长", "ttft=4;chunks=1")}],
    }

    def hold(url: str) -> int:  # one slow stream of the key (its first token after 4 s)
        with httpx.Client(timeout=30) as c, c.stream("POST", url, json=body) as r:
            return r.status_code

    def open_streams(url: str) -> float:
        lines = httpx.get(f"{url}/metrics", timeout=10).text.splitlines()
        return next(float(x.split()[-1]) for x in lines if x.startswith("wenxin_streams_in"))

    with (
        running(tmp_path / "a", emu.base_url, **limits) as a,
        running(tmp_path / "b", emu.base_url, **limits) as b,
        ThreadPoolExecutor(10) as pool,
    ):
        # A admits one answer: it learns the key has room (1 stream of 10 open)
        assert _completion(a.url).status_code == 200
        held = [pool.submit(hold, f"{b.url}/v1/chat/completions") for _ in range(10)]
        wait_for(lambda: open_streams(b.url) == 10, timeout=20)  # B took every slot
        # A still believes in the room: its request goes out, then the decision cuts it
        cut = _completion(a.url)
        assert cut.status_code == 429
        assert cut.json()["error"]["code"] == "too_many_streams"
        # the room is forgotten: the next start waits for its decision (no request out)
        assert _completion(a.url).status_code == 429
        metrics = httpx.get(f"{a.url}/metrics", timeout=10).text
        assert [f.result(timeout=30) for f in held] == [200] * 10
    assert 'wenxin_admission_overlaps_total{decision="refused"} 1' in metrics
    assert 'wenxin_admission_overlaps_total{decision="admitted"} 0' in metrics
    # the cut request was started and ended at once, before anything reached the client
    assert 'wenxin_stream_ends_total{reason="cancelled"} 1' in metrics
