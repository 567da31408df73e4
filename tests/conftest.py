"""Shared fixtures: every test gets its own key prefix on a real server, cleaned up after.

The server: $REDIS_URL when set; else the Redis at 127.0.0.1:6379 when one answers; else
(or with AIOJOBS_TEST_EMBEDDED=1) an embedded Valkey server started for the session. The
choice is exported as REDIS_URL so worker subprocesses use the same server.

A test module marked `deployments` runs each of its tests that use the server once on it
and once more on each deployment (a 3-primary, 3-replica Redis Cluster and a primary found
through Sentinel, started on loopback for the session when first needed; those runs are
slow): `redis_url` and every fixture built on it point at the deployment. A module can pin
its own deployment by overriding the `deployment` fixture.
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
from support.clock import FakeClock
from support.deployments import ClusterDeployment, SentinelDeployment
from support.failover import FULL
from support.keyspace import delete_prefix
from support.proxy import FaultProxy
from support.redis_server import RedisServer
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


DEPLOYMENTS = ("cluster", "sentinel")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Tests marked `deployments` that use the server run once per deployment (see above)."""
    marker = metafunc.definition.get_closest_marker("deployments")
    if marker is None or "deployment" not in metafunc.fixturenames:
        return
    if marker.kwargs.get("full_scale") and not FULL:
        return  # rows that only `make cluster-test` runs on a deployment
    kinds = ["single"]
    if metafunc.definition.get_closest_marker("single_server") is None:
        kinds += marker.args or DEPLOYMENTS
    params = [pytest.param(k, id=k, marks=() if k == "single" else pytest.mark.slow) for k in kinds]
    metafunc.parametrize("deployment", params, indirect=True)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterDeployment]:
    """3 primaries, 3 replicas, shared by the tests that do not kill nodes."""
    with ClusterDeployment(tmp_path_factory.mktemp("cluster")) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def sentinel_deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelDeployment]:
    """A primary, a replica and three sentinels, shared by the tests that do not kill nodes."""
    with SentinelDeployment(tmp_path_factory.mktemp("sentinel")) as deployment:
        yield deployment


@pytest.fixture
def deployment(request: pytest.FixtureRequest) -> str:
    """Where the test's server is: "single" (the session's server), "cluster" or "sentinel"."""
    return str(getattr(request, "param", "single"))


@pytest.fixture
def redis_url(request: pytest.FixtureRequest, deployment: str) -> str:
    if deployment == "cluster":
        return str(request.getfixturevalue("redis_cluster").url)
    if deployment == "sentinel":
        return str(request.getfixturevalue("sentinel_deployment").url)
    return REDIS_URL


@pytest.fixture
def prefix() -> str:
    return f"test-{uuid.uuid4().hex[:12]}:"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


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
async def raw_redis(redis_url: str, deployment: str) -> AsyncIterator[Redis]:
    """A client of the server (a RedisCluster on a Cluster; the primary behind Sentinel)."""
    if deployment != "single":
        async with RedisEngine(Settings(url=redis_url)) as admin:
            yield admin.redis
        return
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


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    """A private redis-server (no persistence), for tests that break its connections."""
    with RedisServer(tmp_path / "redis", aof=False) as started:
        yield started


@pytest.fixture
def proxy(server: RedisServer) -> Iterator[FaultProxy]:
    """A fault-injecting TCP proxy in front of `server` (support/proxy.py)."""
    with FaultProxy(server.port) as started:
        yield started
