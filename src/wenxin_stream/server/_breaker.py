"""A circuit breaker: one per channel, never per model. Pure (the clock is injected).

Theory of operation
===================

::

              failure × threshold                cooldown over: one probe
    CLOSED ────────────────────────► OPEN ─────────────────────────────► HALF_OPEN
      ▲                               ▲                                     │
      │ probe succeeded               └──────────── probe failed ───────────┤
      └─────────────────────────────────────────────────────────────────────┘

- **closed**: requests go; each failure counts, a success resets the count; at
  ``threshold`` consecutive failures the breaker opens;
- **open**: no request goes until ``cooldown`` seconds have passed;
- **half-open**: exactly one request (the *probe*) goes; its success closes the breaker, its
  failure opens it again for another ``cooldown``. A probe that ends with neither (its client
  left) frees the slot for the next request to probe.

:meth:`Breaker.admit` is asked by the router for each request it would send; the outcome comes
back through :meth:`Breaker.succeeded`, :meth:`Breaker.failed` or :meth:`Breaker.released`,
each told whether that request was the probe. A ``threshold`` of 0 turns the breaker off.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum

__all__ = ["Breaker", "BreakerState"]


class BreakerState(Enum):
    """Where a breaker is (its value is what ``/metrics`` and the admin view show)."""

    CLOSED = "closed"
    HALF_OPEN = "half_open"
    OPEN = "open"


class Breaker:
    """The breaker of one channel (see the module docstring)."""

    __slots__ = ("_clock", "_opened_at", "_probing", "cooldown", "failures", "opened", "threshold")

    def __init__(self, threshold: int, cooldown: float, clock: Callable[[], float]) -> None:
        self.threshold = threshold
        self.cooldown = cooldown
        self.failures = 0
        """Consecutive failures."""
        self.opened = 0
        """How many times the breaker opened."""
        self._clock = clock
        self._opened_at: float | None = None
        self._probing = False

    @property
    def state(self) -> BreakerState:
        """The state now (an open breaker whose cooldown is over is half-open)."""
        if self._opened_at is None:
            return BreakerState.CLOSED
        if self._clock() - self._opened_at < self.cooldown:
            return BreakerState.OPEN
        return BreakerState.HALF_OPEN

    def cooldown_left(self) -> float:
        """Seconds until an open breaker lets a probe through (0 when not open)."""
        if self._opened_at is None:
            return 0.0
        return max(0.0, self._opened_at + self.cooldown - self._clock())

    def available(self) -> bool:
        """Whether :meth:`admit` would admit a request now (nothing is changed)."""
        state = self.state
        return state is BreakerState.CLOSED or (
            state is BreakerState.HALF_OPEN and not self._probing
        )

    def admit(self) -> bool | None:
        """Admit a request: ``False`` it goes as a normal request, ``True`` it goes as the
        probe (call one of the outcome methods with ``probe=True``), ``None`` it may not go."""
        state = self.state
        if state is BreakerState.CLOSED:
            return False
        if state is BreakerState.HALF_OPEN and not self._probing:
            self._probing = True
            return True
        return None

    def succeeded(self, *, probe: bool) -> None:
        """A request succeeded: the count resets; a probe closes the breaker."""
        if probe:
            self._probing = False
            self._opened_at = None
        if self._opened_at is None:
            self.failures = 0

    def failed(self, *, probe: bool) -> None:
        """A request failed: counted; a failed probe, or the threshold, opens the breaker."""
        self.failures += 1
        if probe:
            self._probing = False
            self._open()
        elif self.threshold > 0 and self._opened_at is None and self.failures >= self.threshold:
            self._open()

    def released(self, *, probe: bool) -> None:
        """A request ended with neither success nor failure (its client left, or the failure
        was not the channel's): a probe's slot goes to the next request."""
        if probe:
            self._probing = False

    def _open(self) -> None:
        self._opened_at = self._clock()
        self.opened += 1
