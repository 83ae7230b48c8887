"""The emulator's model roster: unknown and retired models, /v2/models, roster files, flags."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from emu_helpers import V2_CHAT, bearer, v2_body

from servers import FAST, emulator
from wenxin_stream.cli.emulate import config_from_args, register
from wenxin_stream.emulator import ConfigError, EmulatorConfig
from wenxin_stream.emulator._config import load_roster, parse_roster
from wenxin_stream.emulator._roster import today


def ask(client: httpx.Client, model: str, **fields: Any) -> httpx.Response:
    return client.post(V2_CHAT, json=v2_body(model=model, **fields), headers=bearer())


def clock_at(year: int, month: int, day: int, hour: int = 0) -> float:
    return datetime(year, month, day, hour, tzinfo=UTC).timestamp()


@pytest.mark.parametrize("model", ["ernie-5.1", "ERNIE-X1.1-Preview", "ernie-4.5-vl-28b-a3b"])
def test_live_models_and_aliases_answer(client: httpx.Client, model: str) -> None:
    response = ask(client, model)
    assert response.status_code == 200
    assert response.json()["model"] == model  # echoed as sent


def test_an_unknown_model_is_401_invalid_model(client: httpx.Client) -> None:
    response = ask(client, "deepseek-v3.2")
    assert response.status_code == 401
    error = response.json()["error"]
    assert error == {
        "code": "invalid_model",
        "message": "The model does not exist or you do not have access to it.",
        "type": "invalid_request_error",
    }


@pytest.mark.parametrize("model", ["ernie-5.0", "ernie-4.5-turbo-128k", "ernie-4.5-turbo-20260402"])
def test_a_retired_model_is_403_model_offline(client: httpx.Client, model: str) -> None:
    response = ask(client, model, stream=True)  # errors are never SSE, also for streams
    assert response.status_code == 403
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"] == {
        "code": "model_offline",
        "message": "The model is offline",
        "type": "access_denied",
    }


def test_retirement_follows_the_clock_in_beijing_time() -> None:
    # 2026-10-28 16:00 UTC is 2026-10-29 00:00 in Beijing: the day ERNIE 5.0 retired.
    before = EmulatorConfig(**FAST, clock=lambda: clock_at(2026, 10, 28, 15))
    after = EmulatorConfig(**FAST, clock=lambda: clock_at(2026, 10, 28, 16))
    assert str(today(after)) == "2026-10-29"
    with emulator(before) as early, httpx.Client(base_url=early.base_url) as c:
        assert ask(c, "ernie-5.0").status_code == 200
    with emulator(after) as late, httpx.Client(base_url=late.base_url) as c:
        assert ask(c, "ernie-5.0").status_code == 403


@pytest.mark.parametrize(
    ("overrides", "model", "status"),
    [
        ({"unknown_models": "accept"}, "deepseek-v3.2", 200),
        ({"retired_models": "invalid"}, "ernie-5.0", 401),
        ({"retired_models": "serve"}, "ernie-5.0", 200),
        ({"v2_models": frozenset({"my-model"})}, "my-model", 200),
        ({"v2_models": frozenset({"my-model"})}, "ernie-5.1", 401),
    ],
)
def test_the_roster_rules_are_configurable(
    overrides: dict[str, Any], model: str, status: int
) -> None:
    with emulator(**overrides) as handle, httpx.Client(base_url=handle.base_url) as c:
        assert ask(c, model).status_code == status


def test_the_model_list_is_the_live_roster(client: httpx.Client) -> None:
    response = client.get("/v2/models", headers=bearer())
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "list"
    ids = [item["id"] for item in body["data"]]
    assert {"ernie-5.1", "ernie-x1.1", "ernie-x1.1-preview", "ernie-lite-8k"} <= set(ids)
    assert "ernie-5.0" not in ids  # retired
    assert "bloomz-7b" not in ids  # v1 only
    first = body["data"][0]
    assert first == {"id": first["id"], "object": "model", "owned_by": "", "created": 0}


def test_the_model_list_needs_credentials_like_baidu(client: httpx.Client) -> None:
    response = client.get("/v2/models")
    assert response.status_code == 403
    assert response.json() == {"code": "AccessDenied", "message": "Access denied."}


def test_the_model_list_of_an_allow_list() -> None:
    allowed = frozenset({"ernie-x1.1", "my-model", "ernie-5.0"})
    with emulator(v2_models=allowed) as handle, httpx.Client(base_url=handle.base_url) as c:
        ids = [item["id"] for item in c.get("/v2/models", headers=bearer()).json()["data"]]
    assert ids == ["ernie-x1.1", "my-model"]


def test_a_roster_file_changes_one_model(tmp_path: Path) -> None:
    path = tmp_path / "roster.toml"
    path.write_text(
        '[[model]]\nid = "ernie-5.1"\nreasoning = "none"\n\n'
        '[[model]]\nid = "house-model"\nname = "House"\nfamily = "custom"\ntools = false\n',
        encoding="utf-8",
    )
    roster = load_roster(path)
    with emulator(roster=roster) as handle, httpx.Client(base_url=handle.base_url) as c:
        plain = ask(c, "ernie-5.1").json()["choices"][0]["message"]
        assert "reasoning_content" not in plain  # it no longer thinks
        tools = [{"type": "function", "function": {"name": "f"}}]
        refused = ask(c, "house-model", tools=tools)
        assert refused.status_code == 400
        assert "function calling" in refused.json()["error"]["message"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[[model]\nid =", "not valid TOML"),
        ('[[model]]\nid = "ernie-5.1"\nreasoning = "often"\n', "reasoning must be one of"),
        ("[settings]\nx = 1\n", "model"),
    ],
)
def test_a_bad_roster_is_a_config_error(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_roster(text)


def test_a_missing_roster_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the roster file"):
        load_roster(tmp_path / "nope.toml")


def test_the_emulate_flags_of_the_models_group(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    roster = tmp_path / "r.toml"
    roster.write_text('[[model]]\nid = "ernie-5.1"\nreasoning = "always"\n', encoding="utf-8")
    args = parser.parse_args(
        [
            "emulate",
            "--roster",
            str(roster),
            "--unknown-models",
            "accept",
            "--retired-models",
            "serve",
            "--unknown-capability",
            "no",
            "--unsupported-params",
            "ignore",
            "--thinking-interval",
            "0",
            "--reasoning-in-answer",
            "null",
            "--reasoning-tokens-detail",
            "--no-tool-call-index",
            "--tool-call-pieces",
            "3",
            "--search-status-placement",
            "delta",
        ]
    )
    config = config_from_args(args)
    spec = config.roster.lookup("ernie-5.1")
    assert spec is not None
    assert spec.reasoning == "always"
    assert (config.unknown_models, config.retired_models) == ("accept", "serve")
    assert (config.unknown_capability, config.unsupported_params) == (False, "ignore")
    assert (config.thinking_interval, config.reasoning_in_answer) == (0.0, "null")
    assert config.reasoning_tokens_detail is True
    assert (config.tool_call_index, config.tool_call_pieces) == (False, 3)
    assert config.search_status_placement == "delta"
    defaults = config_from_args(parser.parse_args(["emulate"]))
    assert defaults.unknown_models == "reject"
    assert defaults.roster.lookup("ernie-5.1") is not None


@pytest.mark.parametrize(
    "overrides",
    [
        {"unknown_models": "maybe"},
        {"retired_models": "gone"},
        {"unsupported_params": "warn"},
        {"reasoning_in_answer": "missing"},
        {"search_status_placement": "top"},
        {"tool_call_pieces": 0},
        {"thinking_interval": -1},
    ],
)
def test_bad_model_settings_are_config_errors(overrides: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        EmulatorConfig(**overrides)
