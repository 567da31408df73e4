"""What a Cluster adds: queues on several primaries, sharded queues, durable dispatch.

On the session's 3-primary, 3-replica Cluster (and, for durable dispatch, the Sentinel
deployment). Each test prints what it measured.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import ClassVar

import anyio
import pytest
import redis
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot
from support.deployments import ClusterDeployment, Node, SentinelDeployment
from support.keyspace import delete_prefix

from aiojobs_redis import Job, NotReplicated, RedisEngine, Settings, Worker, connect, use_engine
from aiojobs_redis.records import parse_inline
from aiojobs_redis.sharding import ShardedQueue

pytestmark = [pytest.mark.slow, pytest.mark.anyio]


@pytest.fixture
def deployment() -> str:
    return "cluster"


class Seen:
    """What handlers ran, in order: (queue, job id)."""

    runs: ClassVar[list[tuple[str, str]]] = []
    changed: ClassVar[anyio.Event | None] = None

    @classmethod
    def reset(cls) -> None:
        cls.runs = []
        cls.changed = anyio.Event()

    @classmethod
    def add(cls, queue: str, job_id: str) -> None:
        cls.runs.append((queue, job_id))
        if cls.changed is not None:
            cls.changed.set()
            cls.changed = anyio.Event()

    @classmethod
    async def wait_for(cls, count: int, timeout: float = 30) -> None:
        with anyio.fail_after(timeout):
            while len(cls.runs) < count:
                assert cls.changed is not None
                await cls.changed.wait()


class Counted(Job):
    queue = "counted"

    async def handle(self) -> None:
        Seen.add(self.queue, str(self.id))


def job_for(queue: str) -> type[Job]:
    """A Job class of `queue` (queue names depend on which primary owns which slots)."""
    return type(
        f"Counted_{queue.replace('-', '_')}", (Counted,), {"queue": queue, "name": f"counted.{queue}"}
    )


def evalsha_calls(node: Node) -> int:
    stats = node.info("commandstats")
    entry = stats.get("cmdstat_evalsha", {})
    return int(entry["calls"]) if isinstance(entry, dict) else 0


@asynccontextmanager
async def running(worker: Worker) -> AsyncIterator[Worker]:
    async with anyio.create_task_group() as tg:
        await tg.start(worker.run)
        try:
            yield worker
        finally:
            worker.stop()


# -- queues on several primaries ---------------------------------------------------------------


async def test_a_worker_serving_queues_on_three_primaries_keeps_each_busy(
    engine: RedisEngine, redis_cluster: ClusterDeployment
) -> None:
    primaries = redis_cluster.primaries()
    queues = [redis_cluster.queue_on(node, "spread") for node in primaries]
    classes = [job_for(q) for q in queues]
    per_queue = 200
    for cls in classes:
        await engine.dispatch_many([cls({}) for _ in range(per_queue)])
    Seen.reset()
    before = [evalsha_calls(node) for node in primaries]
    started = time.monotonic()
    async with running(Worker(engine, queues, fair=True, concurrency=30, batch_size=30, idle_wait=1)):
        await Seen.wait_for(per_queue * 3)
    elapsed = time.monotonic() - started
    calls = [evalsha_calls(node) - b for node, b in zip(primaries, before, strict=True)]
    first_third = Counter(q for q, _ in Seen.runs[:per_queue])
    print(
        f"\n3 queues on 3 primaries, fair worker: {3 * per_queue} jobs in {elapsed:.2f} s; "
        f"script calls per primary {calls}; first {per_queue} jobs by queue {dict(first_third)}"
    )
    assert all(c > 10 for c in calls), "every primary served claims and acks"
    assert all(first_third[q] >= per_queue // 5 for q in queues), "the queues were drained side by side"
    assert [s.ready + s.running for s in await engine.stats()] == [0, 0, 0]


async def test_an_idle_worker_wakes_for_a_job_on_any_primary(
    engine: RedisEngine, redis_cluster: ClusterDeployment
) -> None:
    queues = [redis_cluster.queue_on(node, "idle") for node in redis_cluster.primaries()]
    classes = [job_for(q) for q in queues]
    Seen.reset()
    latencies = []
    async with running(Worker(engine, queues, idle_wait=5)):
        for n, cls in enumerate(reversed(classes), start=1):
            await anyio.sleep(0.3)  # let the worker block on its wake lists again
            sent = time.monotonic()
            await cls({}).dispatch()
            await Seen.wait_for(n, timeout=4)
            latencies.append(time.monotonic() - sent)
    print(f"\nidle worker on 3 primaries: woken in {', '.join(f'{x * 1000:.0f} ms' for x in latencies)}")
    assert max(latencies) < 1.5, "woken by the dispatch, not by the 5 s idle timeout"


# -- sharded queues ----------------------------------------------------------------------------

HOT = ShardedQueue("hot", shards=8)


class HotJob(Counted):
    queue = "hot"


class HotFailure(Job):
    queue = "hot"

    async def handle(self) -> None:
        raise RuntimeError("hot failure")


async def test_a_sharded_queue_spreads_over_the_cluster_and_drains_fairly(
    engine: RedisEngine, redis_cluster: ClusterDeployment
) -> None:
    ids = await engine.dispatch_many([HotJob({"n": n}) for n in range(400)])
    ids += [await HotJob({"n": n}).dispatch() for n in range(400)]
    stats = {s.queue: s.ready for s in await engine.stats("hot")}
    assert stats == {"hot": 0, **dict.fromkeys(HOT.names, 100)}, "round robin over the shards"
    shard_of = {}
    for name in HOT.names:
        entries: list[bytes] = await engine.redis.lrange(engine.keys(name).ready, 0, -1)  # type: ignore[assignment]
        records = [parse_inline(e) for e in entries]
        shard_of.update({r[0]: name for r in records if r is not None})
        assert len(records) == 100 and None not in records
    owners = Counter(redis_cluster.owner_of_slot(key_slot(name.encode())).port for name in HOT.names)
    info = await engine.get_job("hot", ids[-1])
    assert info is not None and info.queue == shard_of[ids[-1]] and info.state == "ready"

    Seen.reset()
    started = time.monotonic()
    async with running(Worker(engine, ["hot"], concurrency=16, batch_size=16, idle_wait=1)):
        await Seen.wait_for(len(ids))
    elapsed = time.monotonic() - started
    first = Counter(shard_of[job_id] for _, job_id in Seen.runs[:160])
    print(
        f"\nsharded queue: 8 shards on primaries {sorted(owners.values())}; {len(ids)} jobs in "
        f"{elapsed:.2f} s; first 160 runs by shard {[first[q] for q in HOT.names]}"
    )
    assert len(owners) == 3, "the shards live on every primary"
    assert sorted(i for _, i in Seen.runs) == sorted(ids)
    assert min(first[q] for q in HOT.names) >= 10, "every shard was served from the start"


async def test_failed_jobs_of_a_sharded_queue_are_listed_and_retried_together(engine: RedisEngine) -> None:
    ids = await engine.dispatch_many([HotFailure({}) for _ in range(16)])
    worker = Worker(engine, ["hot"], burst=True)
    with anyio.fail_after(20):
        await worker.run()
    assert worker.counters.failed == 16
    total = sum(s.failed for s in await engine.stats("hot"))
    assert total == 16
    assert sorted(j.id for j in await engine.failed_list("hot")) == sorted(ids)
    assert {j.queue for j in await engine.failed_list("hot")} == set(HOT.names)
    assert await engine.failed_retry(queue="hot") == total
    assert sum(s.ready for s in await engine.stats("hot")) == 16
    assert await engine.failed_flush("hot") == 0


# -- durable dispatch -------------------------------------------------------------------------


def queued_in(client: redis.Redis, queue_list: str) -> set[str]:
    """The ids of the jobs waiting inline in a queue list, as `client`'s server has it."""
    entries: list[bytes | str] = client.lrange(queue_list, 0, -1)
    raw = [e.encode() if isinstance(e, str) else e for e in entries]  # a client may decode replies
    return {r[0] for r in map(parse_inline, raw) if r is not None}


def queued_on_replica(replica: Node, queue_list: str) -> set[str]:
    with replica.client() as client:
        client.execute_command("READONLY")
        return queued_in(client, queue_list)


async def test_a_durable_dispatch_is_on_the_replica_when_it_returns(
    settings: Settings, redis_cluster: ClusterDeployment
) -> None:
    primaries = redis_cluster.primaries()
    queues = [redis_cluster.queue_on(node, "durable") for node in primaries]
    classes = [job_for(q) for q in queues]
    async with RedisEngine(settings.with_(durable=True)) as engine:
        try:
            started = time.monotonic()
            singles = await _concurrently(engine, classes, 60)
            single_time = time.monotonic() - started
            many = await engine.dispatch_many([cls({}) for cls in classes for _ in range(100)])
            # The scripts were flushed: the durable path loads them again and still waits.
            for node in primaries:
                with node.client() as client:
                    client.script_flush()
            flushed = await engine.dispatch(classes[0]({}))
            missing = []
            replicated: dict[str, set[str]] = {}
            for queue in queues:
                primary = redis_cluster.owner_of_slot(key_slot(queue.encode()))
                [replica] = redis_cluster.replicas_of(primary)
                replicated[queue] = queued_on_replica(replica, engine.keys(queue).ready)
            for job_id, queue in [
                *singles,
                *[(i, q) for i, q in zip(many, [q for q in queues for _ in range(100)], strict=True)],
                (flushed, queues[0]),
            ]:
                if job_id not in replicated[queue]:
                    missing.append(job_id)
            print(
                f"\ndurable dispatch on the Cluster: {len(singles)} concurrent dispatches in "
                f"{single_time * 1000:.0f} ms, {len(many)} in bulk; missing on the replicas right "
                f"after: {len(missing)}"
            )
            assert missing == []
        finally:
            await delete_prefix(settings.url, settings.prefix)


async def _concurrently(engine: RedisEngine, classes: list[type[Job]], count: int) -> list[tuple[str, str]]:
    done: list[tuple[str, str]] = []

    async def one(cls: type[Job]) -> None:
        done.append((await engine.dispatch(cls({})), cls.queue))

    async with anyio.create_task_group() as tg:
        for n in range(count):
            tg.start_soon(one, classes[n % len(classes)])
    return done


async def test_a_durable_dispatch_that_too_few_replicas_acknowledge_raises(
    settings: Settings, redis_cluster: ClusterDeployment
) -> None:
    # Each primary has one replica: asking for two can never be met.
    async with RedisEngine(settings.with_(durable_replicas=2, durable_timeout=0.2)) as engine:
        with use_engine(engine):
            try:
                started = time.monotonic()
                with pytest.raises(NotReplicated) as caught:
                    await engine.dispatch(HotJob({}), durable=True)
                waited = time.monotonic() - started
                [job_id] = caught.value.job_ids
                info = await engine.get_job("hot", job_id)
                assert info is not None and info.state == "ready", "stored, only not confirmed"
                assert "1 of 2 replica(s)" in str(caught.value)
                assert 0.15 < waited < 2
                with pytest.raises(NotReplicated) as many:
                    await engine.dispatch_many([HotJob({}) for _ in range(10)], durable=True)
                assert many.value.job_ids
                assert await HotJob({}).dispatch(), "not durable unless asked"
            finally:
                await delete_prefix(settings.url, settings.prefix)


async def test_a_durable_dispatch_behind_sentinel_is_on_the_replica(
    sentinel_deployment: SentinelDeployment, prefix: str
) -> None:
    settings = Settings(url=sentinel_deployment.url, prefix=prefix, durable=True)
    async with RedisEngine(settings) as engine:
        try:
            ids = [await engine.dispatch(Counted({})) for _ in range(20)]
            ids += await engine.dispatch_many([Counted({}) for _ in range(200)])
            [replica] = sentinel_deployment.replicas
            with replica.client() as client:
                present = queued_in(client, engine.keys("counted").ready)
            assert present == set(ids) and len(ids) == 220
        finally:
            await delete_prefix(settings.url, settings.prefix)


# -- connecting ---------------------------------------------------------------------------------


async def test_connect_takes_a_cluster_url_or_the_cluster_setting(
    redis_cluster: ClusterDeployment, prefix: str
) -> None:
    first = redis_cluster.primaries()[0]
    async with connect(redis_cluster.url, prefix=prefix) as engine:
        assert isinstance(engine.redis, RedisCluster)
        job_id = await Counted({}).dispatch()
    async with connect(f"redis://127.0.0.1:{first.port}", prefix=prefix, cluster=True) as engine:
        assert isinstance(engine.redis, RedisCluster)
        assert (await engine.get_job("counted", job_id)) is not None
        assert len(redis_cluster.primaries()) == 3
    await delete_prefix(redis_cluster.url, prefix)


async def test_connect_takes_sentinel_settings(sentinel_deployment: SentinelDeployment, prefix: str) -> None:
    hosts = ",".join(f"127.0.0.1:{s.port}" for s in sentinel_deployment.sentinels)
    async with connect(f"redis://{hosts}", prefix=prefix, sentinel_service="mymaster"):
        job_id = await Counted({}).dispatch()
    primary = sentinel_deployment.primary
    with redis.Redis(port=primary.port) as client:
        assert queued_in(client, f"{prefix}{{counted}}:queue") == {job_id}
    await delete_prefix(sentinel_deployment.url, prefix)
