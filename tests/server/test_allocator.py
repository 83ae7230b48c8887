"""The allocator a server's objects come from (server/_allocator.py): the environment that
selects each, the re-execution of ``wenxin serve`` under it, and jemalloc's purge as the
collector's trim. ``bench/memory.py --server-env`` measures what each gives back
(``bench/MEMORY.md``)."""

from __future__ import annotations

import ctypes.util
import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import httpx
import pytest

from wenxin_stream.cli import serve as serve_cli
from wenxin_stream.server._allocator import (
    JEMALLOC_CONF,
    REEXEC_MARK,
    AllocatorError,
    plan,
    running,
)
from wenxin_stream.server._config import ServerConfig, ServerConfigError

JEMALLOC = ctypes.util.find_library("jemalloc")
WENXIN = Path(sys.executable).with_name("wenxin")


def _lib() -> str:
    return "/usr/lib/libjemalloc.so.2"


def _none() -> None:
    return None


def test_python_and_what_already_runs_need_nothing() -> None:
    assert plan("python", {}, current="jemalloc", library=_lib) is None
    assert plan("jemalloc", {}, current="jemalloc", library=_lib) is None
    assert plan("malloc", {}, current="malloc", library=_lib) is None
    assert plan("auto", {}, current="python", library=_none) is None  # not installed: python
    assert plan("auto", {}, current="jemalloc", library=_lib) is None


def test_jemalloc_is_preloaded_with_python_objects_from_malloc() -> None:
    env = plan("auto", {"PATH": "/bin", "LD_PRELOAD": "libother.so"}, current="python",
               library=_lib)  # fmt: skip
    assert env is not None
    assert env["PATH"] == "/bin"  # the rest of the environment is kept
    assert env["PYTHONMALLOC"] == "malloc"
    assert env["LD_PRELOAD"] == "/usr/lib/libjemalloc.so.2 libother.so"
    assert env["MALLOC_CONF"] == JEMALLOC_CONF
    assert env[REEXEC_MARK] == "jemalloc"
    # a MALLOC_CONF of the operator's own is theirs
    mine = plan("jemalloc", {"MALLOC_CONF": "narenas:1"}, current="python", library=_lib)
    assert mine is not None
    assert mine["MALLOC_CONF"] == "narenas:1"


def test_malloc_is_pythonmalloc_alone() -> None:
    env = plan("malloc", {}, current="python", library=_lib)
    assert env == {"PYTHONMALLOC": "malloc", REEXEC_MARK: "malloc"}


def test_what_cannot_be_had_is_refused_with_the_reason() -> None:
    with pytest.raises(AllocatorError, match="apt-get install libjemalloc2"):
        plan("jemalloc", {}, current="python", library=_none)
    # re-executed once already, and still not running it: never a loop
    with pytest.raises(AllocatorError, match="-E or -I"):
        plan("jemalloc", {REEXEC_MARK: "jemalloc"}, current="python", library=_lib)
    with pytest.raises(AllocatorError, match="must be one of"):
        plan("tcmalloc", {}, current="python", library=_lib)


def test_the_setting_in_the_config_file_environment_and_flags() -> None:
    assert ServerConfig().allocator == "auto"
    assert ServerConfig.load({}, environ={"WENXIN_ALLOCATOR": "python"}).allocator == "python"
    with pytest.raises(ServerConfigError, match="allocator: must be one of"):
        ServerConfig.load({}, environ={"WENXIN_ALLOCATOR": "tcmalloc"})


def test_this_test_process_runs_pymalloc() -> None:
    assert running() == "python"


def _run_python(code: str, **env: str) -> Any:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env={**os.environ, **env}, capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_process_under_jemalloc_says_so_and_purges_what_it_freed() -> None:
    """Under jemalloc (its decay off, so nothing is purged by itself) 64 MiB freed in the
    middle of the heap stay resident until the collector's trim, jemalloc's purge, returns
    them."""
    assert JEMALLOC, "libjemalloc2 is installed by scripts/install"
    result = _run_python(
        """
        import ctypes, json, os
        from wenxin_stream.bench._system import read_rss_bytes
        from wenxin_stream.server._allocator import running
        from wenxin_stream.server._gc import trim_heap
        libc = ctypes.CDLL(None)
        libc.malloc.restype = ctypes.c_void_p
        libc.malloc.argtypes = [ctypes.c_size_t]
        libc.free.argtypes = [ctypes.c_void_p]
        rss = lambda: read_rss_bytes(os.getpid())
        blocks = [libc.malloc(65536) for _ in range(2049)]
        for block in blocks:
            ctypes.memset(block, 1, 65536)
        full = rss()
        for block in blocks[1::2]:
            libc.free(block)
        freed = rss()
        purged = trim_heap()
        print(json.dumps([running(), full, freed, rss(), purged]))
        """,
        PYTHONMALLOC="malloc",
        LD_PRELOAD=JEMALLOC,
        MALLOC_CONF="dirty_decay_ms:-1,muzzy_decay_ms:-1",
    )
    allocator, full, freed, trimmed, purged = result
    assert allocator == "jemalloc"
    assert purged is True
    assert full - freed < 16 * 2**20, (full, freed)  # free() alone kept the pages
    assert freed - trimmed > 48 * 2**20, (freed, trimmed)  # the purge gave them back


def test_pythonmalloc_alone_is_the_c_librarys_malloc() -> None:
    code = "import json; from wenxin_stream.server._allocator import running; "
    assert _run_python(code + "print(json.dumps(running()))", PYTHONMALLOC="malloc") == "malloc"


def _serve(tmp_path: Path, *args: str) -> tuple[subprocess.Popen[str], str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QIANFAN_", "WENXIN_"))}
    env.pop(REEXEC_MARK, None)
    proc = subprocess.Popen(
        [str(WENXIN), "serve", "--port", "0", "--data-dir", str(tmp_path / "data"), *args],
        env=env, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stderr is not None
    seen = []
    while not (line := proc.stderr.readline()).startswith("wenxin serve on "):
        seen.append(line)
        assert line, f"serve exited: {''.join(seen)}"
    return proc, line.split(" on ", 1)[1].split(" ", 1)[0]


def _allocator_metric(url: str) -> dict[str, float]:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    found = {}
    for line in text.splitlines():
        if line.startswith("wenxin_allocator_info{"):
            label, value = line.rsplit(" ", 1)
            found[label.split('allocator="', 1)[1].split('"', 1)[0]] = float(value)
    return found


@pytest.mark.parametrize(
    ("flag", "expected"), [((), "jemalloc"), (("--allocator", "python"), "python")]
)
def test_wenxin_serve_reexecutes_itself_under_the_allocator(
    tmp_path: Path, flag: tuple[str, ...], expected: str
) -> None:
    """By default (``auto``, jemalloc installed) ``wenxin serve`` re-executes itself under
    jemalloc: the same process (its pid), jemalloc mapped, ``/metrics`` saying which."""
    proc, url = _serve(tmp_path, *flag)
    try:
        assert _allocator_metric(url) == {expected: 1.0}
        maps = Path(f"/proc/{proc.pid}/maps").read_text()
        assert ("libjemalloc" in maps) is (expected == "jemalloc")
        answer = httpx.post(
            f"{url}/v1/chat/completions",
            json={"model": "ernie-4.0-8k", "messages": [{"role": "user", "content": "hi"}]},
            timeout=30,
        )
        assert answer.status_code == 200
        assert answer.json()["choices"][0]["message"]["content"]
    finally:
        proc.terminate()
        assert proc.wait(30) == 0


def test_serve_inside_another_program_keeps_its_allocator(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process whose command line is not ``wenxin serve`` (a test, an embedding program) is
    never re-executed: that would run *its* command again."""

    def no_exec(env: object) -> None:
        raise AssertionError("re-executed")

    monkeypatch.setattr("wenxin_stream.server._allocator.reexec", no_exec)
    monkeypatch.delenv(REEXEC_MARK, raising=False)
    with caplog.at_level(logging.WARNING):
        serve_cli._choose_allocator("malloc", own_command_line=False)
    assert "allocator: malloc not applied: serve runs inside another program" in caplog.text
    with pytest.raises(AssertionError, match="re-executed"):
        serve_cli._choose_allocator("malloc", own_command_line=True)
    serve_cli._choose_allocator("python", own_command_line=True)  # nothing to change
