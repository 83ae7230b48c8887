"""``wenxin bench`` end to end: real runs against an emulator (and the server, when it exists)
started by the test, checking what result.json, report.md and the plots say."""

from __future__ import annotations

import importlib.util
import json
import os
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from servers import serving
from wenxin_stream.bench import parse_pacing
from wenxin_stream.cli import main
from wenxin_stream.emulator import ServerHandle

FAST = ["--duration", "1.2", "--ramp", "0.2", "--drain", "5", "--quiet"]
PACING = ["--pacing", "ttft=0.02;interval=0.005;chunks=8"]
HAVE_SERVER = importlib.util.find_spec("wenxin_stream.server") is not None


def bench(out: Path, *args: str) -> dict[str, Any]:
    status = main(["bench", *args, *FAST, "--out", str(out)])
    doc: dict[str, Any] = json.loads((out / "result.json").read_text(encoding="utf-8"))
    doc["_status"] = status
    return doc


def check_healthy(
    doc: dict[str, Any], out: Path, *, lateness: str | None = "stamp", relay: bool = False
) -> None:
    r = doc["result"]
    assert doc["_status"] == 0
    assert r["streams_completed"] > 0
    assert r["streams_failed"] == 0, r["failures"]
    assert r["failures"] == {}
    if not relay:  # a relay may coalesce the chunks of a lagging client: not loss
        assert r["chunks_lost"] == 0
        assert r["chunks_received"] == 8 * r["streams_completed"]
    for key in ("ttft_ms", "total_ms", "gap_ms"):
        for p in ("p50", "p90", "p99", "max"):
            assert r[key][p] is not None, (key, p)
    if lateness is not None:
        assert r["lateness_method"] == lateness
        assert r["lateness_ms"]["p99"] is not None
    assert r["throughput"]["chunks_per_s"] > 0
    assert r["client"]["cpu_ms_per_1000_chunks"] is not None
    assert doc["machine"]["cores"] >= 1
    assert doc["config"]["pacing"].endswith(";chunks=8;stamp=1")
    svg = ET.parse(out / "latency_cdf.svg").getroot()
    assert svg.tag.endswith("svg")
    report = (out / "report.md").read_text(encoding="utf-8")
    assert "time to first token" in report
    assert "latency_cdf.svg" in report


@pytest.mark.parametrize("kind", ["ernie-v2", "ernie-v1"])
def test_smoke_against_the_emulator(kind: str, emu: ServerHandle, tmp_path: Path) -> None:
    doc = bench(tmp_path, "--url", emu.base_url, "--target", kind, "--concurrency", "4", *PACING)
    check_healthy(doc, tmp_path)
    assert doc["result"]["throughput"]["tokens_per_s"] > 0


def test_openai_shape_on_the_emulators_v2_route(emu: ServerHandle, tmp_path: Path) -> None:
    doc = bench(
        tmp_path,
        "--url",
        emu.base_url,
        "--target",
        "openai",
        "--path",
        "/v2/chat/completions",
        "--api-key",
        "bce-v3/ALTAK-bench/x",
        "--header",
        "X-Test: 1",
        "--requests",
        "12",
        "--concurrency",
        "3",
        *PACING,
    )
    check_healthy(doc, tmp_path)
    assert doc["result"]["streams_completed"] == 12
    assert doc["config"]["api_key"] == "(set)"
    assert doc["config"]["header_names"] == ["X-Test"]
    assert "bce-v3" not in (tmp_path / "result.json").read_text(encoding="utf-8")


def test_schedule_lateness_and_pid_sampling(emu: ServerHandle, tmp_path: Path) -> None:
    doc = bench(
        tmp_path,
        "--url",
        emu.base_url,
        "--target",
        "ernie-v2",
        "--concurrency",
        "2",
        "--pacing",
        "ttft=0.02;interval=0.005;chunks=8;stamp=0",
        "--pid",
        str(os.getpid()),
        "--label",
        "this test",
        "--no-uvloop",
    )
    check_healthy_schedule = doc["result"]
    assert check_healthy_schedule["lateness_method"] == "schedule"
    assert check_healthy_schedule["streams_failed"] == 0
    proc = check_healthy_schedule["processes"][0]
    assert proc["label"] == "this test"
    assert proc["samples"] >= 1
    assert proc["rss_max_mb"] > 0
    assert doc["machine"]["event_loop"] == "asyncio"


def test_a_stream_lasts_its_ttft_and_one_interval_per_chunk(
    emu: ServerHandle, tmp_path: Path
) -> None:
    """What ``Pacing.answer_seconds`` says, and ``bench/compare`` spreads a step's starts over:
    the emulator sends the end event an interval after the last chunk, so a stream lasts its
    TTFT and one interval per chunk (compare once counted an interval less, which left a
    hole in every generation of starts)."""
    spec = "ttft=0.05;interval=0.1;chunks=3;stamp=0"
    expected = parse_pacing(spec).answer_seconds
    assert expected == pytest.approx(0.35)
    assert parse_pacing("chunks=3").answer_seconds is None  # the emulator's own TTFT, interval
    doc = bench(
        tmp_path, "--url", emu.base_url, "--target", "ernie-v2", "--concurrency", "1",
        "--pacing", spec,
    )  # fmt: skip
    total = doc["result"]["total_ms"]
    assert doc["result"]["streams_completed"] >= 2
    assert total["min"] >= 1000 * expected - 2  # (the emulator's timers: whole milliseconds)
    assert total["p50"] < 1000 * (expected + 0.08)  # not a further interval either


def test_failures_are_classified(emu: ServerHandle, tmp_path: Path) -> None:
    doc = bench(
        tmp_path,
        "--url",
        emu.base_url,
        "--target",
        "ernie-v2",
        "--concurrency",
        "2",
        "--pacing",
        "chunks=4;cut_after=2",
        "--api-key",
        "bce-v3/ALTAK-cut/x",
    )
    r = doc["result"]
    assert doc["_status"] == 1
    assert r["streams_completed"] == 0
    assert set(r["failures"]) == {"incomplete"}
    assert r["error_rate"] == 1.0
    assert "incomplete" in (tmp_path / "report.md").read_text(encoding="utf-8")


def test_find_max_small(emu: ServerHandle, tmp_path: Path) -> None:
    status = main(
        [
            "bench",
            "--url",
            emu.base_url,
            "--target",
            "ernie-v2",
            "--find-max",
            "--start-concurrency",
            "2",
            "--max-concurrency",
            "4",
            "--step-duration",
            "0.6",
            "--ramp",
            "0.1",
            "--quiet",
            "--max-p99-lateness-ms",
            "10000",
            *PACING,
            "--out",
            str(tmp_path),
        ]
    )
    assert status == 0
    doc = json.loads((tmp_path / "result.json").read_text(encoding="utf-8"))
    fm = doc["find_max"]
    assert [s["concurrency"] for s in fm["steps"]] == [2, 4]
    assert fm["best_concurrency"] == 4
    assert all(s["passed"] for s in fm["steps"])
    assert doc["result"]["concurrency"] == 4
    ET.parse(tmp_path / "find_max.svg")
    assert "Find-max" in (tmp_path / "report.md").read_text(encoding="utf-8")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--url", "http://10.1.2.3:80"], "--allow-remote"),
        (["--url", "ftp://127.0.0.1"], "http://"),
        (["--url", "http://127.0.0.1:1", "--pacing", "nonsense=1"], "unknown fault key"),
        (["--url", "http://127.0.0.1:1", "--label", "x"], "more --label"),
        (["--url", "http://127.0.0.1:1", "--header", "novalue"], "NAME:VALUE"),
        (["--url", "http://127.0.0.1:1", "--concurrency", "10000000"], "exceeds"),
        (["--url", "http://127.0.0.1:1", "--warmup", "40"], "warmup"),
        (["--url", "http://127.0.0.1:1", "--target", "ernie-v1", "--model", "nope"], "endpoint"),
        (["--url", "http://no-such-host.invalid"], "resolve"),
        (["--url", "http://127.0.0.1:1", "--max-steps", "0"], "must be positive"),
        (["--url", "http://127.0.0.1:1", "--max-error-rate", "2"], "[0, 1]"),
    ],
)
def test_bad_arguments(args: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", *args]) == 2
    assert message in capsys.readouterr().err


def test_setup_failure_and_unreachable_target(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["bench", "--url", "http://127.0.0.1:1", "--target", "ernie-v1", "--quiet"]) == 1
    assert "setup failed" in capsys.readouterr().err
    doc = bench(
        tmp_path,
        "--url",
        "http://127.0.0.1:1",
        "--target",
        "ernie-v2",
        "--concurrency",
        "2",
        "--duration",
        "0.5",
    )
    assert doc["_status"] == 1
    assert set(doc["result"]["failures"]) == {"connect_error"}


# -- our own server: openai and native targets (only once wenxin_stream.server exists) --------


@pytest.fixture
def server_url(tmp_path: Path, emu: ServerHandle) -> Iterator[str]:
    if not HAVE_SERVER:
        pytest.skip("wenxin_stream.server does not exist yet")
    from wenxin_stream.server import ServerConfig, create_app

    config = ServerConfig(
        data_dir=tmp_path / "data",
        upstream_api="v2",
        upstream_v2_base_url=emu.base_url,
        upstream_bearer_token="bce-v3/ALTAK-bench-server/x",
        upstream_emulated=True,
        upstream_retries=0,
        resume_grace=0.5,
        shutdown_grace=0.5,
    )
    with serving(create_app(config)) as handle:
        yield handle.base_url


@pytest.mark.parametrize("kind", ["openai", "native"])
def test_smoke_against_the_server(kind: str, server_url: str, tmp_path: Path) -> None:
    args = ["--target", kind, "--concurrency", "3", "--native-turns", "2"]
    pacing = ["--pacing", "ttft=0.02;interval=0.03;chunks=8"]
    doc = bench(tmp_path / "out", "--url", server_url, *args, *pacing)
    # The server re-frames chunks: the emulator's stamp survives only if it passes unknown
    # fields through; otherwise lateness is measured against the promised schedule.
    check_healthy(doc, tmp_path / "out", lateness=None, relay=True)
    assert doc["result"]["lateness_method"] in ("stamp", "schedule")
    assert doc["result"]["lateness_ms"]["p99"] is not None
