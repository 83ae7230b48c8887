from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import pytest

from wenxin_stream._models import (
    CATALOGUE,
    DEFAULT_MODEL,
    ENDPOINTS,
    MODELS,
    CatalogueError,
    ModelSpec,
    PriceTier,
    find_model,
    load_catalogue,
    lookup_model,
    model_for_endpoint,
)


@pytest.mark.parametrize(
    ("name", "endpoint"),
    [
        ("ERNIE-4.0-8K", "completions_pro"),
        ("ernie-4.0-8k", "completions_pro"),
        ("ERNIE-Bot-4", "completions_pro"),
        ("ernie-4.0", "completions_pro"),
        ("ERNIE-Bot", "completions"),
        ("ERNIE-3.5-8K", "completions"),
        ("ERNIE-Bot-turbo", "eb-instant"),
        ("ernie-lite", "eb-instant"),
        ("ERNIE-Lite-8K", "ernie-lite-8k"),
        ("ERNIE-Speed-8K", "ernie_speed"),
        ("ernie-speed", "ernie_speed"),
        ("  ERNIE-Speed-128K ", "ernie-speed-128k"),
        ("ernie-char-8k", "ernie-char-8k"),
    ],
)
def test_names_and_aliases_reach_their_endpoint(name: str, endpoint: str) -> None:
    info = find_model(name)
    assert info is not None
    assert info.endpoint == endpoint


def test_unknown_model_and_endpoint() -> None:
    assert find_model("gpt-4o") is None
    assert model_for_endpoint("no-such-endpoint") is None


def test_every_endpoint_maps_back_to_its_model() -> None:
    for info in MODELS.values():
        assert model_for_endpoint(info.endpoint) is info
        assert find_model(info.v2_name) is not None
    assert len(ENDPOINTS) == len(MODELS)
    assert find_model(DEFAULT_MODEL) is MODELS[DEFAULT_MODEL]


def test_limits_of_documented_models() -> None:
    info = find_model("ERNIE-4.0-8K")
    assert info is not None
    assert (info.max_input_chars, info.max_input_tokens) == (20000, 5120)


# --- the catalogue ------------------------------------------------------------------------------

TODAY = date(2026, 12, 3)


def known(name: str) -> ModelSpec:
    spec = lookup_model(name)
    assert spec is not None, name
    return spec


@pytest.mark.parametrize(
    ("name", "model_id"),
    [
        ("ernie-x1.1", "ernie-x1.1"),
        ("ERNIE-X1.1-Preview", "ernie-x1.1"),
        (" ernie-x1-turbo-latest ", "ernie-x1-turbo-32k"),
        ("ernie-4.5-turbo-20260402", "ernie-4.5-turbo-128k"),
        ("ernie-lite-8k", "ernie-lite-8k"),
    ],
)
def test_v2_ids_and_aliases_reach_their_entry(name: str, model_id: str) -> None:
    spec = lookup_model(name)
    assert spec is not None
    assert spec.id == model_id


def test_v1_only_names_and_unknown_ids_are_not_v2_models() -> None:
    assert lookup_model("ernie-bot-4") is None  # a v1 alias, not a v2 id
    assert lookup_model("bloomz-7b") is None  # only v1 serves it
    assert lookup_model("deepseek-v3.2") is None  # Qianfan serves it; the catalogue is ERNIE's
    assert find_model("bloomz-7b") is not None


def test_the_current_models_as_the_notes_describe_them() -> None:
    x1 = lookup_model("ernie-x1-turbo-32k")
    assert x1 is not None
    assert (x1.context, x1.max_output, x1.reasoning) == (32768, 28160, "always")
    assert x1.unsupported == {"stop", "seed", "penalty_score", "response_format"}
    assert x1.price == (PriceTier(1, 4),)
    five = lookup_model("ernie-5.1")
    assert five is not None
    assert (five.tools, five.search, five.vision) == (True, True, False)
    assert five.cost(32768, 1000) == pytest.approx((32768 * 4 + 1000 * 18) / 1e6)
    assert five.cost(40000, 1000) == pytest.approx((40000 * 6 + 1000 * 22) / 1e6)
    vl = lookup_model("ernie-4.5-vl-28b-a3b")
    assert vl is not None
    assert vl.vision is True
    assert vl.reasoning == "hybrid"
    turbo = lookup_model("ernie-4.5-turbo-128k")
    assert turbo is not None
    assert turbo.tools is None
    legacy = lookup_model("ernie-4.0-8k")
    assert legacy is not None
    assert legacy.v1 is not None
    assert legacy.v1.endpoint == "completions_pro"
    assert lookup_model("ernie-5.0-thinking-exp") is not None
    assert CATALOGUE.lookup("ernie-char-8k") is lookup_model("ernie-char-8k")


def test_retirement_is_a_date() -> None:
    spec = lookup_model("ernie-5.0")
    assert spec is not None
    assert spec.retired_on == date(2026, 10, 29)
    assert spec.status(date(2026, 10, 28)) == "live"
    assert spec.status(date(2026, 10, 29)) == "retired"
    assert spec.is_retired(TODAY)
    live = CATALOGUE.v2_ids(TODAY)
    assert "ernie-5.0" not in live
    assert "ernie-4.5-turbo-vl" not in live
    assert {"ernie-5.1", "ernie-x1.1", "ernie-x1.1-preview", "ernie-4.5-vl-28b-a3b"} <= set(live)
    assert "ernie-5.0" in CATALOGUE.v2_ids()
    retired = [s.id for s in CATALOGUE.models if s.is_retired(TODAY)]
    assert retired
    assert all(s == "ernie-5.0" or s.startswith("ernie-4.5-turbo") for s in retired)


@pytest.mark.parametrize(
    ("reasoning", "default", "enable", "thinks"),
    [
        ("always", False, None, True),
        ("always", False, False, True),
        ("none", False, True, False),
        ("hybrid", False, None, False),
        ("hybrid", False, True, True),
        ("hybrid", True, None, True),
        ("hybrid", True, False, False),
    ],
)
def test_who_thinks(reasoning: Any, default: bool, enable: bool | None, thinks: bool) -> None:
    spec = ModelSpec("m", "M", "f", reasoning=reasoning, thinking_default=default)
    assert spec.thinks(enable) is thinks


def test_to_json_is_plain_data() -> None:
    spec = lookup_model("ernie-x1.1")
    assert spec is not None
    data = spec.to_json(TODAY)
    assert data["status"] == "live"
    assert data["aliases"] == ["ernie-x1.1-preview"]
    assert data["price"] == [{"input": 1.0, "output": 4.0, "up_to": None}]
    assert "status" not in spec.to_json()
    assert known("ernie-5.0").to_json(TODAY)["status"] == "retired"


def test_a_roster_overlay_changes_one_field_or_adds_a_model() -> None:
    overlay = {
        "model": [
            {"id": "ernie-5.1", "reasoning": "always"},
            {"id": "my-model", "name": "Mine", "family": "custom", "tools": True},
        ]
    }
    catalogue = load_catalogue(overlay)
    changed = catalogue.lookup("ernie-5.1")
    assert changed is not None
    assert changed.reasoning == "always"
    assert changed.max_output == 65536
    added = catalogue.lookup("my-model")
    assert added is not None
    assert added.tools is True
    assert added.vision is None
    assert known("ernie-5.1").reasoning == "hybrid"  # the built-in catalogue is unchanged


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"id": "ernie-5.1", "reasoning": "sometimes"}, "reasoning must be one of"),
        ({"id": "ernie-5.1", "context": -1}, "context must be a positive integer"),
        ({"id": "ernie-5.1", "tools": "yes"}, "tools must be true or false"),
        ({"id": "ernie-5.1", "retired": "soon"}, "retired must be a date"),
        ({"id": "ernie-5.1", "price": [{"input": -1, "output": 1}]}, "non-negative numbers"),
        ({"id": "ernie-5.1", "price": "cheap"}, "price must be a list"),
        ({"id": "ernie-5.1", "price": [{"input": 1, "output": 1, "up_to": "x"}]}, "up_to"),
        ({"id": "ernie-5.1", "colour": "blue"}, "colour is not a catalogue field"),
        ({"id": "ernie-5.1", "aliases": "x"}, "aliases must be a list"),
        ({"id": "ernie-5.1", "v1": "completions"}, "v1 must be a table"),
        ({"id": "ernie-5.1", "v1": {"name": "X"}}, "endpoint must be a non-empty string"),
        ({"id": "new", "name": "N", "family": "f", "aliases": ["ernie-x1.1"]}, "listed twice"),
        ({"id": "Upper", "name": "N", "family": "f"}, "lower case"),
        ({"id": "new", "family": "f"}, "name must be a non-empty string"),
        (
            {"id": "n", "name": "N", "family": "f", "v1": {"name": "N", "endpoint": "completions"}},
            "endpoint 'completions' twice",
        ),
    ],
)
def test_a_bad_catalogue_is_an_error_naming_the_field(entry: dict[str, Any], message: str) -> None:
    with pytest.raises(CatalogueError, match=message):
        load_catalogue({"model": [entry]})


@pytest.mark.parametrize(
    "data",
    [{"models": []}, {"model": "x"}, {"model": [], "extra": 1}, {"model": [{"name": "x"}]}],
)
def test_a_roster_must_be_model_tables(data: dict[str, Any]) -> None:
    with pytest.raises(CatalogueError):
        load_catalogue(data)


def _cell(value: bool | None) -> str:
    return {True: "✓", False: "–", None: "?"}[value]


def _price(spec: ModelSpec) -> str:
    if not spec.price:
        return "?"
    return " · ".join(
        f"{t.input:g} / {t.output:g}" + (f" (≤{t.up_to // 1024}k in)" if t.up_to else "")
        for t in spec.price
    )


def catalogue_table(today: date) -> str:
    """The table of docs/MODELS.md, from the catalogue."""
    rows = [
        "| id (aliases) | context | max output | thinking | tools | search | vision "
        "| CNY per 1M in / out | status |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for spec in CATALOGUE.models:
        if not spec.v2:
            continue
        aliases = ", ".join(f"`{a}`" for a in spec.aliases)
        ids = f"`{spec.id}`" + (f" ({aliases})" if aliases else "")
        thinking = {
            "always": "always",
            "none": "–",
            "hybrid": "hybrid, on" if spec.thinking_default else "hybrid, off",
        }[spec.reasoning]
        if spec.is_retired(today):
            status = f"retired {spec.retired_on}"
        else:
            status = "live" if spec.retired_on is None else f"retires {spec.retired_on}"
        rows.append(
            f"| {ids} | {spec.context or '?'} | {spec.max_output or '?'} | {thinking} "
            f"| {_cell(spec.tools)} | {_cell(spec.search)} | {_cell(spec.vision)} "
            f"| {_price(spec)} | {status} |"
        )
    return "\n".join(rows)


def test_the_documented_table_is_the_catalogue() -> None:
    doc = (Path(__file__).parents[1] / "docs" / "MODELS.md").read_text(encoding="utf-8")
    documented = doc.split("<!-- catalogue:begin -->\n")[1].split("\n<!-- catalogue:end -->")[0]
    expected = catalogue_table(TODAY)
    assert documented == expected, "regenerate docs/MODELS.md's table:\n" + expected
