"""config.Settings: environment, overrides, validation, and never printing a password."""

from __future__ import annotations

import pytest

from aiojobs_redis.config import Settings, redact_url
from aiojobs_redis.errors import ConfigurationError


def test_defaults_from_an_empty_environment() -> None:
    settings = Settings.from_env({})
    assert settings.engine == "redis"
    assert settings.url == "redis://127.0.0.1:6379"
    assert settings.prefix == "jobs:"
    assert settings.db is None
    assert settings == Settings()


def test_unrelated_variables_are_ignored() -> None:
    assert Settings.from_env({"PATH": "/bin", "JOB_ENGINE_X": "sync"}) == Settings()


@pytest.mark.parametrize("value", ["sync", "SYNC", " sync ", "Sync\n"])
def test_job_engine_sync(value: str) -> None:
    assert Settings.from_env({"JOB_ENGINE": value}).engine == "sync"


def test_job_engine_redis() -> None:
    assert Settings.from_env({"JOB_ENGINE": "redis"}).engine == "redis"


@pytest.mark.parametrize("value", ["foo", "", "memory", "redis-cluster"])
def test_job_engine_unknown(value: str) -> None:
    with pytest.raises(ConfigurationError, match="JOB_ENGINE") as info:
        Settings.from_env({"JOB_ENGINE": value})
    assert isinstance(info.value, ValueError)


def test_redis_url_and_prefix() -> None:
    settings = Settings.from_env(
        {"REDIS_URL": "rediss://cache.internal:6380/2", "REDIS_JOB_PREFIX": "myapp:jobs:"}
    )
    assert settings.url == "rediss://cache.internal:6380/2"
    assert settings.prefix == "myapp:jobs:"


@pytest.mark.parametrize(("value", "db"), [("3", 3), ("0", 0), (" 15 ", 15), ("65535", 65_535)])
def test_redis_job_db(value: str, db: int) -> None:
    assert Settings.from_env({"REDIS_JOB_DB": value}).db == db


@pytest.mark.parametrize("value", ["x", "", "3.0", "three"])
def test_redis_job_db_not_an_integer(value: str) -> None:
    with pytest.raises(ConfigurationError, match="REDIS_JOB_DB") as info:
        Settings.from_env({"REDIS_JOB_DB": value})
    assert repr(value) in str(info.value)


@pytest.mark.parametrize("value", ["-1", "65536"])
def test_redis_job_db_out_of_range(value: str) -> None:
    with pytest.raises(ConfigurationError, match="REDIS_JOB_DB"):
        Settings.from_env({"REDIS_JOB_DB": value})


def test_overrides_beat_the_environment() -> None:
    environ = {
        "JOB_ENGINE": "redis",
        "REDIS_URL": "redis://env-host:6379",
        "REDIS_JOB_PREFIX": "env:",
        "REDIS_JOB_DB": "3",
    }
    settings = Settings.from_env(environ, engine="sync", url="redis://arg-host:6379", prefix="arg:", db=5)
    assert settings.engine == "sync"
    assert settings.url == "redis://arg-host:6379"
    assert settings.prefix == "arg:"
    assert settings.db == 5


def test_none_overrides_leave_the_environment_alone() -> None:
    # connect() passes None for every argument it was not given.
    environ = {"JOB_ENGINE": "sync", "REDIS_JOB_PREFIX": "env:", "REDIS_JOB_DB": "3"}
    settings = Settings.from_env(environ, engine=None, url=None, prefix=None, db=None)
    assert (settings.engine, settings.prefix, settings.db) == ("sync", "env:", 3)


def test_other_fields_can_be_overridden() -> None:
    settings = Settings.from_env({}, max_payload_bytes=10, socket_timeout=1.5)
    assert settings.max_payload_bytes == 10
    assert settings.socket_timeout == 1.5


def test_unknown_override() -> None:
    with pytest.raises(ConfigurationError, match="unknown settings: bogus, nope"):
        Settings.from_env({}, nope=1, bogus=2)


def test_explicit_environ_does_not_read_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOB_ENGINE", "sync")
    monkeypatch.setenv("REDIS_JOB_PREFIX", "from-os:")
    assert Settings.from_env({}) == Settings()
    from_os = Settings.from_env()
    assert (from_os.engine, from_os.prefix) == ("sync", "from-os:")


@pytest.mark.parametrize("prefix", ["{jobs}:", "jobs{:", "jobs}:", "a b", "p" * 65])
def test_bad_prefix_is_rejected(prefix: str) -> None:
    with pytest.raises(ConfigurationError):
        Settings.from_env({"REDIS_JOB_PREFIX": prefix})
    with pytest.raises(ConfigurationError):
        Settings.from_env({}, prefix=prefix)
    with pytest.raises(ConfigurationError):
        Settings(prefix=prefix)


def test_empty_prefix_is_refused() -> None:
    """An empty prefix would put every key at the top level of the database."""
    with pytest.raises(ConfigurationError, match=r"may not be empty.*'jobs:'"):
        Settings(prefix="")
    with pytest.raises(ConfigurationError, match=r"may not be empty.*'jobs:'"):
        Settings.from_env({"REDIS_JOB_PREFIX": ""})


def test_a_prefix_without_a_separator_is_taken_as_it_is() -> None:
    """Documented: the prefix is glued to the key names (changing that would move keys)."""
    assert Settings(prefix="shop").prefix == "shop"


@pytest.mark.parametrize(
    ("url", "db"),
    [("redis://h:6379/2", 4), ("redis://h:6379?db=2", 4), ("redis+sentinel://h:26379/mymaster/2", 4)],
)
def test_a_database_number_that_disagrees_with_the_urls_is_refused(url: str, db: int) -> None:
    expected = r"two database numbers: 4 .* and 2 \(in the URL"
    with pytest.raises(ConfigurationError, match=expected):
        Settings(url=url, db=db)
    with pytest.raises(ConfigurationError, match=expected):
        Settings.from_env({"REDIS_URL": url, "REDIS_JOB_DB": str(db)})


def test_the_same_database_number_in_the_url_and_the_setting_is_fine() -> None:
    assert Settings(url="redis://h:6379/2", db=2).db == 2
    assert Settings.from_env({"REDIS_URL": "redis://h/3", "REDIS_JOB_DB": "3"}).db == 3
    assert Settings(url="redis://h:6379/2").db is None  # the URL's, as redis-py reads it


def test_a_negative_database_number_does_not_name_the_environment_variable() -> None:
    with pytest.raises(ConfigurationError, match="the database number must be 0 to 65535, not -1") as info:
        Settings.from_env({}, db=-1)
    assert "REDIS_JOB_DB" not in str(info.value)
    with pytest.raises(ConfigurationError, match="REDIS_JOB_DB must be 0 to 65535, not '-1'"):
        Settings.from_env({"REDIS_JOB_DB": "-1"})
    assert Settings.from_env({"REDIS_JOB_DB": "oops"}, db=1).db == 1  # the argument wins


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("localhost:6379", "unsupported Redis URL 'localhost:6379': did you mean 'redis://localhost:6379'?"),
        ("u:s3cret@h:6379", "unsupported Redis URL 'u:***@h:6379': did you mean 'redis://u:***@h:6379'?"),
        (
            "redis://127.0.0.1:notaport",
            "invalid Redis URL 'redis://127.0.0.1:notaport': Port could not be cast",
        ),
        ("redis://h:99999", "invalid Redis URL 'redis://h:99999': Port out of range"),
        ("redis://:s3cret@h/abc", "invalid Redis URL 'redis://:***@h/abc': its path is the database number"),
    ],
)
def test_a_bad_url_gets_one_clear_line(url: str, message: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        Settings(url=url)
    assert str(info.value).startswith(message)
    assert "\n" not in str(info.value) and "s3cret" not in str(info.value)


@pytest.mark.parametrize(
    "changes",
    [
        {"max_payload_bytes": 0},
        {"max_connections": 0},
        {"failed_ttl_ms": -1},
        {"failed_max": 0},
        {"socket_timeout": 0},
        {"dispatch_timeout": -1.0},
        {"engine": "other"},
        {"db": -1},
        {"db": 65_536},
    ],
    ids=repr,
)
def test_invalid_values_are_configuration_errors(changes: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError):
        Settings.from_env({}, **changes)


@pytest.mark.parametrize("url", ["redis://h:6379", "rediss://h", "unix:///tmp/redis.sock"])
def test_supported_url_schemes(url: str) -> None:
    assert Settings(url=url).url == url


def test_unsupported_url_error_hides_the_password() -> None:
    with pytest.raises(ConfigurationError, match="unsupported Redis URL") as info:
        Settings(url="http://user:s3cret@host:6379")
    assert "s3cret" not in str(info.value)
    assert "host" in str(info.value)


def test_repr_hides_the_password() -> None:
    settings = Settings(url="redis://user:s3cret@host:6379/0")
    assert "s3cret" not in repr(settings)
    assert "s3cret" not in str(settings)
    assert "redis://user:***@host:6379/0" in repr(settings)
    assert settings.url == "redis://user:s3cret@host:6379/0"


def test_with_returns_a_changed_copy() -> None:
    base = Settings()
    changed = base.with_(prefix="other:")
    assert changed.prefix == "other:"
    assert base.prefix == "jobs:"
    with pytest.raises(ConfigurationError):
        base.with_(prefix="{bad}")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://127.0.0.1:6379", "redis://127.0.0.1:6379"),
        ("redis://user@host:6379/0", "redis://user@host:6379/0"),
        ("unix:///tmp/redis.sock", "unix:///tmp/redis.sock"),
        ("redis://user:s3cret@host:6379/0", "redis://user:***@host:6379/0"),
        ("redis://:s3cret@host:6379", "redis://:***@host:6379"),
        ("rediss://user:s3cret@host/1", "rediss://user:***@host/1"),
        ("redis://u:s3cret@host:6379/0?ssl=true", "redis://u:***@host:6379/0?ssl=true"),
        ("redis://user:s3cret@[::1]:6379/0", "redis://user:***@[::1]:6379/0"),
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    redacted = redact_url(url)
    assert "s3cret" not in redacted
    assert redacted == expected
