"""Per-credential RPM/TPM quotas over a sliding 60-second window, and the headers they report.

Theory of operation
===================

Each identity (see :mod:`._auth`) owns a :class:`_Window`: a ring of 60 one-second buckets
holding the requests, input tokens and output tokens admitted in that second. A bucket is
reused when its second comes round again (its stale counts are dropped first), so the state is
O(1) per identity whatever the traffic, and the sums cover exactly the last 60 whole seconds.

:meth:`Quotas.admit` decides one request at time ``now`` (injected): over the RPM quota →
``336501`` (``rpm_rate_limit_exceeded``), window's tokens already at the TPM quota → ``336502``
(``tpm_rate_limit_exceeded``); otherwise the request and its whole estimated usage are charged
at once (the answer is deterministic, so its usage is known before it is sent). A refusal
carries ``retry_after``: whole seconds until the oldest bucket holding traffic leaves the
window, at least 1.

Whether quotas are on or off, every chat answer carries the rate-limit headers of both
families (``ERNIE-PROTOCOL.md`` §1.8, §2.7); with quotas off nothing is tracked and the
"remaining" values equal the advertised limits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ._config import ADVERTISED_RPM, ADVERTISED_TPM

WINDOW_SECONDS = 60
"""Length of the sliding window, in seconds."""


@dataclass(frozen=True, slots=True)
class Verdict:
    """The outcome of :meth:`Quotas.admit`: ``error`` is None (admitted), 336501 or 336502;
    the remaining-* counts are after this request; ``retry_after`` is set on refusals."""

    error: int | None
    remaining_requests: int
    remaining_tokens: int
    remaining_input: int
    remaining_output: int
    retry_after: int = 0


class _Window:
    __slots__ = ("input", "output", "requests", "seconds")

    def __init__(self) -> None:
        self.seconds = [-1] * WINDOW_SECONDS
        self.requests = [0] * WINDOW_SECONDS
        self.input = [0] * WINDOW_SECONDS
        self.output = [0] * WINDOW_SECONDS

    def sums(self, second: int) -> tuple[int, int, int]:
        oldest = second - WINDOW_SECONDS
        requests = inp = out = 0
        for slot, stamp in enumerate(self.seconds):
            if stamp > oldest:
                requests += self.requests[slot]
                inp += self.input[slot]
                out += self.output[slot]
        return requests, inp, out

    def charge(self, second: int, inp: int, out: int) -> None:
        slot = second % WINDOW_SECONDS
        if self.seconds[slot] != second:
            self.seconds[slot] = second
            self.requests[slot] = self.input[slot] = self.output[slot] = 0
        self.requests[slot] += 1
        self.input[slot] += inp
        self.output[slot] += out

    def retry_after(self, second: int, now: float) -> int:
        oldest = second - WINDOW_SECONDS
        live = [
            stamp
            for slot, stamp in enumerate(self.seconds)
            if stamp > oldest and self.requests[slot]
        ]
        if not live:
            return 1
        return max(1, math.ceil(min(live) + WINDOW_SECONDS - now))


class Quotas:
    """The RPM/TPM quotas of one emulator app (0 turns a quota off)."""

    def __init__(self, rpm: int, tpm: int) -> None:
        self.rpm = rpm
        self.tpm = tpm
        self._windows: dict[str, _Window] = {}

    @property
    def enabled(self) -> bool:
        """Whether any quota is configured."""
        return bool(self.rpm or self.tpm)

    @property
    def limit_requests(self) -> int:
        """The requests-per-minute limit reported in headers."""
        return self.rpm or ADVERTISED_RPM

    @property
    def limit_tokens(self) -> int:
        """The tokens-per-minute limit reported in headers."""
        return self.tpm or ADVERTISED_TPM

    def admit(self, identity: str, input_tokens: int, output_tokens: int, now: float) -> Verdict:
        """Admit (and charge) or refuse one request of ``identity`` at time ``now``."""
        if not self.enabled:
            limit = self.limit_tokens
            return Verdict(None, self.limit_requests, limit, limit, limit)
        window = self._windows.get(identity)
        if window is None:
            window = self._windows[identity] = _Window()
        second = math.floor(now)
        requests, inp, out = window.sums(second)
        error = None
        if self.rpm and requests + 1 > self.rpm:
            error = 336501
        elif self.tpm and inp + out >= self.tpm:
            error = 336502
        if error is not None:
            return Verdict(
                error,
                max(0, self.limit_requests - requests),
                max(0, self.limit_tokens - inp - out),
                max(0, self.limit_tokens - inp),
                max(0, self.limit_tokens - out),
                window.retry_after(second, now),
            )
        window.charge(second, input_tokens, output_tokens)
        return Verdict(
            None,
            max(0, self.limit_requests - requests - 1),
            max(0, self.limit_tokens - inp - out - input_tokens - output_tokens),
            max(0, self.limit_tokens - inp - input_tokens),
            max(0, self.limit_tokens - out - output_tokens),
        )

    def headers(self, verdict: Verdict, *, v2: bool) -> list[tuple[bytes, bytes]]:
        """The rate-limit headers for an answer: v1's four, or for v2 both families."""
        headers = [
            (b"x-ratelimit-limit-requests", b"%d" % self.limit_requests),
            (b"x-ratelimit-limit-tokens", b"%d" % self.limit_tokens),
            (b"x-ratelimit-remaining-requests", b"%d" % verdict.remaining_requests),
            (b"x-ratelimit-remaining-tokens", b"%d" % verdict.remaining_tokens),
        ]
        if v2:
            headers += [
                (b"x-ratelimit-limit-input-tokens", b"%d" % self.limit_tokens),
                (b"x-ratelimit-limit-output-tokens", b"%d" % self.limit_tokens),
                (b"x-ratelimit-remaining-input-tokens", b"%d" % verdict.remaining_input),
                (b"x-ratelimit-remaining-output-tokens", b"%d" % verdict.remaining_output),
            ]
        return headers
