"""The C allocator the server's objects come from, chosen at start-up (``allocator``).

Why: CPython's own allocator, pymalloc, serves every object up to 512 bytes from 1 MiB arenas
and gives an arena back to the system only once every object in it is gone. After a peak of
streams, the few objects that outlive it (a metric series, a limiter's entry, a timer, an
interned string) are spread over most of the peak's arenas, so the process stays near its peak
size: 129 % above idle a minute after 2,000 streams (``bench/MEMORY.md``). With
``PYTHONMALLOC=malloc`` every object comes from the C library's ``malloc`` instead, and
jemalloc gives back each page its objects left, by itself (a background thread purges what
stayed free for :data:`JEMALLOC_CONF`'s decay time): 23 % above idle in the same measure.

Which allocator serves a process is fixed before its first line of Python runs
(``PYTHONMALLOC`` is read at interpreter start-up, a preloaded library at ``exec``), so
:func:`plan` works out the environment that gives the wanted one and ``wenxin serve``
re-executes its own command line with it (:func:`reexec`: the same process id, so a service
manager or a test holding it sees nothing change). Worker processes inherit the environment.

Values of ``allocator``:

* ``auto`` (the default): jemalloc where its library is installed, else ``python``.
* ``jemalloc``: ``PYTHONMALLOC=malloc`` and ``LD_PRELOAD`` of ``libjemalloc.so.2`` (Debian's
  ``libjemalloc2``; ``scripts/install-services`` installs it), with :data:`JEMALLOC_CONF`
  unless ``MALLOC_CONF`` is set. Refused with a clear message where the library is missing.
* ``python``: whatever the interpreter started with (pymalloc, unless ``PYTHONMALLOC`` says
  otherwise); nothing re-executed.
* ``malloc``: ``PYTHONMALLOC=malloc`` with the C library's own ``malloc`` (glibc's, whose free
  pages the collector's quiet check returns, ``server/_gc.py``).

Only a process whose command line *is* ``wenxin serve`` re-executes: a program that runs the
command in-process (a test, ``cli.main([...])``) keeps its allocator and logs a warning.

:func:`running` says which one a process has (``/metrics``' ``wenxin_allocator_info``), and
:func:`trimmer` gives the collector the call that returns free pages now: jemalloc's purge
of every arena, or glibc's ``malloc_trim``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from collections.abc import Callable, Mapping
from typing import Any, Literal, NoReturn, get_args

__all__ = [
    "ALLOCATORS",
    "JEMALLOC_CONF",
    "Allocator",
    "AllocatorError",
    "plan",
    "reexec",
    "running",
    "trimmer",
]

Allocator = Literal["python", "malloc", "jemalloc", "auto"]
ALLOCATORS: tuple[str, ...] = get_args(Allocator)

JEMALLOC_CONF = "background_thread:true,dirty_decay_ms:5000,muzzy_decay_ms:0"
"""jemalloc's settings when ``MALLOC_CONF`` is not set: a background thread purges pages left
free for 5 s, straight back to the system (``muzzy_decay_ms:0``: ``MADV_DONTNEED``, not the
lazy ``MADV_FREE`` whose pages still count as resident until the kernel wants them). Measured
by ``bench/memory.py``: 23 % above idle a minute after the peak, against 34 % with jemalloc's
own defaults."""

REEXEC_MARK = "WENXIN_ALLOCATOR_REEXEC"
"""Set in the environment of the re-executed process: a second re-execution is refused (the
interpreter ignored the environment: ``-E`` or ``-I``), never looped."""

_ARENAS_ALL = 4096  # jemalloc's MALLCTL_ARENAS_ALL: "arena.4096.purge" purges every arena


class AllocatorError(Exception):
    """The configured allocator cannot be had here (a missing library, an interpreter that
    ignores ``PYTHONMALLOC``)."""


def _symbol(name: str) -> Any:
    """A C function already loaded in this process (``LD_PRELOAD`` included), or ``None``."""
    try:
        return getattr(ctypes.CDLL(None), name)
    except (OSError, AttributeError):
        return None


def running() -> str:
    """The allocator this process's objects come from: ``python`` (pymalloc counts its
    blocks), ``jemalloc`` (its ``mallctl`` is loaded) or ``malloc`` (the C library's)."""
    if sys.getallocatedblocks() > 0:
        return "python"
    return "jemalloc" if _symbol("mallctl") is not None else "malloc"


def _jemalloc_library() -> str | None:
    return ctypes.util.find_library("jemalloc")


def plan(
    wanted: str,
    environ: Mapping[str, str],
    *,
    current: str | None = None,
    library: Callable[[], str | None] = _jemalloc_library,
) -> dict[str, str] | None:
    """The environment to re-execute with so that ``wanted`` serves the objects, or ``None``
    when nothing needs to change (``current``: :func:`running`'s answer; ``library``: where
    jemalloc's shared library is, ``None`` where it is not installed).

    Raises:
        AllocatorError: ``jemalloc`` asked for and not installed; or a re-execution already
            happened and did not take.
    """
    if wanted not in ALLOCATORS:
        raise AllocatorError(f"allocator: must be one of {', '.join(ALLOCATORS)}")
    current = running() if current is None else current
    path = library() if wanted in ("jemalloc", "auto") else None
    if wanted == "auto":
        wanted = "jemalloc" if path else "python"
    if wanted in ("python", current):
        return None
    if wanted == "jemalloc" and not path:
        raise AllocatorError(
            "allocator: jemalloc is not installed (Debian: apt-get install libjemalloc2; "
            "or choose allocator = python)"
        )
    if environ.get(REEXEC_MARK):
        raise AllocatorError(
            f"allocator: {wanted} asked for, but the re-executed interpreter still runs "
            f"{current} (is Python started with -E or -I, which ignore PYTHONMALLOC?)"
        )
    env = {**environ, "PYTHONMALLOC": "malloc", REEXEC_MARK: wanted}
    if wanted == "jemalloc":
        assert path is not None
        preload = environ.get("LD_PRELOAD", "")
        env["LD_PRELOAD"] = f"{path} {preload}".strip()
        env.setdefault("MALLOC_CONF", JEMALLOC_CONF)
    return env


def reexec(env: Mapping[str, str]) -> NoReturn:
    """Replace this process by its own command line (``sys.orig_argv``) under ``env``."""
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, sys.orig_argv, dict(env))  # noqa: S606 — our own command line


def trimmer() -> Callable[[], bool] | None:
    """The call that returns the allocator's free pages to the system now (whether it could),
    or ``None`` where there is none: jemalloc's purge of every arena, else glibc's
    ``malloc_trim(0)``, which returns the free chunks anywhere in its heaps."""
    mallctl = _symbol("mallctl")
    if mallctl is not None:
        mallctl.argtypes = [
            ctypes.c_char_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t
        ]  # fmt: skip
        mallctl.restype = ctypes.c_int
        name = f"arena.{_ARENAS_ALL}.purge".encode()

        def purge() -> bool:
            return bool(mallctl(name, None, None, None, 0) == 0)

        return purge
    trim = _symbol("malloc_trim")  # glibc's; musl and macOS have none
    if trim is None:
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int

    def malloc_trim() -> bool:
        return bool(trim(0))

    return malloc_trim
