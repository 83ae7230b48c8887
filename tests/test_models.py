from __future__ import annotations

import pytest

from wenxin_stream._models import (
    DEFAULT_MODEL,
    ENDPOINTS,
    MODELS,
    find_model,
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
