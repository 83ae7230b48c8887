"""``wenxin keys create|list|revoke``: in process (main()), and once through the real entry
point in a subprocess."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from wenxin_stream.cli import main
from wenxin_stream.cli.keys import database_path, database_target
from wenxin_stream.server import _keys
from wenxin_stream.server._keys import looks_like_key
from wenxin_stream.server._store import SQLiteStore, StoreError, SyncKeyAdmin


def _create(capsys: pytest.CaptureFixture[str], data: Path, *extra: str) -> str:
    assert main(["keys", "create", "--data-dir", str(data), *extra]) == 0
    out, err = capsys.readouterr()
    assert "cannot be shown again" in err
    return out.strip()


def test_create_prints_the_key_once(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    data = tmp_path / "data"
    secret = _create(capsys, data, "--name", "web app", "--rpm", "60", "--max-streams", "3")
    assert looks_like_key(secret)  # stdout is the key and nothing else
    assert (data / "wenxin.db").is_file()

    async def check() -> None:
        async with SQLiteStore(data / "wenxin.db") as store:
            record = await store.find_key(secret)
            assert record is not None
            assert record.name == "web app"
            assert (record.rpm, record.tpm, record.max_streams) == (60, None, 3)

    asyncio.run(check())
    assert main(["keys", "list", "--data-dir", str(data)]) == 0
    out, _ = capsys.readouterr()
    assert secret not in out
    assert secret[11:] not in out
    header, row = out.splitlines()
    assert header.split() == [
        "ID", "NAME", "PREFIX", "CREATED", "REVOKED", "RPM", "TPM", "STREAMS", "BUDGETS",
    ]  # fmt: skip
    assert f"wx-{secret[3:11]}…" in row
    assert "web app" in row
    # not revoked, rpm, tpm, streams, no budgets
    assert row.split()[-5:] == ["-", "60", "default", "3", "-"]


def test_list_json_and_revoke(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    data = str(tmp_path)
    first = _create(capsys, tmp_path, "--name", "one")
    _create(capsys, tmp_path, "--name", "two", "--tpm", "5000")
    assert main(["keys", "list", "--json", "--data-dir", data]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [k["name"] for k in listed] == ["one", "two"]
    assert listed[1]["tpm"] == 5000
    assert all(k["revoked_at"] is None for k in listed)
    assert first not in json.dumps(listed)

    assert main(["keys", "revoke", listed[0]["id"], "--data-dir", data]) == 0
    assert "revoked key " + listed[0]["id"] in capsys.readouterr().out
    assert main(["keys", "revoke", listed[0]["id"], "--data-dir", data]) == 0
    assert "already revoked" in capsys.readouterr().out
    assert main(["keys", "revoke", f"wx-{listed[1]['prefix']}", "--data-dir", data]) == 0
    assert listed[1]["id"] in capsys.readouterr().out
    assert main(["keys", "list", "--json", "--data-dir", data]) == 0
    assert all(k["revoked_at"] for k in json.loads(capsys.readouterr().out))
    assert main(["keys", "list", "--data-dir", data]) == 0
    assert capsys.readouterr().out.count("Z  ") >= 2  # created and revoked times shown


def test_errors_are_one_line_with_exit_codes(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = str(tmp_path / "d")
    assert main(["keys", "revoke", "k_nope", "--data-dir", data]) == 1
    assert "no key database" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()  # revoke and list never create a database
    assert main(["keys", "list", "--data-dir", data]) == 0
    assert "no keys" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()

    _create(capsys, tmp_path / "d", "--name", "x")
    assert main(["keys", "revoke", "k_nope", "--data-dir", data]) == 1
    err = capsys.readouterr().err
    assert err.startswith("wenxin: error: no key matches")
    assert err.count("\n") == 1

    assert main(["keys", "create", "--name", "  ", "--data-dir", data]) == 2
    assert "name" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["keys", "create", "--name", "x", "--rpm", "0", "--data-dir", data])
    assert exc.value.code == 2
    assert "greater than 0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["keys", "create", "--name", "x", "--tpm", "many"])
    assert "whole number" in capsys.readouterr().err

    made = iter(["wx-SAMEPREF" + "a" * 32, "wx-SAMEPREF" + "b" * 32])
    monkeypatch.setattr(_keys, "generate_key", lambda: next(made))
    _create(capsys, tmp_path / "d", "--name", "p1")
    _create(capsys, tmp_path / "d", "--name", "p2")
    assert main(["keys", "revoke", "SAMEPREF", "--data-dir", data]) == 2
    assert "matches several keys" in capsys.readouterr().err

    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    assert main(["keys", "create", "--name", "x", "--data-dir", str(blocker)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("wenxin: error: cannot open the database")
    assert "Traceback" not in err
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "wenxin.db").write_bytes(b"not sqlite" * 200)
    assert main(["keys", "list", "--data-dir", str(garbage)]) == 1
    assert "database error" in capsys.readouterr().err

    assert main(["keys"]) == 2
    assert "create" in capsys.readouterr().err


def test_database_location_follows_the_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("WENXIN_DATA_DIR", raising=False)
    monkeypatch.delenv("WENXIN_DATABASE_URL", raising=False)
    assert database_path(None) == Path("data") / "wenxin.db"
    monkeypatch.setenv("WENXIN_DATA_DIR", str(tmp_path / "env"))
    assert database_path(None) == tmp_path / "env" / "wenxin.db"
    assert database_path("explicit") == Path("explicit") / "wenxin.db"
    assert database_path("x", f"sqlite:///{tmp_path}/u.db") == tmp_path / "u.db"
    monkeypatch.setenv("WENXIN_DATABASE_URL", "sqlite:///rel/e.db")
    assert database_path("x") == Path("rel/e.db")  # a database URL wins, as in `serve`

    secret = _create(capsys, tmp_path, "--name", "via-env")  # --data-dir loses to the URL
    assert (tmp_path / "rel" / "e.db").is_file()
    assert not (tmp_path / "wenxin.db").exists()
    assert main(["keys", "list", "--json", "--database-url", "sqlite:///rel/e.db"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["prefix"] == secret[3:11]
    assert main(["keys", "list", "--database-url", "postgres+psycopg://u:pw@h/db"]) == 2
    err = capsys.readouterr().err
    assert "postgresql://" in err
    assert "pw" not in err
    assert database_target("x", "postgresql://u:pw@h/db") == "postgresql://u:pw@h/db"
    assert database_target("x") == Path("rel/e.db")


def test_real_command_line(tmp_path: Path) -> None:
    env = {"WENXIN_DATA_DIR": str(tmp_path / "srv"), "PATH": "/usr/bin:/bin", "HOME": "/"}
    code = "from wenxin_stream.cli import main; raise SystemExit(main())"
    done = subprocess.run(
        [sys.executable, "-c", code, "keys", "create", "--name", "ci"],
        capture_output=True, text=True, env=env, timeout=30, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert looks_like_key(done.stdout.strip())
    assert done.stdout.count("\n") == 1
    assert (tmp_path / "srv" / "wenxin.db").is_file()


@pytest.mark.parametrize(
    ("method", "argv"),
    [
        ("create_key", ["create", "--name", "x"]),
        ("list_keys", ["list"]),
        ("resolve_key", ["revoke", "k_x"]),
    ],
)
def test_database_failures_after_opening(
    method: str,
    argv: list[str],
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _create(capsys, tmp_path, "--name", "first")

    def fail(*args: object, **kwargs: object) -> None:
        raise StoreError("database error (w.db): database is locked")

    monkeypatch.setattr(SyncKeyAdmin, method, fail)
    assert main(["keys", *argv, "--data-dir", str(tmp_path)]) == 1
    assert capsys.readouterr().err == "wenxin: error: database error (w.db): database is locked\n"


# --- dev mode ends, adopting its conversations, names, revoking by name, the fleet notice --------


def _conversations(path: Path, owner: str) -> list[str]:
    async def titles() -> list[str]:
        async with SQLiteStore(path) as store:
            return [c.title for c in await store.list_conversations(owner)]

    return asyncio.run(titles())


def _dev_mode_conversations(path: Path, count: int) -> None:
    async def make() -> None:
        async with SQLiteStore(path) as store:
            for number in range(count):
                conv = await store.create_conversation(
                    "local", title=f"dev {number}", model="m", system=None
                )
                await store.add_exchange("local", conv.id, question="q", model="m")

    asyncio.run(make())


@pytest.fixture(autouse=True)
def _no_server_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("WENXIN_REDIS_URL", "WENXIN_CONFIG", "WENXIN_DATABASE_URL", "WENXIN_DATA_DIR"):
        monkeypatch.delenv(name, raising=False)


def test_first_key_says_dev_mode_ends_and_what_happens_to_its_conversations(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    _dev_mode_conversations(tmp_path / "wenxin.db", 2)
    assert main(["keys", "create", "--data-dir", str(tmp_path), "--name", "a"]) == 0
    err = capsys.readouterr().err
    assert "first active key: dev mode ends" in err
    assert "The 2 conversations made in dev mode (owner 'local') are no longer shown" in err
    assert "--adopt-local" in err
    assert len(_conversations(tmp_path / "wenxin.db", "local")) == 2  # untouched
    assert main(["keys", "create", "--data-dir", str(tmp_path), "--name", "b"]) == 0
    err = capsys.readouterr().err
    assert "dev mode ends" not in err  # only the first key switches the server


def test_adopt_local_hands_the_conversations_to_the_new_key(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    db = tmp_path / "wenxin.db"
    _dev_mode_conversations(db, 3)
    secret = _create(capsys, tmp_path, "--name", "me", "--adopt-local")
    with SyncKeyAdmin(db) as admin:
        (record,) = admin.list_keys()
        assert admin.count_conversations("local") == 0
    assert sorted(_conversations(db, record.id)) == ["dev 0", "dev 1", "dev 2"]
    assert looks_like_key(secret)

    async def messages() -> int:
        async with SQLiteStore(db) as store:
            (conv, *_) = await store.list_conversations(record.id)
            return len(await store.get_messages(record.id, conv.id))

    assert asyncio.run(messages()) == 2  # the messages follow their conversation


def test_adopt_is_one_transaction_with_the_key(tmp_path: Path) -> None:
    """A refused key (duplicate name) adopts nothing."""
    db = tmp_path / "wenxin.db"
    _dev_mode_conversations(db, 1)
    with SyncKeyAdmin(db) as admin:
        admin.create_key("x", rpm=None, tpm=None, max_streams=None)
        with pytest.raises(_keys.DuplicateKeyNameError):
            admin.create_key("x", rpm=None, tpm=None, max_streams=None, adopt_from="local")
        assert admin.count_conversations("local") == 1


def test_names_are_unique_among_active_keys(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    _create(capsys, tmp_path, "--name", "alice")
    assert main(["keys", "create", "--data-dir", str(tmp_path), "--name", " alice "]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert "already named 'alice'" in err
    assert main(["keys", "revoke", "--data-dir", str(tmp_path), "alice"]) == 0
    capsys.readouterr()
    _create(capsys, tmp_path, "--name", "alice")  # the name is free again once revoked


def test_revoke_by_name_and_ambiguity(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    data = str(tmp_path)
    alice = _create(capsys, tmp_path, "--name", "alice")
    _create(capsys, tmp_path, "--name", "bob")
    assert main(["keys", "revoke", "--data-dir", data, "alice"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("revoked key k_")
    assert "(alice)" in out
    with SyncKeyAdmin(tmp_path / "wenxin.db") as admin:
        revoked = {k.name: k.active for k in admin.list_keys()}
    assert revoked == {"alice": False, "bob": True}
    # a revoked alice and an active alice: the name means the active one
    second = _create(capsys, tmp_path, "--name", "alice")
    assert main(["keys", "revoke", "--data-dir", data, "alice"]) == 0
    capsys.readouterr()
    with SyncKeyAdmin(tmp_path / "wenxin.db") as admin:
        assert admin.count_active_keys() == 1  # bob
        assert admin.resolve_key(second) is not None
        assert admin.resolve_key(alice) is not None
    # two revoked alices: ambiguous, both listed
    assert main(["keys", "revoke", "--data-dir", data, "alice"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("wenxin: error: 'alice' matches several keys: ")
    assert err.count("(alice, wx-") == 2
    assert "use the key id" in err


def test_revocation_notice_reaches_a_subscriber(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, redis_service: Any
) -> None:
    import redis

    from wenxin_stream.server._revocations import channel

    _create(capsys, tmp_path, "--name", "gone")
    with redis.Redis.from_url(redis_service.url) as client:
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        pubsub.subscribe(channel())
        assert pubsub.get_message(timeout=2) is None  # the subscription is in place
        code = main(
            ["keys", "revoke", "--data-dir", str(tmp_path), "--redis-url", redis_service.url,
             "gone"]
        )  # fmt: skip
        assert code == 0
        message = pubsub.get_message(timeout=5)
        pubsub.close()
    assert message is not None
    with SyncKeyAdmin(tmp_path / "wenxin.db") as admin:
        (record,) = admin.list_keys()
    assert message["data"].decode() == record.id
    err = capsys.readouterr().err
    assert "announced to 1 server instance(s)" in err


def test_revocation_notice_failure_is_a_warning(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from services import free_port

    _create(capsys, tmp_path, "--name", "gone")
    config = tmp_path / "wenxin.toml"
    config.write_text(f'redis_url = "redis://:pw@127.0.0.1:{free_port()}/0"\n')
    monkeypatch.setenv("WENXIN_CONFIG", str(config))
    assert main(["keys", "revoke", "--data-dir", str(tmp_path), "gone"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("revoked key")
    assert "wenxin: warning: could not announce the revocation through redis://:***@" in err
    assert "pw" not in err
    with SyncKeyAdmin(tmp_path / "wenxin.db") as admin:
        assert admin.count_active_keys() == 0
