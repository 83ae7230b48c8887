"""The runner: timeouts, the drain at the end, progress lines, per-stream setup failures."""

from __future__ import annotations

import io

import pytest

from wenxin_stream.bench import (
    LoadSpec,
    Target,
    TargetConfig,
    make_target,
    parse_pacing,
    run_load,
)
from wenxin_stream.bench._runner import LoadRun
from wenxin_stream.emulator import ServerHandle


def target(
    url: str, pacing: str, kind: str = "ernie-v2", key: str = "bce-v3/ALTAK-run/x"
) -> Target:
    return make_target(TargetConfig(kind=kind, url=url, api_key=key, pacing=parse_pacing(pacing)))


def test_load_spec_validation() -> None:
    with pytest.raises(ValueError, match="concurrency"):
        LoadSpec(concurrency=0)
    with pytest.raises(ValueError, match="requests"):
        LoadSpec(concurrency=1, requests=0)
    with pytest.raises(ValueError, match="warmup"):
        LoadSpec(concurrency=1, duration=1, warmup=1)
    with pytest.raises(ValueError, match="negative"):
        LoadSpec(concurrency=1, ramp=-1)
    assert LoadSpec(concurrency=1, requests=5, warmup=10).requests == 5


async def test_ttft_and_idle_timeouts(emu: ServerHandle) -> None:
    spec = LoadSpec(concurrency=2, requests=2, ramp=0, ttft_timeout=0.3, idle_timeout=0.3)
    no_start = await run_load(target(emu.base_url, "ttft=0;chunks=3;stall=5"), spec)
    assert no_start.failures == {"timeout": 2}
    assert "no content within 0.3 s" in no_start.error_samples["timeout"][0]
    stalled = await run_load(target(emu.base_url, "ttft=0;chunks=3;stall=5;stall_after=1"), spec)
    assert stalled.failures == {"timeout": 2}
    assert "nothing received" in stalled.error_samples["timeout"][0]


async def test_drain_cuts_endless_streams_and_progress_is_printed(emu: ServerHandle) -> None:
    out = io.StringIO()
    spec = LoadSpec(concurrency=2, duration=1.1, ramp=0.1, drain=0.2)
    result = await run_load(
        target(emu.base_url, "ttft=0;interval=0.01;endless=1"), spec, progress=out
    )
    assert result.streams_cut_at_end == 2
    assert result.streams_failed == 0
    assert result.streams_completed == 0
    assert result.chunks_received == 0  # cut streams are not counted as completed
    assert result.throughput.chunks_per_s > 0
    line = out.getvalue().splitlines()[0]
    assert "open      2" in line
    assert "chunks/s" in line
    assert "p99 late" in line


async def test_warmup_excludes_early_streams(emu: ServerHandle) -> None:
    spec = LoadSpec(concurrency=2, duration=1.0, ramp=0, warmup=0.5)
    run = LoadRun(target(emu.base_url, "ttft=0;interval=0.02;chunks=5"), spec)
    result = await run.run()
    assert result.streams_completed > 0
    assert run.col.all_completed > result.streams_completed
    assert 0.2 < result.window_s < 0.8
    assert len(run.col.warm_lateness) > 0


async def test_setup_failures_per_stream_are_counted(emu: ServerHandle) -> None:
    # the emulator has no /api/conversations: every native stream fails in its setup
    spec = LoadSpec(concurrency=1, requests=3, ramp=0, error_backoff=0)
    result = await run_load(target(emu.base_url, "chunks=1", kind="native"), spec)
    assert result.failures == {"conversation_http_404": 3}
    assert result.streams_started == 3


async def test_client_cost_is_reported(emu: ServerHandle) -> None:
    spec = LoadSpec(concurrency=2, duration=1.2, ramp=0)
    result = await run_load(target(emu.base_url, "ttft=0;interval=0.005;chunks=4"), spec)
    client = result.client
    assert client.loop_lag_max_ms is not None
    assert client.loop_lag_max_ms >= 0
    assert client.cpu_wait_percent is not None
    assert client.cpu_ms_per_1000_chunks is not None
    assert result.to_dict()["client"]["bounded_by"] == client.starved_or_saturated
