#!/usr/bin/env python3
"""Generate the sync twins of the SDK's async shells; ``--check`` fails when one is stale.

Usage (from anywhere; ruff comes from the Python running this script, i.e. the project's
``.venv``):

    .venv/bin/python scripts/unasync.py           # (re)write every sync twin
    .venv/bin/python scripts/unasync.py --check   # exit 1 and show a diff if one is stale

How it works (the idea of httpcore's ``scripts/unasync.py``; our own code): each async source
in :data:`TWINS` is rewritten line by line with the ordered substitutions of :data:`RENAMES`
(``async def`` → ``def``, ``await x`` → ``x``, ``AsyncClient`` → ``Client`` …), and a loop that
only re-yields becomes ``yield from`` (:data:`DELEGATION`). The result gets a header saying
where it came from, has its imports fixed by ``ruff check --select I,F401 --fix`` (a rename can
change the sorted order of an import line, and a name only the async world needs, such as
``Awaitable``, is dropped) and is formatted by ``ruff format``, so the generated file is
the same bytes that ``scripts/check`` expects of any file. Renames only: where the sync and
async worlds genuinely differ, the difference lives behind a pair of primitives with the same
interface in ``src/wenxin_stream/_synchronization.py``, so a rename is always enough.

A rename applies to whole identifiers only (``AsyncChat`` does not touch ``AsyncChatStream``)
and everywhere on a line, docstrings included: the async sources are written so that their
prose reads right after renaming.
"""

from __future__ import annotations

import argparse
import difflib
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "src" / "wenxin_stream"

TWINS: tuple[tuple[str, str], ...] = (
    ("_async_client.py", "_client.py"),
    ("_conversation_async.py", "_conversation_sync.py"),
    ("_ratelimit_async.py", "_ratelimit_sync.py"),
    ("_tokens_async.py", "_tokens_sync.py"),
    ("_transport_mock_async.py", "_transport_mock_sync.py"),
)
"""(async source, generated sync twin), in ``src/wenxin_stream``."""

RENAMES: tuple[tuple[str, str], ...] = (
    # the language
    (r"async def ", "def "),
    (r"async with ", "with "),
    (r"async for ", "for "),
    (r"await ", ""),
    (r"__aenter__", "__enter__"),
    (r"__aexit__", "__exit__"),
    (r"__aiter__", "__iter__"),
    (r"__anext__", "__next__"),
    (r"aclose", "close"),
    (r"AsyncGenerator\[(.+), None\]", r"Generator[\1, None, None]"),
    (r"AsyncGenerator", "Generator"),
    (r"AsyncIterator", "Iterator"),
    (r"Awaitable\[(\w+)\]", r"\1"),
    (r"  # noqa: ASYNC\d+[^\n]*", ""),  # async lint rules have nothing to say about sync code
    # the primitive pairs of _synchronization and _clock
    (r"AsyncFlight", "Flight"),
    (r"AsyncSleep", "Sleep"),
    (r"async_sleep", "sync_sleep"),
    # the transport contract and its implementations
    (r"AsyncResponse", "SyncResponse"),
    (r"AsyncTransport", "SyncTransport"),
    (r"_transport_aiohttp", "_transport_urllib3"),
    (r"AiohttpTransport", "Urllib3Transport"),
    # the twins themselves
    (r"_async_client", "_client"),
    (r"AsyncClient", "Client"),
    (r"AsyncChatStream", "ChatStream"),
    (r"AsyncChat", "Chat"),
    (r"_conversation_async", "_conversation_sync"),
    (r"AsyncConversation", "Conversation"),
    (r"_ratelimit_async", "_ratelimit_sync"),
    (r"AsyncRateLimiter", "SyncRateLimiter"),
    (r"_tokens_async", "_tokens_sync"),
    (r"AsyncTokenManager", "TokenManager"),
    (r"AsyncTokenShare", "TokenShare"),
    (r"_transport_mock_async", "_transport_mock_sync"),
    (r"AsyncMockTransport", "MockTransport"),
    (r"AsyncMockResponse", "MockSyncResponse"),
)
"""Ordered (pattern, replacement) pairs; a pattern that starts or ends with a word character
matches only at a word boundary there."""

DELEGATION = re.compile(r"^( *)for (\w+) in (.+):\n\1    yield \2\n", re.MULTILINE)
"""A loop that only re-yields (an async generator has no ``yield from``), rewritten as the
``yield from`` it stands for in a sync generator: the idiom, and cheaper per item."""

HEADER = "# Generated from src/wenxin_stream/{source} by scripts/unasync.py — do not edit.\n"


def _compile(pattern: str) -> re.Pattern[str]:
    head = r"\b" if re.match(r"\w", pattern) else ""
    tail = r"\b" if re.search(r"\w$", pattern) else ""
    return re.compile(head + pattern + tail)


_RULES = tuple((_compile(pattern), replacement) for pattern, replacement in RENAMES)


def unasync_line(line: str) -> str:
    """``line`` with every rename applied, in order."""
    for pattern, replacement in _RULES:
        line = pattern.sub(replacement, line)
    return line


def _ruff(*args: str, source: str, filename: Path) -> str:
    """``source`` through ``ruff <args> -`` (formatted or fixed as if it were ``filename``)."""
    beside = Path(sys.executable).parent / "ruff"
    ruff = str(beside) if beside.exists() else shutil.which("ruff")
    if ruff is None:
        raise SystemExit("unasync: ruff not found (run it with the project's .venv/bin/python)")
    done = subprocess.run(  # noqa: S603 - our own ruff, fixed arguments
        [ruff, *args, "--stdin-filename", str(filename), "-"],
        input=source,
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"unasync: ruff {args[0]} failed on {filename.name}:\n{done.stderr}")
    return done.stdout


def generate(source: str) -> str:
    """The sync twin of ``src/wenxin_stream/<source>``, formatted."""
    text = (PACKAGE / source).read_text(encoding="utf-8")
    body = "".join(unasync_line(line) for line in text.splitlines(keepends=True))
    body = DELEGATION.sub(r"\1yield from \3\n", body)
    target = PACKAGE / dict(TWINS)[source]
    fixed = _ruff(
        "check", "--fix", "--select", "I,F401", "--exit-zero", "--quiet",
        source=HEADER.format(source=source) + body, filename=target,
    )  # fmt: skip
    return _ruff("format", "--quiet", source=fixed, filename=target)


def main(argv: list[str] | None = None) -> int:
    """Write (or, with ``--check``, compare) every sync twin; the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a twin is stale")
    args = parser.parse_args(argv)
    stale = []
    for source, target in TWINS:
        wanted = generate(source)
        path = PACKAGE / target
        current = path.read_text(encoding="utf-8") if path.exists() else ""
        if current == wanted:
            continue
        if args.check:
            stale.append(target)
            diff = difflib.unified_diff(
                current.splitlines(keepends=True),
                wanted.splitlines(keepends=True),
                f"src/wenxin_stream/{target} (on disk)",
                f"src/wenxin_stream/{target} (generated from {source})",
            )
            sys.stdout.writelines(diff)
        else:
            path.write_text(wanted, encoding="utf-8")
            print(f"unasync: wrote src/wenxin_stream/{target}")
    if stale:
        print(
            f"unasync: stale: {', '.join(stale)} — run .venv/bin/python scripts/unasync.py",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
