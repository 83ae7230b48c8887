"""The emulator's fault-injection language: parse ``SPEC`` strings into :class:`FaultSpec`.

Theory of operation
===================

A fault SPEC is a ``;``-separated list of ``key=value`` pairs, for example
``error=336100;times=2`` or ``cut_after=3``. It reaches the emulator three ways, in this order
of precedence (see ``docs/EMULATOR.md``, the stable reference for every key):

1. explicitly with the request: the header ``X-Wenxin-Fault: SPEC`` and/or a directive
   ``[[wenxin:fault SPEC]]`` anywhere in the last user message (both are merged; a key given
   twice is an error);
2. from the scenario entry that matched the prompt;
3. from the configured rates (``--fault-rate 'SPEC=0.05'``), drawn with a seeded RNG.

Everything in this module is pure: :func:`parse_fault_spec` turns text into an immutable
:class:`FaultSpec` or raises :class:`FaultSpecError` with a message meant for the client (it is
sent back as v1 error 336001 or v2 400 ``invalid_argument``). Unknown keys and bad values are
errors, never ignored, so a typo cannot silently disable a test. The directive helpers find and
strip ``[[wenxin:fault …]]`` so the directive is never echoed nor counted in usage.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, fields

from .._error_codes import V2_CODES

MAX_SECONDS = 3600.0
"""Upper bound of every duration key (``stall``, ``ttft``, ``interval``)."""

MAX_COUNT = 1_000_000
"""Upper bound of every count key (``*_after``, ``times``, ``chunks``)."""

MAX_BIG_LINE = 64 * 1024 * 1024
"""Upper bound of ``big_line`` (bytes)."""

DIRECTIVE_RE = re.compile(r"\[\[wenxin:fault(?:\s+([^\]]*))?\]\]")
"""A ``[[wenxin:fault SPEC]]`` directive; group 1 is the SPEC (possibly None)."""


class FaultSpecError(ValueError):
    """A fault SPEC that cannot be parsed; the message is safe to send to the client."""


@dataclass(frozen=True, slots=True)
class FaultSpec:
    """One parsed fault SPEC; every field ``None``/``False`` means "not requested".

    The exact wire behaviour of each field is documented in ``docs/EMULATOR.md``.
    """

    error: int | str | None = None
    error_after: int | None = None
    times: int | None = None
    cut_after: int | None = None
    stall: float | None = None
    stall_after: int | None = None
    malformed_after: int | None = None
    big_line: int | None = None
    split_utf8: bool = False
    ttft: float | None = None
    interval: float | None = None
    chunks: int | None = None
    endless: bool = False
    safety: int | None = None
    truncate: bool = False
    expire_token: bool = False
    stamp: bool = False
    thinking_interval: float | None = None
    tool_pieces: int | None = None
    tool_index: bool | None = None

    @property
    def is_empty(self) -> bool:
        """True when the SPEC requests nothing at all."""
        return self == _EMPTY

    def errs_at_once(self, *, stream: bool) -> bool:
        """Whether the injected ``error`` is the whole answer: always without a stream; in a
        stream unless ``error_after`` sends it after that many chunks."""
        return self.error is not None and not (stream and self.error_after is not None)

    def canonical(self) -> str:
        """A normalised SPEC text (keys sorted, defaults left out): the identity used to count
        ``times=N`` per SPEC and credential."""
        parts = []
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None or value == f.default:
                continue
            if isinstance(value, bool):
                value = int(value)
            parts.append(f"{f.name}={value!r}" if isinstance(value, float) else f"{f.name}={value}")
        return ";".join(sorted(parts))


_EMPTY = FaultSpec()


def _count(low: int) -> Callable[[str, str], int]:
    def parse(key: str, text: str) -> int:
        if not re.fullmatch(r"\+?\d{1,9}", text):
            raise FaultSpecError(f"bad value for fault key '{key}': {text!r} is not an integer")
        value = int(text)
        if not low <= value <= MAX_COUNT:
            raise FaultSpecError(
                f"bad value for fault key '{key}': {value} is not in [{low}, {MAX_COUNT}]"
            )
        return value

    return parse


def _seconds(key: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise FaultSpecError(
            f"bad value for fault key '{key}': {text!r} is not a number of seconds"
        ) from None
    if not math.isfinite(value) or not 0 <= value <= MAX_SECONDS:
        raise FaultSpecError(
            f"bad value for fault key '{key}': {text!r} is not in [0, {MAX_SECONDS:g}] seconds"
        )
    return value


_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def _flag(key: str, text: str) -> bool:
    lowered = text.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise FaultSpecError(f"bad value for fault key '{key}': {text!r} is not 1 or 0")


def _safety(key: str, text: str) -> int:
    if text not in ("1", "2", "3", "4"):
        raise FaultSpecError(f"bad value for fault key '{key}': {text!r} is not 1, 2, 3 or 4")
    return int(text)


def _error(key: str, text: str) -> int | str:
    """A v1 error code (an integer ≥ 1), or a v2 code of the current table (``model_offline``,
    ``account_overdue``…), which only the v2 route can answer."""
    if text in V2_CODES:
        return text
    if not re.fullmatch(r"\+?\d{1,9}", text):
        raise FaultSpecError(
            f"bad value for fault key '{key}': {text!r} is neither a v1 error code nor a v2 "
            "error code of the current table"
        )
    return _count(1)(key, text)


def _pieces(key: str, text: str) -> int:
    value = _count(1)(key, text)
    if value > 64:
        raise FaultSpecError(f"bad value for fault key '{key}': {value} is not in [1, 64]")
    return value


def _big_line(key: str, text: str) -> int:
    if not re.fullmatch(r"\+?\d{1,9}", text) or not 1 <= int(text) <= MAX_BIG_LINE:
        raise FaultSpecError(
            f"bad value for fault key '{key}': {text!r} is not a byte count in [1, {MAX_BIG_LINE}]"
        )
    return int(text)


_PARSERS: dict[str, Callable[[str, str], object]] = {
    "error": _error,
    "error_after": _count(0),
    "times": _count(1),
    "cut_after": _count(0),
    "stall": _seconds,
    "stall_after": _count(0),
    "malformed_after": _count(0),
    "big_line": _big_line,
    "split_utf8": _flag,
    "ttft": _seconds,
    "interval": _seconds,
    "chunks": _count(1),
    "endless": _flag,
    "safety": _safety,
    "truncate": _flag,
    "expire_token": _flag,
    "stamp": _flag,
    "thinking_interval": _seconds,
    "tool_pieces": _pieces,
    "tool_index": _flag,
}

FAULT_KEYS: tuple[str, ...] = tuple(_PARSERS)
"""Every key a SPEC may use, in documentation order."""


def parse_fault_spec(text: str) -> FaultSpec:
    """Parse a SPEC such as ``"error=336100;times=2"`` into a :class:`FaultSpec`.

    Whitespace around keys, values and separators is ignored, and so are empty items (a
    trailing ``;``). An empty SPEC gives an empty :class:`FaultSpec`.

    Raises:
        FaultSpecError: an unknown key (``unknown fault key 'x'``), a key given twice, a
            missing ``=``, a value out of range, or a dependent key without its base key
            (``error_after`` without ``error``, ``stall_after`` without ``stall``).
    """
    values: dict[str, object] = {}
    for raw in text.split(";"):
        item = raw.strip()
        if not item:
            continue
        key, eq, value = item.partition("=")
        key = key.strip()
        value = value.strip()
        parser = _PARSERS.get(key)
        if parser is None:
            raise FaultSpecError(f"unknown fault key {key!r}")
        if not eq:
            raise FaultSpecError(f"fault key '{key}' needs a value: write {key}=VALUE")
        if key in values:
            raise FaultSpecError(f"fault key '{key}' is given twice")
        values[key] = parser(key, value)
    if "error_after" in values and "error" not in values:
        raise FaultSpecError("fault key 'error_after' needs 'error' too")
    if "stall_after" in values and "stall" not in values:
        raise FaultSpecError("fault key 'stall_after' needs 'stall' too")
    return FaultSpec(**values)  # type: ignore[arg-type]


def find_directives(text: str) -> list[str]:
    """Return the SPEC of every ``[[wenxin:fault SPEC]]`` directive in ``text``, in order."""
    return [m.group(1) or "" for m in DIRECTIVE_RE.finditer(text)]


def strip_directives(text: str) -> str:
    """Remove every directive from ``text`` (and the whitespace it leaves at the ends)."""
    if "[[wenxin:fault" not in text:
        return text
    return DIRECTIVE_RE.sub("", text).strip()


def parse_fault_rate(text: str) -> tuple[FaultSpec, float]:
    """Parse a ``--fault-rate`` value ``SPEC=RATE`` (split at the last ``=``), RATE in [0, 1].

    Raises:
        FaultSpecError: no ``=``, a RATE that is not a number in [0, 1], or a bad SPEC.
    """
    spec_text, eq, rate_text = text.rpartition("=")
    if not eq:
        raise FaultSpecError(f"fault rate {text!r} must look like SPEC=RATE")
    try:
        rate = float(rate_text)
    except ValueError:
        raise FaultSpecError(f"fault rate {rate_text!r} is not a number") from None
    if not 0.0 <= rate <= 1.0:
        raise FaultSpecError(f"fault rate {rate_text!r} is not in [0, 1]")
    spec = parse_fault_spec(spec_text)
    if spec.is_empty:
        raise FaultSpecError(f"fault rate {text!r} has an empty SPEC")
    return spec, rate
