"""Fidelity: the official SDKs stream complete answers from the emulator, configured only as a
user would configure them for Baidu (environment variables and base URLs).

The SDKs live in ``.venv-peers`` (installed by ``scripts/install``), never in the package's own
environment: each case runs ``tests/peers/drive.py`` in that environment as a subprocess
against an emulator served on loopback by this test process.
"""

from __future__ import annotations

import base64
import json
import os
import struct
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from servers import emulator
from wenxin_stream.emulator import EmulatorConfig, ServerHandle, parse_credentials

ROOT = Path(__file__).resolve().parents[2]
PEERS_PYTHON = ROOT / ".venv-peers" / "bin" / "python"
DRIVER = Path(__file__).with_name("drive.py")

pytestmark = pytest.mark.peers

if not PEERS_PYTHON.exists():  # pragma: no cover - depends on the machine
    if os.environ.get("CI"):
        raise RuntimeError("CI needs .venv-peers: scripts/install creates it")
    pytest.skip("run scripts/install to create .venv-peers", allow_module_level=True)

IAM_AK, IAM_SK = "peer-access-key", "peer-secret-key"
CREDENTIALS = {
    "apps": [{"api_key": "peer-ak", "secret_key": "peer-sk"}],
    "api_keys": ["bce-v3/ALTAK-peer/secret"],
    "iam": [{"access_key": IAM_AK, "secret_key": IAM_SK}],
}


@pytest.fixture(scope="module")
def strict_emu() -> Iterator[ServerHandle]:
    """An emulator that accepts only the configured credentials and verifies signatures."""
    config = EmulatorConfig(
        ttft=0.0,
        interval=0.01,
        v2_interval=0.0,
        credentials=parse_credentials(CREDENTIALS),
    )
    with emulator(config) as handle:
        yield handle


def drive(scenario: str, env: dict[str, str], prompt: str = "介绍一下长城") -> dict[str, Any]:
    """Run one driver scenario in the peers' environment and return its JSON result."""
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("QIANFAN_", "EB_", "OPENAI_", "COV_", "COVERAGE_"))
    }
    with tempfile.TemporaryDirectory() as home:
        full = {
            **clean,
            "HOME": home,
            "QIANFAN_DISABLE_CACHE": "true",
            "QIANFAN_LLM_API_RETRY_BACKOFF_FACTOR": "0.05",
            "QIANFAN_LLM_API_RETRY_JITTER": "0.05",
            "DRIVE_PROMPT": prompt,
            **env,
        }
        proc = subprocess.run(
            [str(PEERS_PYTHON), str(DRIVER), scenario],
            env=full,
            capture_output=True,
            text=True,
            timeout=50,
            check=False,
        )
    assert proc.returncode == 0, f"{scenario} failed:\n{proc.stdout}\n{proc.stderr[-3000:]}"
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def expected_answer(handle: ServerHandle, prompt: str, *, v2: bool) -> str:
    """The complete answer the emulator gives for ``prompt``, fetched without streaming."""
    with httpx.Client(base_url=handle.base_url, timeout=10) as c:
        if v2:
            r = c.post(
                "/v2/chat/completions",
                headers={"Authorization": "Bearer bce-v3/ALTAK-peer/secret"},
                json={"model": "ernie-4.0-8k", "messages": [{"role": "user", "content": prompt}]},
            )
            text: str = r.json()["choices"][0]["message"]["content"]
            return text
        token = c.post(
            "/oauth/2.0/token",
            params={
                "grant_type": "client_credentials",
                "client_id": "peer-ak",
                "client_secret": "peer-sk",
            },
        ).json()["access_token"]
        r = c.post(
            "/rpc/2.0/ai_custom/v1/wenxinworkshop/chat/completions",
            params={"access_token": token},
            json={"messages": [{"role": "user", "content": prompt}]},
        )
        return r.json()["result"]


def v1_env(handle: ServerHandle) -> dict[str, str]:
    return {"QIANFAN_BASE_URL": handle.base_url, "QIANFAN_AK": "peer-ak", "QIANFAN_SK": "peer-sk"}


def test_qianfan_v1_oauth_streams_the_whole_answer(strict_emu: ServerHandle) -> None:
    result = drive("qianfan_v1", v1_env(strict_emu))
    assert result["text"] == expected_answer(strict_emu, "介绍一下长城", v2=False)
    assert result["chunks"] >= 3
    assert result["last"]["is_end"] is True
    assert result["last"]["usage"]["completion_tokens"] > 0


def test_qianfan_v1_async_path(strict_emu: ServerHandle) -> None:
    result = drive("qianfan_v1_async", v1_env(strict_emu))
    assert result["text"] == expected_answer(strict_emu, "介绍一下长城", v2=False)
    assert result["last"]["is_end"] is True


def test_qianfan_retries_336100_until_it_passes(strict_emu: ServerHandle) -> None:
    prompt = "重试测试 [[wenxin:fault error=336100;times=2]]"
    result = drive("qianfan_v1", v1_env(strict_emu), prompt=prompt)
    assert result["text"] == expected_answer(strict_emu, "重试测试", v2=False)


def test_qianfan_refreshes_its_token_on_111(strict_emu: ServerHandle) -> None:
    env = {**v1_env(strict_emu), "QIANFAN_ACCESS_TOKEN_REFRESH_MIN_INTERVAL": "0"}
    prompt = "令牌过期 [[wenxin:fault expire_token=1;times=1]]"
    result = drive("qianfan_v1", env, prompt=prompt)
    assert result["text"] == expected_answer(strict_emu, "令牌过期", v2=False)


def test_qianfan_v1_iam_signature_verified(strict_emu: ServerHandle) -> None:
    env = {
        "QIANFAN_BASE_URL": strict_emu.base_url,
        "QIANFAN_CONSOLE_API_BASE_URL": strict_emu.base_url,
        "QIANFAN_ACCESS_KEY": IAM_AK,
        "QIANFAN_SECRET_KEY": IAM_SK,
    }
    result = drive("qianfan_v1", env)
    assert result["text"] == expected_answer(strict_emu, "介绍一下长城", v2=False)


def test_qianfan_v2_bearer_key(strict_emu: ServerHandle) -> None:
    env = {
        "QIANFAN_CONSOLE_API_BASE_URL": strict_emu.base_url,
        "QIANFAN_BEARER_TOKEN": "bce-v3/ALTAK-peer/secret",
    }
    result = drive("qianfan_v2", env)
    assert result["text"] == expected_answer(strict_emu, "介绍一下长城", v2=True)
    assert result["last"]["choices"][0]["finish_reason"] == "stop"


def test_qianfan_v2_mints_a_bearer_token_with_iam_keys(strict_emu: ServerHandle) -> None:
    env = {
        "QIANFAN_CONSOLE_API_BASE_URL": strict_emu.base_url,
        "QIANFAN_IAM_BASE_URL": strict_emu.base_url,
        "QIANFAN_ACCESS_KEY": IAM_AK,
        "QIANFAN_SECRET_KEY": IAM_SK,
    }
    result = drive("qianfan_v2", env)
    assert result["text"] == expected_answer(strict_emu, "介绍一下长城", v2=True)


def test_erniebot_with_an_access_token(strict_emu: ServerHandle) -> None:
    with httpx.Client(base_url=strict_emu.base_url) as c:
        token = c.get(
            "/oauth/2.0/token",
            params={
                "grant_type": "client_credentials",
                "client_id": "peer-ak",
                "client_secret": "peer-sk",
            },
        ).json()["access_token"]
    env = {
        "EB_API_TYPE": "qianfan",
        "EB_BASE_URL": strict_emu.base_url + "/rpc/2.0/ai_custom/v1/wenxinworkshop",
        "EB_ACCESS_TOKEN": token,
    }
    result = drive("erniebot_v1", env)
    assert result["text"] == expected_answer(strict_emu, "介绍一下长城", v2=False)
    assert result["chunks"] >= 3


def test_openai_sdk_on_v2(strict_emu: ServerHandle) -> None:
    env = {"DRIVE_BASE_URL": strict_emu.base_url, "DRIVE_API_KEY": "bce-v3/ALTAK-peer/secret"}
    result = drive("openai_v2", env)
    assert result["text"] == expected_answer(strict_emu, "介绍一下长城", v2=True)
    assert result["last"]["usage"]["total_tokens"] > 0


def test_driver_is_not_importable_from_the_package_environment() -> None:
    # The peers must never leak into the package's own environment.
    for name in ("qianfan", "erniebot"):
        proc = subprocess.run(
            [sys.executable, "-c", f"import {name}"], capture_output=True, check=False
        )
        assert proc.returncode != 0, f"{name} is installed in the package environment"


# --- today's ERNIE, read by the official openai SDK unchanged -------------------------------


@pytest.fixture(scope="module")
def today_emu() -> Iterator[ServerHandle]:
    """A dev-mode emulator with the default catalogue, thinking unpaced for speed."""
    config = EmulatorConfig(ttft=0.0, interval=0.0, v2_interval=0.0, thinking_interval=0.0)
    with emulator(config) as handle:
        yield handle


def openai_env(handle: ServerHandle, **extra: str) -> dict[str, str]:
    return {"DRIVE_BASE_URL": handle.base_url, "DRIVE_API_KEY": "bce-v3/ALTAK-peer/x", **extra}


def test_openai_streams_x1_1_reasoning_then_the_answer(today_emu: ServerHandle) -> None:
    result = drive("openai_reasoning", openai_env(today_emu), prompt="9.11 和 9.8 哪个大？")
    assert result["reasoning"].startswith("【模拟思考】")
    assert result["text"].startswith("【离线模拟】")
    assert result["switches"] == 1  # thinking first, then the answer, never interleaved
    usage = result["last"]["usage"]
    assert usage["completion_tokens"] > 0


def test_openai_two_step_tool_call_with_ernie_5_1(today_emu: ServerHandle) -> None:
    result = drive("openai_tools", openai_env(today_emu), prompt="北京今天天气怎么样？")
    (call,) = result["streamed"]
    assert call["name"] == "get_current_weather"
    assert json.loads(call["arguments"]) == {"location": "北京"}
    assert len(call["id"]) == 32
    assert result["stream_finish"] == "tool_calls"
    assert result["whole_finish"] == "tool_calls"
    assert result["whole_calls"][0]["function"]["name"] == "get_current_weather"
    assert 'get_current_weather 返回了 {"temp": 21}' in result["final"]
    assert result["final_finish"] == "stop"


def test_openai_reads_search_results_with_ernie_5_1(today_emu: ServerHandle) -> None:
    result = drive("openai_search", openai_env(today_emu))
    assert [r["index"] for r in result["results"]] == [1, 2, 3]
    assert all(r["url"].startswith("https://") and r["title"] for r in result["results"])
    assert "^[1]^" in result["text"]
    assert [r["index"] for r in result["whole_results"]] == [1, 2, 3]


def test_openai_asks_a_current_vision_model_about_an_image(today_emu: ServerHandle) -> None:
    # ernie-4.5-turbo-vl and ernie-5.0 retired on 2026-10-29; ernie-4.5-vl-28b-a3b is live.
    header = struct.pack(">IIBBBBB", 640, 480, 8, 6, 0, 0, 0)
    png = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + header + b"\0" * 4
    image = "data:image/png;base64," + base64.b64encode(png).decode()
    env = openai_env(today_emu, DRIVE_MODEL="ernie-4.5-vl-28b-a3b", DRIVE_IMAGE=image)
    result = drive("openai_image", env, prompt="图里是什么？")
    assert "PNG 图片（640×480 像素" in result["text"]


@pytest.mark.parametrize(
    ("model", "cls", "status", "code"),
    [
        ("ernie-4.5-turbo-vl", "PermissionDeniedError", 403, "model_offline"),
        ("ernie-5.0", "PermissionDeniedError", 403, "model_offline"),
        ("gpt-4o", "AuthenticationError", 401, "invalid_model"),
    ],
)
def test_openai_sees_retired_and_unknown_models_as_baidu_answers_them(
    today_emu: ServerHandle, model: str, cls: str, status: int, code: str
) -> None:
    result = drive("openai_error", openai_env(today_emu, DRIVE_MODEL=model))
    assert (result["class"], result["status"]) == (cls, status)
    assert result["body"]["code"] == code


# --- a self-hosted ERNIE 4.5 (the emulator's OpenAI-compatible mode) -------------------------


@pytest.mark.parametrize(
    ("flavour", "model", "field", "error"),
    [
        ("vllm", "baidu/ERNIE-4.5-21B-A3B-PT", "reasoning", ("NotFoundError", 404)),
        ("fastdeploy", "default", "reasoning_content", ("BadRequestError", 400)),
    ],
)
def test_openai_sdk_on_a_self_hosted_server(
    flavour: str, model: str, field: str, error: tuple[str, int]
) -> None:
    config = EmulatorConfig(
        ttft=0.0, v2_interval=0.0, thinking_interval=0.0, openai_flavour=flavour,
        openai_api_key="peer-key",
    )  # fmt: skip
    env = {"DRIVE_API_KEY": "peer-key", "DRIVE_PREFIX": "/v1", "DRIVE_MODEL": model}
    with emulator(config) as handle:
        result = drive("openai_self_hosted", {**env, "DRIVE_BASE_URL": handle.base_url})
    assert result["fields"] == [field]
    assert result["reasoning"].startswith("【模拟思考】")
    assert result["text"].startswith("【离线模拟】")
    assert result["usage"]["completion_tokens"] > 0
    assert (result["error"]["class"], result["error"]["status"]) == error
