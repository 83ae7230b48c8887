"""Several instances on one database: an instance that starts or stops ends only its own
streaming answers (each answer names its producer), never those another live instance
streams."""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path

import httpx
import redis
from serve_process import Serve
from server_helpers import EventReader, paced, running, wait_for

from services import Service
from wenxin_stream.emulator import ServerHandle

_databases = itertools.count(5)


def test_starting_and_stopping_another_instance_leaves_my_answer_streaming(
    tmp_path: Path, emu: ServerHandle, redis_service: Service
) -> None:
    url = redis_service.url.rsplit("/", 1)[0] + f"/{next(_databases)}"
    with redis.Redis.from_url(url) as client:
        client.flushdb()
    data = tmp_path / "data"  # one database for both
    with (
        running(data, emu.base_url, redis_url=url, checkpoint_interval=0.1) as a,
        httpx.Client(base_url=a.url, timeout=20) as client,
    ):
        cid = client.post("/api/conversations", json={}).json()["id"]
        request = client.build_request(
            "POST",
            f"/api/conversations/{cid}/messages",
            json={"content": paced("长", "interval=0.05;chunks=80")},
        )
        response = client.send(request, stream=True)
        reader = EventReader(response)
        start = reader.next()
        assert start is not None
        message_id = json.loads(start.data)["message_id"]

        def answer() -> dict[str, object]:
            messages = client.get(f"/api/conversations/{cid}").json()["messages"]
            return next(m for m in messages if m["id"] == message_id)

        with running(data, emu.base_url, redis_url=url):  # B starts, serves, stops
            assert answer()["status"] == "streaming"
        assert answer()["status"] == "streaming"
        # A's checkpoints still land (they only write rows still streaming)
        first = len(str(answer()["content"]))
        wait_for(lambda: len(str(answer()["content"])) > first, timeout=5)
        rest = reader.rest()
        response.close()
        assert rest[-1].event == "end"
        final = answer()
    assert final["status"] == "complete"
    assert final["end_reason"] == "completed"


def test_a_killed_instances_stored_answers_are_swept_by_a_live_one(
    tmp_path: Path, emu: ServerHandle, redis_service: Service
) -> None:
    """A ``kill -9``-ed instance leaves its answers ``streaming``; when none can be taken over,
    a live instance of the fleet ends them as ``server_crashed`` within about three lease TTLs
    (the key lapses, then two sweeps must find it gone), keeping the last checkpoint."""
    url = redis_service.url.rsplit("/", 1)[0] + f"/{next(_databases)}"
    with redis.Redis.from_url(url) as client:
        client.flushdb()
    data = tmp_path / "data"
    ttl = 1.5
    config = tmp_path / "fleet.toml"
    config.write_text(f"lease_ttl = {ttl}\nredis_timeout = 0.3\n")
    victim = Serve(data, emu.base_url, "--redis-url", url, "--config", str(config))
    try:
        with (
            running(data, emu.base_url, redis_url=url, lease_ttl=ttl, redis_timeout=0.3) as b,
            httpx.Client(base_url=victim.url, timeout=20) as client,
        ):
            cid = client.post("/api/conversations", json={}).json()["id"]
            request = client.build_request(
                "POST",
                f"/api/conversations/{cid}/messages",
                json={"content": paced("长", "interval=0.05;chunks=400")},
            )
            response = client.send(request, stream=True)
            reader = EventReader(response)
            start = reader.next()
            assert start is not None
            message_id = json.loads(start.data)["message_id"]
            for _ in range(20):  # past a checkpoint (every 0.25 s)
                assert reader.next() is not None

            def stored() -> dict[str, object]:
                with httpx.Client(base_url=b.url, timeout=10) as other:
                    messages = other.get(f"/api/conversations/{cid}").json()["messages"]
                return next(m for m in messages if m["id"] == message_id)

            time.sleep(2 * ttl)  # the victim is alive: B's sweeps leave its answer alone
            assert stored()["status"] == "streaming"
            victim.kill()
            killed = time.monotonic()
            # what the sweep is for: an answer no instance can take over (here its lease is
            # gone from Redis, as after a Redis that restarted empty); one that can be is
            # continued instead (tests/server/test_takeover.py)
            with redis.Redis.from_url(url) as client:
                client.delete("wenxin:leases:{answers}")
            final = wait_for(lambda: (m := stored())["status"] != "streaming" and m, 4 * ttl + 3)
            swept_after = time.monotonic() - killed
            response.close()
    finally:
        if victim.proc.poll() is None:
            victim.kill()
    assert (final["status"], final["end_reason"]) == ("partial", "server_crashed")
    assert final["content"]  # the last checkpoint is kept
    assert swept_after <= 3 * ttl + 2
