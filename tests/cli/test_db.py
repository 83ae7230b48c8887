"""``wenxin db status|upgrade`` on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest

from wenxin_stream.cli import main
from wenxin_stream.server._store import MIGRATIONS, SyncDatabase

LATEST = len(MIGRATIONS)


@pytest.fixture(params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/db/wenxin.db"
    url: str = request.getfixturevalue("postgres_url")
    return url


def test_status_upgrade_status(database: str, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--database-url", database]
    code = main(["db", "status", *args])
    out = capsys.readouterr().out
    assert code == 1
    assert "pending" in out or "no database yet" in out
    assert main(["db", "upgrade", *args]) == 0
    out = capsys.readouterr().out
    assert f"applied step {LATEST}" in out
    assert f"upgraded to schema version {LATEST}" in out
    assert main(["db", "status", *args]) == 0
    assert "up to date" in capsys.readouterr().out
    assert main(["db", "upgrade", *args]) == 0
    assert f"already at schema version {LATEST}" in capsys.readouterr().out


def test_a_newer_database_is_reported_and_refused(
    database: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with SyncDatabase(database) as db:
        db.upgrade()
        db._run(lambda d: d.run("INSERT INTO schema_version (version) VALUES (99)"), write=True)
    assert main(["db", "status", "--database-url", database]) == 1
    assert "newer than this wenxin-stream" in capsys.readouterr().out
    assert main(["db", "upgrade", "--database-url", database]) == 1
    assert "schema version 99, newer" in capsys.readouterr().err


def test_status_creates_no_database(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["db", "status", "--data-dir", str(tmp_path)]) == 1
    assert "no database yet" in capsys.readouterr().out
    assert not (tmp_path / "wenxin.db").exists()


def test_passwords_are_masked(capsys: pytest.CaptureFixture[str]) -> None:
    from services import free_port

    url = f"postgresql://u:hunter2-pw@127.0.0.1:{free_port()}/db?connect_timeout=1"
    assert main(["db", "status", "--database-url", url]) == 1
    err = capsys.readouterr().err
    assert "unavailable" in err
    assert "hunter2-pw" not in err
    assert "u:***@" in err
