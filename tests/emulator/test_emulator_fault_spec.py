"""The fault SPEC parser: a pure function, tested exhaustively and with hypothesis."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wenxin_stream.emulator import FaultSpec, FaultSpecError, parse_fault_rate, parse_fault_spec
from wenxin_stream.emulator._faults import FAULT_KEYS, find_directives, strip_directives


def test_every_key_parses() -> None:
    spec = parse_fault_spec(
        "error=336100; error_after=2; times=3; cut_after=4; stall=0.5; stall_after=1;"
        "malformed_after=2; big_line=70000; split_utf8=1; ttft=0; interval=0.02; chunks=64;"
        "endless=true; safety=3; truncate=yes; expire_token=on; stamp=1;"
    )
    assert spec == FaultSpec(
        error=336100,
        error_after=2,
        times=3,
        cut_after=4,
        stall=0.5,
        stall_after=1,
        malformed_after=2,
        big_line=70000,
        split_utf8=True,
        ttft=0.0,
        interval=0.02,
        chunks=64,
        endless=True,
        safety=3,
        truncate=True,
        expire_token=True,
        stamp=True,
    )
    assert set(FAULT_KEYS) == set(FaultSpec.__dataclass_fields__)


def test_empty_spec_is_empty() -> None:
    assert parse_fault_spec("").is_empty
    assert parse_fault_spec(" ; ;").is_empty
    assert not parse_fault_spec("stamp=1").is_empty
    assert parse_fault_spec("split_utf8=0").is_empty


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("x=1", "unknown fault key 'x'"),
        ("cut_afterr=1", "unknown fault key 'cut_afterr'"),
        ("cut_after", "needs a value"),
        ("cut_after=1;cut_after=2", "given twice"),
        ("cut_after=-1", "not an integer"),
        ("cut_after=1.5", "not an integer"),
        ("chunks=0", "not in [1,"),
        ("times=0", "not in [1,"),
        ("error=abc", "neither a v1 error code nor a v2"),
        ("stall=-1", "not in [0, 3600]"),
        ("stall=nan", "not in [0, 3600]"),
        ("ttft=inf", "not in [0, 3600]"),
        ("interval=fast", "not a number of seconds"),
        ("split_utf8=2", "not 1 or 0"),
        ("safety=0", "not 1, 2, 3 or 4"),
        ("safety=5", "not 1, 2, 3 or 4"),
        ("big_line=0", "byte count"),
        ("big_line=99999999999", "byte count"),
        ("error_after=1", "needs 'error' too"),
        ("stall_after=1", "needs 'stall' too"),
    ],
)
def test_bad_specs_are_errors(text: str, message: str) -> None:
    with pytest.raises(FaultSpecError, match=message.replace("[", r"\[").replace("(", r"\(")):
        parse_fault_spec(text)


def test_canonical_is_order_and_spelling_independent() -> None:
    a = parse_fault_spec("error=2;times=2")
    b = parse_fault_spec(" times = 2 ; error = 2 ;")
    assert a.canonical() == b.canonical() == "error=2;times=2"
    assert parse_fault_spec("stall=0.50;split_utf8=true").canonical() == "split_utf8=1;stall=0.5"


def test_directives_are_found_and_stripped() -> None:
    text = "你好 [[wenxin:fault cut_after=2]] 世界 [[wenxin:fault stamp=1]]"
    assert find_directives(text) == ["cut_after=2", "stamp=1"]
    assert strip_directives(text) == "你好  世界"
    assert find_directives("[[wenxin:fault]]") == [""]
    assert strip_directives("no directive") == "no directive"


def test_fault_rates() -> None:
    spec, rate = parse_fault_rate("error=336100;times=1=0.25")
    assert spec == FaultSpec(error=336100, times=1)
    assert rate == 0.25
    for bad in ("error=2", "error=2=x", "error=2=1.5", "=0.5", "bogus=1=0.5"):
        with pytest.raises(FaultSpecError):
            parse_fault_rate(bad if bad != "error=2" else "error2")


_VALUES = {
    "error": st.integers(1, 999_999).map(str),
    "error_after": st.integers(0, 1000).map(str),
    "times": st.integers(1, 1000).map(str),
    "cut_after": st.integers(0, 1000).map(str),
    "stall": st.floats(0, 3600, allow_nan=False).map(repr),
    "stall_after": st.integers(0, 1000).map(str),
    "malformed_after": st.integers(0, 1000).map(str),
    "big_line": st.integers(1, 1 << 20).map(str),
    "split_utf8": st.sampled_from(["0", "1", "true", "false"]),
    "ttft": st.floats(0, 3600, allow_nan=False).map(repr),
    "interval": st.floats(0, 3600, allow_nan=False).map(repr),
    "chunks": st.integers(1, 1000).map(str),
    "endless": st.sampled_from(["0", "1"]),
    "safety": st.sampled_from(["1", "2", "3", "4"]),
    "truncate": st.sampled_from(["0", "1"]),
    "expire_token": st.sampled_from(["0", "1"]),
    "stamp": st.sampled_from(["0", "1"]),
}


@st.composite
def valid_specs(draw: st.DrawFn) -> str:
    keys = draw(st.lists(st.sampled_from(sorted(_VALUES)), unique=True))
    if "error_after" in keys and "error" not in keys:
        keys.append("error")
    if "stall_after" in keys and "stall" not in keys:
        keys.append("stall")
    keys = draw(st.permutations(keys))
    return ";".join(f"{k}={draw(_VALUES[k])}" for k in keys)


@given(valid_specs())
def test_valid_specs_roundtrip_through_canonical(text: str) -> None:
    spec = parse_fault_spec(text)
    assert parse_fault_spec(spec.canonical()) == spec


@given(st.text(max_size=40))
def test_parser_never_crashes(text: str) -> None:
    try:
        spec = parse_fault_spec(text)
    except FaultSpecError as exc:
        message = str(exc)
        assert message
    else:
        assert isinstance(spec, FaultSpec)
