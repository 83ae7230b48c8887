"""The fleet's Redis in ``/metrics``: how long each kind of call takes, and how long an event
waits for its log batch.

Registered only when ``redis_url`` is set (an in-memory server has neither). Both are what an
operator looks at when answers come late in a fleet and the event loop is on time
(``wenxin_event_loop_lag_seconds``): a slow Redis, a pool run dry, or a write-ahead wait.

- ``wenxin_redis_call_seconds{call}``: every call of :meth:`~._redis.SharedRedis.call`, from
  issue to reply as its caller saw it — the pool's wait for a connection and the loop's own
  lateness included, which is what the caller pays. ``call`` is the fixed name the code gives
  the call (``event log batch``, ``renew leases``, ``shared state calls`` — the pipeline of
  one moment's admissions and background calls, ``_background_calls`` — …): a bounded set.
- ``wenxin_eventlog_write_wait_seconds``: per event-log batch, from the moment its first event
  became pending to Redis's reply. In a fleet the relay lets clients of an answer read only
  what is in Redis (write-ahead, ``_eventlog_writer``), so this is what the native route's
  chunks wait on top of the upstream's pacing.
"""

from __future__ import annotations

from ._metrics import Histogram, Metrics

__all__ = ["REDIS_BUCKETS", "RedisMetrics"]

REDIS_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
"""Bounds (s) of both histograms."""


class RedisMetrics:
    """The two families above, registered in ``metrics``."""

    def __init__(self, metrics: Metrics) -> None:
        self.calls = Histogram(
            "wenxin_redis_call_seconds",
            "Redis calls of this process, from issue to reply as the caller saw it (pool wait "
            "and event-loop lateness included), by call.",
            REDIS_BUCKETS, ("call",),
        )  # fmt: skip
        self.write_wait = Histogram(
            "wenxin_eventlog_write_wait_seconds",
            "Per event-log batch: from its first pending event to Redis's reply (what the "
            "native route's clients wait in a fleet, write-ahead).",
            REDIS_BUCKETS,
        )
        metrics.register(self.calls)
        metrics.register(self.write_wait)
        self._wait = self.write_wait.labels()

    def call(self, what: str, seconds: float) -> None:
        """One call named ``what`` took ``seconds``."""
        self.calls.labels(what).observe(seconds)

    def batch_written(self, seconds: float) -> None:
        """An event-log batch was answered ``seconds`` after its first event was pending."""
        self._wait.observe(seconds)
