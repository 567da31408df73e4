"""A job whose name the worker does not know, on the real Redis: defer.lua puts it back
delayed, using no attempt and keeping its due time, until the grace period has passed; jobs
stored under 0.1's default name still run.

Time moves through the FakeClock (`clocked_engine` + `clock`) where the grace is measured.
"""

from __future__ import annotations

from typing import Any, ClassVar

import anyio
import pytest
from redis.asyncio import Redis
from support.clock import FakeClock
from support.engine_calls import claim_from

from aiojobs_redis import Job, RedisEngine, UnknownJob, Worker, registry
from aiojobs_redis.records import ClaimedJob

pytestmark = [pytest.mark.anyio, pytest.mark.deployments]

QUEUE = "unknown"
LEASE_MS = 30_000
LIMIT = 20  # seconds any worker run here may take: a guard, never a wait
UNKNOWN = {"reason": "unknown_job", "type": "aiojobs_redis.errors.UnknownJob", "message": "not here"}


class Arrives(Job):
    queue = QUEUE
    attempts = 3
    ran: ClassVar[list[tuple[Any, int]]] = []

    async def handle(self) -> None:
        Arrives.ran.append((self.payload, self.attempt))


def nothing_known(name: str) -> type[Job]:
    raise UnknownJob(f"no Job class is registered as {name!r}")


async def claim_one(engine: RedisEngine, request_id: str) -> ClaimedJob:
    claim = await claim_from(engine, QUEUE, 1, worker_id="w1", request_id=request_id, lease_ms=LEASE_MS)
    [claimed] = claim.jobs
    return claimed


async def fields(raw: Redis, engine: RedisEngine, job_id: str) -> dict[str, str]:
    raw_fields: dict[bytes, bytes] = await raw.hgetall(engine.keys(QUEUE).job(job_id))  # type: ignore[assignment]
    return {k.decode(): v.decode() for k, v in raw_fields.items()}


# -- the engine's transition ---------------------------------------------------------------


async def test_defer_puts_the_job_back_delayed_using_no_attempt_and_keeps_its_due_time(
    clocked_engine: RedisEngine, clock: FakeClock, raw_redis: Redis
) -> None:
    engine, keys = clocked_engine, clocked_engine.keys(QUEUE)
    dispatched_ms = clock.now_ms
    job_id = await Arrives({"n": 1}).dispatch()
    claimed = await claim_one(engine, "r1")

    clock.advance(1)
    assert await engine.defer(claimed, 5_000, UNKNOWN, give_up_after_ms=60_000) == 1
    record = await fields(raw_redis, engine, job_id)
    assert (record["s"], record.get("a", "0"), record["d"]) == ("delayed", "0", str(dispatched_ms))
    assert "t" not in record and "w" not in record
    assert '"unknown_job"' in record["e"]
    assert await raw_redis.zscore(keys.delayed, job_id) == clock.now_ms + 5_000
    assert await raw_redis.zscore(keys.running, job_id) is None
    # A replay (the reply was lost) is answered as done; another run's token changes nothing.
    assert await engine.defer(claimed, 5_000, UNKNOWN, give_up_after_ms=60_000) == 1
    stale = ClaimedJob(QUEUE, job_id, "w9:9", claimed.name, b"{}", 0, 3, 9)
    assert await engine.defer(stale, 5_000, UNKNOWN, give_up_after_ms=60_000) == 0

    clock.advance(5)
    assert (await engine.promote([QUEUE]))[0] == 1
    again = await claim_one(engine, "r2")
    assert (again.id, again.attempts_used, again.runs) == (job_id, 0, 2)

    # Due for 60 s now: the grace has passed. Nothing changes; the worker fails it.
    clock.now_ms = dispatched_ms + 60_000
    assert await engine.defer(again, 10_000, UNKNOWN, give_up_after_ms=60_000) == -1
    record = await fields(raw_redis, engine, job_id)
    assert (record["s"], record["t"]) == ("running", again.token)
    assert await engine.fail(again, UNKNOWN, count_attempt=False)
    info = await engine.get_job(QUEUE, job_id)
    assert info is not None and info.error is not None
    assert (info.state, info.attempts, info.error["reason"]) == ("failed", 0, "unknown_job")


async def test_the_grace_of_a_delayed_job_counts_from_when_it_was_due(
    clocked_engine: RedisEngine, clock: FakeClock
) -> None:
    await Arrives({"n": 1}).dispatch(delay="+2 hours")
    clock.advance(2 * 3600)
    await clocked_engine.promote([QUEUE])
    claimed = await claim_one(clocked_engine, "r1")
    assert await clocked_engine.defer(claimed, 5_000, UNKNOWN, give_up_after_ms=60_000) == 1


# -- the worker ------------------------------------------------------------------------------


async def test_a_worker_defers_an_unknown_job_and_one_that_knows_it_runs_it_later(
    clocked_engine: RedisEngine, clock: FakeClock
) -> None:
    Arrives.ran = []
    job_id = await Arrives({"n": 7}).dispatch()
    stranger = Worker(clocked_engine, [QUEUE], burst=True, lookup=nothing_known, telemetry=False)
    with anyio.fail_after(LIMIT):
        await stranger.run()
    assert (stranger.counters.deferred, stranger.counters.failed) == (1, 0)
    info = await clocked_engine.get_job(QUEUE, job_id)
    assert info is not None and (info.state, info.attempts) == ("delayed", 0)

    clock.advance(5)  # the first wait is 5 s
    assert (await clocked_engine.promote([QUEUE]))[0] == 1
    knower = Worker(clocked_engine, [QUEUE], burst=True, telemetry=False)
    with anyio.fail_after(LIMIT):
        await knower.run()
    assert Arrives.ran == [({"n": 7}, 1)]  # its first attempt: deferring used none


async def test_a_worker_fails_an_unknown_job_once_it_has_been_due_past_the_grace(
    clocked_engine: RedisEngine, clock: FakeClock
) -> None:
    job_id = await Arrives({"n": 1}).dispatch()
    options: dict[str, Any] = {"burst": True, "lookup": nothing_known, "telemetry": False}
    first = Worker(clocked_engine, [QUEUE], unknown_job_grace=30, **options)
    with anyio.fail_after(LIMIT):
        await first.run()
    assert first.counters.deferred == 1

    clock.advance(31)
    assert (await clocked_engine.promote([QUEUE]))[0] == 1  # ready before the burst worker looks
    last = Worker(clocked_engine, [QUEUE], unknown_job_grace=30, **options)
    with anyio.fail_after(LIMIT):
        await last.run()
    assert (last.counters.deferred, last.counters.failed) == (0, 1)
    info = await clocked_engine.get_job(QUEUE, job_id)
    assert info is not None and info.error is not None
    assert (info.state, info.attempts, info.error["reason"]) == ("failed", 0, "unknown_job")
    assert "'Arrives'" in info.error["message"]


# -- 0.1's default names ---------------------------------------------------------------------


class StoredBy01(Job):
    queue = QUEUE
    ran: ClassVar[list[Any]] = []

    async def handle(self) -> None:
        StoredBy01.ran.append(self.payload)


async def test_a_job_stored_by_0_1_under_module_and_qualname_still_runs(
    engine: RedisEngine, raw_redis: Redis
) -> None:
    StoredBy01.ran = []
    old_name = f"{__name__}.StoredBy01"  # 0.1's default name for this class
    assert StoredBy01.name == "StoredBy01" and registry.lookup(old_name) is StoredBy01
    # An inline record as 0.1 wrote it: no format version.
    await raw_redis.rpush(
        engine.keys(QUEUE).ready, f"!v01job {old_name} 1 1700000000000 ".encode() + b'{"a": 1}'
    )
    worker = Worker(engine, [QUEUE], burst=True, telemetry=False)
    with anyio.fail_after(LIMIT):
        await worker.run()
    assert StoredBy01.ran == [{"a": 1}]
    assert worker.counters.succeeded == 1
