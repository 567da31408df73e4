"""Scripts keep working when Redis forgets them (SCRIPT FLUSH, restart, failover)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from support.engine_calls import claim_from
from support.redis_server import RedisServer

from aiojobs_redis import Job, RedisEngine, Settings, use_engine

pytestmark = pytest.mark.anyio


class High(Job):
    queue = "cache-high"


class Low(Job):
    queue = "cache-low"


@pytest.fixture
async def private_engine(tmp_path: Path) -> AsyncIterator[RedisEngine]:
    """An engine on a redis-server of its own, so the test may flush its script cache."""
    with RedisServer(tmp_path / "redis", aof=False) as server:
        async with RedisEngine(Settings(url=server.url, prefix="cache:")) as engine:
            with use_engine(engine):
                yield engine


async def test_pipelined_and_single_calls_survive_script_flush(private_engine: RedisEngine) -> None:
    engine = private_engine
    high = [await High().dispatch({"i": i}) for i in range(3)]
    low = [await Low().dispatch({"i": i}) for i in range(5)]
    await High().dispatch({"later": True}, delay=60)
    await engine.redis.script_flush()

    moved, next_due = await engine.promote(["cache-high", "cache-low"])
    assert moved == 0 and 59_000 < next_due <= 60_000

    await engine.redis.script_flush()
    assert await engine.ready_counts(["cache-high", "cache-low"]) == [3, 5]
    claims = await engine.claim_many(
        [("cache-high", 3, "1"), ("cache-low", 1, "2")], worker_id="w1", lease_ms=30_000
    )
    assert [j.id for j in claims[0].jobs] == high
    assert [j.id for j in claims[1].jobs] == low[:1]
    assert claims[1].more

    await engine.redis.script_flush()
    assert await engine.ack(claims[0].jobs[0])
    await engine.redis.script_flush()
    again = await claim_from(engine, "cache-low", 10, worker_id="w1", request_id="3", lease_ms=30_000)
    assert [j.id for j in again.jobs] == low[1:]


async def test_a_replayed_pipelined_claim_returns_the_same_jobs(private_engine: RedisEngine) -> None:
    engine = private_engine
    for i in range(4):
        await High().dispatch({"i": i})
        await Low().dispatch({"i": i})
    requests = [("cache-high", 2, "7"), ("cache-low", 2, "8")]
    first = await engine.claim_many(requests, worker_id="w2", lease_ms=30_000)
    replay = await engine.claim_many(requests, worker_id="w2", lease_ms=30_000)
    assert [[(j.id, j.token) for j in c.jobs] for c in first] == [
        [(j.id, j.token) for j in c.jobs] for c in replay
    ]
    stats = {s.queue: s for s in await engine.stats()}
    assert stats["cache-high"].running == stats["cache-low"].running == 2
