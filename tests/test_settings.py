"""Settings: the QIANFAN_* environment, explicit overrides, blank values, URL and number
validation, API choice, and a repr that never shows a secret."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from wenxin_stream._exceptions import ConfigurationError, WenxinError
from wenxin_stream._retry import RetryPolicy
from wenxin_stream._settings import ENV_VARS, SECRET_FIELDS, Settings

FULL_ENV = {
    "QIANFAN_AK": "ak-123",
    "QIANFAN_SK": "sk-456",
    "QIANFAN_ACCESS_TOKEN": "24.token",
    "QIANFAN_ACCESS_KEY": "iam-ak",
    "QIANFAN_SECRET_KEY": "iam-sk",
    "QIANFAN_BEARER_TOKEN": "bce-v3/ALTAK-abc/def",
    "QIANFAN_APP_ID": "app-789",
    "QIANFAN_BASE_URL": "http://127.0.0.1:8000/",
    "QIANFAN_CONSOLE_API_BASE_URL": "http://127.0.0.1:8000/emu//",
    "QIANFAN_IAM_BASE_URL": "https://iam.example.com",
    "QIANFAN_RPM_LIMIT": "300",
    "QIANFAN_TPM_LIMIT": "300000",
    "QIANFAN_LLM_API_RETRY_COUNT": "5",
    "QIANFAN_LLM_API_RETRY_BACKOFF_FACTOR": "1",
    "QIANFAN_LLM_API_RETRY_JITTER": "0.25",
    "QIANFAN_LLM_API_RETRY_MAX_WAIT_INTERVAL": "120",
    "QIANFAN_BEARER_TOKEN_EXPIRED_INTERVAL": "3600",
    "WENXIN_OPENAI_BASE_URL": "http://127.0.0.1:8001/v1/",
    "WENXIN_OPENAI_API_KEY": "vllm-key-123",
}


def test_defaults() -> None:
    s = Settings.from_env({})
    assert s == Settings()
    assert s.base_url == "https://aip.baidubce.com"
    assert s.console_api_base_url == "https://qianfan.baidubce.com"
    assert s.iam_base_url == "https://iam.bj.baidubce.com"
    assert s.api_key is None
    assert s.bearer_token_lifetime == 43200
    assert not s.has_credentials()


def test_reads_every_variable() -> None:
    s = Settings.from_env(FULL_ENV)
    assert (s.api_key, s.secret_key, s.access_token) == ("ak-123", "sk-456", "24.token")
    assert (s.access_key, s.iam_secret_key) == ("iam-ak", "iam-sk")
    assert s.bearer_token == "bce-v3/ALTAK-abc/def"
    assert s.app_id == "app-789"
    assert s.base_url == "http://127.0.0.1:8000"
    assert s.console_api_base_url == "http://127.0.0.1:8000/emu"
    assert s.iam_base_url == "https://iam.example.com"
    assert (s.rpm_limit, s.tpm_limit, s.qps_limit) == (300, 300000, None)
    assert s.bearer_token_lifetime == 3600
    assert s.retry_policy() == RetryPolicy(
        max_attempts=5, initial_delay=1.0, jitter=0.25, max_delay=120.0
    )


def test_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QIANFAN_AK", "from-os")
    monkeypatch.delenv("QIANFAN_BASE_URL", raising=False)
    assert Settings.from_env().api_key == "from-os"


def test_only_qianfan_names_are_read() -> None:
    s = Settings.from_env({"WENXIN_AK": "x", "QIANFAN_CONSOLE_BASE_URL": "http://wrong"})
    assert s == Settings()


def test_explicit_arguments_win() -> None:
    s = Settings.from_env(FULL_ENV, api_key="explicit", base_url="https://other.example.com/")
    assert s.api_key == "explicit"
    assert s.base_url == "https://other.example.com"
    assert s.secret_key == "sk-456"  # the rest still comes from the environment


def test_none_argument_means_not_given() -> None:
    assert Settings.from_env(FULL_ENV, api_key=None).api_key == "ak-123"


def test_unknown_override_is_an_error() -> None:
    with pytest.raises(TypeError, match="api_kye"):
        Settings.from_env({}, api_kye="typo")


@pytest.mark.parametrize("blank", ["", "   ", "\n", "\t "])
def test_blank_values_count_as_unset(blank: str) -> None:
    env = dict.fromkeys(ENV_VARS.values(), blank)
    assert Settings.from_env(env) == Settings()
    assert Settings(api_key=blank).api_key is None


def test_values_are_stripped() -> None:
    s = Settings.from_env({"QIANFAN_AK": "  ak \n", "QIANFAN_RPM_LIMIT": " 60 "})
    assert s.api_key == "ak"
    assert s.rpm_limit == 60
    assert Settings(secret_key=" sk ").secret_key == "sk"


def test_zero_rate_limit_means_off() -> None:
    env = {"QIANFAN_QPS_LIMIT": "0", "QIANFAN_RPM_LIMIT": "0", "QIANFAN_TPM_LIMIT": "0"}
    s = Settings.from_env(env)
    assert (s.qps_limit, s.rpm_limit, s.tpm_limit) == (None, None, None)
    assert Settings.from_env({"QIANFAN_QPS_LIMIT": "2.5"}).qps_limit == 2.5


def test_qps_and_rpm_exclude_each_other() -> None:
    with pytest.raises(ConfigurationError, match="not both"):
        Settings.from_env({"QIANFAN_QPS_LIMIT": "1", "QIANFAN_RPM_LIMIT": "60"})


@pytest.mark.parametrize(
    ("var", "value", "message"),
    [
        ("QIANFAN_RPM_LIMIT", "lots", "expected a number"),
        ("QIANFAN_RPM_LIMIT", "-1", "negative"),
        ("QIANFAN_RPM_LIMIT", "1.5", "whole number"),
        ("QIANFAN_TPM_LIMIT", "inf", "finite"),
        ("QIANFAN_QPS_LIMIT", "nan", "finite"),
        ("QIANFAN_LLM_API_RETRY_COUNT", "0", "at least 1"),
        ("QIANFAN_BEARER_TOKEN_EXPIRED_INTERVAL", "0", "at least 1"),
        ("QIANFAN_LLM_API_RETRY_JITTER", "-0.5", "negative"),
    ],
)
def test_invalid_numbers(var: str, value: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message) as info:
        Settings.from_env({var: value})
    assert var in str(info.value)


def test_numbers_given_as_arguments() -> None:
    s = Settings(rpm_limit=60, qps_limit=None, max_attempts=2, retry_max_delay=5)
    assert s.retry_policy() == RetryPolicy(max_attempts=2, max_delay=5.0)
    with pytest.raises(ConfigurationError, match="finite number"):
        Settings(rpm_limit=True)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="finite number"):
        Settings(tpm_limit=[1])  # type: ignore[arg-type]


def test_retry_policy_defaults() -> None:
    assert Settings().retry_policy() == RetryPolicy()


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com",
        "example.com",
        "//example.com",
        "http://",
        "https:///path",
        "http://example.com?x=1",
        "http://example.com/#frag",
        "http://example.com:99999",
        "http://[::1",
    ],
)
def test_invalid_base_urls(url: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        Settings.from_env({"QIANFAN_BASE_URL": url})
    assert info.value.field == "base_url"
    assert "QIANFAN_BASE_URL" in str(info.value)
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, WenxinError)


def test_credentials_in_a_url_are_refused_without_being_echoed() -> None:
    with pytest.raises(ConfigurationError, match="credentials") as info:
        Settings.from_env({"QIANFAN_IAM_BASE_URL": "https://user:hunter2@iam.example.com"})
    assert "hunter2" not in str(info.value)


def test_a_secret_in_a_url_query_is_not_echoed() -> None:
    with pytest.raises(ConfigurationError) as info:
        Settings(base_url="https://aip.baidubce.com/?access_token=24.secret-token")
    assert "24.secret-token" not in str(info.value)


def test_url_must_be_a_string() -> None:
    with pytest.raises(ConfigurationError, match="required"):
        Settings(base_url=None)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="required"):
        Settings(base_url="  ")


def test_string_fields_must_be_strings() -> None:
    with pytest.raises(ConfigurationError, match="string"):
        Settings(api_key=123)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "api", "credentials"),
    [
        ({}, "v2", False),
        ({"bearer_token": "bce-v3/x"}, "v2", True),
        ({"access_key": "a", "iam_secret_key": "b"}, "v2", True),
        ({"access_key": "a"}, "v2", False),  # half a pair
        ({"api_key": "a", "secret_key": "b"}, "v1", True),
        ({"api_key": "a"}, "v2", False),
        ({"access_token": "24.x"}, "v1", True),
        ({"api_key": "a", "secret_key": "b", "bearer_token": "bce-v3/x"}, "v2", True),
        ({"api_key": "a", "secret_key": "b", "access_key": "c", "iam_secret_key": "d"}, "v2", True),
    ],
)
def test_default_api_and_credentials(kwargs: dict[str, str], api: str, credentials: bool) -> None:
    s = Settings(**kwargs)
    assert s.default_api() == api
    assert s.has_credentials() is credentials


def test_settings_are_frozen() -> None:
    s = Settings()
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.api_key = "x"  # type: ignore[misc]


def test_repr_masks_secrets_and_shows_the_rest() -> None:
    s = Settings.from_env(FULL_ENV)
    text = repr(s)
    for field in SECRET_FIELDS:
        assert getattr(s, field) not in text
        assert f"{field}='***'" in text
    assert "app-789" in text
    assert "http://127.0.0.1:8000" in text
    assert "rpm_limit=300" in text
    assert "qps_limit" not in text  # defaults are left out
    assert str(s) == text
    assert "api_key" not in repr(Settings())


secret_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
    min_size=1,
).filter(lambda t: t.strip() == t and t.strip() != "")


@given(
    secrets=st.fixed_dictionaries(dict.fromkeys(sorted(SECRET_FIELDS), secret_text)),
)
def test_repr_never_contains_a_secret(secrets: dict[str, str]) -> None:
    baseline = repr(Settings(**dict.fromkeys(SECRET_FIELDS, "x")))
    for value in secrets.values():
        assume(value not in baseline)
    text = repr(Settings(**secrets))
    for value in secrets.values():
        assert value not in text
