"""The embedded emulator: one offline ERNIE per process, started on first need.

When no Baidu credentials are configured, clients (and ``wenxin ask``/``chat``/``serve``) talk
to the emulator of :mod:`wenxin_stream.emulator`, served by uvicorn on 127.0.0.1 in a daemon
thread, on a port the OS picks. It is started once, lazily and thread-safely, and lives as long
as the process: an ``atexit`` hook stops it before the interpreter is torn down (a uvloop loop
still running in a daemon thread during finalization crashed ``wenxin serve`` with SIGSEGV on
about one exit in six). Its pacing is the emulator's realistic default, so streaming *looks* like
ERNIE; ``WENXIN_EMULATOR_TTFT`` / ``WENXIN_EMULATOR_INTERVAL`` (seconds) change it, and
``WENXIN_EMULATOR_THINKING_INTERVAL`` the pace of a reasoning model's thinking.
"""

from __future__ import annotations

import atexit
import os
import threading

_lock = threading.Lock()
_url: str | None = None


def _float_env(name: str) -> float | None:
    value = os.environ.get(name, "").strip()
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        raise ValueError(f"{name} must be a number of seconds, got {value!r}") from None


def embedded_emulator_url() -> str:
    """The base URL of this process's embedded emulator, starting it if needed."""
    global _url
    with _lock:
        if _url is None:
            try:
                from .emulator import EmulatorConfig, run_in_thread
            except ImportError as exc:  # pragma: no cover - uvicorn is a dependency
                raise RuntimeError(
                    "the embedded emulator needs uvicorn: pip install 'wenxin-stream[server]'"
                ) from exc
            overrides: dict[str, float] = {}
            ttft = _float_env("WENXIN_EMULATOR_TTFT")
            interval = _float_env("WENXIN_EMULATOR_INTERVAL")
            thinking = _float_env("WENXIN_EMULATOR_THINKING_INTERVAL")
            if ttft is not None:
                overrides["ttft"] = ttft
            if interval is not None:
                overrides["interval"] = interval
                overrides["v2_interval"] = interval
            if thinking is not None:
                overrides["thinking_interval"] = thinking
            handle = run_in_thread(EmulatorConfig(**overrides))  # type: ignore[arg-type]
            atexit.register(handle.stop, 2.0)
            _url = handle.base_url
        return _url
