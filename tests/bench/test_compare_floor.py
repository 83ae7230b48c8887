"""bench/compare's floor targets (``bench/floor_relay.py``): options, the command line, the
same-load rounds and the floor's table.

What compare starts and measures is exercised by running it (``bench/PROFILE.md``, "The
floor"); these tests pin the configuration and the arithmetic the floor's ratios depend on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from test_compare_baseline import compare  # the script, loaded once from its path


def test_floor_targets_are_known_measured_after_nginx_and_not_default() -> None:
    args = compare.parse_args(["--targets", "serve,floor-parse,nginx,floor"])
    assert compare.Compare(args).selected_targets == ["nginx", "floor", "floor-parse", "serve"]
    assert args.native is False
    assert not set(compare.FLOOR_TARGETS) & set(compare.parse_args([]).targets)
    assert compare.START_AS["floor"] == compare.START_AS["floor-parse"] == "nginx"
    assert compare.START_AS["floor-sdk"] == "nginx"
    assert compare.parse_args(["--floor-streams", "300"]).floor_streams == 300
    assert compare.parse_args([]).floor_streams is None


def test_floor_command_runs_the_relay_pinned_against_the_runs_emulator(tmp_path: Path) -> None:
    run = compare.Compare(compare.parse_args(["--targets", "floor", "--out", str(tmp_path)]))
    run.emulator_url = "http://127.0.0.1:4321"
    bare = run.floor_command()
    pin = run.pin(run.relay_cpu)
    assert bare[: len(pin)] == pin
    assert bare[len(pin) :] == [
        str(compare.VENV / "python"),
        str(compare.BENCH_DIR / "floor_relay.py"),
        "--upstream",
        "http://127.0.0.1:4321",
        "--port",
        "0",
    ]
    assert run.floor_command(compare.FLOOR_TARGETS["floor-parse"]) == [*bare, "--parse"]
    assert run.floor_command(compare.FLOOR_TARGETS["floor-sdk"]) == [*bare, "--sdk"]
    assert (compare.BENCH_DIR / "floor_relay.py").is_file()


def _doc(relay_cpu_percent: float, *, lost: int = 0) -> dict[str, Any]:
    return {
        "result": {
            "streams_completed": 10,
            "streams_failed": 0,
            "failures": {},
            "chunks_lost": lost,
            "lateness_ms": {"p50": 1.0, "p99": 2.0},
            "throughput": {"chunks_per_s": 1000.0},
            "client": {"cpu_percent": 5.0},
            "processes": [
                {"label": "relay", "cpu_mean": relay_cpu_percent},
                {"label": "emulator", "cpu_mean": 30.0},
            ],
        }
    }


def test_same_load_rounds_rotate_the_order_and_count_only_clean_steps(tmp_path: Path) -> None:
    argv = ["--targets", "nginx,floor,serve", "--baseline-rounds", "3", "--out", str(tmp_path)]
    run = compare.Compare(compare.parse_args(argv))
    names = ["nginx", "floor", "serve"]
    run.targets = {n: compare.Target(n, "openai", "http://x", None, []) for n in names}
    cpu = {"nginx": 2.0, "floor": 5.0, "serve": 10.0}  # % of a core at 1,000 chunks/s
    order: list[str] = []

    def bench(target: Any, out: Path, flags: list[str], timeout: float, tag: str) -> Any:
        order.append(target.name)
        assert flags[flags.index("--concurrency") + 1] == "40"
        # serve's second run loses chunks: relayed fewer, larger ones, so not counted
        return _doc(
            cpu[target.name], lost=int(order.count("serve") == 2 and target.name == "serve")
        )

    run.bench = bench
    rows = {"nginx": {"best": 100}, "floor": {"best": 80}, "serve": {"best": 120}}
    done = run._same_load(compare.SUITES["fast"], rows, names, "floor-rounds")
    assert order == [*names, "floor", "serve", "nginx", "serve", "nginx", "floor"]
    assert done["concurrency"] == 40  # half the smallest maximum
    assert done["cpu_ms_per_1k"] == {"nginx": [20.0] * 3, "floor": [50.0] * 3, "serve": [100.0] * 2}
    assert [s["counted"] for s in done["steps"]].count(False) == 1

    order.clear()
    fixed = run._same_load(compare.SUITES["fast"], rows, ["nginx", "floor"], "floor-rounds", 40)
    assert fixed["concurrency"] == 40
    assert order == ["nginx", "floor", "floor", "nginx", "nginx", "floor"]  # a, b / b, a / …


def test_floor_rounds_need_a_floor_target_and_something_to_compare_with(tmp_path: Path) -> None:
    run = compare.Compare(compare.parse_args(["--out", str(tmp_path)]))
    suite = compare.SUITES["fast"]
    assert run.floor_rounds(suite, {"nginx": {}, "serve": {}}) is None
    assert run.floor_rounds(suite, {"floor": {}}) is None


def test_floor_rows_give_medians_and_ratios_to_nginx_and_the_floor() -> None:
    summary = {
        "suites": {
            "fast": {
                "floor_rounds": {
                    "concurrency": 200,
                    "rounds": 3,
                    "cpu_ms_per_1k": {
                        "nginx": [20.0, 22.0, 24.0],
                        "floor": [60.0, 66.0, 70.0],
                        "floor-parse": [],
                        "serve": [130.0, 132.0, 140.0],
                    },
                }
            }
        }
    }
    rows = {r["target"]: r for r in compare.floor_rows(summary)}
    assert rows["floor"]["cpu_ms_per_1k"] == 66.0
    assert rows["floor"]["to_nginx"] == 3.0
    assert rows["serve"]["to_floor"] == 2.0
    assert abs(rows["nginx"]["spread"] - 2 / 22) < 1e-12
    assert rows["floor-parse"]["cpu_ms_per_1k"] is None
    assert rows["floor-parse"]["to_nginx"] is None
    assert rows["floor-parse"]["counted"] == 0
    text = "\n".join(compare.render_floor(summary, compare.TARGET_TITLES))
    assert "## The floor" in text
    assert (
        "| fast | wenxin serve (OpenAI route) | 200 | 3/3 | 132.0 ms (±6%) | 6.00× | 2.00× |"
        in text
    )
    assert compare.render_floor({"suites": {"fast": {}}}, compare.TARGET_TITLES) == []


def test_floor_memory_is_rendered_beside_the_rounds() -> None:
    summary = {
        "memory_floor": {
            "idle_mib": 40.0,
            "levels": [{"streams": 500, "open": 500, "rss_mib": 45.0, "kib_per_stream": 10.24}],
            "marginal_kib_per_stream": 9.5,
        }
    }
    text = "\n".join(compare.render_floor(summary, compare.TARGET_TITLES))
    assert "idle 40.00 MiB; per stream over idle: 500 open: 10.2 KiB; marginal 9.5 KiB" in text
