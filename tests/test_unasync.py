"""The sync twins are generated from the async shells (scripts/unasync.py) and kept current."""

from __future__ import annotations

import ast
import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "unasync.py"
ASYNC_NODES = (ast.AsyncFunctionDef, ast.AsyncFor, ast.AsyncWith, ast.Await)


def _unasync() -> ModuleType:
    spec = importlib.util.spec_from_file_location("unasync", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_generated_twins_are_up_to_date() -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def test_every_twin_says_it_is_generated_and_differs_only_by_renames() -> None:
    unasync = _unasync()
    package = ROOT / "src" / "wenxin_stream"
    for source, target in unasync.TWINS:
        generated = (package / target).read_text("utf-8")
        assert generated.startswith(f"# Generated from src/wenxin_stream/{source} by "), target
        async_text = (package / source).read_text("utf-8")
        # No async construct and no async name survives in the sync twin's code.
        tree = ast.parse(generated)
        for node in ast.walk(tree):
            assert not isinstance(node, ASYNC_NODES), (target, ast.dump(node)[:80])
            names = [getattr(node, key, None) for key in ("id", "attr", "name", "module")]
            names += [alias.name for alias in getattr(node, "names", []) if hasattr(alias, "name")]
            for name in filter(None, names):
                assert not re.search(r"(^|\.)(Async|async_|asyncio|aiohttp)|_async\b", name), (
                    target,
                    name,
                )
        body = generated.split("\n", 1)[1]
        # Every line of the twin is a line of the source after the renames, except where the
        # formatter joined or split lines and where a re-yielding loop became ``yield from``.
        renamed = {unasync.unasync_line(line).strip() for line in async_text.splitlines()}
        strange = [
            line
            for line in body.splitlines()
            if line.strip() not in renamed and not line.strip().startswith("yield from ")
        ]
        assert len(strange) <= 5, (target, strange)


def test_check_fails_on_a_stale_twin(tmp_path: Path) -> None:
    """--check compares what it would write with what is there, and says what differs."""
    unasync = _unasync()
    source, target = unasync.TWINS[0]
    wanted = unasync.generate(source)
    path = unasync.PACKAGE / target
    original = path.read_text("utf-8")
    assert original == wanted
    stale = original.replace("def close(self) -> None:", "def close(self) -> None:  # edited", 1)
    assert stale != original
    try:
        path.write_text(stale, "utf-8")
        done = subprocess.run(
            [sys.executable, str(SCRIPT), "--check"],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        path.write_text(original, "utf-8")
    assert done.returncode == 1
    assert "# edited" in done.stdout
    assert f"stale: {target}" in done.stderr


def test_renames_touch_whole_identifiers_only() -> None:
    line = unasync_line = _unasync().unasync_line
    assert line("class AsyncChatStream(AsyncChat):") == "class ChatStream(Chat):"
    assert unasync_line("    async def aclose(self) -> None:") == "    def close(self) -> None:"
    assert (
        unasync_line("x = await self._sleep(1)  # noqa: ASYNC109 - budget") == "x = self._sleep(1)"
    )
    assert unasync_line("AsyncGenerator[StreamEvent, None]") == "Generator[StreamEvent, None, None]"
    assert (
        unasync_line("fetch: Callable[[], Awaitable[AccessToken]]")
        == "fetch: Callable[[], AccessToken]"
    )
    assert unasync_line("my_async_sleeper = 1") == "my_async_sleeper = 1"
    assert unasync_line("from ._async_client import AsyncClient") == "from ._client import Client"
