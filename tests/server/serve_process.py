"""A real ``wenxin serve`` process for the tests that stop, kill or scale it: its own data
directory, its upstream an emulator given by URL, its stderr in a file next to the data
directory, and the URL read from its start-up line."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from server_helpers import BEARER, wait_for

CHECKPOINT = 0.25
"""The ``--checkpoint-interval`` the processes run with (seconds)."""


class Serve:
    """One ``wenxin serve`` process on a free port, its stderr in a file."""

    def __init__(self, data_dir: Path, upstream: str, *args: str) -> None:
        skip = ("QIANFAN_", "WENXIN_", "COV_", "COVERAGE_")
        env = {k: v for k, v in os.environ.items() if not k.startswith(skip)}
        env.update(
            WENXIN_UPSTREAM_API="v2",
            WENXIN_UPSTREAM_V2_BASE_URL=upstream,
            WENXIN_UPSTREAM_BEARER_TOKEN=BEARER,
            WENXIN_UPSTREAM_EMULATED="true",
            WENXIN_UPSTREAM_RETRIES="0",
            WENXIN_RESUME_GRACE="0",
        )
        self.log = data_dir.with_name(f"{data_dir.name}-{time.monotonic_ns()}.log")
        with self.log.open("w") as err:
            self.proc = subprocess.Popen(
                [
                    str(Path(sys.executable).with_name("wenxin")),
                    "serve",
                    "--port",
                    "0",
                    "--data-dir",
                    str(data_dir),
                    "--checkpoint-interval",
                    str(CHECKPOINT),
                    *args,
                ],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        self.url: str = wait_for(self._started, timeout=30, step=0.05)

    def _started(self) -> str | None:
        text = self.log.read_text()
        if self.proc.poll() is not None:
            raise AssertionError(f"wenxin serve exited {self.proc.returncode}: {text[-2000:]}")
        found = re.search(r"wenxin serve on (http://\S+)", text)
        return found.group(1) if found else None

    def stop(self) -> int:
        """SIGTERM, and the exit status (killed if it has not exited within 20 s)."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(10)
