"""Tiny worker processes for the supervisor's tests (imported by ``spawn``-ed children, so
this module imports nothing heavy)."""

from __future__ import annotations

import os
import signal
import sys
import time
from multiprocessing.connection import Connection


def serve(ready: Connection) -> None:
    """Ready at once; exits 0 on SIGTERM, as a draining server does."""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    ready.send(f"pid {os.getpid()}")
    ready.close()
    while True:
        time.sleep(0.05)


def fail(ready: Connection) -> None:
    """Dies before it is ready, as a worker that cannot open its database does."""
    sys.exit(3)


def stubborn(ready: Connection) -> None:
    """Ready, and ignores SIGTERM (a worker stuck in its drain)."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    ready.send("stubborn")
    ready.close()
    while True:
        time.sleep(0.05)


def fail_if_marked(ready: Connection, marker: str) -> None:
    """Dies before it is ready while ``marker`` exists (a bad deploy), serves otherwise."""
    if os.path.exists(marker):
        sys.exit(4)
    serve(ready)
