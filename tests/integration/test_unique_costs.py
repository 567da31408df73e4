"""What unique jobs cost, and what they leave behind: counted with INFO commandstats on a
server of the test's own, and by scanning for lock keys after many jobs have ended."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest
from support.redis_server import RedisServer

from aiojobs_redis import Job, RedisEngine, Settings, use_engine

pytestmark = pytest.mark.anyio

QUEUE = "unique-costs"
# After this many unique jobs have run to their end, no lock key may be left (about 2 s here).
BOUNDED_JOBS = 10_000


class PlainCost(Job):
    queue = QUEUE

    async def handle(self) -> None:  # pragma: no cover - never run here
        return None


class UniqueCost(Job):
    queue = QUEUE
    unique = True
    unique_key = "n"

    async def handle(self) -> None:  # pragma: no cover - never run here
        return None


class ReplacedCost(Job):
    queue = QUEUE
    unique = True
    unique_key = "n"
    on_duplicate = "replace"

    async def handle(self) -> None:  # pragma: no cover - never run here
        return None


@pytest.fixture
async def private_engine(tmp_path: Path) -> AsyncIterator[RedisEngine]:
    """An engine on a server of its own, so its command counts are the engine's alone."""
    with RedisServer(tmp_path / "redis", aof=False) as server:
        async with RedisEngine(Settings(url=server.url, prefix="u:")) as engine:
            with use_engine(engine):
                yield engine


async def commands(engine: RedisEngine) -> dict[str, int]:
    stats = await engine.redis.info("commandstats")
    return {name[len("cmdstat_") :]: int(v["calls"]) for name, v in stats.items()}


async def run_one(engine: RedisEngine, job: Job, request: str) -> None:
    """Dispatch, claim and ack one job, one call after another (nothing coalesced)."""
    await engine.dispatch(job)
    [claim] = await engine.claim_many([(QUEUE, 1, request)], worker_id="w", lease_ms=30_000)
    assert await engine.ack(claim.jobs[0])


# Commands Redis ran per plain job dispatched, claimed and acked (each alone), inside the
# scripts and out. The release before unique jobs ran the same 23; ack read c with HGET
# where it now reads c, F and u with one HMGET. Since flow control, the claim also reads the
# queue's control hash (one HMGET) and its priority levels (one ZRANGE): 25. Since rate
# groups, whether the queue has any (one EXISTS of its ring and gwait): 26. Workflows added
# none: a plain job has no F, so finish() returns at once.
PLAIN_JOB_COMMANDS = {
    "del": 1, "evalsha": 3, "exists": 2, "get": 1, "hget": 1, "hmget": 2, "hset": 1, "llen": 2,
    "lpop": 1, "rpush": 1, "set": 3, "time": 3, "type": 2, "zadd": 1, "zrange": 1, "zrem": 1,
}  # fmt: skip


async def test_a_plain_job_costs_the_commands_it_did(private_engine: RedisEngine) -> None:
    engine = private_engine
    await run_one(engine, PlainCost({"warm": True}), "warm")  # loads scripts, registers the queue
    jobs = 20
    before = await commands(engine)
    for n in range(jobs):
        await run_one(engine, PlainCost({"n": n}), f"r{n}")
    after = await commands(engine)
    per_job = {
        name: (calls - before.get(name, 0)) / jobs
        for name, calls in after.items()
        if name not in ("info",) and calls != before.get(name, 0)
    }
    print(f"\ncommands per plain job: {sum(per_job.values()):g} {per_job}")
    assert per_job == PLAIN_JOB_COMMANDS


async def test_unique_jobs_leave_no_lock_keys_behind(private_engine: RedisEngine) -> None:
    engine = private_engine
    started = time.monotonic()
    ids = await UniqueCost.dispatch_many({"n": n % BOUNDED_JOBS} for n in range(2 * BOUNDED_JOBS))
    assert len(set(ids)) == BOUNDED_JOBS, "each key's second dispatch returned the first's id"
    await ReplacedCost.dispatch_many({"n": n} for n in range(100))
    done = 0
    while True:
        [claim] = await engine.claim_many([(QUEUE, 100, f"c{done}")], worker_id="w", lease_ms=30_000)
        if not claim.jobs:
            break
        async with anyio.create_task_group() as group:
            for job in claim.jobs[:50]:
                group.start_soon(engine.ack, job)
        for job in claim.jobs[50:]:  # the rest fail for good: that lets the key go too
            assert await engine.fail(job, {"reason": "error"})
        done += len(claim.jobs)
    elapsed = time.monotonic() - started
    base = engine.keys(QUEUE).base
    left = [k async for k in engine.redis.scan_iter(match=f"{base}:u*", count=1000)]
    print(f"\n{2 * BOUNDED_JOBS} unique dispatches ({done} jobs) ran to their end in {elapsed:.1f} s; "
          f"lock keys left: {len(left)}")  # fmt: skip
    assert done == BOUNDED_JOBS + 100
    assert left == []
