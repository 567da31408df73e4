"""Concurrent dispatches share round trips; dispatch_many stores many jobs at once."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest
from support.engine_calls import claim_from
from support.redis_server import RedisServer

from aiojobs_redis import Job, PayloadNotSerializable, RedisEngine, Settings, use_engine

# Also on a Cluster and behind Sentinel: see conftest.py.
pytestmark = [pytest.mark.anyio, pytest.mark.deployments]


class Ping(Job):
    queue = "batch-a"


class Pong(Job):
    queue = "batch-b"
    attempts = 2


@pytest.fixture
async def private_engine(tmp_path: Path) -> AsyncIterator[RedisEngine]:
    """An engine on a server of its own, so its command counts are the engine's alone."""
    with RedisServer(tmp_path / "redis", aof=False) as server:
        async with RedisEngine(Settings(url=server.url, prefix="b:")) as engine:
            with use_engine(engine):
                yield engine


async def script_calls(engine: RedisEngine) -> int:
    stats = await engine.redis.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


async def test_concurrent_dispatches_are_coalesced(private_engine: RedisEngine) -> None:
    engine = private_engine
    await Ping().dispatch({"warm": True})  # loads the script, registers the queue
    before = await script_calls(engine)
    ids: list[str] = []

    async def one(i: int) -> None:
        job = Ping() if i % 2 else Pong()
        ids.append(await job.dispatch({"i": i}))

    async with anyio.create_task_group() as tg:
        for i in range(400):
            tg.start_soon(one, i)
    calls = await script_calls(engine) - before
    print(f"400 concurrent dispatches took {calls} script calls")
    assert len(set(ids)) == 400
    assert calls <= 40, "concurrent dispatches share script calls"
    stats = {s.queue: s.ready for s in await engine.stats()}
    assert stats == {"batch-a": 201, "batch-b": 200}
    info = await engine.get_job("batch-b", next(i for i in ids if i))
    assert info is not None


async def test_sequential_dispatches_still_take_one_call_each(private_engine: RedisEngine) -> None:
    engine = private_engine
    await Ping().dispatch({})
    before = await script_calls(engine)
    for i in range(20):
        await Ping().dispatch({"i": i})
    assert await script_calls(engine) - before == 20


async def test_followers_complete_when_the_leader_is_cancelled(engine: RedisEngine) -> None:
    ids: list[str] = []
    leader_scope = anyio.CancelScope()

    async def leader() -> None:
        with leader_scope:
            ids.append(await Ping().dispatch({"leader": True}))

    async def follower(i: int) -> None:
        ids.append(await Ping().dispatch({"i": i}))

    async def cancel_leader() -> None:
        leader_scope.cancel()

    async with anyio.create_task_group() as tg:
        tg.start_soon(leader)  # runs first and leads the batch
        tg.start_soon(cancel_leader)  # cancelled while collecting its batch
        for i in range(10):
            tg.start_soon(follower, i)
    assert len(ids) >= 10, "every follower got its id"
    assert (await engine.stats("batch-a"))[0].ready in (len(ids), len(ids) + 1)


async def test_dispatch_many_stores_every_job_in_order(engine: RedisEngine) -> None:
    ids = await Ping.dispatch_many([{"i": i} for i in range(1200)])
    assert len(ids) == len(set(ids)) == 1200
    claimed: list[str] = []
    while len(claimed) < 1200:
        claim = await claim_from(
            engine, "batch-a", 500, worker_id="w", request_id=str(len(claimed)), lease_ms=60_000
        )
        claimed += [j.id for j in claim.jobs]
    assert claimed == ids, "dispatch order is claim order"


async def test_dispatch_many_mixes_queues_and_delays(engine: RedisEngine) -> None:
    jobs: list[Job] = [Ping({"i": 1}), Pong({"i": 2}), Ping({"i": 3}).set_delay("+1 minutes")]
    ids = await engine.dispatch_many(jobs)
    assert [j.id for j in jobs] == ids
    stats = {s.queue: s for s in await engine.stats()}
    assert (stats["batch-a"].ready, stats["batch-a"].delayed, stats["batch-b"].ready) == (1, 1, 1)
    pong = await engine.get_job("batch-b", ids[1])
    assert pong is not None and pong.max_attempts == 2
    delayed = await Ping.dispatch_many([{"x": 1}, {"x": 2}], delay=30)
    assert (await engine.stats("batch-a"))[0].delayed == 1 + len(delayed)


async def test_dispatch_many_with_a_bad_payload_stores_nothing(engine: RedisEngine) -> None:
    with pytest.raises(PayloadNotSerializable, match=r"builtins\.set"):
        await Ping.dispatch_many([{"i": 1}, {"bad": {1, 2}}, {"i": 3}])
    assert await engine.known_queues() == [] or (await engine.stats("batch-a"))[0].ready == 0


async def test_concurrent_acks_are_coalesced_and_fenced_one_by_one(private_engine: RedisEngine) -> None:
    engine = private_engine
    await Ping.dispatch_many([{"i": i} for i in range(50)])
    claim = await claim_from(engine, "batch-a", 50, worker_id="w", request_id="1", lease_ms=60_000)
    stale = claim.jobs[7]
    await engine.redis.hset(engine.keys("batch-a").job(stale.id), "t", "someone-else:2")
    before = await script_calls(engine)
    results: dict[str, bool] = {}

    async def ack(job_index: int) -> None:
        job = claim.jobs[job_index]
        results[job.id] = await engine.ack(job)

    async with anyio.create_task_group() as tg:
        for index in range(50):
            tg.start_soon(ack, index)
    assert await script_calls(engine) - before <= 5
    assert [job.id for job in claim.jobs if not results[job.id]] == [stale.id]
    stats = (await engine.stats("batch-a"))[0]
    assert (stats.running, stats.ready) == (1, 0), "only the stale job is still running"
