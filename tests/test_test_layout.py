"""The test suite's own layout: any subset of test files, in any order, collects.

Helpers live in importable modules with unique names (``sdk_helpers``, ``server_helpers``,
``emu_helpers``, ``bench_helpers``, ``browser_support``, ``servers``, ``wire_helpers``); a
``conftest`` holds only fixtures and is never imported by name, since several folders have one
and whichever is imported first as ``conftest`` would shadow the others.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).parent


def test_no_test_module_imports_a_conftest() -> None:
    offenders = [
        str(path.relative_to(TESTS))
        for path in TESTS.rglob("*.py")
        if re.search(r"^\s*(from|import) conftest\b", path.read_text("utf-8"), re.MULTILINE)
    ]
    assert offenders == []


def test_files_from_several_folders_collect_in_either_order() -> None:
    files = ["tests/sdk/test_streaming.py", "tests/server/test_race.py"]
    for order in (files, files[::-1]):
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
             *order],
            cwd=TESTS.parent,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
