"""The private services the scale-out tests run on (``tests/services.py``) really start, answer
and go away."""

from __future__ import annotations

import subprocess

from services import Service, _postgres_accepts, _redis_pings, postgres_bin


def test_the_private_redis_answers(redis_service: Service) -> None:
    assert redis_service.url == f"redis://127.0.0.1:{redis_service.port}/0"
    assert _redis_pings(redis_service.port)


def test_the_private_postgres_answers_sql(postgres_service: Service) -> None:
    done = subprocess.run(
        [str(postgres_bin() / "psql"), postgres_service.url, "-tAc", "select 6 * 7"],
        capture_output=True, text=True, check=True, timeout=30,
    )  # fmt: skip
    assert done.stdout.strip() == "42"


def test_a_stopped_service_is_gone() -> None:
    from services import postgres_server, redis_server

    with redis_server() as redis, postgres_server("gone") as pg:
        assert _redis_pings(redis.port)
        assert _postgres_accepts(pg.port)
    assert redis.process.poll() is not None
    assert not _redis_pings(redis.port)
    assert pg.process.poll() is not None
    assert not _postgres_accepts(pg.port)
    assert not pg.directory.exists()
