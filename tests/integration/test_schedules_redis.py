"""fire.lua and the scheduler on a real Redis, with the scripts' time taken from a FakeClock.

Each tick fires once (a replayed call too), a first sighting only arms the schedule, a
downtime ends in at most one catch-up run (within the grace), overlap=False skips and
counts, and a tick later than the script's clock is refused.
"""

from __future__ import annotations

import hashlib
import itertools
import time
import uuid
from collections.abc import AsyncIterator

import anyio
import pytest
from support.keyspace import delete_prefix
from support.proxy import FaultProxy, Rule, evalsha

from aiojobs_redis import Every, Job, RedisEngine, Settings, Worker
from aiojobs_redis.boundary import text
from aiojobs_redis.cli import build_parser
from aiojobs_redis.clock import FakeClock
from aiojobs_redis.schedule_store import Fire
from aiojobs_redis.scheduler import Scheduler
from aiojobs_redis.schedules import Schedule, of_class, tick_of_job_id
from aiojobs_redis.scripts import source

pytestmark = pytest.mark.anyio
QUEUE = "sched-it"
PERIOD_MS = 10_000


class Tenner(Job):
    name = "sched_it.Tenner"
    queue = QUEUE
    schedule = (
        Every("+10 seconds"),
        Every("+10 seconds", id="tight-grace", grace="+4 seconds"),
        Every("+10 seconds", id="overlapping", overlap=True),
    )

    async def handle(self) -> None: ...


DEFAULT, TIGHT, OVERLAPPING = of_class(Tenner)


@pytest.fixture
def aligned() -> FakeClock:
    clock = FakeClock()
    clock.now_ms -= clock.now_ms % PERIOD_MS  # on a tick
    return clock


@pytest.fixture
async def clocked_engine(settings: Settings, aligned: FakeClock) -> AsyncIterator[RedisEngine]:
    """An engine whose scripts take their time from `aligned` (the worker's clock too)."""
    async with RedisEngine(settings, clock=aligned) as opened:
        yield opened
    await delete_prefix(settings.url, settings.prefix)


async def ready_ids(engine: RedisEngine) -> list[str]:
    return [text(m) for m in await engine.redis.lrange(engine.keys(QUEUE).ready, 0, -1)]


async def fire(engine: RedisEngine, schedule: Schedule, now_ms: int) -> str:
    tick, next_tick = schedule.ticks(now_ms)
    [reply] = await engine.fire_schedules([Fire(QUEUE, schedule, tick, next_tick)])
    return reply.outcome


async def test_a_tick_fires_once_and_a_replayed_call_changes_nothing(
    clocked_engine: RedisEngine, aligned: FakeClock
) -> None:
    assert await fire(clocked_engine, DEFAULT, aligned.now_ms) == "armed"  # first sighting: no run
    assert await ready_ids(clocked_engine) == []
    aligned.advance(10)
    assert await fire(clocked_engine, DEFAULT, aligned.now_ms) == "fired"
    assert await fire(clocked_engine, DEFAULT, aligned.now_ms) == "already"  # the replay
    aligned.advance(3)
    assert await fire(clocked_engine, DEFAULT, aligned.now_ms) == "already"
    [job_id] = await ready_ids(clocked_engine)
    assert job_id == DEFAULT.job_id(aligned.now_ms - 3_000)
    info = await clocked_engine.get_job(QUEUE, job_id)
    assert info is not None and info.name == Tenner.name and info.state == "ready"
    assert info.scheduled_ms == aligned.now_ms - 3_000  # its tick


async def test_a_tick_ahead_of_the_scripts_clock_is_refused(
    clocked_engine: RedisEngine, aligned: FakeClock
) -> None:
    await fire(clocked_engine, DEFAULT, aligned.now_ms)
    early = Fire(QUEUE, DEFAULT, aligned.now_ms + PERIOD_MS, aligned.now_ms + 2 * PERIOD_MS)
    [reply] = await clocked_engine.fire_schedules([early])
    assert (reply.outcome, reply.redis_now_ms) == ("early", aligned.now_ms)
    stale = Fire(QUEUE, DEFAULT, aligned.now_ms - 2 * PERIOD_MS, aligned.now_ms - PERIOD_MS)
    [reply] = await clocked_engine.fire_schedules([stale])
    assert reply.outcome == "stale"  # not the latest tick: a backlog cannot be fired
    assert await ready_ids(clocked_engine) == []


async def run_downtime(engine: RedisEngine, clock: FakeClock, schedule: Schedule) -> list[int]:
    """Fire regularly for two periods, stop for 5.5 periods, then run the scheduler again.

    Returns the ticks of the runs, each finished at once (so none is skipped as an overlap).
    """
    ran: list[str] = []
    scheduler = Scheduler(engine, [schedule], clock)
    for _ in range(3):
        await scheduler.step()
        ran += await finish_all(engine)
        clock.advance(PERIOD_MS / 1000)
    clock.advance(4.5 * PERIOD_MS / 1000)  # 5.5 periods since the last tick handled
    restarted = Scheduler(engine, [schedule], clock)
    for _ in range(5):  # a few passes within that period: nothing more
        await restarted.step()
        ran += await finish_all(engine)
        clock.advance(1)
    return sorted(t for t in map(tick_of_job_id, ran) if t is not None)


async def finish_all(engine: RedisEngine) -> list[str]:
    """Claim and ack every ready job; their ids."""
    [claim] = await engine.claim_many([(QUEUE, 100, uuid.uuid4().hex)], worker_id="w", lease_ms=60_000)
    for job in claim.jobs:
        assert await engine.ack(job)
    return [job.id for job in claim.jobs]


async def test_after_downtime_one_catch_up_run_with_the_default_grace(
    clocked_engine: RedisEngine, aligned: FakeClock
) -> None:
    start = aligned.now_ms
    ticks = await run_downtime(clocked_engine, aligned, DEFAULT)
    # Two regular runs, then one catch-up for the latest missed tick, 0.5 period old.
    assert ticks == [start + PERIOD_MS, start + 2 * PERIOD_MS, start + 7 * PERIOD_MS]
    [row] = [r for r in await clocked_engine.schedule_rows([QUEUE]) if r.id == DEFAULT.id]
    assert row.missed == 0 and row.last_tick_ms == start + 7 * PERIOD_MS


async def test_after_downtime_no_run_with_a_grace_below_half_a_period(
    clocked_engine: RedisEngine, aligned: FakeClock
) -> None:
    start = aligned.now_ms
    ticks = await run_downtime(clocked_engine, aligned, TIGHT)
    assert ticks == [start + PERIOD_MS, start + 2 * PERIOD_MS]
    [row] = [r for r in await clocked_engine.schedule_rows([QUEUE]) if r.id == TIGHT.id]
    assert row.missed == 1 and row.next_tick_ms == start + 8 * PERIOD_MS


async def test_overlap_false_skips_while_the_last_run_is_live_and_counts(
    clocked_engine: RedisEngine, aligned: FakeClock
) -> None:
    await fire(clocked_engine, DEFAULT, aligned.now_ms)
    aligned.advance(10)
    assert await fire(clocked_engine, DEFAULT, aligned.now_ms) == "fired"
    aligned.advance(10)
    assert await fire(clocked_engine, DEFAULT, aligned.now_ms) == "overlap"  # still queued
    [claim] = await clocked_engine.claim_many([(QUEUE, 1, uuid.uuid4().hex)], worker_id="w", lease_ms=60_000)
    aligned.advance(10)
    assert await fire(clocked_engine, DEFAULT, aligned.now_ms) == "overlap"  # running
    assert await clocked_engine.ack(claim.jobs[0])
    aligned.advance(10)
    assert await fire(clocked_engine, DEFAULT, aligned.now_ms) == "fired"
    [row] = [r for r in await clocked_engine.schedule_rows([QUEUE]) if r.id == DEFAULT.id]
    assert row.skipped == 2
    assert row.last_job_id == DEFAULT.job_id(aligned.now_ms)


async def test_overlap_true_fires_while_the_last_run_is_queued(
    clocked_engine: RedisEngine, aligned: FakeClock
) -> None:
    await fire(clocked_engine, OVERLAPPING, aligned.now_ms)
    for _ in range(3):
        aligned.advance(10)
        assert await fire(clocked_engine, OVERLAPPING, aligned.now_ms) == "fired"
    assert len(await ready_ids(clocked_engine)) == 3
    await finish_all(clocked_engine)


async def test_declared_schedules_are_listed_without_the_code(clocked_engine: RedisEngine) -> None:
    await clocked_engine.declare_schedules(of_class(Tenner))
    rows = await clocked_engine.schedule_rows([QUEUE])
    assert [r.id for r in rows] == sorted(s.id for s in of_class(Tenner))
    assert all(r.rule == "every 10 s" and r.last_tick_ms is None for r in rows)


@pytest.fixture
async def idle_worker(engine: RedisEngine) -> AsyncIterator[Worker]:
    yield Worker(engine, ["sched-none"], idle_wait=0.1)


async def test_a_worker_with_no_schedules_starts_no_scheduler_and_writes_nothing(
    engine: RedisEngine, idle_worker: Worker
) -> None:
    """Plain jobs pay nothing: every command the scheduler sends writes a key (fire.lua writes
    the queue's _seen field whatever it is asked; declaring writes the definitions), so no such
    key after an idle run means no extra command was sent."""
    assert idle_worker._scheduler() is None
    with anyio.move_on_after(0.5):
        await idle_worker.run()
    keys = [k.decode() async for k in engine.redis.scan_iter(match=f"{engine.settings.prefix}*")]
    assert not [k for k in keys if k.endswith((":cron", ":sched"))]
    assert Worker(engine, [QUEUE])._scheduler() is not None
    assert Worker(engine, [QUEUE], schedules=False)._scheduler() is None  # work --no-schedules
    assert build_parser().parse_args(["work", "--no-schedules"]).schedules is False


SPANS: list[tuple[float, float]] = []  # (start, end) of each run of Slow, monotonic s


class Slow(Job):
    """A 1-second schedule whose runs take 2.5 s: with overlap=False they must never overlap."""

    name = "sched_it.Slow"
    queue = "sched-overlap"
    schedule = Every("+1 second")

    async def handle(self) -> None:
        started = time.monotonic()
        await anyio.sleep(2.5)
        SPANS.append((started, time.monotonic()))


async def test_a_slow_job_on_a_fast_schedule_never_overlaps_and_skips_are_counted(
    engine: RedisEngine,
) -> None:
    SPANS.clear()
    worker = Worker(engine, [Slow.queue], concurrency=10, idle_wait=0.2, promote_interval=0.2)
    async with anyio.create_task_group() as tg:
        await tg.start(worker.run)
        await anyio.sleep(9)
        worker.stop()
    spans = sorted(SPANS)
    assert len(spans) >= 2
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert start >= end, f"runs overlap: {spans}"
    [row] = await engine.schedule_rows([Slow.queue])
    assert worker.scheduler is not None
    # Each run holds about two ticks back; every one of them is counted.
    assert row.skipped >= len(spans) - 1
    assert row.skipped == worker.scheduler.outcomes["overlap"]


async def test_a_fire_call_replayed_after_a_lost_reply_fires_once(settings: Settings) -> None:
    """The fault proxy lets fire.lua run, drops its reply and closes the connection: redis-py
    sends the call again, which finds the tick handled."""
    fire_sha = hashlib.sha1(source("fire").encode()).hexdigest()
    with FaultProxy(int(settings.url.rsplit(":", 1)[1])) as proxy:
        async with RedisEngine(Settings(url=proxy.url, prefix=settings.prefix)) as engine:
            now = await engine.redis_time_ms(max_age_ms=0)
            if now % PERIOD_MS > PERIOD_MS - 2_000:  # too close to the next tick: wait for it
                await anyio.sleep(2.5)
                now = await engine.redis_time_ms(max_age_ms=0)
            tick, next_tick = DEFAULT.ticks(now)
            # As if the tick before had been handled.
            await engine.redis.hset(engine.keys(QUEUE).schedule_state, f"{DEFAULT.id}:last", tick - PERIOD_MS)
            proxy.add_rule(Rule("drop_reply", evalsha(fire_sha), fresh_only=True))
            [reply] = await engine.fire_schedules([Fire(QUEUE, DEFAULT, tick, next_tick)])
            assert len(proxy.events("drop_reply")) == 1 and len(proxy.events("replay")) == 1
            assert reply.outcome == "already" and reply.job_id == DEFAULT.job_id(tick)
            assert await ready_ids(engine) == [DEFAULT.job_id(tick)]
    await delete_prefix(settings.url, settings.prefix)
