"""How ``wenxin ask`` and ``wenxin chat`` show an answer: Markdown in a terminal, raw when piped.

Theory of operation
===================

An answer view gets the stream's pieces as they arrive — :meth:`AnswerView.reasoning` for
the thinking of a reasoning model, :meth:`AnswerView.text` for the answer — then
:meth:`AnswerView.close` (always, also after an error or Ctrl-C) and, once the answer is
whole, :meth:`AnswerView.sources` with its web-search sources. :func:`choose_view` picks one:

- :class:`PlainView` when stdout is not a terminal, with ``--plain`` or ``TERM=dumb``: the
  answer is written to stdout exactly as it arrives (raw Markdown, citation markers as sent),
  so ``wenxin ask … > answer.md`` keeps the text; the thinking goes to stderr under its
  heading, so it never mixes into the answer on stdout.
- :class:`MarkdownView` on a terminal: the thinking is written dimmed as it arrives under a
  "思考过程 / Thinking" heading, and the answer is rendered as Markdown with ``rich``
  (bold without ``**``, code blocks highlighted, tables drawn), citation markers ``^[n]^``
  shown as ``[n]``.

**Streaming Markdown without quadratic work.** Re-rendering the whole growing document on
every chunk costs O(length) per chunk, so O(length²) for an answer. :class:`BlockSplitter`
instead cuts the text into Markdown blocks as lines complete: a blank line outside a code
fence ends a block, a fence's closing line ends the code block, and an opening fence ends the
paragraph before it. A finished block is printed once, for good; only the *open* block (its
complete lines plus the line still arriving) is re-rendered, in a transient ``rich.live.Live``
area, on each chunk. The work per chunk is bounded by the size of the open block, not of the
answer (``bench/cli_render_cost.py`` measures it). Splitting at blank lines can render a
"loose" list as several lists; the numbers stay as written.

``NO_COLOR`` is honoured by ``rich`` (no colours; bold and dim stay, which are not colours).
Piped output never contains an escape sequence.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Sequence
from typing import IO, TYPE_CHECKING, Protocol

from .._events import SearchResult

if TYPE_CHECKING:
    from rich.console import Console
    from rich.live import Live
    from rich.markdown import Markdown

__all__ = [
    "THINKING_HEADING",
    "AnswerView",
    "BlockSplitter",
    "MarkdownView",
    "PlainView",
    "choose_view",
    "citations_as_brackets",
    "sources_text",
]

THINKING_HEADING = "思考过程 / Thinking"
"""The heading shown before a reasoning model's thinking."""

SOURCES_HEADING = "来源 / Sources"
"""The heading of the web-search sources listed after an answer."""

_MARKERS = re.compile(r"\^((?:\[\d+\])+)\^")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")


def citations_as_brackets(text: str) -> str:
    """``text`` with ERNIE's citation markers ``^[1]^`` / ``^[2][3]^`` shown as ``[1]`` /
    ``[2][3]``."""
    return _MARKERS.sub(r"\1", text)


def sources_text(results: Sequence[SearchResult]) -> str:
    """The numbered list of sources (``[n] title — url``), as the markers number them."""
    lines = [SOURCES_HEADING]
    for result in sorted(results, key=lambda r: r.index):
        title = " ".join(result.title.split())
        lines.append(f"[{result.index}] {title} — {result.url}" if title else
                     f"[{result.index}] {result.url}")  # fmt: skip
    return "\n".join(lines)


class AnswerView(Protocol):
    """Where one streamed answer is shown (see the module docstring)."""

    def reasoning(self, text: str) -> None:
        """A piece of the thinking, as it arrives."""
        ...

    def text(self, text: str) -> None:
        """A piece of the answer, as it arrives."""
        ...

    def close(self) -> None:
        """The stream ended (however): show what is still open, end the line."""
        ...

    def sources(self, results: Sequence[SearchResult]) -> None:
        """The answer's web-search sources (called after :meth:`close`, when there are)."""
        ...


class PlainView:
    """Raw text on ``out`` as it arrives; the thinking on ``err`` (``None``: hidden)."""

    def __init__(self, out: IO[str], err: IO[str] | None) -> None:
        self._out = out
        self._err = err
        self._thinking = False  # the heading was written and its line is not ended
        self._ended_line = True

    def reasoning(self, text: str) -> None:
        """Write a piece of the thinking to stderr (the heading first)."""
        if self._err is None or not text:
            return
        if not self._thinking:
            self._err.write(THINKING_HEADING + "\n")
            self._thinking = True
        self._err.write(text)
        self._err.flush()

    def _end_thinking(self) -> None:
        if self._thinking and self._err is not None:
            self._err.write("\n\n")
            self._err.flush()
            self._thinking = False

    def text(self, text: str) -> None:
        """Write a piece of the answer to stdout, flushed at once."""
        if not text:
            return
        self._end_thinking()
        self._ended_line = text.endswith("\n")  # before writing: Ctrl-C may come next
        self._out.write(text)
        self._out.flush()

    def close(self) -> None:
        """End the thinking's and the answer's lines."""
        self._end_thinking()
        if not self._ended_line:
            self._ended_line = True
            self._out.write("\n")
            self._out.flush()

    def sources(self, results: Sequence[SearchResult]) -> None:
        """List the sources after the answer, on stdout."""
        if results:
            self._out.write("\n" + sources_text(results) + "\n")
            self._out.flush()


class BlockSplitter:
    """Cuts a growing Markdown text into finished blocks and the open one (linear time).

    :meth:`feed` takes the next piece and returns the blocks it finished; :attr:`open_text`
    is what is still open (complete lines of the open block plus the partial line).
    """

    def __init__(self) -> None:
        self._lines: list[str] = []  # complete lines of the open block
        self._partial = ""  # the line still arriving
        self._fence: str | None = None  # the open code fence's marker (``` or ~~~…)

    @property
    def open_text(self) -> str:
        """The open block as it stands."""
        return "".join(self._lines) + self._partial

    def feed(self, text: str) -> list[str]:
        """Add ``text``; the blocks it finished, in order."""
        done: list[str] = []
        start = 0
        while True:
            end = text.find("\n", start)
            if end < 0:
                self._partial += text[start:]
                return done
            line = self._partial + text[start : end + 1]
            self._partial = ""
            start = end + 1
            self._line(line, done)

    def _finish(self, done: list[str]) -> None:
        block = "".join(self._lines)
        self._lines = []
        if block.strip():
            done.append(block)

    def _line(self, line: str, done: list[str]) -> None:
        fence = _FENCE.match(line)
        if self._fence is not None:
            self._lines.append(line)
            if (
                fence
                and fence.group(1)[0] == self._fence[0]
                and len(fence.group(1)) >= len(self._fence)
                and not line.strip().lstrip(self._fence[0])
            ):
                self._fence = None
                self._finish(done)
            return
        if fence:
            self._finish(done)  # an opening fence interrupts a paragraph
            self._fence = fence.group(1)
            self._lines.append(line)
        elif not line.strip():
            self._finish(done)
        else:
            self._lines.append(line)

    def flush(self) -> str:
        """The rest (open block and partial line) as the last block; the splitter is reset."""
        rest = self.open_text
        self._lines, self._partial, self._fence = [], "", None
        return rest


class MarkdownView:
    """The answer as Markdown on a terminal, block by block (see the module docstring);
    the thinking dimmed before it (``show_thinking=False``: hidden)."""

    def __init__(self, console: Console, *, show_thinking: bool = True) -> None:
        self._console = console
        self._show_thinking = show_thinking
        self._splitter = BlockSplitter()
        self._live: Live | None = None
        self._thinking = False
        self._blocks = 0
        self.renders = 0
        """How many times a Markdown block was rendered (for the benchmark and the tests)."""

    def reasoning(self, text: str) -> None:
        """Write a piece of the thinking, dimmed (the heading first)."""
        if not self._show_thinking or not text:
            return
        if not self._thinking:
            self._console.print(THINKING_HEADING, style="bold dim", markup=False, highlight=False)
            self._thinking = True
        self._console.print(
            text, style="dim", end="", markup=False, highlight=False, soft_wrap=True
        )

    def _end_thinking(self) -> None:
        if self._thinking:
            self._console.print("\n", end="")
            self._console.rule(style="dim")
            self._thinking = False

    def _markdown(self, block: str) -> Markdown:
        from rich.markdown import Markdown

        self.renders += 1
        return Markdown(citations_as_brackets(block))

    def _print_block(self, block: str) -> None:
        if self._blocks:
            self._console.print()
        self._blocks += 1
        self._console.print(self._markdown(block))

    def text(self, text: str) -> None:
        """Add a piece of the answer: print the blocks it finished, re-render the open one."""
        if not text:
            return
        self._end_thinking()
        for block in self._splitter.feed(text):
            if self._live is not None:
                self._live.stop()  # the open block is printed for good below
                self._live = None
            self._print_block(block)
        rest = self._splitter.open_text
        if rest.strip():
            if self._live is None:
                from rich.live import Live

                self._live = Live(
                    console=self._console, auto_refresh=False, transient=True,
                    redirect_stdout=False, redirect_stderr=False,
                )  # fmt: skip
                self._live.start()
            self._live.update(self._markdown(rest), refresh=True)

    def close(self) -> None:
        """Print the open block for good and end the thinking."""
        self._end_thinking()
        if self._live is not None:
            self._live.stop()
            self._live = None
        rest = self._splitter.flush()
        if rest.strip():
            self._print_block(rest)

    def sources(self, results: Sequence[SearchResult]) -> None:
        """List the sources after the answer."""
        if results:
            self._console.print()
            self._console.print(
                sources_text(results), markup=False, highlight=False, soft_wrap=True
            )


def choose_view(*, plain: bool, hide_thinking: bool) -> AnswerView:
    """The view for this command: Markdown on a terminal, else plain (see the docstring)."""
    out = sys.stdout
    terminal = out.isatty() and os.environ.get("TERM") != "dumb"
    if plain or not terminal:
        return PlainView(out, None if hide_thinking else sys.stderr)
    from rich.console import Console

    return MarkdownView(Console(file=out, highlight=False), show_thinking=not hide_thinking)
