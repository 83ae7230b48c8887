"""Timeouts that say what they bound.

A streamed answer can legitimately take minutes, so there is no "total" timeout that would kill
a healthy long stream (``shared/LESSONS.md`` item 7). Instead each limit bounds one thing:

``connect``
    opening the TCP (and TLS) connection;
``first_token``
    from sending the request to the first bytes of the body (ERNIE's time to first token,
    which includes queueing at Baidu; the response headers may come earlier or with it);
``idle``
    the longest silence between two reads once the body has started;
``deadline``
    optional: the whole exchange, for callers that really want one (off by default).

:func:`read_timeout` is the pure rule both clients use before every read: it returns how long
the next read may wait and which limit would be the one to fire.
"""

from __future__ import annotations

from dataclasses import dataclass

from ._exceptions import TimeoutKind


@dataclass(frozen=True, slots=True)
class Timeout:
    """Per-stream time limits in seconds; ``None`` turns a limit off.

    ``Timeout(30)`` sets connect, first token and idle to 30 s; keyword arguments set each one.
    """

    connect: float | None = 10.0
    first_token: float | None = 120.0
    idle: float | None = 60.0
    deadline: float | None = None

    @classmethod
    def of(cls, value: Timeout | float | None) -> Timeout:
        """Normalise a caller's value: a Timeout, one number for every phase, or None."""
        if value is None:
            return cls()
        if isinstance(value, Timeout):
            return value
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise ValueError("timeout must be a positive number of seconds or a Timeout")
        seconds = float(value)
        return cls(connect=seconds, first_token=seconds, idle=seconds, deadline=None)


def read_timeout(
    timeout: Timeout,
    *,
    now: float,
    started: float,
    body_started: bool,
    exchange_started: float | None = None,
) -> tuple[float | None, TimeoutKind]:
    """How long the next read may block, and which limit that is.

    ``started`` is when the request (this attempt) was sent; ``body_started`` says whether any
    body bytes have arrived yet (before that the first-token limit applies, after it the idle
    limit). The deadline, when set, caps either; it counts from ``exchange_started`` (the first
    attempt: retries do not get a fresh deadline), or from ``started`` when that is not given.
    A result of ``0`` or less means the limit has passed.
    """
    phase: float | None
    kind: TimeoutKind
    if body_started:
        phase, kind = timeout.idle, "idle"
    else:
        remaining = None if timeout.first_token is None else started + timeout.first_token - now
        phase, kind = remaining, "first_token"
    if timeout.deadline is not None:
        origin = started if exchange_started is None else exchange_started
        left = origin + timeout.deadline - now
        if phase is None or left < phase:
            return left, "deadline"
    return phase, kind
