"""Priority levels on a real Redis: higher levels are claimed first, FIFO within a level, and
a job keeps its level through a retry, a release, a reap, a promotion, an abort and `failed
retry`, as a unique job's successor and as a scheduled run; stats, get_job and the listing
see every level's list; a level list of the wrong type is moved aside and reported."""

from __future__ import annotations

from typing import Any, ClassVar

import anyio
import pytest
from support.clock import FakeClock

from aiojobs_redis import Every, InvalidPriority, Job, RedisEngine, Worker
from aiojobs_redis.records import ClaimedJob, Quarantined
from aiojobs_redis.schedule_store import Fire
from aiojobs_redis.schedules import of_class
from aiojobs_redis.testing import FakeEngine

pytestmark = pytest.mark.anyio

QUEUE = "prio-it"
LEASE_MS = 30_000
ERROR: dict[str, Any] = {"reason": "error", "type": "ValueError", "message": "try again"}


class PrioStep(Job):
    name = "prio_it.Step"
    queue = QUEUE
    attempts = 3
    ran: ClassVar[list[Any]] = []

    async def handle(self) -> None:
        PrioStep.ran.append(self.payload["tag"])


class PrioUrgent(Job):
    name = "prio_it.Urgent"
    queue = QUEUE
    priority = 5

    async def handle(self) -> None:
        return None


class PrioLatest(Job):
    name = "prio_it.Latest"
    queue = QUEUE
    priority = 4
    unique = True
    unique_key = "account"
    on_duplicate = "replace"

    async def handle(self) -> None:
        return None


class PrioTicker(Job):
    name = "prio_it.Ticker"
    queue = QUEUE
    priority = 7
    schedule = Every("+10 seconds")

    async def handle(self) -> None:
        return None


@pytest.fixture(autouse=True)
def fresh_ledger() -> None:
    PrioStep.ran.clear()


async def claim(
    engine: RedisEngine | FakeEngine, limit: int, request: str, lease_ms: int = LEASE_MS
) -> list[ClaimedJob]:
    [got] = await engine.claim_many([(QUEUE, limit, request)], worker_id="w", lease_ms=lease_ms)
    return got.jobs


def ids(jobs: list[ClaimedJob]) -> list[str]:
    return [j.id for j in jobs]


async def levels_named(engine: RedisEngine) -> list[int]:
    named: list[bytes] = await engine.redis.zrange(engine.keys(QUEUE).levels, 0, -1)  # type: ignore[assignment]
    return [int(n) for n in named]


# -- (a) the order of a backlog ------------------------------------------------------------------

BLOCKS = [(0, 1000), (5, 10), (-5, 10)]  # (level, jobs) in dispatch order
INTERLEAVED = [(-5, 3), (0, 400), (5, 4), (-5, 7), (0, 600), (5, 6)]


@pytest.mark.parametrize("plan", [BLOCKS, INTERLEAVED], ids=["blocks", "interleaved"])
async def test_a_paused_backlog_runs_higher_levels_first_and_fifo_within_each(
    engine: RedisEngine, plan: list[tuple[int, int]]
) -> None:
    await engine.pause(QUEUE)
    dispatched: dict[int, list[str]] = {5: [], 0: [], -5: []}
    for level, count in plan:
        tags = [f"{level}:{len(dispatched[level]) + n}" for n in range(count)]
        await PrioStep.dispatch_many([{"tag": tag} for tag in tags], priority=level)
        dispatched[level] += tags
    assert (await engine.stats(QUEUE))[0].ready == 1020
    await engine.resume(QUEUE)
    worker = Worker(engine, [QUEUE], concurrency=1, burst=True, telemetry=False, idle_wait=0.2)
    with anyio.fail_after(120):
        await worker.run()
    assert PrioStep.ran == dispatched[5] + dispatched[0] + dispatched[-5]
    assert await levels_named(engine) == []  # every level's list ran empty: none named


# -- (b) a retry keeps the level -----------------------------------------------------------------


async def test_a_retried_job_goes_before_level_0_once_its_delay_is_over(
    clocked_engine: RedisEngine, clock: FakeClock
) -> None:
    engine = clocked_engine
    urgent = await PrioStep().dispatch({"tag": "urgent"}, priority=5)
    [run] = await claim(engine, 1, "1")
    assert await engine.retry(run, 5_000, ERROR)
    plain = await PrioStep.dispatch_many([{"tag": n} for n in range(3)])
    assert ids(await claim(engine, 1, "2")) == plain[:1]  # not due yet: level 0 runs
    clock.advance(6)
    assert (await engine.promote([QUEUE]))[0] == 1
    [again] = await claim(engine, 1, "3")
    assert (again.id, again.attempts_used) == (urgent, 1)
    assert ids(await claim(engine, 5, "4")) == plain[1:]


# -- (c) released and reaped jobs go to the head of their level ----------------------------------


async def test_a_released_job_goes_back_to_the_head_of_its_level(engine: RedisEngine) -> None:
    first, second = await PrioStep.dispatch_many([{"tag": 1}, {"tag": 2}], priority=3)
    plain = await PrioStep().dispatch({"tag": 0})
    [held] = await claim(engine, 1, "1")
    assert held.id == first
    assert await engine.release(held)
    info = await engine.get_job(QUEUE, first)
    assert info is not None and (info.state, info.priority) == ("ready", 3)
    assert ids(await claim(engine, 3, "2")) == [first, second, plain]


async def test_a_reaped_job_goes_back_to_the_head_of_its_level(
    clocked_engine: RedisEngine, clock: FakeClock
) -> None:
    engine = clocked_engine
    first, second = await PrioStep.dispatch_many([{"tag": 1}, {"tag": 2}], priority=-2)
    low = await PrioStep().dispatch({"tag": 3}, priority=-4)
    plain = await PrioStep().dispatch({"tag": 0})
    assert ids(await claim(engine, 2, "1", lease_ms=1_000)) == [plain, first]
    clock.advance(2)
    reaped = await engine.reap(QUEUE, max_stalls=3)
    assert sorted(reaped.requeued) == sorted([plain, first])
    assert ids(await claim(engine, 4, "2")) == [plain, first, second, low]


# -- (d) a delayed job keeps its level when promoted ---------------------------------------------


async def test_a_delayed_job_keeps_its_level_when_promoted(
    clocked_engine: RedisEngine, clock: FakeClock
) -> None:
    engine = clocked_engine
    later = await PrioStep().dispatch({"tag": "later"}, priority=3, delay="+5 seconds")
    info = await engine.get_job(QUEUE, later)
    assert info is not None and (info.state, info.priority) == ("delayed", 3)
    plain = await PrioStep.dispatch_many([{"tag": n} for n in range(2)])
    clock.advance(6)
    assert (await engine.promote([QUEUE]))[0] == 1
    assert ids(await claim(engine, 3, "1")) == [later, *plain]


# -- (e) unique jobs ----------------------------------------------------------------------------


async def test_a_unique_job_waits_at_its_level_and_its_successor_keeps_a_level(engine: RedisEngine) -> None:
    plain = await PrioStep().dispatch({"tag": 0})
    unique = await PrioLatest().dispatch({"account": 1})
    info = await engine.get_job(QUEUE, unique)
    assert info is not None and info.priority == 4
    [run] = await claim(engine, 1, "1")
    assert run.id == unique
    # While it runs, a "replace" dispatch waits as its successor, at the class's level.
    assert await PrioLatest().dispatch({"account": 1, "v": 2}) == unique
    assert await engine.ack(run)
    successor = await engine.get_job(QUEUE, await _holder(engine))
    assert successor is not None and (successor.state, successor.priority) == ("ready", 4)
    [next_run] = await claim(engine, 1, "2")
    assert next_run.id == successor.id  # before the level-0 job dispatched first
    # A successor dispatched at a level of its own keeps that one.
    assert await PrioLatest().dispatch({"account": 1, "v": 3}, priority=-1) == successor.id
    assert await engine.ack(next_run)
    third = await engine.get_job(QUEUE, await _holder(engine))
    assert third is not None and third.priority == -1
    assert ids(await claim(engine, 2, "3")) == [plain, third.id]


async def _holder(engine: RedisEngine) -> str:
    """The id of the one PrioLatest job waiting."""
    [job_id] = [j.id for j in (await engine.ready_jobs(QUEUE)).jobs if j.name == PrioLatest.name]
    return job_id


# -- (f) scheduled runs -------------------------------------------------------------------------


async def test_a_scheduled_run_of_a_class_with_a_priority_waits_at_its_level(
    clocked_engine: RedisEngine, clock: FakeClock
) -> None:
    engine = clocked_engine
    [schedule] = of_class(PrioTicker)
    assert schedule.priority == 7
    clock.now_ms -= clock.now_ms % 10_000

    async def fire() -> str:
        tick, next_tick = schedule.ticks(clock.now_ms)
        [reply] = await engine.fire_schedules([Fire(QUEUE, schedule, tick, next_tick)])
        return reply.outcome

    assert await fire() == "armed"
    plain = await PrioStep().dispatch({"tag": 0})
    clock.advance(10)
    assert await fire() == "fired"
    run_id = schedule.job_id(clock.now_ms)
    info = await engine.get_job(QUEUE, run_id)
    assert info is not None and (info.state, info.priority) == ("ready", 7)
    assert ids(await claim(engine, 2, "1")) == [run_id, plain]


# -- (g) abort ----------------------------------------------------------------------------------


async def test_abort_takes_a_job_out_of_its_level_s_list_and_failed_retry_puts_it_back(
    engine: RedisEngine,
) -> None:
    inline = await PrioStep().dispatch({"tag": "inline"}, priority=6)
    assert (await engine.get_job(QUEUE, inline)).priority == 6  # type: ignore[union-attr]
    assert await engine.abort(inline) is True
    assert await levels_named(engine) == []  # its list is empty: the level is dropped
    assert (await engine.stats(QUEUE))[0].ready == 0
    # A job waiting by id (released, so it has a hash) at a level.
    await PrioStep().dispatch({"tag": "held"}, priority=-3)
    [held] = await claim(engine, 1, "1")
    assert await engine.release(held)
    assert await engine.abort(held.id) is True
    assert await levels_named(engine) == []
    assert (await engine.stats(QUEUE))[0].ready == 0
    # Both come back at their levels.
    plain = await PrioStep().dispatch({"tag": 0})
    assert await engine.failed_retry([inline, held.id]) == 2
    assert ids(await claim(engine, 3, "2")) == [inline, plain, held.id]


# -- (h) what stats, get_job and the listing see -------------------------------------------------


async def test_stats_get_job_and_the_ready_listing_see_every_level(engine: RedisEngine) -> None:
    plain = await PrioStep.dispatch_many([{"tag": n} for n in range(2)])
    high = await PrioStep.dispatch_many([{"tag": n} for n in range(3)], priority=10)
    low = await PrioStep().dispatch({"tag": "low"}, priority=-10)
    assert (await engine.stats(QUEUE))[0].ready == 6
    for job_id, level in [(high[1], 10), (plain[0], 0), (low, -10)]:
        info = await engine.get_job(QUEUE, job_id)
        assert info is not None and (info.state, info.priority) == ("ready", level)
    page = await engine.ready_jobs(QUEUE)
    assert page.total == 6
    assert [(j.id, j.priority) for j in page.jobs] == [
        *((i, 10) for i in high),
        *((i, 0) for i in plain),
        (low, -10),
    ]
    # A page that starts in one level's list and ends in another's.
    middle = await engine.ready_jobs(QUEUE, offset=2, limit=3)
    assert [j.id for j in middle.jobs] == [high[2], *plain]
    assert (await engine.oldest_ready_ms([QUEUE]))[QUEUE] is not None
    # Claims drain the levels; stats follow.
    await claim(engine, 4, "1")
    assert (await engine.stats(QUEUE))[0].ready == 2
    assert await levels_named(engine) == [-10]


async def test_members_of_the_levels_zset_that_name_no_level_are_ignored_and_dropped(
    engine: RedisEngine,
) -> None:
    job_id = await PrioStep().dispatch({"tag": 1}, priority=2)
    junk = {"junk": 1, "0": 0, "11": 11, "02": 2, "1.5": 1.5, "inf": float("inf")}  # no level list
    await engine.redis.zadd(engine.keys(QUEUE).levels, junk)
    assert (await engine.stats(QUEUE))[0].ready == 1
    assert (await engine.ready_jobs(QUEUE)).total == 1
    [got] = await engine.claim_many([(QUEUE, 10, "1")], worker_id="w", lease_ms=LEASE_MS)
    assert (ids(got.jobs), got.more) == ([job_id], False)
    assert await levels_named(engine) == []


# -- (i) malformed keys -------------------------------------------------------------------------


async def test_a_level_list_of_the_wrong_type_is_moved_aside_and_reported(engine: RedisEngine) -> None:
    keys = engine.keys(QUEUE)
    await engine.redis.set(keys.level(5), "not a list")
    await engine.redis.zadd(keys.levels, {"5": 5})
    plain = await PrioStep().dispatch({"tag": 0})
    assert (await engine.stats(QUEUE))[0].ready == 1  # the string is not counted
    [got] = await engine.claim_many([(QUEUE, 10, "1")], worker_id="w", lease_ms=LEASE_MS)
    assert ids(got.jobs) == [plain]
    assert got.quarantined == [Quarantined("", "wrong_type", f"{keys.bad_queue}:p5")]
    assert await engine.redis.get(f"{keys.bad_queue}:p5") == b"not a list"  # kept, not destroyed
    assert await engine.redis.exists(keys.level(5)) == 0
    assert await levels_named(engine) == []  # not named any more: no worker keeps coming back
    assert got.more is False
    assert await engine.ready_counts([QUEUE]) == [0]


async def test_a_level_named_with_an_empty_list_is_dropped_by_the_next_claim(engine: RedisEngine) -> None:
    await engine.redis.zadd(engine.keys(QUEUE).levels, {"3": 3})
    [got] = await engine.claim_many([(QUEUE, 10, "1")], worker_id="w", lease_ms=LEASE_MS)
    assert (got.jobs, got.more) == ([], False)
    assert await levels_named(engine) == []


# -- validation ---------------------------------------------------------------------------------


async def test_a_level_redis_refuses_is_a_clear_error(engine: RedisEngine) -> None:
    job = PrioStep({"tag": 0})
    job._priority = 11  # past the checks in Python, as a bug might
    with pytest.raises(InvalidPriority, match="priority level"):
        await job.dispatch()
    assert (await engine.stats(QUEUE))[0].ready == 0


# -- the FakeEngine claims in the same order ------------------------------------------------------


async def scenario(engine: RedisEngine | FakeEngine) -> list[str]:
    """Dispatches at several levels, a release and a claim; the claims' order, as tags."""
    tags: dict[str, str] = {}
    for level, tag in [(0, "a"), (2, "b"), (-1, "c"), (2, "d"), (0, "e"), (9, "f")]:
        tags[await engine.dispatch(PrioStep({"tag": tag}).set_priority(level))] = tag
    taken = await claim(engine, 2, "1")
    assert await engine.release(taken[1])
    taken += await claim(engine, 10, "2")
    return [tags[j.id] for j in taken]


async def test_the_fake_engine_claims_levels_in_the_order_redis_does(engine: RedisEngine) -> None:
    on_redis = await scenario(engine)
    assert on_redis == await scenario(FakeEngine())
    assert on_redis == ["f", "b", "b", "d", "a", "e", "c"]
