"""The gateway's pieces without a network: channel configuration and its errors, the breaker,
the router's weights and priorities, and what the error table moves to another channel."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from wenxin_stream import APIConnectionError, APIError, APITimeoutError, ClientRateLimitTimeout
from wenxin_stream._clock import FakeClock
from wenxin_stream.server import ServerConfig, ServerConfigError
from wenxin_stream.server._breaker import Breaker, BreakerState
from wenxin_stream.server._channel_config import (
    ChannelConfigError,
    GatewaySpec,
    parse_gateway,
)
from wenxin_stream.server._channels import Channels
from wenxin_stream.server._errors import NoChannelError, blame, upstream_failure
from wenxin_stream.server._metrics import Metrics

KEY = "bce-v3/ALTAK-gateway-tests/x"


def channel(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "kind": "qianfan-v2", "api_key": KEY, "models": ["*"], **extra}


# -- configuration --------------------------------------------------------------------------


def test_a_full_configuration_parses(tmp_path: Path) -> None:
    path = tmp_path / "serve.toml"
    path.write_text(
        """
[server]
port = 9000
breaker_cooldown = 5.0

[[channels]]
name = "qianfan-a"
kind = "qianfan-v2"
api_key_env = "A_KEY"
models = ["ernie-4.5-turbo-128k", "ernie-x1.1"]
model_map = { "ernie-x1.1" = "ernie-x1.1-preview" }
weight = 3
priority = 10
rpm = 300
tpm = 100000

[[channels]]
name = "qianfan-v1"
kind = "qianfan-v1"
api_key_env = "B_AK"
secret_key_env = "B_SK"
models = ["ernie-4.5-turbo-128k"]

[[channels]]
name = "self-hosted"
kind = "openai"
base_url = "http://gpu-box:8000/v1"
models = ["ernie-4.5-21b"]
priority = -1

[routes]
"ernie-4.5-turbo-128k" = ["qianfan-v1", "qianfan-a"]
""",
        encoding="utf-8",
    )
    env = {"A_KEY": "secret-a", "B_AK": "ak-b", "B_SK": "sk-b"}
    config = ServerConfig.load(environ=env, config_file=path)
    assert config.port == 9000
    assert config.breaker_cooldown == 5.0
    gateway = config.gateway
    assert gateway is not None
    a, b, local = gateway.channels
    assert (a.name, a.kind, a.weight, a.priority, a.rpm, a.tpm) == (
        "qianfan-a", "qianfan-v2", 3, 10, 300, 100000,
    )  # fmt: skip
    assert a.api_key == "secret-a"
    assert a.upstream_name("ernie-x1.1") == "ernie-x1.1-preview"
    assert (b.api_key, b.secret_key) == ("ak-b", "sk-b")
    assert local.base_url == "http://gpu-box:8000/v1"
    assert local.api_key is None
    # the route's order and members win over the channels' lists
    assert [c.name for c in gateway.channels_for("ernie-4.5-turbo-128k")] == [
        "qianfan-v1", "qianfan-a",
    ]  # fmt: skip
    assert [c.name for c in gateway.channels_for("ernie-x1.1")] == ["qianfan-a"]
    assert gateway.channels_for("ernie-lite-8k") == ()
    assert gateway.public_models() == ("ernie-4.5-21b", "ernie-4.5-turbo-128k", "ernie-x1.1")
    shown = repr(config) + repr(gateway)
    for secret in env.values():
        assert secret not in shown


def test_a_file_without_channels_keeps_one_implicit_channel(tmp_path: Path) -> None:
    path = tmp_path / "serve.toml"
    path.write_text("port = 9001\n", encoding="utf-8")
    assert ServerConfig.load(environ={}, config_file=path).gateway is None


@pytest.mark.parametrize(
    ("channels", "routes", "message"),
    [
        ([], None, "one or more [[channels]]"),
        (None, {"m": ["a"]}, "[routes] needs [[channels]]"),
        ([channel("a b")], None, "'name' must be"),
        ([channel("a"), channel("a")], None, "channel 'a': the name is used twice"),
        ([channel("a", kind="qianfan-v3")], None, "'kind' must be one of"),
        ([channel("a", colour="red")], None, "unknown key 'colour'"),
        ([channel("a", models=[])], None, "'models' must be a non-empty list"),
        ([channel("a", models=["x", "x"])], None, "lists a name twice"),
        ([channel("a", models=["x"], model_map={"y": "z"})], None, "maps 'y', which is not"),
        ([channel("a", weight=0)], None, "'weight' must be at least 1"),
        ([channel("a", rpm=-1)], None, "'rpm' must be at least 0"),
        ([channel("a", priority=True)], None, "'priority' must be a whole number"),
        ([channel("a", base_url="ftp://x")], None, "'base_url' must be an http"),
        ([{**channel("a"), "kind": "openai"}], None, "needs 'base_url'"),
        ([channel("a", api_key_env="A")], None, "give 'api_key' or 'api_key_env', not both"),
        ([{**channel("a"), "api_key": None, "api_key_env": "NOT_SET"}], None,
         "'api_key_env' names 'NOT_SET', which is not set"),
        ([channel("a", secret_key="s")], None, "takes the credentials api_key or "
         "access_key+secret_access_key"),
        ([{**channel("a", kind="qianfan-v1")}], None, "a qianfan-v1 channel takes"),
        ([channel("a")], {"m": ["b"]}, "route 'm': no channel is named 'b'"),
        ([channel("a")], {"m": []}, "route 'm': expected a non-empty list"),
        ([channel("a")], {"*": ["a"]}, "route '*': name a model"),
        ([channel("a")], {"m": ["a", "a"]}, "a channel is named twice"),
        ([channel("a", prices=[1, 2])], None, "'prices' must map model names"),
        ([channel("a", prices={"m": [1]})], None, "'prices' of 'm' must be [input, output]"),
        ([channel("a", prices={"m": [1, -2]})], None, "'prices' of 'm' must be"),
        ([channel("a", prices={"m": [True, 2]})], None, "'prices' of 'm' must be"),
        ([channel("a", models=["x"], prices={"m": [1, 2]})], None, "prices 'm', not in its"),
    ],
)  # fmt: skip
def test_invalid_channels_are_refused_by_name(channels: Any, routes: Any, message: str) -> None:
    if isinstance(channels, list):
        channels = [{k: v for k, v in c.items() if v is not None} for c in channels]
    with pytest.raises(ChannelConfigError) as refused:
        parse_gateway(channels, routes, {})
    assert message in str(refused.value)
    assert KEY not in str(refused.value)  # never a secret in a message


def test_config_file_errors_name_the_file_and_hide_secrets(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(
        '[[channels]]\nname = "a"\nkind = "qianfan-v2"\napi_key = "sk-very-secret"\n'
        'models = ["*"]\nweight = 0\n',
        encoding="utf-8",
    )
    with pytest.raises(ServerConfigError) as refused:
        ServerConfig.load(environ={}, config_file=path)
    assert str(path) in str(refused.value)
    assert "'weight' must be at least 1" in str(refused.value)
    assert "sk-very-secret" not in str(refused.value)
    path.write_text("[server]\ngateway = 1\n", encoding="utf-8")
    with pytest.raises(ServerConfigError, match="channels are"):
        ServerConfig.load(environ={}, config_file=path)
    with pytest.raises(ServerConfigError, match="gateway: channels come from the config file"):
        ServerConfig.load(environ={"WENXIN_GATEWAY": "x"})
    with pytest.raises(ServerConfigError, match="failover_attempts"):
        ServerConfig(failover_attempts=0)
    secret = ServerConfig(admin_key="admin-secret")
    assert "admin-secret" not in repr(secret)


# -- the breaker ------------------------------------------------------------------------------


def test_the_breaker_opens_cools_down_probes_and_closes() -> None:
    clock = FakeClock()
    breaker = Breaker(3, 10.0, clock)
    assert breaker.admit() is False
    breaker.failed(probe=False)
    breaker.failed(probe=False)
    breaker.succeeded(probe=False)  # a success resets the count
    assert breaker.failures == 0
    for _ in range(3):
        breaker.failed(probe=False)
    assert breaker.state is BreakerState.OPEN
    assert breaker.opened == 1
    assert breaker.admit() is None
    assert not breaker.available()
    assert breaker.cooldown_left() == 10.0
    clock.advance(9.5)
    assert breaker.admit() is None
    assert breaker.cooldown_left() == pytest.approx(0.5)
    clock.advance(0.5)
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.admit() is True  # the one probe
    assert breaker.admit() is None  # nobody else while it runs
    breaker.failed(probe=True)  # the probe failed: open again, a new cooldown
    assert breaker.state is BreakerState.OPEN
    assert breaker.opened == 2
    clock.advance(10.0)
    assert breaker.admit() is True
    breaker.released(probe=True)  # its client left: the next request probes
    assert breaker.admit() is True
    breaker.succeeded(probe=True)
    assert breaker.state is BreakerState.CLOSED
    assert breaker.failures == 0
    assert breaker.admit() is False


def test_a_breaker_with_threshold_zero_never_opens() -> None:
    breaker = Breaker(0, 1.0, FakeClock())
    for _ in range(100):
        breaker.failed(probe=False)
    assert breaker.state is BreakerState.CLOSED
    assert breaker.admit() is False


# -- the router -------------------------------------------------------------------------------


def _channels(*specs: dict[str, Any], clock: FakeClock | None = None, seed: int = 7) -> Channels:
    gateway = parse_gateway(list(specs), None, {})
    assert isinstance(gateway, GatewaySpec)
    config = ServerConfig(gateway=gateway, breaker_threshold=2, breaker_cooldown=5.0)
    return Channels.build(
        config, Metrics(), clock=clock or FakeClock(), rng=random.Random(seed).random
    )


def _release(channels: Channels, name: str, probe: bool = False) -> None:
    channels.ended(channels.by_name[name], "ok", probe=probe)


async def test_weights_spread_picks_within_the_top_priority_group() -> None:
    channels = _channels(
        channel("a", weight=3, priority=1),
        channel("b", weight=1, priority=1),
        channel("standby", weight=100),
    )
    counts = {"a": 0, "b": 0, "standby": 0}
    for _ in range(4000):
        picked, probe = channels.pick("ernie-4.5-turbo-128k", set())
        counts[picked.name] += 1
        _release(channels, picked.name, probe)
    assert counts["standby"] == 0
    assert counts["a"] / 4000 == pytest.approx(0.75, abs=0.03)  # binomial sd ≈ 0.007
    await channels.aclose()


async def test_the_router_skips_tried_cooling_and_limited_channels() -> None:
    clock = FakeClock()
    channels = _channels(channel("a", priority=2), channel("b", priority=1), channel("c"),
                         clock=clock)  # fmt: skip
    model = "ernie-4.5-turbo-128k"
    assert channels.pick(model, set())[0].name == "a"
    _release(channels, "a")
    assert channels.pick(model, {"a"})[0].name == "b"  # tried: the next group
    _release(channels, "b")
    a = channels.by_name["a"]
    for _ in range(2):  # threshold 2: cooling down
        channels.pick(model, set())
        channels.ended(a, "failed", probe=False)
    assert a.breaker.state is BreakerState.OPEN
    assert channels.down() == ["a"]
    assert channels.pick(model, set())[0].name == "b"
    _release(channels, "b")
    # b at its limits (its client's limiter paused for a minute, as after an RPM error)
    channels.by_name["b"].client._limiter.on_rate_limited(60.0, scope=None)
    assert channels.pick(model, set())[0].name == "c"
    _release(channels, "c")
    with pytest.raises(ClientRateLimitTimeout):  # b is only busy: 429, not 503
        channels.pick(model, {"c"})
    with pytest.raises(NoChannelError) as cooling:
        channels.pick(model, {"b", "c"})
    assert cooling.value.retry_after == pytest.approx(5.0)
    assert upstream_failure(cooling.value).status == 503
    assert upstream_failure(cooling.value).code == "no_channel_available"
    clock.advance(5.0)  # a's cooldown is over: it is probed
    picked, probe = channels.pick(model, set())
    assert (picked.name, probe) == ("a", True)
    assert channels.by_name["a"].breaker.state is BreakerState.HALF_OPEN
    with pytest.raises(ClientRateLimitTimeout):  # a probes, b is limited, c tried
        channels.pick(model, {"c"})
    _release(channels, "a", probe=True)
    assert a.breaker.state is BreakerState.CLOSED
    assert channels.down() == []
    health = {h["name"]: h for h in channels.health()}
    assert health["a"]["requests"]["failed"] == 2
    assert health["a"]["times_opened"] == 1
    assert health["b"]["rate_limit_wait"] > 50
    assert KEY not in repr(health)
    await channels.aclose()


async def test_routes_down_are_those_with_every_channel_open() -> None:
    clock = FakeClock()
    channels = _channels(
        channel("a", models=["m1"]), channel("b", models=["m1", "m2"]), clock=clock
    )
    for _ in range(2):
        channels.ended(channels.by_name["b"], "failed", probe=False)
    assert channels.down() == ["b"]
    assert channels.routes_down() == ["m2"]
    await channels.aclose()


def test_an_openai_channel_becomes_the_sdks_openai_compatible_client(tmp_path: Path) -> None:
    from wenxin_stream.server._channel_clients import build_channel_client

    gateway = parse_gateway(
        [{"name": "local", "kind": "openai", "base_url": "http://h:8000/v1",
          "api_key": "sk-local-secret", "models": ["ernie-4.5-21b"], "rpm": 60}], None, {},
    )  # fmt: skip
    assert gateway is not None
    (spec,) = gateway.channels
    client = build_channel_client(spec, ServerConfig(data_dir=tmp_path))
    assert (client.api, client.base_url, client.emulated) == ("openai", "http://h:8000/v1", False)
    assert "sk-local-secret" not in repr(client)


# -- blame: what moves to another channel -----------------------------------------------------


@pytest.mark.parametrize(
    ("error", "who"),
    [
        (APIError("bad", api="v1", code=336003, status_code=200), "client"),
        (APIError("long", api="v1", code=336007, status_code=200), "client"),
        (APIError("model", api="v2", code="invalid_model", status_code=401), "client"),
        (APIError("rpm", api="v1", code=336501, status_code=200), "busy"),
        (APIError("rpm", api="v2", code="rpm_rate_limit_exceeded", status_code=429), "busy"),
        (ClientRateLimitTimeout(30.0, 1.0), "busy"),
        (APIError("quota", api="v1", code=17, status_code=200), "channel"),
        (APIError("overloaded", api="v1", code=336100, status_code=200), "channel"),
        (APIError("auth", api="v2", code="invalid_iam_token", status_code=401), "channel"),
        (APIError("boom", api="v2", code=None, status_code=500), "channel"),
        (APIConnectionError("refused"), "channel"),
        (APITimeoutError("first_token", timeout=1.0), "channel"),
    ],
)
def test_blame_follows_the_error_table(error: Exception, who: str) -> None:
    assert blame(error) == who  # type: ignore[arg-type]
    status = upstream_failure(error).status  # type: ignore[arg-type]
    if who == "client":
        assert 400 <= status < 500
        assert status != 429
    else:
        assert status == 429 or status >= 500


async def test_a_default_model_no_channel_serves_stops_the_start_up(tmp_path: Path) -> None:
    from wenxin_stream.server import StartupError, create_app

    gateway = parse_gateway([channel("a", models=["ernie-speed-8k"])], None, {})
    app = create_app(ServerConfig(data_dir=tmp_path, gateway=gateway))
    with pytest.raises(StartupError, match="no channel serves the default model 'ernie-lite-8k'"):
        await app.startup()
    served = create_app(
        ServerConfig(data_dir=tmp_path / "b", gateway=gateway, default_model="ernie-speed-8k")
    )
    await served.startup()
    assert served.upstream.default_model == "ernie-speed-8k"
    await served.shutdown()


def test_the_gateway_configuration_survives_pickling() -> None:
    import pickle  # --workers hands the configuration to spawned processes

    gateway = parse_gateway([channel("a", models=["m"], model_map={"m": "up-m"})], {"m": ["a"]}, {})
    config = ServerConfig(gateway=gateway, admin_key="adm")
    again = pickle.loads(pickle.dumps(config))
    assert again == config
    assert again.gateway.channels[0].upstream_name("m") == "up-m"


def test_the_sample_configuration_of_the_docs_is_valid(tmp_path: Path) -> None:
    text = (Path(__file__).parents[2] / "docs" / "GATEWAY.md").read_text(encoding="utf-8")
    sample = text.split("```toml\n", 1)[1].split("```", 1)[0]
    path = tmp_path / "sample.toml"
    path.write_text(sample, encoding="utf-8")
    env = {"QIANFAN_MAIN_KEY": "k-main", "QIANFAN_BACKUP_AK": "ak", "QIANFAN_BACKUP_SK": "sk"}
    config = ServerConfig.load(environ=env, config_file=path)
    gateway = config.gateway
    assert gateway is not None
    assert [c.kind for c in gateway.channels] == ["qianfan-v2", "qianfan-v1", "openai"]
    served = [c.name for c in gateway.channels_for(config.default_model or "")]
    assert served == ["qianfan-main", "qianfan-backup", "gpu-box"]
    assert [c.name for c in gateway.channels_for("ernie-x1.1")] == ["qianfan-main"]
