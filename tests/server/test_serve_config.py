"""ServerConfig: flags > WENXIN_* environment > TOML file > defaults, and validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from wenxin_stream.cli import build_parser
from wenxin_stream.cli.serve import config_from_args
from wenxin_stream.server import ServerConfig, ServerConfigError
from wenxin_stream.server._config import mask_url_password


def test_defaults() -> None:
    config = ServerConfig()
    assert (config.host, config.port, config.data_dir) == ("127.0.0.1", 8000, Path("data"))
    assert config.on_disconnect == "cancel"
    assert config.resume_grace == 5.0
    assert config.ping_interval == 15.0
    assert config.stall_timeout == 30.0
    assert config.max_body_bytes == 1 << 20
    assert config.checkpoint_interval == 1.0
    assert config.start_slice == 0.002  # admission pacing is on unless turned off (0)
    assert config.database == "data/wenxin.db"
    assert config.audit_path == Path("data/audit.jsonl")
    assert repr(config) == "ServerConfig()"


def test_precedence_flags_env_file_defaults(tmp_path: Path) -> None:
    file = tmp_path / "serve.toml"
    file.write_text(
        'port = 9001\nresume-grace = 2.5\non_disconnect = "drain"\n'
        "audit-questions = true\nping_interval = 3\n"
    )
    env = {"WENXIN_PORT": "9002", "WENXIN_RESUME_GRACE": "1.5", "WENXIN_CONFIG": str(file)}
    config = ServerConfig.load({"port": 9003, "host": None}, environ=env)
    assert config.port == 9003  # flag
    assert config.resume_grace == 1.5  # environment
    assert config.on_disconnect == "drain"
    assert config.audit_questions is True
    assert config.ping_interval == 3.0
    assert isinstance(config.ping_interval, float)
    assert config.host == "127.0.0.1"  # default
    nested = tmp_path / "nested.toml"
    nested.write_text("[server]\nstall-timeout = 7\n")
    assert ServerConfig.load(environ={}, config_file=nested).stall_timeout == 7.0


def test_cli_flags_feed_the_config(tmp_path: Path) -> None:
    args = build_parser().parse_args(
        [
            "serve",
            "--port",
            "0",
            "--on-disconnect",
            "drain",
            "--resume-grace",
            "0",
            "--audit-questions",
            "--default-max-streams",
            "3",
            "--checkpoint-interval",
            "0.25",
            "--data-dir",
            str(tmp_path),
        ]
    )
    config = config_from_args(args, environ={"WENXIN_PORT": "7", "WENXIN_HOST": "::1"})
    assert config.port == 0
    assert config.host == "::1"
    assert config.on_disconnect == "drain"
    assert config.resume_grace == 0.0
    assert config.audit_questions is True
    assert config.default_max_streams == 3
    assert config.checkpoint_interval == 0.25
    assert config.data_dir == tmp_path
    assert config.allow_dev_mode_remote is False  # store_const flags default to "not given"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"port": 70000}, "port"),
        ({"on_disconnect": "explode"}, "on_disconnect"),
        ({"ping_interval": 0}, "ping_interval"),
        ({"resume_grace": -1}, "resume_grace"),
        ({"max_body_bytes": "big"}, "max_body_bytes"),
        ({"audit_questions": "maybe"}, "audit_questions"),
        ({"upstream_api": "v3"}, "upstream_api"),
        ({"port": True}, "port"),
        ({"host": 5}, "host"),
        ({"upstream_first_token_timeout": 0}, "upstream_first_token_timeout"),
        ({"upstream_max_connections": 0}, "upstream_max_connections"),
        ({"resume_grace": float("inf")}, "resume_grace"),
        ({"checkpoint_interval": -0.5}, "checkpoint_interval"),
        ({"start_slice": -0.001}, "start_slice"),
        ({"workers": 0}, "workers: must be at least 1"),
        ({"workers": 2}, "workers: 2 workers need redis_url"),
        ({"redis_url": "http://localhost:6379"}, "redis_url: expected redis://"),
        ({"redis_timeout": 0}, "redis_timeout"),
        ({"redis_max_connections": 0}, "redis_max_connections"),
    ],
)
def test_invalid_values(values: dict[str, object], message: str) -> None:
    with pytest.raises(ServerConfigError, match=message):
        ServerConfig(**values)  # type: ignore[arg-type]


def test_invalid_sources(tmp_path: Path) -> None:
    with pytest.raises(ServerConfigError, match="WENXIN_PORT"):
        ServerConfig.load(environ={"WENXIN_PORT": "eighty"})
    bad = tmp_path / "bad.toml"
    bad.write_text("port = = 1")
    with pytest.raises(ServerConfigError, match="not valid TOML"):
        ServerConfig.load(environ={}, config_file=bad)
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("colour = 'blue'")
    with pytest.raises(ServerConfigError, match="unknown setting 'colour'"):
        ServerConfig.load(environ={}, config_file=unknown)
    weird = tmp_path / "weird.toml"
    weird.write_text("server = 5")
    with pytest.raises(ServerConfigError, match="table"):
        ServerConfig.load(environ={}, config_file=weird)
    with pytest.raises(ServerConfigError, match="cannot read"):
        ServerConfig.load(environ={}, config_file=tmp_path / "missing.toml")
    with pytest.raises(TypeError, match="unknown server setting"):
        ServerConfig.load({"colour": "blue"}, environ={})


def test_secrets_never_show() -> None:
    config = ServerConfig(upstream_bearer_token="bce-v3/ALTAK-abc/secretsecret")
    assert "secretsecret" not in repr(config)
    assert "upstream_bearer_token='***'" in repr(config)
    with pytest.raises(ServerConfigError) as info:
        ServerConfig.load(environ={"WENXIN_UPSTREAM_BEARER_TOKEN": "x", "WENXIN_PORT": "no"})
    assert "bce-v3" not in str(info.value)
    assert config.with_overrides(port=1).upstream_bearer_token == config.upstream_bearer_token


def test_url_passwords_never_show() -> None:
    config = ServerConfig(
        redis_url="redis://:hunter2@cache.internal:6379/0",
        database_url="postgresql://wenxin:s3cret@db.internal:5432/wenxin",
        workers=2,
    )
    shown = repr(config)
    assert "hunter2" not in shown
    assert "s3cret" not in shown
    assert "redis_url='redis://:***@cache.internal:6379/0'" in shown
    assert "database_url='postgresql://wenxin:***@db.internal:5432/wenxin'" in shown
    assert mask_url_password("redis://cache:6379/0") == "redis://cache:6379/0"  # none to mask
    with pytest.raises(ServerConfigError) as info:
        ServerConfig(redis_url="tcp://:hunter2@cache:6379")
    assert "hunter2" not in str(info.value)
    loaded = ServerConfig.load(
        environ={"WENXIN_REDIS_URL": "redis://127.0.0.1:6390/1", "WENXIN_WORKERS": "3"}
    )
    assert (loaded.redis_url, loaded.workers) == ("redis://127.0.0.1:6390/1", 3)


async def test_redis_must_answer_at_start_up(tmp_path: Path) -> None:
    from wenxin_stream.server import StartupError, create_app

    url = "redis://:hunter2@127.0.0.1:1/0"
    app = create_app(ServerConfig(data_dir=tmp_path, redis_url=url, redis_timeout=0.3))
    with pytest.raises(StartupError, match="cannot reach the shared state") as info:
        await app.startup()
    assert "hunter2" not in str(info.value)
    with pytest.raises(ServerConfigError, match="lease_ttl"):
        ServerConfig(lease_ttl=2.0, redis_timeout=1.0)


def test_takeover_settings_from_every_source(tmp_path: Path) -> None:
    assert (ServerConfig().answer_lease_ttl, ServerConfig().takeover) == (3.0, "continue")
    with pytest.raises(ServerConfigError, match="answer_lease_ttl"):
        ServerConfig(answer_lease_ttl=1.0, redis_timeout=0.5)  # renewals could not fail once
    with pytest.raises(ServerConfigError, match="takeover"):
        ServerConfig(takeover="sometimes")  # type: ignore[arg-type]
    loaded = ServerConfig.load(
        environ={"WENXIN_TAKEOVER": "interrupt", "WENXIN_ANSWER_LEASE_TTL": "2.5"}
    )
    assert (loaded.takeover, loaded.answer_lease_ttl) == ("interrupt", 2.5)
    args = build_parser().parse_args(
        ["serve", "--takeover", "interrupt", "--answer-lease-ttl", "4", "--data-dir", str(tmp_path)]
    )
    config = config_from_args(args, environ={})
    assert (config.takeover, config.answer_lease_ttl) == ("interrupt", 4.0)
