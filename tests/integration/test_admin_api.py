"""The engine's inspection, telemetry and clock methods, against a real Redis."""

from __future__ import annotations

import time
from typing import Any

import orjson
import pytest
from redis.asyncio import Redis
from support.engine_calls import claim_from

from aiojobs_redis import Job, RedisEngine
from aiojobs_redis.admin import Refused
from aiojobs_redis.errors import EngineError
from aiojobs_redis.records import ClaimedJob, LeasedJob

pytestmark = pytest.mark.anyio

QUEUE = "admin-api"
LEASE_MS = 30_000


class Work(Job):
    queue = QUEUE
    name = "admin.Work"
    attempts = 4

    async def handle(self) -> None:
        return None


async def test_running_jobs_lists_leases_with_their_records(clocked_engine: RedisEngine, clock: Any) -> None:
    ids = [await Work().dispatch({"n": i}) for i in range(3)]
    await claim_from(clocked_engine, QUEUE, 2, worker_id="w1", request_id="1", lease_ms=LEASE_MS)

    running = await clocked_engine.running_jobs([QUEUE])

    assert running == [
        LeasedJob(QUEUE, job_id, "admin.Work", "w1", 0, 4, 1, clock.now_ms + LEASE_MS) for job_id in ids[:2]
    ]
    assert await clocked_engine.running_jobs([QUEUE], limit=1) == running[:1]
    assert await clocked_engine.running_jobs([]) == []


async def test_running_jobs_shows_a_record_of_another_type_without_its_fields(
    clocked_engine: RedisEngine, raw_redis: Redis, clock: Any
) -> None:
    keys = clocked_engine.keys(QUEUE)
    await raw_redis.zadd(keys.running, {"odd": clock.now_ms})
    await raw_redis.set(keys.job("odd"), "not a hash")

    [job] = await clocked_engine.running_jobs([QUEUE])

    assert job == LeasedJob(QUEUE, "odd", None, None, 0, 0, 0, clock.now_ms)


async def test_an_ack_refused_in_place_is_labelled_ack(engine: RedisEngine, raw_redis: Redis) -> None:
    job_id = await Work().dispatch({})
    [claimed] = (await claim_from(engine, QUEUE, 1, worker_id="w", request_id="1", lease_ms=LEASE_MS)).jobs
    keys = engine.keys(QUEUE)
    await raw_redis.delete(keys.running)
    await raw_redis.set(keys.running, "not a sorted set")  # ack.lua's reply is then an error

    with pytest.raises(EngineError, match=r"^ack: Redis refused the command: .*WRONGTYPE"):
        await engine.ack(ClaimedJob(QUEUE, job_id, claimed.token, b"admin.Work", b"{}", 0, 4, 1))


async def test_redis_time_is_read_once_then_followed(
    engine: RedisEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads: list[Any] = []
    real_time = engine.redis.time

    async def counted() -> Any:
        reads.append(None)
        return await real_time()

    monkeypatch.setattr(engine.redis, "time", counted)
    wall_ms = time.time_ns() // 1_000_000
    first = await engine.redis_time_ms()
    second = await engine.redis_time_ms()
    assert len(reads) == 1, "a recent reading is followed on the local clock"
    assert 0 <= second - first < 1_000
    seconds, micros = await real_time()
    assert abs(seconds * 1000 + micros // 1000 - second) < 1_000
    # Redis shares this machine's clock here: the offset measured is a few ms at most.
    assert abs(engine.clock_offset_ms) < 1_000
    assert abs(first - engine.clock_offset_ms - wall_ms) < 1_000

    await engine.redis_time_ms(max_age_ms=0)
    assert len(reads) == 2, "max_age_ms=0 reads TIME again"


async def test_the_clock_offset_is_redis_minus_the_wall_clock(
    engine: RedisEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def an_hour_ahead() -> tuple[int, int]:
        now_us = time.time_ns() // 1000 + 3_600_000_000
        return now_us // 1_000_000, now_us % 1_000_000

    monkeypatch.setattr(engine.redis, "time", an_hour_ahead)
    now_ms = await engine.redis_time_ms(max_age_ms=0)

    assert abs(engine.clock_offset_ms - 3_600_000) < 500
    assert abs(now_ms - time.time_ns() // 1_000_000 - 3_600_000) < 500


async def test_telemetry_written_is_read_back(engine: RedisEngine) -> None:
    now_ms = await engine.redis_time_ms(max_age_ms=0)
    minute = now_ms // 60_000
    event = orjson.dumps({"kind": "succeeded", "at": now_ms, "id": "j1", "job": "admin.Work", "attempt": 1})
    await engine.record_events({QUEUE: ([f"{minute}:s", 3, f"{minute}:f", 1], [event])}, events_max=100)

    [read] = await engine.recent_events([QUEUE])
    assert (read.queue, read.kind, read.job_id, read.name, read.at_ms) == (
        QUEUE,
        "succeeded",
        "j1",
        "admin.Work",
        now_ms,
    )
    series = (await engine.throughput([QUEUE], now_ms, minutes=5))[QUEUE]
    assert (series.succeeded[-1], series.failed[-1]) == (3, 1)

    record = {
        "id": "w9",
        "host": "h",
        "pid": 1,
        "queues": [QUEUE],
        "concurrency": 2,
        "started_ms": now_ms,
        "seen_ms": now_ms,
        "counters": {"succeeded": 3},
        "running": [[QUEUE, "j2", "admin.Work", now_ms]],
    }
    await engine.write_heartbeat("w9", orjson.dumps(record), now_ms=now_ms, ttl_ms=5_000)
    [worker] = await engine.alive_workers(now_ms)
    assert (worker.id, worker.queues, worker.counters, worker.running[0].id) == (
        "w9",
        [QUEUE],
        {"succeeded": 3},
        "j2",
    )
    assert await engine.alive_workers(now_ms + 5_001) == [], "lapsed after its ttl"

    await engine.remove_heartbeat("w9")
    assert await engine.alive_workers(now_ms) == []


async def test_the_server_probe_reads_info_config_and_time(engine: RedisEngine) -> None:
    probe = engine.server()

    info = await probe.info()
    config = await probe.config(["maxmemory-policy", "appendonly"])
    seconds, micros = await probe.time()

    assert "redis_version" in info
    assert set(config) == {"maxmemory-policy", "appendonly"}
    assert abs(seconds - time.time()) < 60 and 0 <= micros < 1_000_000
    with pytest.raises(Refused):
        await probe.replicas()  # not a Cluster node
