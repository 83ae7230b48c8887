"""``wenxin`` and ``wenxin emulate``: in-process argument handling and a real subprocess."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from wenxin_stream._version import __version__
from wenxin_stream.cli import CommandError, build_parser, main
from wenxin_stream.cli.emulate import config_from_args, is_loopback


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert __version__ in capsys.readouterr().out


def test_no_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "emulate" in capsys.readouterr().err


def test_refuses_remote_host(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["emulate", "--host", "0.0.0.0"]) == 2
    assert "--allow-remote" in capsys.readouterr().err
    assert is_loopback("127.0.0.1")
    assert is_loopback("::1")
    assert is_loopback("[::1]")
    assert is_loopback("localhost")
    assert not is_loopback("example.com")
    assert not is_loopback("10.0.0.1")


def test_config_from_flags(tmp_path: Path) -> None:
    creds = tmp_path / "c.json"
    creds.write_text(json.dumps({"apps": [{"api_key": "a", "secret_key": "b"}]}))
    scenario = tmp_path / "s.json"
    scenario.write_text(json.dumps([{"match": "x", "answer": "y"}]))
    args = build_parser().parse_args(
        [
            "emulate",
            "--seed=3",
            "--ttft=0",
            "--interval=0.1",
            "--v2-interval=0.01",
            "--token-ttl=5",
            f"--credentials={creds}",
            "--no-auth",
            "--rpm=10",
            "--tpm=1000",
            f"--scenario={scenario}",
            "--fault-rate=error=336100=0.1",
            "--fault-rate=stall=1;times=2=0.5",
            "--max-body-bytes=100",
            "--sse-charset",
            "--oauth-error-status=200",
            "--messages-error-code=336003",
            "--v2-alternation",
            "--v2-finish-reason=normal",
            "--endpoint=my-ep=My-Model",
            "--v2-model=a",
            "--v2-model=b",
            "--debug",
        ]
    )
    config = config_from_args(args)
    assert config.seed == 3
    assert config.credentials is not None
    assert config.credentials.apps == {"a": "b"}
    assert len(config.fault_rates) == 2
    assert config.fault_rates[1][1] == 0.5
    assert config.custom_endpoints == {"my-ep": "My-Model"}
    assert config.v2_models == {"a", "b"}
    assert config.scenarios[0].answer == "y"
    assert config.sse_charset
    assert config.v2_alternation
    assert config.debug
    assert config.no_auth


def test_openai_compatible_flags() -> None:
    default = config_from_args(build_parser().parse_args(["emulate"]))
    assert (default.openai_flavour, default.openai_api_key) == ("vllm", None)
    args = build_parser().parse_args(
        [
            "emulate",
            "--openai-compatible=fastdeploy",
            "--openai-api-key=emu-key-123",
            "--served-model-name=ernie-4.5-local",
            "--max-model-len=4096",
        ]
    )
    config = config_from_args(args)
    assert config.openai_flavour == "fastdeploy"
    assert config.openai_api_key == "emu-key-123"
    assert config.openai_model == "ernie-4.5-local"
    assert config.openai_max_model_len == 4096
    assert "emu-key-123" not in repr(config)
    assert "as fastdeploy with an API key" in config.mode_description


def test_openai_compatible_flag_refuses_other_servers(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["emulate", "--openai-compatible=sglang"])
    assert exc.value.code == 2
    assert "invalid choice: 'sglang'" in capsys.readouterr().err


@pytest.mark.parametrize(
    "flags",
    [
        ["--max-model-len=0"],
        ["--openai-api-key= "],
        ["--fault-rate=bogus=1=0.5"],
        ["--fault-rate=error=2"],
        ["--endpoint=nomodel"],
        ["--ttft=-1"],
        ["--credentials=/nonexistent"],
    ],
)
def test_bad_flags(flags: list[str]) -> None:
    args = build_parser().parse_args(["emulate", *flags])
    with pytest.raises(CommandError) as exc:
        config_from_args(args)
    assert exc.value.status == 2


def test_run_in_process(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import uvicorn

    seen = {}

    def fake_run(self: uvicorn.Server, sockets: list[object]) -> None:
        seen["sockets"] = sockets
        raise KeyboardInterrupt

    monkeypatch.setattr(uvicorn.Server, "run", fake_run)
    assert (
        main(["emulate", "--port", "0", "--credentials", os.devnull.replace("null", "null")]) == 2
    )
    assert main(["emulate", "--port", "0", "--no-auth"]) == 0
    err = capsys.readouterr().err
    assert re.search(
        r"ERNIE emulator listening on http://127\.0\.0\.1:\d+ "
        r"\(dev mode: any credentials accepted; requests without credentials accepted; "
        r"/v1/chat/completions as vllm with no API key\)",
        err,
    )
    assert len(seen["sockets"]) == 1


def test_port_in_use(capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["emulate", "--port", str(port)]) == 1
    assert "cannot listen" in capsys.readouterr().err


def test_emulate_subprocess_clean_sigint() -> None:
    command = [
        sys.executable,
        "-c",
        "import sys; from wenxin_stream.cli import main; sys.exit(main())",
    ]
    process = subprocess.Popen(
        [*command, "emulate", "--port", "0", "--ttft", "0", "--interval", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        line = process.stderr.readline()
        match = re.search(r"listening on (http://127\.0\.0\.1:\d+) \(dev mode", line)
        assert match, line
        base = match.group(1)
        deadline = time.monotonic() + 10
        while True:
            try:
                if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        plain = httpx.post(
            base + "/v2/chat/completions",
            json={"model": "ernie-4.0-8k", "messages": [{"role": "user", "content": "你好"}]},
            headers={"Authorization": "Bearer k"},
        )
        assert plain.status_code == 200
        with pytest.raises(httpx.RemoteProtocolError):  # the injected abort, logged by nobody
            httpx.post(
                base + "/v2/chat/completions",
                json={
                    "model": "ernie-4.0-8k",
                    "messages": [{"role": "user", "content": "hi"}],
                    "stream": True,
                },
                headers={"Authorization": "Bearer k", "X-Wenxin-Fault": "cut_after=1"},
            )
    finally:
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=15)
    assert process.returncode == 0
    assert "Traceback" not in err
    assert "returned without completing" not in err
    assert err.strip() == "", err
