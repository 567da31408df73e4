"""The event stream (capped), throughput buckets (bounded, 24 h), heartbeats, and batching."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from redis.asyncio import Redis
from support.dashkit import quick_telemetry, running_worker
from support.wait import eventually

from aiojobs_redis import Job, RedisEngine, Settings
from aiojobs_redis.errors import EngineError
from aiojobs_redis.events import RedisTelemetry
from aiojobs_redis.hooks import JobContext
from aiojobs_redis.keys import worker_key, workers_key
from aiojobs_redis.telemetry_store import HISTORY_MINUTES

pytestmark = pytest.mark.anyio

QUEUE = "streamed"


class Pass(Job):
    queue = QUEUE

    async def handle(self) -> None:
        return None


class Fails(Job):
    queue = QUEUE

    async def handle(self) -> None:
        raise ValueError("secret-free message")


async def drained(engine: RedisEngine, worker_done: Any) -> None:
    await eventually(worker_done, what="the jobs to end")


async def test_events_in_order_without_payloads(engine: RedisEngine) -> None:
    ok_id = await Pass().dispatch({"card": "4111-SECRET"})
    bad_id = await Fails().dispatch({"card": "4111-SECRET"})
    async with running_worker(engine, [QUEUE], telemetry=quick_telemetry(record_starts=True)) as worker:

        async def recorded() -> bool:
            return len(await engine.recent_events([QUEUE], 10)) == 4

        await eventually(recorded, what="four events")
    events = await engine.recent_events([QUEUE], 10)
    by_job = {(e.job_id, e.kind) for e in events}
    assert by_job == {(ok_id, "started"), (ok_id, "succeeded"), (bad_id, "started"), (bad_id, "failed")}
    assert [e.kind for e in events if e.job_id == ok_id] == ["succeeded", "started"], "newest first"
    failed = next(e for e in events if e.kind == "failed")
    assert failed.error == "ValueError: secret-free message"
    assert failed.worker == worker.worker_id and failed.attempt == 1 and failed.queue == QUEUE
    assert failed.name == "Fails" and failed.duration_ms is not None
    raw: Any = await engine.redis.xrange(engine.keys(QUEUE).events)
    assert b"SECRET" not in repr(raw).encode(), "payloads never reach the stream"
    assert all(list(fields) == [b"event"] for _, fields in raw), "one JSON field per entry"


async def test_the_stream_stays_capped(engine: RedisEngine) -> None:
    cap = 200
    await engine.dispatch_many([Pass({}) for _ in range(1_000)])
    async with running_worker(engine, [QUEUE], telemetry=quick_telemetry(events_max=cap)) as worker:

        async def done() -> bool:
            return worker.counters.succeeded == 1_000

        await eventually(done, what="1,000 jobs")
    length = await engine.redis.xlen(engine.keys(QUEUE).events)
    # 1,000 events were written; MAXLEN ~ trims whole stream nodes (100 entries each by default).
    print(f"\nstream length after 1,000 events with events_max={cap}: {length}")
    assert cap <= length <= cap + 100


async def test_throughput_counts_per_minute(engine: RedisEngine) -> None:
    await engine.dispatch_many([Pass({}) for _ in range(7)])
    await engine.dispatch_many([Fails({}) for _ in range(3)])
    async with running_worker(engine, [QUEUE]) as worker:

        async def done() -> bool:
            return worker.counters.succeeded + worker.counters.failed == 10

        await eventually(done, what="ten jobs")
    key = engine.keys(QUEUE).throughput

    async def counted() -> bool:
        buckets = await engine.redis.hgetall(key)
        return sum(int(v) for v in buckets.values()) == 10

    await eventually(counted, what="the counts to be flushed")
    now = await engine.redis_time_ms(max_age_ms=0)
    series = (await engine.throughput([QUEUE], now, minutes=60))[QUEUE]
    assert len(series.succeeded) == len(series.failed) == 60
    assert series.start_minute == now // 60_000 - 59
    # The jobs ran within the last two minutes (a minute may have turned meanwhile).
    assert sum(series.succeeded[-2:]) == 7 and sum(series.failed[-2:]) == 3
    assert sum(series.succeeded) == 7
    ttl_ms = await engine.redis.pttl(key)
    assert 24 * 3_600_000 < ttl_ms <= 25 * 3_600_000, "the history expires a day after its last write"


async def test_history_is_trimmed_to_24_hours(engine: RedisEngine) -> None:
    key = engine.keys(QUEUE).throughput
    now_minute = (await engine.redis_time_ms(max_age_ms=0)) // 60_000
    fields: dict[Any, Any] = {f"{now_minute - age}:s": 1 for age in range(0, 3 * HISTORY_MINUTES, 7)}
    fields["junk"] = 5
    await engine.redis.hset(key, mapping=fields)
    removed = await engine.trim_history([QUEUE], now_minute)
    left = [k.decode() if isinstance(k, bytes) else k for k in await engine.redis.hkeys(key)]
    assert removed == len(fields) - len(left)
    assert all(now_minute - int(k.split(":")[0]) < HISTORY_MINUTES for k in left)
    assert len(left) == len(range(0, HISTORY_MINUTES, 7)), "everything inside the day stays"
    series = (await engine.throughput([QUEUE], now_minute * 60_000, minutes=HISTORY_MINUTES))[QUEUE]
    assert sum(series.succeeded) == len(left)


async def test_heartbeat_lists_the_worker_and_its_running_jobs(engine: RedisEngine) -> None:
    gate = anyio.Event()

    class Waits(Job):
        queue = QUEUE

        async def handle(self) -> None:
            await gate.wait()

    job_id = await Waits().dispatch({})
    # A heartbeat every second lives 6 s: a busy machine's stalls do not let it lapse.
    telemetry = quick_telemetry(heartbeat_interval=1.0)
    async with running_worker(engine, [QUEUE], concurrency=7, telemetry=telemetry) as worker:

        async def listed() -> bool:
            now = await engine.redis_time_ms(max_age_ms=0)
            alive = await engine.alive_workers(now)
            return len(alive) == 1 and [j.id for j in alive[0].running] == [job_id]

        await eventually(listed, what="the heartbeat with the running job")
        now = await engine.redis_time_ms(max_age_ms=0)
        [info] = await engine.alive_workers(now)
        assert info.id == worker.worker_id and info.queues == [QUEUE] and info.concurrency == 7
        # started_ms is the worker's clock moved by the offset it measured to Redis's, which
        # is good to half a TIME round trip: long on a busy machine.
        assert -2_000 <= now - info.running[0].started_ms < 10_000
        assert 0 <= now - info.seen_ms < 5_000
        gate.set()
    now = await engine.redis_time_ms(max_age_ms=0)
    assert await engine.alive_workers(now) == [], "a stopped worker removes its heartbeat"
    prefix = engine.settings.prefix
    assert not await engine.redis.exists(worker_key(prefix, worker.worker_id))


async def test_a_lapsed_heartbeat_is_not_alive(engine: RedisEngine) -> None:
    prefix = engine.settings.prefix
    now = await engine.redis_time_ms(max_age_ms=0)
    await engine.redis.zadd(workers_key(prefix), {"gone": now - 1, "bogus": now + 60_000})
    await engine.redis.set(worker_key(prefix, "gone"), b'{"id": "gone"}')
    await engine.redis.set(worker_key(prefix, "bogus"), b"not json")
    assert await engine.alive_workers(now) == []


def context(n: int, result: str | None = None) -> JobContext:
    ctx = JobContext(worker_id="w", queue=QUEUE, job_id=f"id{n}", name="x.Job", attempt=1, max_attempts=1)
    ctx.result = result  # type: ignore[assignment]
    ctx.duration = 0.001
    return ctx


async def test_the_hot_path_only_buffers_and_a_flush_is_one_round_trip(
    engine: RedisEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    telemetry = RedisTelemetry(record_starts=True)
    for n in range(300):  # no worker and no engine yet: nothing can have been sent
        telemetry.job_started(context(n))
        telemetry.job_ended(context(n, "succeeded"))
    pipelines = 0
    original = engine.redis.pipeline

    def counting(*args: Any, **kwargs: Any) -> Any:
        nonlocal pipelines
        pipelines += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(engine.redis, "pipeline", counting)

    class Host:
        def __init__(self, engine: RedisEngine) -> None:
            self.engine = engine

    telemetry._worker = Host(engine)  # type: ignore[assignment]
    await telemetry.flush()
    assert pipelines == 1
    assert await engine.redis.xlen(engine.keys(QUEUE).events) == 600
    buckets = await engine.redis.hgetall(engine.keys(QUEUE).throughput)
    assert sum(int(v) for v in buckets.values()) == 300
    await telemetry.flush()
    assert pipelines == 1, "nothing buffered: no round trip"


async def test_events_wait_while_redis_is_away_and_stay_bounded(redis_url: str, prefix: str) -> None:
    from support.redis_server import free_port

    away = RedisEngine(Settings(url=f"redis://127.0.0.1:{free_port()}", prefix=prefix, socket_timeout=0.5))
    telemetry = RedisTelemetry(buffer_max=50)

    class Host:
        engine = away

    telemetry._worker = Host()  # type: ignore[assignment]
    try:
        for n in range(80):
            telemetry.job_ended(context(n, "failed"))
        with pytest.raises(EngineError):
            await telemetry.flush()
        assert len(telemetry._events) == 50, "the oldest events are dropped past buffer_max"
        assert sum(telemetry._counts.values()) == 80, "counts are kept whole"
    finally:
        await away.aclose()
    async with RedisEngine(Settings(url=redis_url, prefix=prefix)) as back:
        Host.engine = back
        try:
            await telemetry.flush()
            assert await back.redis.xlen(back.keys(QUEUE).events) == 50
        finally:
            client: Redis = back.redis
            await client.delete(back.keys(QUEUE).events, back.keys(QUEUE).throughput)
