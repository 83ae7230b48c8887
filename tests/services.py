"""Private Redis and PostgreSQL servers for the tests, started from the installed binaries.

Theory of operation
===================

A developer's machine or a fresh CI machine may run its own Redis and PostgreSQL on the standard
ports, or none at all; the tests use neither. Each helper here starts a private instance from
Debian's binaries (``scripts/install-services`` installs them when missing) on a free loopback
port, with its data in a temporary directory, waits until it answers (polling, never a fixed
sleep), yields its URL, and stops it (SIGTERM, then SIGKILL) and removes its directory at the end:

- :func:`redis_server`: ``redis-server`` with no persistence (``--save ""``, no AOF);
- :func:`postgres_server`: ``initdb`` (trust authentication for a user ``wenxin``), then
  ``postgres`` listening on 127.0.0.1 only, with ``fsync`` off (a test database need not
  survive a power cut). PostgreSQL refuses to run as root: as root, both run as the ``postgres``
  system user (created by Debian's package) over a directory it owns.

When a binary is missing the fixtures skip their tests — except under CI (``CI`` set), where a
missing service is a failure, so that the scale-out suite cannot silently vanish.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

IN_CI = bool(os.environ.get("CI"))
START_TIMEOUT = 30.0
"""Seconds a service may take to answer after it was started."""


class ServiceUnavailable(Exception):
    """A service's binaries are not installed here."""


@dataclass
class Service:
    """A running private service: its URL, port, process and data directory; ``argv``,
    ``ready`` and ``log`` let :func:`outage` start it again after stopping it."""

    url: str
    port: int
    process: subprocess.Popen[bytes]
    directory: Path
    argv: tuple[str, ...] = ()
    ready: Callable[[], bool] | None = None
    log: Path | None = None


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_until(ready: object, process: subprocess.Popen[bytes], what: str) -> None:
    assert callable(ready)
    deadline = time.monotonic() + START_TIMEOUT
    while not ready():
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with status {process.returncode} at start-up")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not answer within {START_TIMEOUT:.0f} s")
        time.sleep(0.02)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def unavailable(reason: str) -> None:
    """Skip the calling test (under CI: fail it) because a service cannot run here."""
    if IN_CI:
        pytest.fail(f"a service the tests need cannot run under CI: {reason}", pytrace=False)
    pytest.skip(reason)


# -- Redis ------------------------------------------------------------------------------------


def _redis_pings(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@contextlib.contextmanager
def redis_server() -> Iterator[Service]:
    """A private ``redis-server`` on a free port, without persistence."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise ServiceUnavailable("redis-server is not installed (run scripts/install-services)")
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="wenxin-redis-") as directory:
        argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", directory, "--daemonize", "no",
                "--logfile", os.path.join(directory, "redis.log")]  # fmt: skip
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
        service = Service(f"redis://127.0.0.1:{port}/0", port, process, Path(directory),
                          tuple(argv), lambda: _redis_pings(port))  # fmt: skip
        try:
            _wait_until(service.ready, process, "redis-server")
            yield service
        finally:
            _stop(service.process)


# -- PostgreSQL ------------------------------------------------------------------------------


def postgres_bin() -> Path:
    """The directory of PostgreSQL's server binaries (the newest major version installed)."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda path: int(Path(path).parts[-3]),
    )
    if not found:
        on_path = shutil.which("initdb")
        if on_path is None:
            raise ServiceUnavailable("PostgreSQL is not installed (run scripts/install-services)")
        return Path(on_path).resolve().parent
    return Path(found[-1]).parent


def _as_postgres_user() -> tuple[list[str], int | None, int | None]:
    """The command prefix and owner ids that run PostgreSQL's binaries as a non-root user."""
    if os.geteuid() != 0:
        return [], None, None
    try:
        user = pwd.getpwnam("postgres")
    except KeyError:
        raise ServiceUnavailable("running as root and no 'postgres' user exists") from None
    runuser = shutil.which("runuser")
    if runuser is None:
        raise ServiceUnavailable("running as root and runuser(1) is missing")
    return [runuser, "-u", "postgres", "--"], user.pw_uid, user.pw_gid


def _postgres_accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def postgres_server(database: str = "wenxin") -> Iterator[Service]:
    """A private PostgreSQL on a free port: user ``wenxin`` (trust authentication) owning the
    database ``database``; its URL is ``postgresql://wenxin@127.0.0.1:<port>/<database>``."""
    binaries = postgres_bin()
    prefix, uid, gid = _as_postgres_user()
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="wenxin-pg-") as top:
        data = Path(top) / "data"
        data.mkdir(mode=0o700)
        if uid is not None and gid is not None:
            os.chown(top, uid, gid)
            os.chown(data, uid, gid)
        subprocess.run(
            [*prefix, str(binaries / "initdb"), "-D", str(data), "-U", "wenxin", "-A", "trust",
             "-E", "UTF8", "--locale", "C", "--no-sync"],
            check=True, stdin=subprocess.DEVNULL, capture_output=True,
        )  # fmt: skip
        argv = [*prefix, str(binaries / "postgres"), "-D", str(data), "-p", str(port),
                "-k", str(top), "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off",
                "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
                "-c", "max_connections=200"]  # fmt: skip
        log_path = Path(top) / "postgres.log"
        log = log_path.open("wb")
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        service = Service("", port, process, data, tuple(argv), lambda: _postgres_accepts(port),
                          log_path)  # fmt: skip
        try:
            _wait_until(service.ready, process, "postgres")
            createdb = [*prefix, str(binaries / "createdb"), "-h", "127.0.0.1",
                        "-p", str(port), "-U", "wenxin", database]  # fmt: skip
            deadline = time.monotonic() + START_TIMEOUT
            while True:  # the port opens a moment before connections are accepted
                done = subprocess.run(createdb, capture_output=True, check=False)
                if done.returncode == 0:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"createdb failed: {done.stderr.decode(errors='replace')}")
                time.sleep(0.05)
            service.url = f"postgresql://wenxin@127.0.0.1:{port}/{database}"
            yield service
        finally:
            _stop(service.process)
            log.close()


# -- outages ---------------------------------------------------------------------------------


@contextlib.contextmanager
def outage(service: Service, how: signal.Signals = signal.SIGTERM) -> Iterator[None]:
    """``service`` down for the ``with`` block: stopped by ``how`` (SIGTERM: Redis exits,
    PostgreSQL waits for its clients; SIGINT: PostgreSQL's fast shutdown, which cuts them), then
    started again on the same port with the same data, and waited for until it answers."""
    assert service.argv, "this service cannot be restarted"
    assert service.ready is not None
    pid_file = service.directory / "postmaster.pid"  # PostgreSQL runs under runuser as root
    if pid_file.exists():
        os.kill(int(pid_file.read_text().split()[0]), how)
    else:
        service.process.send_signal(how)
    try:
        service.process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        service.process.kill()
        service.process.wait(timeout=10)
    try:
        yield
    finally:
        out = service.log.open("ab") if service.log is not None else None
        try:
            service.process = subprocess.Popen(
                service.argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out
            )
        finally:
            if out is not None:
                out.close()  # the child keeps its own descriptor
        _wait_until(service.ready, service.process, service.argv[0])


# -- nginx -----------------------------------------------------------------------------------


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def deploy_nginx_conf(source: str, listen: int, upstreams: list[int]) -> str:
    """``deploy/nginx.conf`` made runnable by :func:`nginx_server`: its listen port, upstream
    servers and file paths (to ``{prefix}``) rewritten — nothing else — and, as root,
    ``user root`` (the workers must read the prefix)."""
    import re

    text = source
    text = re.sub(r"listen 8080;", f"listen 127.0.0.1:{listen};", text)
    servers = [line for line in text.splitlines() if re.match(r"\s*server 127\.0\.0\.1:\d+", line)]
    assert len(servers) >= 1, "deploy/nginx.conf names no upstream server"
    first = servers[0]
    text = text.replace(
        "\n".join(servers),
        "\n".join(re.sub(r"127\.0\.0\.1:\d+", f"127.0.0.1:{port}", first) for port in upstreams),
    )
    for old, new in (
        ("/run/wenxin-nginx.pid", "{prefix}/nginx.pid"),
        ("/var/log/nginx/", "{prefix}/"),
        ("/var/lib/nginx/", "{prefix}/tmp/"),
    ):
        assert old in text, f"deploy/nginx.conf no longer mentions {old}"
        text = text.replace(old, new)
    if os.geteuid() == 0:
        text = "user root;\n" + text
    return text


@contextlib.contextmanager
def nginx_server(conf: str, port: int) -> Iterator[Service]:
    """nginx in the foreground with ``conf`` (a whole nginx.conf whose paths start with
    ``{prefix}``) in a temporary prefix, listening on ``port``."""
    binary = shutil.which("nginx") or (
        "/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None
    )
    if binary is None:
        raise ServiceUnavailable("nginx is not installed (run scripts/install-services)")
    with tempfile.TemporaryDirectory(prefix="wenxin-nginx-") as directory:
        prefix = Path(directory)
        (prefix / "tmp").mkdir()
        (prefix / "nginx.conf").write_text(conf.replace("{prefix}", directory))
        argv = [binary, "-p", directory, "-c", f"{directory}/nginx.conf", "-g", "daemon off;"]
        with (prefix / "stderr.log").open("wb") as stderr:
            process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stderr=stderr)
        try:
            _wait_until(lambda: _accepts(port), process, "nginx")
            yield Service(f"http://127.0.0.1:{port}", port, process, prefix)
        finally:
            _stop(process)
