"""Which processes of a fleet are alive: one key per process, renewed with its leases.

Theory of operation
===================

Every process with ``redis_url`` set keeps ``<prefix>instance:{<instance id>}`` in Redis, with
an expiry of ``lease_ttl``. It is written by the process's one lease renewal task
(``_leases``), in the same pipeline as the leases and at the same pace (every ``lease_ttl / 3``
seconds, and once at start), and deleted when the process stops gracefully. A process that is
killed (``kill -9``, a lost machine) stops renewing it, and the key is gone within
``lease_ttl``: whoever needs to know whether a process still works on something (a remote
reader following one of its answers, a sweep of the store) asks :func:`live_instances` — one
pipelined ``EXISTS`` per process asked about, in one round trip.

A process whose key lapsed while it was alive (Redis unreachable from it for ``lease_ttl``)
is taken for dead by the others; what they do then must be safe against its return (the
event log's crash end is: the ids of its later events are refused, ``_eventlog_upkeep``).
"""

from __future__ import annotations

from collections.abc import Iterable

from ._redis import SharedRedis

__all__ = ["instance_key", "live_instances"]


def instance_key(redis: SharedRedis, instance: str) -> str:
    """The liveness key of the process ``instance``."""
    return redis.key("instance", instance)


async def live_instances(redis: SharedRedis, ids: Iterable[str]) -> set[str]:
    """The processes among ``ids`` whose liveness key exists (one pipeline of ``EXISTS``).

    Raises:
        SharedStateError: Redis failed (nothing can be said about anybody).
    """
    asked = list(dict.fromkeys(ids))
    if not asked:
        return set()
    pipe = redis.client.pipeline(transaction=False)
    for instance in asked:
        pipe.exists(instance_key(redis, instance))
    found = await redis.call(pipe.execute(), "liveness check")
    return {instance for instance, exists in zip(asked, found, strict=True) if exists}
