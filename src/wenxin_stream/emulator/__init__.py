"""A faithful local emulator of Baidu's ERNIE API (文心一言): v1, v2, OAuth and IAM, offline.

Theory of operation
===================

The emulator is a plain ASGI 3 application (no framework) built by :func:`create_app` from an
immutable :class:`EmulatorConfig`. It answers the routes the official SDKs call — OAuth
tokens, v1 ``wenxinworkshop`` chat, v2 ``/v2/chat/completions``, IAM bearer minting and the
qianfan service list — with Baidu's shapes, codes and stream framing
(``shared/ERNIE-PROTOCOL.md``), seeded deterministic answers, realistic pacing, quotas, and a
stable fault-injection language (:class:`FaultSpec`, :func:`parse_fault_spec`) documented in
``docs/EMULATOR.md``.

Module map: ``_config`` (configuration, files) · ``_faults`` (SPEC parser) · ``_answers``
(text, chunking, token estimate) · ``_auth`` (tokens, keys, signatures) · ``_quota`` (RPM/TPM)
· ``_stream`` (the paced SSE pump) · ``_chat`` (shared chat logic) · ``_v1`` / ``_v2``
(routes) · ``_app`` (routing) · ``_server`` (uvicorn in a thread). The ASGI helpers, the
disconnect race and the SSE encoder are shared with the server (``wenxin_stream._asgi``,
``_aio``, ``_sse``).

Importing this package does not import uvicorn; only :func:`run_in_thread` and the
``wenxin emulate`` command do.
"""

from __future__ import annotations

from ._app import EmulatorApp, create_app
from ._config import (
    ConfigError,
    Credentials,
    EmulatorConfig,
    Scenario,
    load_credentials,
    load_scenarios,
    parse_credentials,
    parse_scenarios,
)
from ._faults import FaultSpec, FaultSpecError, parse_fault_rate, parse_fault_spec
from ._server import ServerHandle, run_in_thread, serve_in_thread

__all__ = [
    "ConfigError",
    "Credentials",
    "EmulatorApp",
    "EmulatorConfig",
    "FaultSpec",
    "FaultSpecError",
    "Scenario",
    "ServerHandle",
    "create_app",
    "load_credentials",
    "load_scenarios",
    "parse_credentials",
    "parse_fault_rate",
    "parse_fault_spec",
    "parse_scenarios",
    "run_in_thread",
    "serve_in_thread",
]
