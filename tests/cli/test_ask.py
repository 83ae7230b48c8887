"""``wenxin ask``: the real command in a subprocess (streaming, Ctrl-C, exit codes), and
in-process runs of ``main`` against the emulator on loopback for the flag matrix.

Subprocesses get no ``QIANFAN_*`` variables, so they use the embedded emulator, paced by
``WENXIN_EMULATOR_TTFT`` / ``WENXIN_EMULATOR_INTERVAL``; fault directives in the question
change one answer.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import coverage
import pytest

from wenxin_stream import _embedded
from wenxin_stream._settings import ENV_VARS
from wenxin_stream.cli import main
from wenxin_stream.cli._common import cli_output
from wenxin_stream.emulator import ServerHandle

ROOT = Path(__file__).resolve().parents[2]
WENXIN = str(Path(sys.executable).with_name("wenxin"))
SUMMARY = re.compile(
    r"^— (?P<model>\S+) · first token (?P<ttft>\d+) ms · total (?P<total>[\d.]+) s · "
    r"(?P<p>\d+)\+(?P<c>\d+)=(?P<t>\d+) tokens · (?P<end>[a-z ]+)$",
    re.MULTILINE,
)
NOTICE = "(offline emulator: no ERNIE credentials configured — answers are simulated"


def cli_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QIANFAN_")}
    if coverage.Coverage.current() is not None:  # measure the command too (see pyproject.toml)
        env["COVERAGE_PROCESS_START"] = str(ROOT / "pyproject.toml")
    env.update(WENXIN_EMULATOR_TTFT="0", WENXIN_EMULATOR_INTERVAL="0.01", LC_ALL="C.UTF-8")
    return env


def default_sigint() -> None:
    """Children start with Python's usual SIGINT handling even if ours is ignored."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def wenxin(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [WENXIN, *args],
        input=stdin,
        capture_output=True,
        text=True,
        encoding="utf-8",
        env=cli_env(),
        timeout=30,
        check=False,
    )


def assert_one_error_line(stderr: str, text: str) -> None:
    errors = [line for line in stderr.splitlines() if line.startswith("wenxin: error: ")]
    assert len(errors) == 1, stderr
    assert text in errors[0]
    assert "Traceback" not in stderr


# --- the real command -----------------------------------------------------------------------


def test_answer_streams_as_it_arrives() -> None:
    """stdout is a pipe (block-buffered by default): pieces still arrive one by one."""
    start = time.monotonic()
    proc = subprocess.Popen(
        [WENXIN, "ask", "长城 [[wenxin:fault interval=0.2;chunks=5]]"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=cli_env(),
    )
    assert proc.stdout is not None
    output = b""
    first_text_at = None
    while True:
        ready, _, _ = select.select([proc.stdout], [], [], 10)
        assert ready, "no output for 10 s"
        data = os.read(proc.stdout.fileno(), 4096)
        if not data:
            break
        output += data
        if first_text_at is None and "【".encode() in output:
            first_text_at = time.monotonic()
    proc.wait(10)
    ended_at = time.monotonic()
    assert proc.returncode == 0
    assert first_text_at is not None
    assert ended_at - first_text_at > 0.5, (first_text_at - start, ended_at - start)
    text = output.decode("utf-8")
    notice, answer = text.index(NOTICE), text.index("【离线模拟】")
    summary = SUMMARY.search(text)
    assert summary is not None, text
    assert notice < answer < summary.start()
    assert text.count("(offline emulator") == 1  # the client's own warning is not shown too
    assert "OFFLINE EMULATOR" not in text
    assert summary["model"] == "ernie-lite-8k"
    assert summary["end"] == "completed"
    assert int(summary["p"]) + int(summary["c"]) == int(summary["t"])
    assert float(summary["total"]) >= 0.7


def test_invalid_request_is_one_line_exit_2() -> None:
    done = wenxin("ask", "--temperature", "0", "你好")
    assert done.returncode == 2
    assert done.stdout == ""
    assert_one_error_line(done.stderr, "temperature")


def test_api_error_is_one_line_exit_1() -> None:
    done = wenxin("ask", "你好 [[wenxin:fault error=336003]]")
    assert done.returncode == 1
    assert done.stdout == ""
    assert_one_error_line(done.stderr, "invalid_argument")
    assert "upstream error" in done.stderr


def test_cut_stream_keeps_partial_text_exit_1() -> None:
    done = wenxin("ask", "你好 [[wenxin:fault cut_after=2]]")
    assert done.returncode == 1
    assert done.stdout.startswith("【离线模")
    assert done.stdout.endswith("\n")
    summary = re.search(
        r"^— ernie-lite-8k · first token \d+ ms · .* · incomplete$", done.stderr, re.M
    )
    assert summary is not None, done.stderr
    assert_one_error_line(done.stderr, "connection")


def test_ctrl_c_stops_promptly_keeping_the_text() -> None:
    proc = subprocess.Popen(
        [WENXIN, "ask", "慢 [[wenxin:fault interval=0.5]]"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=cli_env(),
        preexec_fn=default_sigint,
    )
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 10)
    assert ready
    first = os.read(proc.stdout.fileno(), 4096)
    assert first
    proc.send_signal(signal.SIGINT)
    sent = time.monotonic()
    out, err = proc.communicate(timeout=5)
    assert time.monotonic() - sent < 2
    assert proc.returncode == 130
    text = (first + out).decode("utf-8")
    assert text.startswith(first.decode("utf-8"))
    assert text.startswith("【离线")
    assert text.endswith("\n")
    stderr = err.decode("utf-8")
    assert re.search(r"^— ernie-lite-8k · first token .* · cancelled$", stderr, re.M), stderr
    assert "Traceback" not in stderr
    assert "wenxin: error" not in stderr


def test_question_from_stdin_and_json_output() -> None:
    done = wenxin("ask", "--json", "--api", "v1", "-", stdin="管道里的问题\n")
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert "管道里的问题" in document["content"]
    assert document["end_reason"] == "completed"
    assert document["finish_reason"] == "stop"
    assert document["usage"]["total_tokens"] > 0
    assert "— ERNIE-Lite-8K · " in done.stderr
    piped = wenxin("ask", stdin="没有参数的问题")
    assert piped.returncode == 0
    assert "没有参数的问题" in piped.stdout


def test_no_emulator_without_credentials_exit_2() -> None:
    done = wenxin("ask", "--no-emulator", "你好")
    assert done.returncode == 2
    assert_one_error_line(done.stderr, "QIANFAN_BEARER_TOKEN")
    usage = wenxin("ask", "--api", "v3", "你好")
    assert usage.returncode == 2
    assert "Traceback" not in usage.stderr


# --- in process, against the emulator on loopback ---------------------------------------------


@pytest.fixture
def no_credentials(monkeypatch: pytest.MonkeyPatch, emu: ServerHandle) -> ServerHandle:
    """No QIANFAN_* variables, and the 'embedded' emulator is the fast test emulator."""
    for var in ENV_VARS.values():
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(_embedded, "_url", emu.base_url)
    return emu


def v2_flags(handle: ServerHandle) -> list[str]:
    return ["--v2-base-url", handle.base_url, "--bearer-token", "bce-v3/ALTAK-ask/secret"]


def run_main(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def test_flags_reach_the_server(capsys: pytest.CaptureFixture[str], emu: ServerHandle) -> None:
    status, out, err = run_main(
        capsys,
        "ask",
        *v2_flags(emu),
        "--model",
        "ernie-4.0-8k",
        "--system",
        "你是导游",
        "--temperature",
        "0.5",
        "--timeout",
        "5",
        "--retries",
        "0",
        "--app-id",
        "app-1",
        "介绍",
        "长城",
    )
    assert status == 0, err
    assert "“介绍 长城”" in out
    assert "offline emulator" not in err
    assert "secret" not in out + err
    summary = SUMMARY.search(err)
    assert summary is not None
    assert summary["model"] == "ernie-4.0-8k"
    assert int(summary["p"]) > 4  # the system text is counted in the prompt


def test_v1_with_system_and_json(capsys: pytest.CaptureFixture[str], emu: ServerHandle) -> None:
    status, out, err = run_main(
        capsys,
        "ask",
        "--api",
        "v1",
        "--base-url",
        emu.base_url,
        "--api-key",
        "ask-app",
        "--secret-key",
        "ask-secret",
        "--system",
        "简短",
        "--json",
        "问题 [[wenxin:fault truncate=1]]",
    )
    assert status == 0, err
    document = json.loads(out)
    assert document["end_reason"] == "length"
    assert document["is_truncated"] is True
    assert "· length" in err


def test_emulator_notices(capsys: pytest.CaptureFixture[str], no_credentials: ServerHandle) -> None:
    status, _, err = run_main(capsys, "ask", "你好 [[wenxin:fault chunks=1]]")
    assert status == 0
    assert err.startswith(NOTICE)
    assert "OFFLINE EMULATOR" not in err
    status, _, err = run_main(
        capsys, "ask", "--v2-base-url", "http://127.0.0.1:9", "你好 [[wenxin:fault chunks=1]]"
    )
    assert status == 0
    assert "without credentials --v2-base-url is ignored" in err
    status, _, err = run_main(
        capsys, "ask", *v2_flags(no_credentials), "--emulator", "你好 [[wenxin:fault chunks=1]]"
    )
    assert status == 0
    assert "as asked by --emulator" in err


@pytest.mark.parametrize(
    ("argv", "status", "message"),
    [
        (["--base-url", "ftp://example.com", "--api-key", "a", "--secret-key", "b"], 2, "http"),
        (["--no-emulator"], 2, "no credentials"),
        (["--temperature", "-1"], 2, "temperature"),
        (["--api", "v1", "--temperature", "1.5"], 2, "temperature"),
    ],
)
def test_usage_errors(
    capsys: pytest.CaptureFixture[str],
    no_credentials: ServerHandle,
    argv: list[str],
    status: int,
    message: str,
) -> None:
    code, out, err = run_main(capsys, "ask", *argv, "你好")
    assert code == status
    assert out == ""
    assert_one_error_line(err, message)


def test_question_sources(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    no_credentials: ServerHandle,
) -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stdin", Terminal(""))
    code, _, err = run_main(capsys, "ask")
    assert code == 2
    assert_one_error_line(err, "no question")
    monkeypatch.setattr(sys, "stdin", io.StringIO("  \n"))
    code, _, err = run_main(capsys, "ask", "-")
    assert code == 2
    assert_one_error_line(err, "empty")


def test_errors_mid_stream_in_process(
    capsys: pytest.CaptureFixture[str], emu: ServerHandle
) -> None:
    code, out, err = run_main(
        capsys,
        "ask",
        *v2_flags(emu),
        "--retries",
        "0",
        "x [[wenxin:fault error=336100;error_after=2]]",
    )
    assert code == 1
    assert out.endswith("\n")
    assert "· upstream error" in err
    assert_one_error_line(err, "internal_error")
    code, out, err = run_main(
        capsys,
        "ask",
        *v2_flags(emu),
        "--timeout",
        "0.3",
        "--json",
        "x [[wenxin:fault stall=2;stall_after=1]]",
    )
    assert code == 1
    assert json.loads(out)["end_reason"] == "timed_out"
    assert "· timed out" in err
    assert_one_error_line(err, "idle timeout")


def test_safety_flag_in_summary(capsys: pytest.CaptureFixture[str], emu: ServerHandle) -> None:
    code, _, err = run_main(capsys, "ask", *v2_flags(emu), "x [[wenxin:fault safety=3]]")
    assert code == 0
    assert "· content filtered · safety flag 3" in err
    code, _, err = run_main(
        capsys,
        "ask",
        "--api",
        "v1",
        "--base-url",
        emu.base_url,
        "--access-token",
        "24.not-issued-here",
        "--retries",
        "0",
        "x",
    )
    assert code == 1
    assert_one_error_line(err, "110")
    assert "24.not-issued-here" not in err


def test_other_warnings_use_the_cli_format(capsys: pytest.CaptureFixture[str]) -> None:
    logger = logging.getLogger("wenxin_stream.tokens")
    propagate = logging.getLogger("wenxin_stream").propagate
    with cli_output():
        logger.warning("could not write the token cache: %s", "PermissionError")
    assert capsys.readouterr().err == (
        "wenxin: warning: could not write the token cache: PermissionError\n"
    )
    assert logging.getLogger("wenxin_stream").propagate == propagate


def test_closed_stdout_ends_quietly() -> None:
    proc = subprocess.Popen(
        [WENXIN, "ask", "长 [[wenxin:fault interval=0.05;chunks=20]]"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=cli_env(),
    )
    assert proc.stdout is not None
    assert proc.stderr is not None
    assert proc.stdout.read(3)
    proc.stdout.close()
    err = proc.stderr.read().decode("utf-8")
    assert proc.wait(10) == 1
    assert "Traceback" not in err
    assert "Exception ignored" not in err


@pytest.mark.parametrize(
    "argv",
    [
        ["ask", "--timeout", "0", "x"],
        ["ask", "--timeout", "soon", "x"],
        ["ask", "--retries", "-1", "x"],
        ["ask", "--retries", "many", "x"],
        ["chat", "--max-turns", "-2"],
    ],
)
def test_bad_flag_values_are_usage_errors(
    capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert "error: argument" in capsys.readouterr().err


def test_terminal_without_chinese_gets_placeholders_not_a_crash() -> None:
    env = cli_env()
    env["PYTHONIOENCODING"] = "ascii"
    done = subprocess.run(
        [WENXIN, "ask", "你好 [[wenxin:fault chunks=2]]"],
        capture_output=True,
        env=env,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0
    assert done.stdout.startswith(b"??")
    assert b"Traceback" not in done.stderr


# --- the same validation as the server: flags named, unknown and retired models ----------------


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["--temperature", "5"], "--temperature"),
        (["--model", "ernie-x1.1", "--temperature", "1.5"], "--temperature"),
        (["--thinking"], "--thinking/--no-thinking"),  # ernie-lite-8k never thinks
        (["--model", "ernie-x1.1", "--no-thinking"], "--thinking/--no-thinking"),
    ],
)
def test_bad_flags_name_the_flag(
    capsys: pytest.CaptureFixture[str], no_credentials: ServerHandle, argv: list[str], flag: str
) -> None:
    code, out, err = run_main(capsys, "ask", *argv, "你好")
    assert code == 2
    assert out == ""
    assert_one_error_line(err, f"(flag {flag})")


def test_unknown_v2_model_goes_upstream_and_the_error_suggests_catalogue_ids(
    capsys: pytest.CaptureFixture[str], no_credentials: ServerHandle
) -> None:
    code, out, err = run_main(capsys, "ask", "--model", "ernie-x1.2", "你好")
    assert code == 1
    assert out == ""
    assert_one_error_line(err, "invalid_model")
    assert "did you mean ernie-x1.1" in err
    # a non-ERNIE id the catalogue does not know is only held to temperature > 0
    code, _, err = run_main(capsys, "ask", "--model", "deepseek-v3", "--temperature", "1.5", "x")
    assert "temperature" not in err
    assert_one_error_line(err, "invalid_model")


def test_unknown_v1_model_is_a_local_error(
    capsys: pytest.CaptureFixture[str], emu: ServerHandle
) -> None:
    code, _, err = run_main(
        capsys, "ask", "--api", "v1", "--base-url", emu.base_url, "--access-token", "24.x",
        "--model", "ERNIE-Nope", "你好",
    )  # fmt: skip
    assert code == 2
    assert_one_error_line(err, "unknown v1 model 'ERNIE-Nope'")


def test_retired_model_is_answered_as_baidu_answers_it(
    capsys: pytest.CaptureFixture[str], no_credentials: ServerHandle
) -> None:
    code, out, err = run_main(capsys, "ask", "--model", "ernie-4.5-turbo-128k", "你好")
    assert code == 1
    assert out == ""
    assert_one_error_line(err, "model_offline")
    assert "ernie-4.5-turbo-128k was retired on 2026-10-29" in err
