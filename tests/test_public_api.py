"""The public surface: what ``import wenxin_stream`` offers, and what it must not drag in."""

from __future__ import annotations

import subprocess
import sys

import wenxin_stream


def test_all_is_sorted_unique_and_complete() -> None:
    names = wenxin_stream.__all__
    assert len(names) == len(set(names))

    # isort style, as ruff's RUF022 keeps it: CONSTANTS, then Classes, then functions.
    def style(name: str) -> tuple[int, str]:
        return (0 if name.isupper() else 1 if name[0].isupper() else 2, name)

    assert sorted(names, key=style) == names
    for name in names:
        assert hasattr(wenxin_stream, name), name
    public = {n for n in vars(wenxin_stream) if not n.startswith("_") and n[0].isupper()}
    assert public <= set(names), public - set(names)


def test_every_public_name_has_a_docstring() -> None:
    for name in wenxin_stream.__all__:
        obj = getattr(wenxin_stream, name)
        if callable(obj) and not isinstance(obj, type(wenxin_stream.StreamEvent)):
            assert (obj.__doc__ or "").strip(), f"{name} has no docstring"


def test_import_pulls_in_no_server_framework() -> None:
    code = (
        "import sys, wenxin_stream; "
        "bad = [m for m in ('uvicorn', 'starlette', 'httptools', 'uvloop') if m in sys.modules]; "
        "print(','.join(bad))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == ""


def test_importing_the_emulator_does_not_import_uvicorn() -> None:
    code = "import sys, wenxin_stream.emulator; print('uvicorn' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == "False"
