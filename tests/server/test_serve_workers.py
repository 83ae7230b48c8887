"""``wenxin serve --workers 2`` as an operator runs it: one port, two processes, one Redis, one
``/metrics`` for both, a worker killed and replaced, a rolling restart on SIGHUP with no
request refused, and a clean stop."""

from __future__ import annotations

import itertools
import os
import re
import signal
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from serve_process import Serve
from server_helpers import wait_for

from services import Service
from wenxin_stream.emulator import ServerHandle

_databases = itertools.count(8)


def _worker_pids(serve: Serve, seen: int = 0) -> list[int]:
    return [
        int(pid) for pid in re.findall(r"worker \d+ \(pid (\d+)\) ready", serve.log.read_text())
    ][seen:]


def _health_checks(text: str) -> float:
    """``GET /healthz`` answers counted (not the scrapes of ``/metrics`` themselves, which a
    slow flush can show late)."""
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith('wenxin_http_requests_total{route="/healthz"')
    )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.timeout(240)  # two start-ups, a replacement and a rolling restart: slow under load
def test_two_workers_share_the_port_the_metrics_and_survive_a_kill_and_a_reload(
    tmp_path: Path, emu: ServerHandle, redis_service: Service
) -> None:
    redis_url = redis_service.url.rsplit("/", 1)[0] + f"/{next(_databases)}"
    metrics_dir = tmp_path / "metrics"
    serve = Serve(
        tmp_path / "data",
        emu.base_url,
        "--workers",
        "2",
        "--redis-url",
        redis_url,
        "--metrics-dir",
        str(metrics_dir),
    )
    try:
        pids = wait_for(lambda: (p := _worker_pids(serve)) and len(p) == 2 and p, timeout=60)
        assert serve.proc.pid not in pids  # the supervisor serves nothing itself
        # the supervisor re-executed itself under jemalloc (allocator auto, the library
        # installed by scripts/install-services); its workers inherit it (server/_allocator.py)
        for pid in (serve.proc.pid, *pids):
            assert "libjemalloc" in Path(f"/proc/{pid}/maps").read_text(), pid

        # both workers take connections from the one socket, and write their own metric files
        def hit(_: int) -> int:
            with httpx.Client(base_url=serve.url, timeout=30) as client:
                return client.get("/healthz").status_code

        sent = 0
        with ThreadPoolExecutor(16) as pool:
            for _ in range(20):
                statuses = list(pool.map(hit, range(40)))
                sent += len(statuses)
                assert set(statuses) == {200}
                files = {f.name for f in metrics_dir.glob("counter_*.db")}
                if all(f"counter_{pid}.db" in files for pid in pids):
                    break
        assert all((metrics_dir / f"counter_{pid}.db").exists() for pid in pids), (
            "one worker took every connection"
        )

        # any worker's /metrics counts the requests of both (each flushes within 1 s): every
        # scrape, whichever worker answers it, shows every health check, no more, no less
        def totals() -> list[float]:
            scrapes = []
            for _ in range(6):
                with httpx.Client(base_url=serve.url, timeout=30) as client:
                    scrapes.append(_health_checks(client.get("/metrics").text))
            return scrapes

        scrapes = wait_for(lambda: (t := totals()) and min(t) >= sent and t, timeout=60, step=0.3)
        assert scrapes == [sent] * len(scrapes)

        # a killed worker is replaced; the port keeps answering meanwhile
        os.kill(pids[0], signal.SIGKILL)
        replacement = wait_for(lambda: _worker_pids(serve, 2), timeout=60)
        assert replacement[0] not in pids
        assert not (metrics_dir / f"gauge_livesum_{pids[0]}.db").exists()  # marked dead
        with httpx.Client(base_url=serve.url, timeout=30) as client:
            assert client.get("/healthz").status_code == 200

        # SIGHUP: a rolling restart; requests sent all through it are all answered. A kept-alive
        # connection a draining worker closes as the next request goes out is reset: as any
        # HTTP/1.1 client may (RFC 9112, 9.3.1), that GET goes once more on a new connection,
        # where a failure counts (a slow machine widens that window, never this one)
        before = {pids[1], replacement[0]}
        failures: list[str] = []
        answered = resent = 0
        stop = threading.Event()

        def keep_asking() -> None:
            nonlocal answered, resent
            client = httpx.Client(base_url=serve.url, timeout=30)
            try:
                while not stop.is_set():
                    try:
                        try:
                            status = client.get("/healthz").status_code
                        except httpx.TransportError:
                            resent += 1
                            client.close()
                            client = httpx.Client(base_url=serve.url, timeout=30)
                            status = client.get("/healthz").status_code
                        answered += 1
                        if status != 200:
                            failures.append(str(status))
                    except httpx.HTTPError as exc:
                        failures.append(repr(exc))
            finally:
                client.close()

        asker = threading.Thread(target=keep_asking)
        asker.start()
        try:
            serve.proc.send_signal(signal.SIGHUP)
            fresh = wait_for(lambda: (p := _worker_pids(serve, 3)) and len(p) == 2 and p, 90)
            assert not set(fresh) & before
            wait_for(lambda: not any(_alive(pid) for pid in before), timeout=60)
        finally:
            stop.set()
            asker.join()
        assert failures == []
        assert answered > resent  # (the asker did ask all through, mostly on kept connections)
    finally:
        status = serve.stop()
    assert status == 0
    assert "Traceback" not in serve.log.read_text()
