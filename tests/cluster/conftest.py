"""Fixtures for tests on real local deployments: a Redis Cluster and a Sentinel-watched primary.

A test module sets `deployment_url` (a fixture) to the deployment it runs on; `redis_url`,
`settings`, `engine`, `clocked_engine` and `raw_redis` then point there, so the engine's
own integration tests run unchanged on a Cluster or behind Sentinel. Keys are deleted by
prefix on every node after each test.

AIOJOBS_CLUSTER_SCALE=full (make cluster-test) makes the load and failover runs larger.
Every test here is marked slow: each module says so.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from aiojobs_redis import RedisEngine, Settings, use_engine
from aiojobs_redis.engine import Clock

HERE = Path(__file__).parent
for _name in ("integration", "e2e", "faults"):  # the tests and helpers reused here
    if str(HERE.parent / _name) not in sys.path:
        sys.path.insert(0, str(HERE.parent / _name))

from support.deployments import ClusterDeployment, SentinelDeployment  # noqa: E402

from cluster.reuse import delete_everywhere  # noqa: E402


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
def redis_url(deployment_url: str) -> str:
    return deployment_url


@pytest.fixture
async def engine(settings: Settings) -> AsyncIterator[RedisEngine]:
    async with RedisEngine(settings) as opened:
        with use_engine(opened):
            yield opened
    await delete_everywhere(settings.url, settings.prefix)


@pytest.fixture
async def clocked_engine(settings: Settings, clock: Clock) -> AsyncIterator[RedisEngine]:
    async with RedisEngine(settings, clock=clock) as opened:
        with use_engine(opened):
            yield opened
    await delete_everywhere(settings.url, settings.prefix)


@pytest.fixture
async def raw_redis(deployment_url: str) -> AsyncIterator[Redis]:
    """A client of the deployment (a RedisCluster on a Cluster; the primary behind Sentinel)."""
    async with RedisEngine(Settings(url=deployment_url)) as admin:
        yield admin.redis
