"""Configuration errors are not "Redis unavailable": a refused or missing password, an ACL
user that does not exist, a bad URL, two database numbers that disagree. Each raises a
ConfigurationError that says what to fix, never an EngineUnavailable (which callers retry),
and a worker stops at once instead of waiting for Redis.

The password tests run against a private redis-server with requirepass on loopback.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.certs import ConfiguredServer

from aiojobs_redis import ConfigurationError, EngineUnavailable, RedisAuthError, connect

pytestmark = pytest.mark.anyio

PASSWORD = "s3cret-pw"
E2E_DIR = Path(__file__).resolve().parent.parent / "e2e"


@pytest.fixture(scope="module")
def locked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConfiguredServer]:
    with ConfiguredServer(tmp_path_factory.mktemp("locked-redis"), password=PASSWORD) as started:
        yield started


def address(server: ConfiguredServer) -> str:
    return f"127.0.0.1:{server.port}"


@pytest.mark.parametrize(
    ("userinfo", "says"),
    [
        (":wrong@", "Redis refused the user name or password in the URL"),
        ("nosuchuser:whatever@", "Redis refused the user name or password in the URL"),
        ("", "Redis needs a password: give it in the URL, redis://:PASSWORD@HOST:PORT"),
    ],
    ids=["wrong-password", "unknown-acl-user", "no-password"],
)
async def test_credentials_errors_say_what_to_fix(
    locked: ConfiguredServer, prefix: str, userinfo: str, says: str
) -> None:
    with pytest.raises(RedisAuthError) as refused:
        async with connect(f"redis://{userinfo}{address(locked)}", prefix=prefix):
            pass
    error = refused.value
    assert isinstance(error, ConfigurationError)
    assert not isinstance(error, EngineUnavailable | ConnectionError)
    assert says in str(error) and "redis://USER:PASSWORD@HOST:PORT" in str(error)
    assert str(error).count("(Redis said:") == 1
    assert "whatever" not in str(error)
    async with connect(f"redis://:{PASSWORD}@{address(locked)}", prefix=prefix) as engine:
        assert await engine.stats() == []  # the right password opens it


def cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, float]:
    clean = {
        k: v for k, v in os.environ.items() if k not in ("JOB_ENGINE", "REDIS_JOB_DB", "REDIS_JOB_PREFIX")
    }
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "aiojobs_redis", *args],
        env={**clean, **(env or {})},
        cwd=E2E_DIR,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return result.returncode, result.stderr, time.monotonic() - started


@pytest.mark.slow
def test_a_worker_with_a_wrong_password_stops_at_once(locked: ConfiguredServer, prefix: str) -> None:
    url = f"redis://:wrong@{address(locked)}"
    code, stderr, seconds = cli(
        "work", "--import", "jobapp", "--wait-for-redis", "60", "--url", url, "--prefix", prefix
    )
    assert code == 1, stderr
    assert seconds < 30, (seconds, stderr)  # not the 60 s it would wait for an unavailable Redis
    assert "waiting for Redis" not in stderr, stderr
    assert stderr.rstrip().splitlines() == [
        "aiojobs-redis: error: connect: Redis refused the user name or password in the URL: check "
        "redis://:PASSWORD@HOST:PORT, or redis://USER:PASSWORD@HOST:PORT for an ACL user "
        "(Redis said: invalid username-password pair or user is disabled.)"
    ]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "env", "line"),
    [
        (
            ["stats"],
            {"REDIS_URL": "redis://127.0.0.1:notaport"},
            "invalid Redis URL 'redis://127.0.0.1:notaport': Port could not be cast to integer value "
            "as 'notaport'",
        ),
        (
            ["stats", "--url", "localhost:6379"],
            {},
            "unsupported Redis URL 'localhost:6379': did you mean 'redis://localhost:6379'?",
        ),
        (
            ["stats", "--db", "4"],
            {"REDIS_URL": "redis://127.0.0.1:6379/2"},
            "two database numbers: 4 (REDIS_JOB_DB, --db or db=) and 2 (in the URL "
            "redis://127.0.0.1:6379/2); give one of them, or the same in both",
        ),
        (
            ["stats"],
            {"REDIS_URL": "redis://127.0.0.1:6379/2", "REDIS_JOB_DB": "4"},
            "two database numbers: 4 (REDIS_JOB_DB, --db or db=) and 2 (in the URL "
            "redis://127.0.0.1:6379/2); give one of them, or the same in both",
        ),
        (
            ["stats"],
            {"REDIS_JOB_PREFIX": ""},
            "the key prefix (REDIS_JOB_PREFIX) may not be empty: every key would sit at the top level "
            "of the database, among the application's own; use e.g. 'jobs:'",
        ),
    ],
    ids=["bad-port", "no-scheme", "db-flag-vs-url", "db-env-vs-url", "empty-prefix"],
)
def test_configuration_errors_are_one_line(args: list[str], env: dict[str, str], line: str) -> None:
    code, stderr, _ = cli(*args, env=env)
    assert code == 1, stderr
    assert stderr.rstrip().splitlines() == [f"aiojobs-redis: error: {line}"]


@pytest.mark.slow
def test_a_negative_db_flag_names_the_flag() -> None:
    code, stderr, _ = cli("stats", "--db", "-1")
    assert code == 2, stderr
    assert "argument --db: expected a whole number >= 0, not '-1'" in stderr
    assert "REDIS_JOB_DB" not in stderr
