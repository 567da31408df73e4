"""Shared fixtures: every test gets its own key prefix on a real server, cleaned up after.

The server: $REDIS_URL when set; else the Redis at 127.0.0.1:6379 when one answers; else
(or with AIOJOBS_TEST_EMBEDDED=1) an embedded Valkey server started for the session. The
choice is exported as REDIS_URL so worker subprocesses use the same server.
"""

from __future__ import annotations

import contextlib
import os
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis
from support.worker_procs import Workers

from aiojobs_redis import RedisEngine, Settings, use_engine
from aiojobs_redis.embedded import embedded_server

REDIS_URL = "redis://127.0.0.1:6379"
_session_server = contextlib.ExitStack()


def _local_redis_answers() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def pytest_configure(config: pytest.Config) -> None:
    global REDIS_URL
    if os.environ.get("AIOJOBS_TEST_EMBEDDED") == "1" or (
        "REDIS_URL" not in os.environ and not _local_redis_answers()
    ):
        os.environ["REDIS_URL"] = _session_server.enter_context(embedded_server())
    REDIS_URL = os.environ.setdefault("REDIS_URL", REDIS_URL)


def pytest_unconfigure(config: pytest.Config) -> None:
    _session_server.close()


def pytest_report_header(config: pytest.Config) -> str:
    return f"job server: {REDIS_URL}"


class FakeClock:
    """Milliseconds that move only when a test says so. Passed to the engine as `clock`."""

    def __init__(self, start_ms: int = 1_800_000_000_000) -> None:
        self.now_ms = start_ms

    def __call__(self) -> int:
        return self.now_ms

    def advance(self, seconds: float) -> None:
        self.now_ms += round(seconds * 1000)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def redis_url() -> str:
    return REDIS_URL


@pytest.fixture
def prefix() -> str:
    return f"test-{uuid.uuid4().hex[:12]}:"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


async def delete_prefix(url: str, prefix: str, db: int | None = None) -> None:
    client = Redis.from_url(url) if db is None else Redis.from_url(url, db=db)
    try:
        async for key in client.scan_iter(match=f"{prefix}*", count=1000):
            await client.delete(key)
    finally:
        await client.aclose()


@pytest.fixture
def settings(redis_url: str, prefix: str) -> Settings:
    return Settings(url=redis_url, prefix=prefix)


@pytest.fixture
async def engine(settings: Settings) -> AsyncIterator[RedisEngine]:
    """An engine on the real Redis with Redis's own clock."""
    async with RedisEngine(settings) as opened:
        with use_engine(opened):
            yield opened
    await delete_prefix(settings.url, settings.prefix)


@pytest.fixture
async def clocked_engine(settings: Settings, clock: FakeClock) -> AsyncIterator[RedisEngine]:
    """An engine whose scripts take their time from `clock` instead of Redis TIME."""
    async with RedisEngine(settings, clock=clock) as opened:
        with use_engine(opened):
            yield opened
    await delete_prefix(settings.url, settings.prefix)


@pytest.fixture
async def raw_redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
def env_clean(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ("JOB_ENGINE", "REDIS_URL", "REDIS_JOB_PREFIX", "REDIS_JOB_DB"):
        monkeypatch.delenv(name, raising=False)
    yield


@pytest.fixture
def ledger_dir(tmp_path: Path) -> Path:
    """A directory for the per-process ledger files the fault jobs write."""
    path = tmp_path / "ledger"
    path.mkdir()
    return path


@pytest.fixture
def workers(redis_url: str, prefix: str, tmp_path: Path) -> Iterator[Workers]:
    """Worker processes on the test's server and prefix, killed after the test."""
    procs = Workers(redis_url, prefix, tmp_path)
    yield procs
    procs.stop_all()
