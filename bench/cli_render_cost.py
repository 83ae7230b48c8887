"""CPU per chunk of the CLI's Markdown rendering: block by block against the whole document.

``wenxin ask`` on a terminal renders the answer as Markdown as it streams (``cli/_render.py``).
This measures, in one run, the CPU time per chunk of an answer of about ``--chars`` characters
cut into v2-sized deltas (2-8 characters, as the emulator cuts them):

- ``blocks``: ``MarkdownView`` (finished blocks printed once, only the open block re-rendered
  in a transient ``Live`` area), what the CLI does;
- ``whole``: the baseline, ``rich.live.Live`` re-rendering a ``Markdown`` of the whole text
  so far on every chunk (the naive approach);
- ``plain``: writing the raw pieces (what piped output costs).

Output goes to an in-memory "terminal" (``Console(force_terminal=True)``), so the terminal's
own drawing is not counted. Prints one JSON document; the ratios are against ``whole``.

    .venv/bin/python bench/cli_render_cost.py --chars 2000 --repeat 5
"""

from __future__ import annotations

import argparse
import io
import json
import random
import time
from collections.abc import Callable

from rich.console import Console
from rich.live import Live
from rich.markdown import Markdown

from wenxin_stream.cli._render import MarkdownView, PlainView
from wenxin_stream.emulator._answers import default_answer


def answer(chars: int) -> str:
    """Emulator answers (code, table, lists) joined until ``chars`` characters."""
    parts, seed = [], 0
    questions = ("给我一段代码", "对比流式和非流式", "详细介绍一下长城", "你好")
    while sum(map(len, parts)) < chars:
        parts.append(default_answer(questions[seed % len(questions)], seed))
        seed += 1
    return "\n\n".join(parts)[:chars]


def pieces(text: str) -> list[str]:
    rng = random.Random(7)  # noqa: S311 - a fixed cut, not security
    out, at = [], 0
    while at < len(text):
        size = rng.randint(2, 8)
        out.append(text[at : at + size])
        at += size
    return out


def console() -> Console:
    return Console(file=io.StringIO(), force_terminal=True, width=100, height=40)


def run_blocks(chunks: list[str]) -> None:
    view = MarkdownView(console())
    for chunk in chunks:
        view.text(chunk)
    view.close()


def run_whole(chunks: list[str]) -> None:
    text = ""
    with Live(console=console(), auto_refresh=False, transient=False) as live:
        for chunk in chunks:
            text += chunk
            live.update(Markdown(text), refresh=True)


def run_plain(chunks: list[str]) -> None:
    view = PlainView(io.StringIO(), None)
    for chunk in chunks:
        view.text(chunk)
    view.close()


def measure(fn: Callable[[list[str]], None], chunks: list[str], repeat: int) -> float:
    """Best CPU seconds per chunk over ``repeat`` runs."""
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        fn(chunks)
        best = min(best, time.process_time() - start)
    return best / len(chunks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chars", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    chunks = pieces(answer(args.chars))
    results = {
        name: measure(fn, chunks, args.repeat)
        for name, fn in (("whole", run_whole), ("blocks", run_blocks), ("plain", run_plain))
    }
    whole = results["whole"]
    report = {
        "chars": args.chars,
        "chunks": len(chunks),
        "cpu_us_per_chunk": {name: round(value * 1e6, 1) for name, value in results.items()},
        "ratio_to_whole": {name: round(value / whole, 3) for name, value in results.items()},
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
