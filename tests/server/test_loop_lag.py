"""The event loop's lateness (server/_loop_lag.py): sampled into /metrics, and stall reports
that name where a stalled loop was."""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from serve_process import Serve

from wenxin_stream.emulator import ServerHandle
from wenxin_stream.server import ServerConfig, ServerConfigError
from wenxin_stream.server._loop_lag import LoopLag, stack_of
from wenxin_stream.server._metrics import Metrics


def _samples(text: str) -> dict[tuple[str, str], float]:
    out: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(text):
        if family.name == "wenxin_event_loop_lag_seconds":
            for s in family.samples:
                out[s.name, s.labels.get("le", "")] = s.value
    return out


def _block_the_loop_for(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


async def _run(lag: LoopLag, block: float) -> None:
    lag.start(asyncio.get_running_loop())
    try:
        await asyncio.sleep(0.2)
        _block_the_loop_for(block)
        await asyncio.sleep(0.2)
    finally:
        lag.stop()


def test_a_blocked_loop_shows_in_the_lag_histogram() -> None:
    metrics = Metrics()
    lag = LoopLag(metrics, interval=0.02)
    asyncio.run(_run(lag, 0.15))
    s = _samples(metrics.render().decode())
    count = s["wenxin_event_loop_lag_seconds_count", ""]
    assert count >= 5  # ~20 samples in 0.55 s, minus the blocked time
    # one sample waited for the whole block (less the interval it was not yet due)
    assert s["wenxin_event_loop_lag_seconds_bucket", "0.1"] == count - 1
    assert s["wenxin_event_loop_lag_seconds_bucket", "0.25"] == count
    assert s["wenxin_event_loop_lag_seconds_sum", ""] >= 0.1


def test_an_idle_loop_is_not_late() -> None:
    metrics = Metrics()
    lag = LoopLag(metrics, interval=0.02, stall_report=0.2)
    asyncio.run(_run(lag, 0.0))
    s = _samples(metrics.render().decode())
    assert s["wenxin_event_loop_lag_seconds_count", ""] >= 10
    assert (
        s["wenxin_event_loop_lag_seconds_bucket", "0.1"]
        == s["wenxin_event_loop_lag_seconds_count", ""]
    )
    assert lag.stalls == 0
    assert lag.report() is None


def test_a_stall_report_names_the_function_the_loop_was_in(
    caplog: pytest.LogCaptureFixture,
) -> None:
    metrics = Metrics()
    lag = LoopLag(metrics, interval=0.02, stall_report=0.03, report_interval=60)
    with caplog.at_level(logging.WARNING, logger="wenxin_stream.server"):
        asyncio.run(_run(lag, 0.3))  # stop() logs the last report
    assert lag.stalls == 1
    (record,) = [r for r in caplog.records if "event loop stalled" in r.getMessage()]
    text = record.getMessage()
    assert "stalled 1 time(s) over 30 ms" in text
    worst = float(text.split("worst ")[1].split(" ms")[0])
    assert 200 <= worst <= 2000
    top = text.splitlines()[1]
    assert "_block_the_loop_for" in top.split(" < ")[0]  # innermost first
    assert int(top.split()[0]) >= 3  # sampled several times while it lasted


def test_the_stack_is_innermost_first_and_bounded() -> None:
    def inner() -> str:
        return stack_of(sys._getframe(), depth=2)

    def outer() -> str:
        return inner()

    parts = outer().split(" < ")
    assert len(parts) == 2
    assert parts[0].startswith("test_loop_lag.py:inner:")
    assert parts[1].startswith("test_loop_lag.py:outer:")
    assert stack_of(None) == "(no Python frame)"


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        LoopLag(Metrics(), interval=0)
    with pytest.raises(ValueError):
        LoopLag(Metrics(), stall_report=-1)
    with pytest.raises(ServerConfigError, match="stall_report"):
        ServerConfig(stall_report=-0.1)
    assert ServerConfig().stall_report == 0.0
    assert ServerConfig.load({}, environ={"WENXIN_STALL_REPORT": "0.05"}).stall_report == 0.05


def test_wenxin_serve_reports_its_loop_lag(tmp_path: Path, emu: ServerHandle) -> None:
    serve = Serve(tmp_path / "data", emu.base_url, "--stall-report", "0.5")
    try:
        time.sleep(0.3)
        text = httpx.get(serve.url + "/metrics", timeout=10).text
        assert serve.stop() == 0  # the watchdog thread does not hold the exit up
    finally:
        if serve.proc.poll() is None:
            serve.kill()
    s = _samples(text)
    assert s["wenxin_event_loop_lag_seconds_count", ""] >= 3
