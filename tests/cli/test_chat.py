"""``wenxin chat``: the real command on a pseudo-terminal (typing, Ctrl-C, Ctrl-D), with piped
stdin, and in process for the commands.

The pty tests run ``wenxin chat`` as the session leader of a fresh pseudo-terminal
(``pty.fork``), so Ctrl-C is the terminal's own: writing ``\\x03`` makes the line discipline
send SIGINT, as a keyboard would.
"""

from __future__ import annotations

import io
import json
import os
import pty
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
from wenxin_stream.emulator import ServerHandle

ROOT = Path(__file__).resolve().parents[2]
WENXIN = str(Path(sys.executable).with_name("wenxin"))
PROMPT = "你> "
TOKENS = re.compile(r"· (\d+)\+(\d+)=\d+ tokens · completed")


def cli_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QIANFAN_")}
    if coverage.Coverage.current() is not None:  # measure the command too (see pyproject.toml)
        env["COVERAGE_PROCESS_START"] = str(ROOT / "pyproject.toml")
    env.update(
        WENXIN_EMULATOR_TTFT="0", WENXIN_EMULATOR_INTERVAL="0.01", TERM="dumb", LC_ALL="C.UTF-8"
    )
    return env


class Terminal:
    """``wenxin chat`` on a pseudo-terminal: type into it, wait for output."""

    def __init__(self, *args: str) -> None:
        env = cli_env()
        pid, fd = pty.fork()
        if pid == 0:  # the child: become the command (never return into pytest)
            try:
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                os.execve(WENXIN, [WENXIN, "chat", *args], env)
            finally:
                os._exit(127)
        self.pid = pid
        self.fd = fd
        self.output = ""
        self._raw = b""
        self.mark = 0

    def read(self, timeout: float) -> bool:
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return False
        try:
            data = os.read(self.fd, 65536)
        except OSError:  # EIO: the child closed the terminal
            data = b""
        if not data:
            return False
        self._raw += data
        self.output = self._raw.decode("utf-8", "replace").replace("\r\n", "\n")
        return True

    def expect(self, pattern: str, timeout: float = 10) -> re.Match[str]:
        """Wait for ``pattern`` (a regex) in the output after the last match."""
        deadline = time.monotonic() + timeout
        regex = re.compile(pattern, re.MULTILINE)
        while True:
            found = regex.search(self.output, self.mark)
            if found:
                self.mark = found.end()
                return found
            left = deadline - time.monotonic()
            if left <= 0 or not self.read(left):
                found = regex.search(self.output, self.mark)
                if found:
                    self.mark = found.end()
                    return found
                raise AssertionError(f"{pattern!r} not seen in:\n{self.output[self.mark :]}")

    def type(self, text: str) -> None:
        os.write(self.fd, text.encode("utf-8"))

    def wait(self, timeout: float = 10) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.read(0.05)
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                os.close(self.fd)
                return os.waitstatus_to_exitcode(status)
        os.kill(self.pid, signal.SIGKILL)
        os.waitpid(self.pid, 0)
        os.close(self.fd)
        raise AssertionError(f"wenxin chat did not exit:\n{self.output}")


def test_session_on_a_terminal() -> None:
    term = Terminal()
    term.expect(r"\(offline emulator: no ERNIE credentials configured")
    term.expect(r"wenxin chat · ernie-lite-8k \(v2\)")
    term.expect(PROMPT)

    term.type("你好 [[wenxin:fault chunks=3]]\r")
    first = term.expect(TOKENS.pattern)
    term.expect(PROMPT)
    term.type("再说一遍 [[wenxin:fault chunks=3]]\r")
    second = term.expect(TOKENS.pattern)
    # the second request carried the first turn: its prompt counts the first answer
    assert int(second[1]) > int(first[1]) + int(first[2])

    term.expect(PROMPT)
    term.type("慢一点 [[wenxin:fault interval=0.5]]\r")
    term.expect("【离线")
    sent = time.monotonic()
    term.type("\x03")  # Ctrl-C, through the terminal
    term.expect(r"· cancelled$", timeout=2)
    assert time.monotonic() - sent < 2
    term.expect(r"marked as unfinished")
    term.expect(PROMPT)

    term.type("还在吗 [[wenxin:fault chunks=2]]\r")
    term.expect(TOKENS.pattern)
    term.expect(PROMPT)
    term.type("/history\r")
    history = term.expect(r"(?s) 1 你: 你好.*?\n 8 文心: [^\n]*\n")[0]
    assert "此回答被中断" in history  # line 6: the interrupted answer, kept and marked
    term.expect(PROMPT)
    term.type("/reset\r")
    term.expect(r"\(history cleared\)")
    term.expect(PROMPT)
    term.type("/history\r")
    term.expect(r"\(empty history\)")
    term.expect(PROMPT)

    term.type("\x04")  # Ctrl-D: end of input
    assert term.wait() == 0
    assert "Traceback" not in term.output
    assert "OFFLINE EMULATOR" not in term.output


def test_ctrl_c_at_the_prompt_leaves() -> None:
    term = Terminal("--model", "ernie-4.0-8k")
    term.expect(r"ernie-4\.0-8k \(v2\)")
    term.expect(PROMPT)
    # CPython's readline shows the prompt and only then waits in select(); a SIGINT landing in
    # between is noticed at the next key press. A person never types that fast: neither do we.
    time.sleep(0.3)
    term.type("\x03")
    assert term.wait() == 0
    assert "Traceback" not in term.output


def test_piped_session_ends_at_eof() -> None:
    script = "\n".join(
        [
            "一 [[wenxin:fault chunks=2]]",
            "断 [[wenxin:fault cut_after=1]]",
            "错 [[wenxin:fault error=336003]]",
            "/history",
        ]
    )
    done = subprocess.run(
        [WENXIN, "chat", "--api", "v1"],
        input=script + "\n",
        capture_output=True,
        text=True,
        encoding="utf-8",
        env=cli_env(),
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert f"{PROMPT}一 [[wenxin:fault chunks=2]]\n【离线模拟】" in done.stdout  # echoed question
    errors = [line for line in done.stderr.splitlines() if line.startswith("wenxin: error: ")]
    assert len(errors) == 2  # the cut stream and the API error, one line each
    assert "· incomplete" in done.stderr
    assert "· upstream error" in done.stderr
    assert " 4 文心: " in done.stdout  # turn 1 and the marked partial turn 2; turn 3 dropped
    assert " 5 " not in done.stdout


# --- in process -------------------------------------------------------------------------------


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch, emu: ServerHandle) -> ServerHandle:
    """No QIANFAN_* variables, and the 'embedded' emulator is the fast test emulator."""
    for var in ENV_VARS.values():
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(_embedded, "_url", emu.base_url)
    return emu


def chat(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    lines: list[str],
    *flags: str,
) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "stdin", io.StringIO("".join(line + "\n" for line in lines)))
    status = main(["chat", *flags])
    out, err = capsys.readouterr()
    return status, out, err


def test_commands(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], offline: ServerHandle
) -> None:
    status, out, err = chat(
        monkeypatch,
        capsys,
        [
            "/help",
            "",
            "/model",
            "/model ernie-speed-8k",
            "/system 你是导游",
            "//斜杠开头 [[wenxin:fault chunks=1]]",
            "/history",
            "/system",
            "/bogus",
            "/exit",
            "never sent",
        ],
    )
    assert status == 0
    assert "/reset          clear the history" in out
    assert "(model: ernie-lite-8k)" in err
    assert "(model: ernie-speed-8k)" in err
    assert "(system text: 你是导游)" in err
    assert "“/斜杠开头”" in out
    assert "— ernie-speed-8k · " in err
    assert "   system: 你是导游\n 1 你: /斜杠开头" in out
    assert "(no system text)" in err
    assert "unknown command /bogus" in err
    assert "never sent" not in out


def test_safety_clears_history_and_says_so(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], offline: ServerHandle
) -> None:
    status, out, err = chat(
        monkeypatch,
        capsys,
        ["一 [[wenxin:fault chunks=1]]", "危险 [[wenxin:fault safety=1]]", "/history"],
        "--api",
        "v1",
        "--max-turns",
        "3",
    )
    assert status == 0
    assert "asked to clear its history" in err
    assert "· safety: need_clear_history" in err
    assert "/history\n(empty history)\n" in out


def test_invalid_requests(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], offline: ServerHandle
) -> None:
    status, _, err = chat(monkeypatch, capsys, [], "--temperature", "0")
    assert status == 2
    assert "temperature" in err
    status, _, err = chat(monkeypatch, capsys, ["/model no-such-model", "问题"], "--api", "v1")
    assert status == 0
    assert "unknown v1 model 'no-such-model'" in err
    assert not re.search("^— ", err, re.MULTILINE)  # nothing was sent, so no summary


def test_piped_json_session_prints_only_documents(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], offline: ServerHandle
) -> None:
    status, out, _ = chat(
        monkeypatch,
        capsys,
        ["一 [[wenxin:fault chunks=1]]", "二 [[wenxin:fault chunks=1]]"],
        "--json",
    )
    assert status == 0
    decoder = json.JSONDecoder()
    documents, position = [], 0
    while position < len(out.rstrip()):
        document, position = decoder.raw_decode(out, position)
        documents.append(document)
        position += len(out[position:]) - len(out[position:].lstrip())
    assert [d["end_reason"] for d in documents] == ["completed", "completed"]
    assert documents[1]["usage"]["prompt_tokens"] > documents[0]["usage"]["completion_tokens"]
