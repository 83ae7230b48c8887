"""The gateway end to end: ``wenxin serve`` in front of several emulators (each a channel with
faults of its own), over real sockets — spreading by weight, a killed channel, a rate-limit
storm on one account, a mid-stream cut continued on another channel, client errors kept on
one channel, bounded failover, readiness, metrics and the admin view."""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from server_helpers import (
    BEARER,
    Probe,
    Recorder,
    Running,
    new_conversation,
    running,
    sse_events,
    texts,
    wait_for,
)

from servers import FAST, serving
from wenxin_stream import Client, WenxinError
from wenxin_stream.emulator import EmulatorConfig, ServerHandle
from wenxin_stream.emulator import create_app as create_emulator
from wenxin_stream.emulator._config import Scenario
from wenxin_stream.emulator._faults import parse_fault_spec
from wenxin_stream.server._channel_config import GatewaySpec, parse_gateway

MODEL = "ernie-speed-8k"
STORY = "从前有座山，山里有座庙，庙里有个老和尚在给小和尚讲故事。讲的是什么呢？还是从前有座山。"


def v2_channel(name: str, url: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name, "kind": "qianfan-v2", "base_url": url, "api_key": BEARER,
        "models": ["*"], "emulated": True, **extra,
    }  # fmt: skip


def gateway(*channels: dict[str, Any], routes: dict[str, list[str]] | None = None) -> GatewaySpec:
    spec = parse_gateway(list(channels), routes, {})
    assert spec is not None
    return spec


@contextmanager
def probed(**overrides: Any) -> Iterator[tuple[Probe, ServerHandle]]:
    """A fast emulator whose requests are counted (``Probe.started``)."""
    probe = Probe(create_emulator(EmulatorConfig(**{**FAST, **overrides})))
    with serving(probe) as handle:
        yield probe, handle


def ask(c: httpx.Client, content: str = "你好", **body: Any) -> httpx.Response:
    return c.post(
        "/v1/chat/completions",
        json={"model": MODEL, "messages": [{"role": "user", "content": content}], **body},
    )


def admin(srv: Running, headers: dict[str, str] | None = None) -> dict[str, Any]:
    with srv.client() as c:
        r = c.get("/api/admin/channels", headers=headers or {})
    assert r.status_code == 200, r.text
    return {ch["name"]: ch for ch in r.json()["channels"]}


def metric(srv: Running, name: str, **labels: str) -> float:
    with srv.client() as c:
        text = c.get("/metrics").text
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    found = re.search("^" + re.escape(f"{name}{{{want}}}") + r" (\S+)$", text, re.MULTILINE)
    assert found, f"no {name} {labels}"
    return float(found.group(1))


def test_answers_spread_by_weight_within_the_top_priority(tmp_path: Path) -> None:
    with probed() as (a, ea), probed() as (b, eb), probed() as (standby, es):
        spec = gateway(
            v2_channel("a", ea.base_url, weight=3, priority=1),
            v2_channel("b", eb.base_url, weight=1, priority=1),
            v2_channel("standby", es.base_url),
        )
        with running(tmp_path, ea.base_url, gateway=spec) as srv, srv.client() as c:
            for _ in range(120):
                assert ask(c).status_code == 200
            health = admin(srv)
    assert a.started + b.started == 120
    assert standby.started == 0
    assert abs(a.started - 90) <= 20  # weight 3 of 4; binomial sd ≈ 4.7
    assert health["a"]["requests"]["ok"] == a.started
    assert health["b"]["requests"]["ok"] == b.started


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class EmulatorProcess:
    """A ``wenxin emulate`` process on ``port`` (killed with SIGKILL by :meth:`kill`)."""

    def __init__(self, port: int, *args: str) -> None:
        self.port = port
        env = {k: v for k, v in os.environ.items() if not k.startswith(("QIANFAN_", "WENXIN_"))}
        self.proc = subprocess.Popen(
            [str(Path(sys.executable).with_name("wenxin")), "emulate", "--port", str(port),
             "--ttft", "0", "--interval", "0", "--v2-interval", "0", *args],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_for(self._listening, timeout=30, step=0.05)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _listening(self) -> bool:
        assert self.proc.poll() is None, "wenxin emulate exited"
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return True
        except OSError:
            return False

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(10)


def test_a_killed_channel_fails_no_request_and_its_breaker_closes_after_a_probe(
    tmp_path: Path,
) -> None:
    port = _free_port()
    first = EmulatorProcess(port)
    with ExitStack() as stack:
        stack.callback(lambda: first.proc.poll() is None and first.kill())
        b, eb = stack.enter_context(probed())
        spec = gateway(
            v2_channel("a", first.url, priority=1),  # preferred while it works
            v2_channel("b", eb.base_url),
        )
        srv = stack.enter_context(
            running(tmp_path, eb.base_url, gateway=spec, breaker_threshold=2, breaker_cooldown=1.0)
        )
        c = stack.enter_context(srv.client())
        for _ in range(3):
            assert ask(c).status_code == 200
        assert b.started == 0
        first.kill()  # the channel's process dies
        for _ in range(10):
            r = ask(c)
            assert r.status_code == 200, r.text  # no failed request
            assert r.json()["choices"][0]["message"]["content"]
        assert b.started == 10
        health = admin(srv)["a"]
        assert health["state"] == "open"
        assert health["requests"]["failed"] == 2  # two tries, then it was left out
        assert health["failovers"]["before_first_token"] == 2
        assert metric(srv, "wenxin_channel_state", channel="a") == 2.0
        assert metric(srv, "wenxin_channel_requests_total", channel="a", outcome="failed") == 2
        ready = c.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["channels_down"] == ["a"]

        second = EmulatorProcess(port)  # it comes back
        stack.callback(second.kill)
        wait_for(lambda: admin(srv)["a"]["state"] == "half_open", timeout=5)
        assert ask(c).status_code == 200  # the probe: served by a
        assert b.started == 10
        health = admin(srv)["a"]
        assert (health["state"], health["consecutive_failures"]) == ("closed", 0)
        assert health["times_opened"] == 1
        assert health["requests"]["ok"] == 4
        assert c.get("/readyz").json()["channels_down"] == []


SELF_HOSTED_KEY = "sk-self-hosted-gateway-test"


def test_two_qianfan_accounts_and_a_self_hosted_server_survive_losing_any_one(
    tmp_path: Path,
) -> None:
    """The gateway the issue asks for: two Qianfan accounts (v2 bearer, v1 OAuth) and a
    self-hosted ERNIE 4.5 behind vLLM's OpenAI-compatible API (an ``openai`` channel with a
    key and a model map), one route over all three. Each process is killed in turn: no
    request fails, the other two serve it, and the lost one serves again once restarted."""
    ports = {"qf-a": _free_port(), "qf-b": _free_port(), "local": _free_port()}
    local_args = ("--openai-compatible", "vllm", "--openai-api-key", SELF_HOSTED_KEY)
    args: dict[str, tuple[str, ...]] = {"qf-a": (), "qf-b": (), "local": local_args}
    with ExitStack() as stack:
        procs = {name: EmulatorProcess(port, *args[name]) for name, port in ports.items()}
        stack.callback(lambda: [p.kill() for p in procs.values() if p.proc.poll() is None])
        url = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
        spec = gateway(
            v2_channel("qf-a", url["qf-a"]),
            {"name": "qf-b", "kind": "qianfan-v1", "base_url": url["qf-b"],
             "api_key": "ak-gateway-tests", "secret_key": "sk-gateway-tests",
             "models": [MODEL], "emulated": True},
            {"name": "local", "kind": "openai", "base_url": url["local"] + "/v1",
             "api_key": SELF_HOSTED_KEY, "models": [MODEL],
             "model_map": {MODEL: "baidu/ERNIE-4.5-21B-A3B-PT"},
             "prices": {MODEL: [0.1, 0.4]}},  # its own cost, not the catalogue's
        )  # fmt: skip
        srv = stack.enter_context(
            running(tmp_path, url["qf-a"], gateway=spec, breaker_threshold=1, breaker_cooldown=1.0)
        )
        c = stack.enter_context(srv.client())
        reported = 0
        for _ in range(30):  # every channel serves its share
            r = ask(c)
            assert r.status_code == 200
            reported += r.json()["usage"]["total_tokens"]
        assert all(health["requests"]["ok"] > 0 for health in admin(srv).values())

        def stored() -> list[Any]:
            with contextlib.closing(sqlite3.connect(srv.db)) as db:
                return db.execute(
                    "SELECT channel, prompt_tokens, completion_tokens, total_tokens, cost_nano,"
                    " estimated FROM usage_records"
                ).fetchall()

        # spend: each request once, at its channel's price (stored by the checkpoint tick)
        wait_for(lambda: len(stored()) >= 30, timeout=10)
        spend = stored()
        assert len(spend) == 30
        assert sum(row[3] for row in spend) == reported  # what the upstreams reported
        assert {row[0] for row in spend} == set(ports)
        for channel, prompt, completion, _, cost, estimated in spend:
            assert not estimated
            if channel == "local":
                assert cost == prompt * 100 + completion * 400  # 0.1 / 0.4 CNY per M tokens
        for lost in ports:
            procs[lost].kill()
            served = {name: health["requests"]["ok"] for name, health in admin(srv).items()}
            asked = 0
            while asked < 9 or admin(srv)[lost]["requests"]["failed"] == 0:  # until it was tried
                assert asked < 60, "the router never tried the lost channel"
                r = ask(c, f"问题 {asked}", stream=asked % 3 == 0)
                asked += 1
                assert r.status_code == 200, r.text  # no failed request
                assert "error" not in r.text
            now = admin(srv)
            assert now[lost]["requests"]["ok"] == served[lost]  # the lost one served none
            assert now[lost]["state"] != "closed"
            assert sum(h["requests"]["ok"] for h in now.values()) == sum(served.values()) + asked
            procs[lost] = EmulatorProcess(ports[lost], *args[lost])  # it comes back
            wait_for(lambda lost=lost: admin(srv)[lost]["state"] == "half_open", timeout=5)
            for _ in range(20):  # the probe reaches it among the others' picks
                assert ask(c).status_code == 200
                if admin(srv)[lost]["state"] == "closed":
                    break
            assert admin(srv)[lost]["requests"]["ok"] == served[lost] + 1
    audit = (tmp_path / "audit.jsonl").read_text()
    assert audit.count("\n") >= 30 + 3 * 9
    assert SELF_HOSTED_KEY not in audit


def test_a_336501_storm_on_one_account_moves_its_traffic_to_the_other(tmp_path: Path) -> None:
    storm = ((parse_fault_spec("error=336501"), 1.0),)
    with probed(fault_rates=storm) as (a, ea), probed() as (b, eb):
        spec = gateway(v2_channel("a", ea.base_url), v2_channel("b", eb.base_url))
        with running(tmp_path, ea.base_url, gateway=spec) as srv, srv.client() as c:
            for _ in range(30):
                r = ask(c)
                assert r.status_code == 200, r.text
            health = admin(srv)
    assert b.started == 30  # every answer came from b
    assert 1 <= a.started <= 2  # a's limiter pauses it after ERNIE's RPM error: left out
    assert health["a"]["requests"]["busy"] == a.started
    assert health["a"]["state"] == "closed"  # busy is not broken: no cooldown
    assert health["a"]["rate_limit_wait"] > 1


def test_a_storm_on_every_channel_is_a_429_with_retry_after(tmp_path: Path) -> None:
    storm = ((parse_fault_spec("error=336501"), 1.0),)
    with probed(fault_rates=storm) as (a, ea), probed(fault_rates=storm) as (b, eb):
        spec = gateway(v2_channel("a", ea.base_url), v2_channel("b", eb.base_url))
        with running(tmp_path, ea.base_url, gateway=spec) as srv, srv.client() as c:
            first = ask(c)
            again = ask(c)
    assert first.status_code == 429
    assert int(first.headers["retry-after"]) >= 1
    assert first.json()["error"]["code"] == "upstream_rate_limited"
    assert (a.started, b.started) == (1, 1)  # each once; then both are paused
    assert again.status_code == 429
    assert int(again.headers["retry-after"]) > 1


def _partial(url: str) -> str:
    """What the cutting emulator delivers of the story before it cuts (asked directly)."""
    client = Client(api="v2", v2_base_url=url, bearer_token=BEARER, retry=0, environ={})
    try:
        with client.chat.stream(model=MODEL, messages="讲个故事") as stream:
            for _ in stream:
                pass
    except WenxinError as exc:
        return exc.partial_text
    finally:
        client.close()
    raise AssertionError("the emulator did not cut the answer")


@pytest.mark.parametrize("seam", [0, 4])
def test_a_mid_stream_cut_is_continued_on_another_channel_without_repeated_text(
    tmp_path: Path, seam: int
) -> None:
    cut = Scenario(None, "故事", STORY, parse_fault_spec("cut_after=3"))
    with probed(scenarios=(cut,)) as (_a, ea):
        shown = _partial(ea.base_url)
        assert shown
        assert STORY.startswith(shown)
        assert shown != STORY
        # b's answer to the continuation: with seam 0 the exact rest of the story (the
        # emulator continues an answer it knows); with seam 4 another story that first
        # repeats the last 4 characters shown, as a real model often does: trimmed
        rest = STORY[len(shown) :] if seam == 0 else "后来小和尚长大了，也开始讲这个故事。"
        go_on = Scenario(None, "故事", STORY if seam == 0 else shown[-seam:] + rest, None)
        recorder = Recorder(create_emulator(EmulatorConfig(**FAST, scenarios=(go_on,))))
        with serving(recorder) as eb:
            spec = gateway(v2_channel("a", ea.base_url, priority=1), v2_channel("b", eb.base_url))
            with running(tmp_path, ea.base_url, gateway=spec) as srv, srv.client() as c:
                cid = new_conversation(c, model=MODEL)
                r = c.post(f"/api/conversations/{cid}/messages", json={"content": "讲个故事"})
                assert r.status_code == 200
                events = sse_events(r.content)
                end = json.loads(events[-1].data)
                gen = srv.app.relay.streams[json.loads(events[0].data)["stream_id"]]
                requests = [(q.channel, q.outcome, q.continued, q.usage is not None)
                            for q in gen.upstream_requests]  # fmt: skip
                answer = c.get(f"/api/conversations/{cid}").json()["messages"][1]
                mid_stream = metric(
                    srv, "wenxin_channel_failovers_total", channel="a", when="mid_stream"
                )
    assert texts(events) == shown + rest  # one answer, nothing repeated
    assert end["end_reason"] == "completed"
    assert "error" not in end
    assert answer["content"] == shown + rest
    assert answer["status"] == "complete"
    assert mid_stream == 1
    # the spend hook: each upstream request once, a cut one without usage of its own
    assert requests == [("a", "failed", False, False), ("b", "ok", True, True)]
    continued = recorder.bodies[-1]["messages"]
    assert continued[-2:] == [
        {"role": "assistant", "content": shown},
        {"role": "user", "content": "继续"},
    ]
    with sqlite3.connect(srv.db) as db:
        (extras,) = db.execute(
            "SELECT extras FROM messages WHERE id = ?", (answer["id"],)
        ).fetchone()
        spend = db.execute(
            "SELECT attempt, channel, kind, estimated, prompt_tokens, completion_tokens"
            " FROM usage_records WHERE stream_id = ? ORDER BY attempt",
            (gen.stream_id,),
        ).fetchall()
    assert json.loads(extras)["channels"] == ["a", "b"]
    # spend per channel: the cut request on a (no usage came: estimated), the continuation on
    # b at the usage b reported — each upstream request once
    b_usage = gen.upstream_requests[1].usage
    assert b_usage is not None
    assert [row[:4] for row in spend] == [(1, "a", "first", 1), (2, "b", "continuation", 0)]
    assert spend[1][4:] == (b_usage.prompt_tokens, b_usage.completion_tokens)


def test_a_cut_with_no_other_channel_left_stays_a_cut(tmp_path: Path) -> None:
    cut = Scenario(None, "故事", STORY, parse_fault_spec("cut_after=3"))
    with probed(scenarios=(cut,)) as (_a, ea):
        spec = gateway(v2_channel("a", ea.base_url))
        with running(tmp_path, ea.base_url, gateway=spec) as srv, srv.client() as c:
            r = ask(c, "讲个故事", stream=True)
    events = [e for e in sse_events(r.content) if e.data != "[DONE]"]
    assert events
    assert "error" in json.loads(events[-1].data)
    assert all(json.loads(e.data).get("choices", [{}])[0].get("finish_reason") is None
               for e in events[:-1])  # fmt: skip


def test_client_errors_are_never_retried_on_another_channel(tmp_path: Path) -> None:
    with probed() as (a, ea), probed() as (b, eb):
        spec = gateway(v2_channel("a", ea.base_url), v2_channel("b", eb.base_url))
        with running(tmp_path, ea.base_url, gateway=spec) as srv, srv.client() as c:
            r = ask(c, "你好 [[wenxin:fault error=336003]]")
            health = admin(srv)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["type"] == "invalid_request_error"
    assert a.started + b.started == 1  # one upstream request, on one channel
    outcomes = [health[n]["requests"]["client_error"] for n in ("a", "b")]
    assert sorted(outcomes) == [0, 1]
    assert all(h["consecutive_failures"] == 0 for h in health.values())


def test_failover_is_bounded_by_attempts(tmp_path: Path) -> None:
    down = ((parse_fault_spec("error=336100"), 1.0),)
    with (
        probed(fault_rates=down) as (a, ea),
        probed(fault_rates=down) as (b, eb),
        probed(fault_rates=down) as (d, ed),
    ):
        spec = gateway(*(v2_channel(n, e.base_url) for n, e in (("a", ea), ("b", eb), ("d", ed))))
        with (
            running(tmp_path, ea.base_url, gateway=spec, failover_attempts=2) as srv,
            srv.client() as c,
        ):
            r = ask(c)
    assert r.status_code == 503
    assert r.json()["error"]["code"] == "upstream_overloaded"
    assert a.started + b.started + d.started == 2


def test_readyz_is_503_when_a_route_has_no_channel_left(tmp_path: Path) -> None:
    down = ((parse_fault_spec("error=336100"), 1.0),)
    with probed(fault_rates=down) as (a, ea), probed() as (_b, eb):
        spec = gateway(
            v2_channel("a", ea.base_url, models=["ernie-lite-pro-128k"]),
            v2_channel("b", eb.base_url, models=[MODEL]),
        )
        with (
            running(tmp_path, eb.base_url, gateway=spec, breaker_threshold=1,
                    breaker_cooldown=30.0, default_model=MODEL) as srv,
            srv.client() as c,
        ):  # fmt: skip
            assert ask(c).status_code == 200  # MODEL: b
            failed = c.post(
                "/v1/chat/completions",
                json={
                    "model": "ernie-lite-pro-128k",
                    "messages": [{"role": "user", "content": "你好"}],
                },
            )
            refused = c.post(
                "/v1/chat/completions",
                json={
                    "model": "ernie-lite-pro-128k",
                    "messages": [{"role": "user", "content": "你好"}],
                },
            )
            unknown = c.post(
                "/v1/chat/completions",
                json={"model": "ernie-tiny-8k", "messages": [{"role": "user", "content": "你好"}]},
            )
            ready = c.get("/readyz")
    assert failed.status_code == 503
    assert failed.json()["error"]["code"] == "upstream_overloaded"
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "no_channel_available"
    assert int(refused.headers["retry-after"]) > 20
    assert a.started == 1  # the second ask never reached the cooling channel
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "model_not_found"
    assert ready.status_code == 503
    body = ready.json()
    assert (body["routes_down"], body["channels_down"]) == (["ernie-lite-pro-128k"], ["a"])


def test_without_channels_the_implicit_default_behaves_as_before(
    tmp_path: Path, emu: ServerHandle
) -> None:
    with running(tmp_path, emu.base_url) as srv, srv.client() as c:
        assert c.get("/readyz").json() == {"status": "ready", "upstream": "emulator"}
        assert ask(c).status_code == 200
        view = c.get("/api/admin/channels").json()  # dev mode: open to the operator
        exposition = c.get("/metrics").text
    assert view["gateway"] is False
    (default,) = view["channels"]
    assert default["name"] == "default"
    assert default["state"] == "closed"
    assert "wenxin_channel_" not in exposition  # /metrics as before channels existed


def test_the_admin_view_needs_the_admin_key(tmp_path: Path, emu: ServerHandle) -> None:
    spec = gateway(v2_channel("a", emu.base_url))
    with running(tmp_path, emu.base_url, gateway=spec, admin_key="adm-1") as srv:
        with srv.client() as c:
            missing = c.get("/api/admin/channels")
            wrong = c.get("/api/admin/channels", headers={"authorization": "Bearer adm-2"})
        health = admin(srv, {"authorization": "Bearer adm-1"})
    assert missing.status_code == wrong.status_code == 401
    assert wrong.json()["error"]["code"] == "invalid_admin_key"
    assert health["a"]["kind"] == "qianfan-v2"
    assert BEARER not in json.dumps(health)


def test_the_admin_view_is_closed_outside_dev_mode_without_a_key(
    tmp_path: Path, emu: ServerHandle
) -> None:
    from wenxin_stream.server._store import SyncKeyAdmin

    with running(tmp_path, emu.base_url) as srv:
        with SyncKeyAdmin(srv.db) as keys:
            _, secret = keys.create_key("ops", rpm=None, tpm=None, max_streams=None)
        with srv.client() as c:  # the key cache sees the key within its TTL
            refused = wait_for(
                lambda: (r := c.get("/api/admin/channels")).status_code == 403 and r, timeout=10
            )
            with_api_key = c.get(
                "/api/admin/channels", headers={"authorization": f"Bearer {secret}"}
            )
    assert refused.json()["error"]["code"] == "admin_disabled"
    assert with_api_key.status_code == 403  # an API key is never an admin key


def test_a_channels_own_rpm_is_respected_before_sending(tmp_path: Path) -> None:
    with probed() as (a, ea), probed() as (b, eb):
        spec = gateway(
            # preferred, but 12 a minute: the SDK's limiter allows 2 per 10 s window of it
            v2_channel("a", ea.base_url, priority=1, rpm=12),
            v2_channel("b", eb.base_url),
        )
        with running(tmp_path, ea.base_url, gateway=spec) as srv, srv.client() as c:
            for _ in range(5):
                assert ask(c).status_code == 200
            health = admin(srv)
    assert (a.started, b.started) == (2, 3)  # a was never sent a request over its limit
    assert health["a"]["requests"] == {**health["a"]["requests"], "ok": 2, "busy": 0}
    assert health["a"]["rate_limit_wait"] > 1


def test_a_qianfan_v1_channel_and_a_v2_channel_serve_one_model(tmp_path: Path) -> None:
    down = ((parse_fault_spec("error=336100"), 1.0),)
    with probed() as (one, e1), probed(fault_rates=down) as (two, e2):
        v1 = {
            "name": "v1-oauth", "kind": "qianfan-v1", "base_url": e1.base_url,
            "api_key": "ak-gateway-tests", "secret_key": "sk-gateway-tests",
            "models": [MODEL], "emulated": True,
        }  # fmt: skip
        spec = gateway(v2_channel("v2-key", e2.base_url, priority=1), v1)
        with (
            running(tmp_path, e1.base_url, gateway=spec, default_model=MODEL) as srv,
            srv.client() as c,
        ):
            r = ask(c)
            info = c.get("/api/info").json()
            health = admin(srv)
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"]
    assert two.started == 1  # the v2 channel failed first…
    assert health["v1-oauth"]["requests"]["ok"] == 1  # …and the v1 one answered
    assert one.started == 2  # its OAuth token, then the chat
    assert info["api"] == "v1"  # histories follow v1's stricter rules
    assert MODEL in info["models"]


def test_the_openai_stream_of_a_continued_answer_finishes_once(tmp_path: Path) -> None:
    cut = Scenario(None, "故事", STORY, parse_fault_spec("cut_after=3"))
    whole = Scenario(None, "故事", STORY, None)
    with probed(scenarios=(cut,)) as (_, ea), probed(scenarios=(whole,)) as (_, eb):
        spec = gateway(v2_channel("a", ea.base_url, priority=1), v2_channel("b", eb.base_url))
        with running(tmp_path, ea.base_url, gateway=spec) as srv, srv.client() as c:
            r = ask(c, "讲个故事", stream=True)
    events = sse_events(r.content)
    assert events[-1].data == "[DONE]"
    chunks = [json.loads(e.data) for e in events[:-1]]
    assert all("error" not in chunk for chunk in chunks)
    text = "".join(ch["choices"][0]["delta"].get("content") or "" for ch in chunks
                   if ch.get("choices"))  # fmt: skip
    finishes = [ch["choices"][0]["finish_reason"] for ch in chunks
                if ch.get("choices") and ch["choices"][0].get("finish_reason")]  # fmt: skip
    assert text == STORY  # the emulator continues the story it knows: exact
    assert finishes == ["stop"]


def test_the_model_lists_hold_what_the_channels_serve(tmp_path: Path, emu: ServerHandle) -> None:
    spec = gateway(
        v2_channel("a", emu.base_url, models=[MODEL, "ernie-4.5-21b-local"]),
        v2_channel("b", emu.base_url, models=["ernie-lite-8k"]),
    )
    with (
        running(tmp_path, emu.base_url, gateway=spec, default_model=MODEL) as srv,
        srv.client() as c,
    ):
        listed = c.get("/v1/models").json()["data"]
        picker = c.get("/api/models").json()["models"]
    assert [m["id"] for m in listed] == ["ernie-4.5-21b-local", "ernie-lite-8k", MODEL]
    assert listed[0]["owned_by"] == "wenxin-gateway"  # not in the catalogue: its id alone
    assert listed[2]["context_window"]  # the catalogue's facts where it knows the model
    assert sorted(m["id"] for m in picker) == ["ernie-lite-8k", MODEL]
