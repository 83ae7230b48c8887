"""Run ASGI apps under real uvicorn on loopback for end-to-end tests.

Streaming must be tested over a real socket: httpx's ``ASGITransport`` and starlette's
``TestClient`` buffer the whole body, so they cannot show pacing, partial writes or an aborted
connection. These helpers start uvicorn in a background thread on ``127.0.0.1`` with a port
the OS chooses (the socket is bound here and handed to uvicorn), wait until the server
reports it has started (polling, never a fixed sleep), and shut it down cleanly.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from wenxin_stream._asgi import ASGIApp
from wenxin_stream.emulator import EmulatorConfig, ServerHandle, create_app, serve_in_thread

FAST: dict[str, Any] = {"ttft": 0.0, "interval": 0.0, "v2_interval": 0.0, "thinking_interval": 0.0}
"""Config overrides that make the emulator answer without pacing."""


@contextmanager
def serving(app: ASGIApp, host: str = "127.0.0.1") -> Iterator[ServerHandle]:
    """Serve any ASGI ``app`` for the duration of the ``with`` block."""
    handle = serve_in_thread(app, host, 0)
    try:
        yield handle
    finally:
        handle.stop()


@contextmanager
def emulator(config: EmulatorConfig | None = None, **overrides: Any) -> Iterator[ServerHandle]:
    """Serve an emulator built from ``config`` (default: fast pacing) plus ``overrides``."""
    if config is None:
        config = EmulatorConfig(**{**FAST, **overrides})
    elif overrides:
        raise TypeError("give either a config or overrides, not both")
    with serving(create_app(config)) as handle:
        yield handle


@contextmanager
def openai_emulator(flavour: str = "vllm", **overrides: Any) -> Iterator[ServerHandle]:
    """Serve an emulator whose ``/v1/chat/completions`` behaves like ``flavour`` (``"vllm"``
    or ``"fastdeploy"``): fast pacing plus ``overrides`` (``openai_api_key=``…). The base URL
    an OpenAI-compatible client takes is ``handle.base_url + "/v1"``."""
    with emulator(openai_flavour=flavour, **overrides) as handle:
        yield handle
