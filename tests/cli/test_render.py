"""How ``wenxin ask`` / ``wenxin chat`` show an answer: the block splitter and the views
in process, and the real command in a pseudo-terminal (``os.openpty``) against the embedded
emulator — Markdown rendered, the thinking dimmed, ``--hide-thinking``, piped output raw."""

from __future__ import annotations

import io
import os
import re
import select
import subprocess
import time

import pytest
from test_ask import WENXIN, cli_env

from wenxin_stream._events import SearchResult
from wenxin_stream.cli._render import (
    THINKING_HEADING,
    BlockSplitter,
    MarkdownView,
    PlainView,
    citations_as_brackets,
    sources_text,
)

ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
BOLD_ON = re.compile(r"\x1b\[(?:[0-9;]*;)?1(?:;[0-9;]*)?m")
DIM_ON = re.compile(r"\x1b\[(?:[0-9;]*;)?2(?:;[0-9;]*)?m")

DOCUMENT = (
    "开头一段，**加粗**的字。\n\n"
    "1. 第一\n2. 第二\n\n"
    "```python\nprint('x')\n\nprint('y')\n```\n"
    "代码之后^[1]^的段落\n"
    "| a | b |\n|---|---|\n| 1 | 2 |\n"
)


def run_in_terminal(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    """Run ``wenxin`` with stdout and stderr on a pseudo-terminal; its status and output."""
    controller, terminal = os.openpty()
    environ = cli_env()
    environ.update(TERM="xterm-256color", COLUMNS="100", LINES="40")
    environ.update(WENXIN_EMULATOR_THINKING_INTERVAL="0.01")
    environ.pop("NO_COLOR", None)
    environ.update(env or {})
    proc = subprocess.Popen(
        [WENXIN, *args], stdin=subprocess.DEVNULL, stdout=terminal, stderr=terminal, env=environ
    )
    os.close(terminal)
    output = b""
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([controller], [], [], 1)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            try:
                data = os.read(controller, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            output += data
    finally:
        os.close(controller)
    return proc.wait(10), output.decode("utf-8", "replace")


def visible(output: str) -> str:
    """Every frame's text, escape sequences and carriage returns removed."""
    return ESCAPE.sub("", output).replace("\r", "")


_TOKEN = re.compile(r"\x1b\[([0-9;?]*)([A-Za-z])|\r\n|\n|\r|[^\x1b\r\n]+")


def screen(output: str) -> str:
    """What the terminal shows at the end: the frames a transient live area drew and erased
    (cursor up ``ESC[nA``, erase line ``ESC[2K``, carriage return) are replayed, so they are
    gone; styles are dropped."""
    lines, row, col = [""], 0, 0
    for match in _TOKEN.finditer(output):
        token = match.group(0)
        if token in ("\r\n", "\n"):
            row, col = row + 1, 0
            if row == len(lines):
                lines.append("")
        elif token == "\r":
            col = 0
        elif match.group(2) == "A":
            row = max(0, row - int(match.group(1) or 1))
        elif match.group(2) == "K":
            lines[row] = ""
        elif match.group(2) is None:
            line = lines[row].ljust(col)
            lines[row] = line[:col] + token + line[col + len(token) :]
            col += len(token)
    return "\n".join(line.rstrip() for line in lines)


# --- the block splitter and the views, in process ----------------------------------------------


@pytest.mark.parametrize("size", [1, 2, 3, 7, len(DOCUMENT)])
def test_blocks_do_not_depend_on_chunk_boundaries(size: int) -> None:
    splitter = BlockSplitter()
    blocks: list[str] = []
    for start in range(0, len(DOCUMENT), size):
        blocks += splitter.feed(DOCUMENT[start : start + size])
    rest = splitter.flush()
    assert blocks == [
        "开头一段，**加粗**的字。\n",
        "1. 第一\n2. 第二\n",
        "```python\nprint('x')\n\nprint('y')\n```\n",  # the blank line inside stays inside
    ]
    assert rest == "代码之后^[1]^的段落\n| a | b |\n|---|---|\n| 1 | 2 |\n"


def test_open_block_is_only_the_part_after_the_last_finished_block() -> None:
    splitter = BlockSplitter()
    assert splitter.feed("一段。\n\n第二段开始") == ["一段。\n"]
    assert splitter.open_text == "第二段开始"
    assert splitter.feed("，还没完\n") == []
    assert splitter.open_text == "第二段开始，还没完\n"


def test_markers_and_sources() -> None:
    assert citations_as_brackets("甲^[1]^，乙^[2][3]^。^[x]^") == "甲[1]，乙[2][3]。^[x]^"
    text = sources_text([SearchResult(2, "https://b.example", "B"), SearchResult(1, "u", "")])
    assert text.splitlines() == ["来源 / Sources", "[1] u", "[2] B — https://b.example"]


def test_markdown_view_renders_each_finished_block_once() -> None:
    """Long answers: the work per chunk follows the open block, not the whole answer."""
    from rich.console import Console

    out = io.StringIO()
    view = MarkdownView(Console(file=out, force_terminal=True, width=80))
    paragraphs = 50
    for _ in range(paragraphs):
        for piece in ("一句话，", "又一句。", "\n\n"):
            view.text(piece)
    view.close()
    # each paragraph: rendered while open (two pieces) and once finished; never again
    assert view.renders <= 3 * paragraphs + 1
    assert visible(out.getvalue()).count("一句话，又一句。") >= paragraphs


def test_plain_view_keeps_the_answer_raw_and_the_thinking_on_stderr() -> None:
    out, err = io.StringIO(), io.StringIO()
    view = PlainView(out, err)
    view.reasoning("想")
    view.text("**答**^[1]^")
    view.close()
    view.sources([SearchResult(1, "https://a.example", "A")])
    assert out.getvalue() == "**答**^[1]^\n\n来源 / Sources\n[1] A — https://a.example\n"
    assert err.getvalue() == f"{THINKING_HEADING}\n想\n\n"


# --- the real command in a pseudo-terminal ------------------------------------------------------


def test_terminal_renders_bold_without_stars() -> None:
    status, output = run_in_terminal("ask", "你好")
    assert status == 0, output
    text = screen(output)
    assert "要点：" in text
    assert "**" not in text
    bold = output[: output.rindex("要点：")]
    assert BOLD_ON.search(bold[bold.rindex("\x1b[") :]), bold[-60:]
    assert re.search(r"^— ernie-lite-8k · .* · completed$", text, re.M), text


def test_terminal_renders_a_code_block() -> None:
    status, output = run_in_terminal("ask", "给我一段示例代码")
    assert status == 0, output
    text = screen(output)
    assert "下面是一段模拟的示例代码" in text
    assert "```" not in text  # the fence is drawn, not printed
    assert re.search(r"def stream_words|function readStream|fn main|func main|#include", text)
    assert "\x1b[38;5;" in output  # highlighted


def test_terminal_shows_thinking_dimmed_before_the_answer() -> None:
    status, output = run_in_terminal("ask", "--model", "ernie-x1.1", "你好")
    assert status == 0, output
    text = screen(output)
    heading, thought, answer = (
        text.index(THINKING_HEADING),
        text.index("【模拟思考】"),
        text.index("【离线模拟】"),
    )
    assert heading < thought < answer
    thinking = output[output.index(THINKING_HEADING) : output.index("─" * 10)]
    runs = [run for run in ESCAPE.split(thinking) if run.strip()]
    assert len(runs) > 5  # the thinking streamed in pieces…
    assert len(DIM_ON.findall(thinking)) >= len(runs)  # …each of them dimmed


def test_terminal_hide_thinking() -> None:
    status, output = run_in_terminal("ask", "--model", "ernie-x1.1", "--hide-thinking", "你好")
    assert status == 0, output
    assert THINKING_HEADING not in output
    assert "【模拟思考】" not in output
    assert "【离线模拟】" in output


def test_plain_flag_on_a_terminal_is_raw() -> None:
    status, output = run_in_terminal("ask", "--plain", "你好")
    assert status == 0, output
    answer = output[output.index("【离线模拟】") : output.index("— ernie")]
    assert "**要点：**" in answer
    assert "\x1b" not in answer


def test_piped_output_is_raw_and_search_sources_follow() -> None:
    done = subprocess.run(
        [WENXIN, "ask", "--search", "--model", "ernie-x1.1", "今天的新闻"],
        capture_output=True, text=True, encoding="utf-8", env=cli_env(), timeout=30, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "\x1b" not in done.stdout + done.stderr
    assert "【模拟思考】" not in done.stdout  # the thinking goes to stderr when piped
    assert THINKING_HEADING in done.stderr
    assert "^[1]^" in done.stdout  # raw: the markers as sent
    answer, _, sources = done.stdout.partition("来源 / Sources\n")
    assert "【离线模拟】" in answer
    assert re.match(r"\[1\] .+ — https://example\.com/", sources), sources


def test_terminal_search_markers_as_brackets() -> None:
    status, output = run_in_terminal("ask", "--search", "--model", "ernie-x1.1", "今天的新闻")
    assert status == 0, output
    text = screen(output)
    assert "^[" not in text
    assert re.search(r"\[1\]", text.split("来源 / Sources")[0])
    assert re.search(r"^\[1\] .+ — https://example\.com/", text, re.M)
