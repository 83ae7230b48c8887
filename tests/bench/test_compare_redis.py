"""bench/compare's Redis targets: the pure parts (options, Redis's cost, the workers' sum, the
Redis table and goals).

What compare starts and measures is exercised by running it (``bench/RESULTS-REDIS.md``); these
tests pin the arithmetic the Redis figures and verdicts depend on.
"""

from __future__ import annotations

from typing import Any

import pytest
from test_compare_baseline import compare  # the script, loaded once from its path


def test_native_adds_the_native_twin_of_each_redis_target() -> None:
    args = compare.parse_args(["--targets", "serve,serve-redis,serve-workers2", "--native"])
    assert compare.Compare(args).selected_targets == [
        "serve", "serve-redis", "serve-workers2",
        "serve-native", "serve-redis-native", "serve-workers2-native",
    ]  # fmt: skip
    assert args.native is True


def test_a_native_redis_target_alone_turns_the_native_suites_on() -> None:
    args = compare.parse_args(["--targets", "serve-redis-native"])
    assert args.native is True
    assert args.targets == ["serve-redis-native"]


def test_redis_targets_start_their_search_where_serve_does() -> None:
    assert compare.START_AS["serve-redis"] == "serve"
    assert compare.START_AS["serve-workers2-native"] == "serve-native"


@pytest.mark.parametrize(
    ("flags", "chunks"),
    [
        (["--pacing", "ttft=0.2;interval=0.02;chunks=64;stamp=0", "--concurrency", "5"], 64),
        (["--pacing", "chunks=12"], 12),
        (["--pacing", "ttft=0;interval=0"], None),
        (["--concurrency", "5"], None),
    ],
)
def test_pacing_chunks(flags: list[str], chunks: int | None) -> None:
    assert compare.pacing_chunks(flags) == chunks


def _marks(
    cpu: float, memory: float, keys: float, expired: float, ended: float
) -> dict[str, float]:
    return {"cpu_s": cpu, "used_memory": memory, "keys": keys, "expired_keys": expired,
            "streams_ended": ended}  # fmt: skip


def test_redis_cost_per_chunk_and_per_answer_held() -> None:
    cost = compare.redis_cost(
        _marks(1.0, 1_000_000, 10, 0, 100), _marks(1.064, 1_500_000, 210, 0, 200), 64
    )
    assert cost["answers"] == 100
    assert cost["chunks"] == 6400
    assert cost["cpu_us_per_chunk"] == pytest.approx(10.0)
    assert cost["answers_held_growth"] == 100
    assert cost["bytes_per_answer"] == pytest.approx(5000)


def test_redis_memory_is_left_out_when_keys_expired_or_too_few_answers_are_held() -> None:
    expired = compare.redis_cost(
        _marks(1.0, 1_000_000, 10, 0, 100), _marks(1.1, 1_500_000, 210, 40, 200), 64
    )
    assert expired["bytes_per_answer"] is None
    assert expired["expired_keys"] == 40
    # the OpenAI route writes no event log: a key or two moves, no answer is held
    few = compare.redis_cost(
        _marks(1.0, 1_000_000, 10, 0, 100), _marks(1.1, 1_060_000, 11, 0, 200), 64
    )
    assert few["bytes_per_answer"] is None
    assert few["cpu_us_per_chunk"] == pytest.approx(0.1 * 1e6 / 6400)


def test_redis_cost_without_chunks_has_no_per_chunk_figure() -> None:
    cost = compare.redis_cost(_marks(1, 0, 0, 0, 0), _marks(2, 0, 0, 0, 0), None)
    assert cost["cpu_us_per_chunk"] is None


def _proc(label: str, cpu: float | None, rss: float = 50.0) -> dict[str, Any]:
    return {"label": label, "cpu_mean": cpu, "cpu_max": cpu, "rss_max_mb": rss}


def test_the_relay_of_two_workers_is_their_sum() -> None:
    result = {
        "processes": [
            _proc("wenxin serve worker 1", 30.0),
            _proc("wenxin serve worker 2", 20.0),
            _proc("emulator", 40.0),
        ],
        "throughput": {"chunks_per_s": 5000.0},
    }
    relay = compare.relay_process(result)
    assert relay["cpu_mean"] == 50.0
    assert relay["rss_max_mb"] == 100.0
    assert compare.relay_cpu_per_1k(result) == pytest.approx(100.0)  # 50 % × 1e4 / 5000


def test_one_process_relays_are_unchanged() -> None:
    result = {
        "processes": [_proc("litellm", 30.0), _proc("litellm child", 5.0), _proc("emulator", 9)],
        "throughput": {"chunks_per_s": 3000.0},
    }
    assert compare.relay_process(result)["label"] == "litellm"
    assert compare.relay_cpu_per_1k(result) == pytest.approx(100.0)


def _suite(
    key: str, redis_cpu: list[float], memory_cpu: list[float], best: tuple[int, int]
) -> dict[str, Any]:
    cost = {"cpu_us_per_chunk": 3.0, "bytes_per_answer": 4600.0}
    steps = [{"target": "serve-redis-native", "counted": True, "redis": cost}] * len(redis_cpu)
    return {
        "title": key,
        "pacing": compare.SUITES[key].pacing,
        "targets": {
            "serve-native": {"best": best[1], "relay_cpu_ms_per_1k": 80.0},
            "serve-redis-native": {
                "best": best[0],
                "relay_cpu_ms_per_1k": 100.0,
                "first_failure": best[0] * 2,
                "redis": cost,
            },
        },
        "redis_rounds": {
            "serve-redis-native": {
                "other": "serve-native",
                "concurrency": 100,
                "rounds": len(redis_cpu),
                "first_cpu_ms_per_1k": redis_cpu,
                "other_cpu_ms_per_1k": memory_cpu,
                "steps": steps,
            }
        },
    }


def test_redis_goals_use_the_same_load_rounds_and_the_max_streams() -> None:
    s = {
        "suites": {
            "fast": _suite("fast", [110.0, 112.0, 108.0], [100.0, 101.0, 99.0], (400, 500)),
            "ernie": _suite("ernie", [50.0, 51.0], [50.0, 50.0], (300, 500)),
        }
    }
    goals = {goal: (measured, verdict) for goal, measured, verdict in compare.redis_goals(s)}
    fast = goals["fast (native API: the event log): relay CPU / 1k chunks, Redis ≤ 1.25× in-memory"]
    assert "×1.10" in fast[0]
    assert fast[1] == "✅ met"
    ernie = goals["ERNIE-paced (native API: the event log): streams on one core, Redis ≥ 80 % of "
                  "in-memory"]  # fmt: skip
    assert ernie == ("300 / 500 = 60%", "❌ missed")
    rows = compare.redis_rows(s)
    assert rows[0]["redis_cpu_us_per_chunk"] == 3.0
    assert rows[0]["redis_bytes_per_answer"] == 4600.0
    assert rows[0]["cpu_at_max_ratio"] == pytest.approx(1.25)
    text = "\n".join(compare.render_redis(s, compare.TARGET_TITLES))
    assert "**×1.10**" in text
    assert "4.6 KB (64 chunks)" in text
    assert "2 workers on this machine" not in text  # no workers target ran
    assert "PostgreSQL" not in text
    with_postgres = "\n".join(compare.render_redis({**s, "postgres": True}, compare.TARGET_TITLES))
    assert "private PostgreSQL (`--postgres`)" in with_postgres
    assert compare.parse_args(["--postgres"]).postgres


def test_no_redis_target_no_redis_section() -> None:
    s = {"suites": {"fast": {"title": "fast", "targets": {"serve": {"best": 500}}}}}
    assert compare.render_redis(s, compare.TARGET_TITLES) == []
    assert compare.redis_goals(s) == []


def test_services_core_chooses_where_redis_and_postgres_run() -> None:
    args = compare.parse_args(["--targets", "serve,serve-redis", "--services-core", "relay"])
    assert args.services_core == "relay"
    assert compare.parse_args(["--targets", "serve,serve-redis"]).services_core == "load"
    with pytest.raises(SystemExit):
        compare.parse_args(["--services-core", "elsewhere"])


def test_pin_tree_pins_a_process_and_its_children() -> None:
    import os
    import subprocess
    import time

    parent = subprocess.Popen(["sh", "-c", "sleep 30 & sleep 30 & wait"])
    try:
        deadline = time.monotonic() + 5
        children: list[int] = []
        while len(children) < 2 and time.monotonic() < deadline:
            found = subprocess.run(
                ["pgrep", "-P", str(parent.pid)], capture_output=True, text=True, check=False
            )
            children = [int(p) for p in found.stdout.split()]
            time.sleep(0.02)
        assert len(children) == 2
        cpu = max(os.sched_getaffinity(0))
        compare.pin_tree(parent.pid, cpu)
        for pid in [parent.pid, *children]:
            assert os.sched_getaffinity(pid) == {cpu}
    finally:
        subprocess.run(["pkill", "-P", str(parent.pid)], check=False)
        parent.kill()
        parent.wait()
