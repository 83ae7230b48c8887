"""``wenxin serve`` and ``scripts/run`` from the command line: how to change the port."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import pytest

from wenxin_stream.cli import main

ROOT = Path(__file__).resolve().parents[2]


def test_address_in_use_says_how_to_change_the_port(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        status = main(["serve", "--port", str(port), "--data-dir", str(tmp_path)])
    assert status == 1
    err = capsys.readouterr().err
    assert f"cannot listen on 127.0.0.1:{port}" in err
    assert "--port N or WENXIN_PORT=N" in err


def _run_script(env: dict[str, str], *args: str) -> list[str]:
    """The ``wenxin serve`` arguments scripts/run would pass (its last line, run with a fake
    install and a fake wenxin that prints its arguments)."""
    script = (ROOT / "scripts" / "run").read_text()
    script = script.replace("scripts/install", "true").replace(
        "exec .venv/bin/wenxin serve", "printf '%s\\n'"
    )
    env = {"PATH": os.environ["PATH"], **env}
    out = subprocess.run(
        ["bash", "-c", script, "run", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return out.stdout.split()


def test_scripts_run_honours_the_environment_and_flags() -> None:
    assert _run_script({}) == ["--host", "127.0.0.1", "--port", "8000", "--data-dir", "./data"]
    # WENXIN_PORT / WENXIN_HOST reach `wenxin serve` through the environment unchanged.
    assert _run_script({"WENXIN_PORT": "8011", "WENXIN_HOST": "127.0.0.2"}) == [
        "--data-dir",
        "./data",
    ]
    assert _run_script({}, "--port", "9001")[-2:] == ["--port", "9001"]  # the last one wins


def test_a_misspelt_flag_shows_the_subcommands_usage(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["ask", "--modle", "x", "你好"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: wenxin ask ")
    assert "wenxin ask: error: unrecognized arguments: --modle" in err
    with pytest.raises(SystemExit):
        main(["--bogus"])
    assert capsys.readouterr().err.startswith("usage: wenxin [-h]")
