"""bench/compare --baseline: the pure parts (options, the change table, the verdict).

``bench/compare.py`` is a script, not a package module, so it is loaded from its path. What
it starts and measures is exercised by running it (see bench/README.md); these tests pin the
arithmetic and the wording the verdict depends on.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

COMPARE = Path(__file__).resolve().parents[2] / "bench" / "compare.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_compare", COMPARE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_compare"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


compare = _load()


# ---- options -------------------------------------------------------------------------------


def test_baseline_adds_the_twin_of_each_serve_target() -> None:
    args = compare.parse_args(["--quick", "--baseline", "main~1", "--targets", "direct,serve"])
    assert args.targets == ["direct", "serve", "serve-base"]
    assert args.native is False
    args = compare.parse_args(["--baseline", "HEAD", "--targets", "serve", "--native"])
    assert sorted(args.targets) == ["serve", "serve-base", "serve-base-native", "serve-native"]


def test_without_baseline_the_default_targets_are_unchanged() -> None:
    args = compare.parse_args([])
    assert args.targets == ["direct", "nginx", "litellm", "serve"]
    assert args.baseline is None


@pytest.mark.parametrize(
    "argv",
    [
        ["--targets", "serve,serve-base"],  # a baseline target without a baseline
        ["--baseline", "HEAD", "--targets", "direct,nginx"],  # nothing to compare
        ["--baseline", "HEAD", "--baseline-rounds", "1"],  # no noise from one round
        ["--baseline", "--quick"],  # an option is not a ref
    ],
)
def test_bad_baseline_options_are_refused(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as info:
        compare.parse_args(argv)
    assert info.value.code == 2


def test_selected_targets_put_each_baseline_right_after_its_twin() -> None:
    assert compare.TARGETS.index("serve-base") == compare.TARGETS.index("serve") + 1
    assert compare.TARGETS.index("serve-base-native") == compare.TARGETS.index("serve-native") + 1


# ---- the figures ---------------------------------------------------------------------------


def _result(relay_cpu: float | None, chunks_per_s: float) -> dict[str, Any]:
    processes = [{"label": "wenxin serve (baseline)", "cpu_mean": relay_cpu}]
    return {
        "processes": [*processes, {"label": "emulator", "cpu_mean": 30.0}],
        "throughput": {"chunks_per_s": chunks_per_s},
    }


def test_relay_cpu_per_1k_is_the_suite_tables_figure() -> None:
    # 50 % of a core over 5,000 chunks/s: 0.1 ms per chunk, 100 ms per 1,000
    assert compare.relay_cpu_per_1k(_result(50.0, 5000.0)) == pytest.approx(100.0)
    assert compare.relay_cpu_per_1k(_result(None, 5000.0)) is None
    assert compare.relay_cpu_per_1k(_result(50.0, 0.0)) is None
    assert compare.relay_cpu_per_1k(None) is None


def test_spread_is_the_largest_relative_distance_from_the_median() -> None:
    assert compare.spread([100.0, 104.0, 97.0]) == pytest.approx(0.04)
    assert compare.spread([100.0, 110.0]) == pytest.approx(5 / 105)  # median 105
    assert compare.spread([90.0, 110.0]) == pytest.approx(0.1)
    assert compare.spread([100.0]) is None
    assert compare.spread([]) is None


@pytest.mark.parametrize(
    ("current", "baseline", "verdict"),
    [
        ([100.0, 102.0, 98.0], [100.0, 101.0, 99.0], "within noise"),  # ratio 1, noise 2 %
        ([103.0, 105.0, 101.0], [100.0, 102.0, 98.0], "regression"),  # ratio 1.03 > 1.02
        ([97.0, 99.0, 95.0], [100.0, 102.0, 98.0], "improvement"),  # ratio 0.97 < 0.98
        ([101.5, 103.5, 99.5], [100.0, 102.0, 98.0], "within noise"),  # 1.015 ≤ 1 + 0.02
        ([100.0], [100.0, 101.0], "unknown"),  # one measurement: no noise of its own
        ([], [100.0, 101.0], "unknown"),
    ],
)
def test_cpu_change_verdict(current: list[float], baseline: list[float], verdict: str) -> None:
    assert compare.cpu_change(current, baseline)["verdict"] == verdict


def test_cpu_change_reports_medians_ratio_and_the_larger_noise() -> None:
    out = compare.cpu_change([110.0, 100.0, 90.0], [50.0, 51.0, 49.0])
    assert out["current"] == 100.0
    assert out["baseline"] == 50.0
    assert out["ratio"] == pytest.approx(2.0)
    assert out["noise"] == pytest.approx(0.1)  # the current code's, the larger of the two
    assert out["verdict"] == "regression"


@pytest.mark.parametrize(
    ("current", "baseline", "verdict"),
    [
        (250, 375, "within one search step"),  # exactly one step (×1.5) apart
        (375, 250, "within one search step"),
        (249, 375, "regression"),
        (400, 250, "improvement"),
        (0, 250, "regression"),  # nothing passed any more
        (250, 0, "improvement"),
        (0, 0, "within one search step"),
        (None, 250, "unknown"),
    ],
)
def test_max_change_allows_one_search_step(
    current: int | None, baseline: int | None, verdict: str
) -> None:
    assert compare.max_change(current, baseline, 0.5)["verdict"] == verdict


# ---- the change table and the verdict line -------------------------------------------------


def _summary(cur_cpu: list[float], base_cpu: list[float], best: tuple[int, int]) -> dict[str, Any]:
    return {
        "baseline": {
            "ref": "main~1",
            "commit": "93e3d922a013eca36eabc87f01ba8bd71aaa45f6",
            "short": "93e3d92",
            "subject": "watch: a | in a subject",
            "version": "0.1.0",
            "current_commit": "4fac57e",
            "current_dirty": True,
            "resolution": 0.5,
            "rounds": 3,
        },
        "suites": {
            "fast": {
                "targets": {
                    "serve": {"best": best[0], "relay_cpu_ms_per_1k": 80.0},
                    "serve-base": {"best": best[1], "relay_cpu_ms_per_1k": 76.0},
                },
                "baseline_rounds": {
                    "serve": {
                        "baseline": "serve-base",
                        "concurrency": 125,
                        "rounds": 3,
                        "current_cpu_ms_per_1k": cur_cpu,
                        "baseline_cpu_ms_per_1k": base_cpu,
                    }
                },
            }
        },
        "ttft": {
            "targets": {
                "serve": {"added_p50": 0.8, "added_p99": 2.1, "round_p50": [1.0, 1.2]},
                "serve-base": {"added_p50": 0.7, "added_p99": 2.0, "round_p50": [0.9, 1.3]},
            }
        },
    }


def test_no_baseline_no_change_section() -> None:
    assert compare.baseline_change({"suites": {}}) is None
    assert compare.render_change({"suites": {}}) == []


def test_same_code_within_noise_is_no_regression() -> None:
    change = compare.baseline_change(
        _summary([100.0, 103.0, 98.0], [99.0, 101.0, 102.0], (250, 250))
    )
    assert change is not None
    assert change["verdict"] == "no regression within noise (the largest noise here: ±3.0%)"
    assert change["ok"] is True
    (row,) = change["rows"]
    assert row["cpu_at_max_ratio"] == pytest.approx(80.0 / 76.0)
    assert change["ttft"]["round_p50_range"] == pytest.approx(0.4)


def test_a_cpu_regression_is_named_in_the_verdict() -> None:
    change = compare.baseline_change(
        _summary([110.0, 111.0, 109.0], [100.0, 101.0, 99.0], (250, 250))
    )
    assert change is not None
    assert change["verdict"].startswith("regression beyond noise: fast/serve: relay CPU")
    assert change["ok"] is False


def test_a_max_streams_drop_beyond_one_step_is_a_regression() -> None:
    change = compare.baseline_change(
        _summary([100.0, 101.0, 99.0], [100.0, 101.0, 99.0], (125, 250))
    )
    assert change is not None
    assert "fast/serve: max streams 125 against 250" in change["verdict"]


def test_too_few_rounds_is_not_decided() -> None:
    change = compare.baseline_change(_summary([100.0], [100.0, 101.0, 99.0], (250, 250)))
    assert change is not None
    assert change["verdict"].startswith("not decided")
    assert change["ok"] is False


def test_render_change_has_the_table_the_verdict_and_safe_cells() -> None:
    text = "\n".join(compare.render_change(_summary([100.0, 103.0], [98.0, 102.0], (250, 250))))
    assert "## Change against the baseline" in text
    assert "**Verdict: no regression within noise (the largest noise here: ±2.0%).**" in text
    assert "with uncommitted changes in `src/`" in text
    assert "watch: a \\| in a subject" in text  # a | would split the table's cells
    assert "| fast | OpenAI | 101.5 / 100.0 ms (125 streams, 3 rounds each) | 1.015× |" in text
    assert "| p50 | 0.80 ms | 0.70 ms | +0.10 ms |" in text


def test_titles_name_the_baseline_ref_and_commit() -> None:
    titles = compare.target_titles(_summary([], [], (0, 0)))
    assert titles["serve-base"] == "wenxin serve at main~1 = 93e3d92 (OpenAI route)"
    assert titles["serve"] == compare.TARGET_TITLES["serve"]
    summary = _summary([], [], (0, 0))
    summary["baseline"]["ref"] = "93e3d92"
    assert compare.target_titles(summary)["serve-base"].startswith("wenxin serve at 93e3d92 (")
