"""The failed set's retention (failed_ttl_ms, failed_max) counts what it drops: the reap
returns it, a per-queue counter keeps the total (exact even when a reap is replayed), stats
show it, and a worker logs a WARNING with the count."""

from __future__ import annotations

import logging
import uuid

import anyio
import pytest
from redis.asyncio import Redis
from support.clock import FakeClock
from support.engine_calls import claim_from, engine_with
from support.wait import eventually

from aiojobs_redis import Job, PermanentFailure, RedisEngine, Settings, Worker
from aiojobs_redis.cli import _stats as cli_stats
from aiojobs_redis.cli import build_parser

pytestmark = pytest.mark.anyio

QUEUE = "retention"


class Doomed(Job):
    queue = QUEUE
    name = "tests.retention.Doomed"

    async def handle(self) -> None:
        raise PermanentFailure("no")


async def fail_jobs(engine: RedisEngine, clock: FakeClock, count: int) -> list[str]:
    """Dispatch, claim and fail `count` jobs, one second apart (oldest first)."""
    ids = [await Doomed({"i": i}).dispatch() for i in range(count)]
    got = await claim_from(engine, QUEUE, count, worker_id="w", request_id=uuid.uuid4().hex, lease_ms=60_000)
    for claimed in got.jobs:
        clock.advance(1)
        assert await engine.fail(claimed, {"reason": "permanent", "type": "E", "message": "no"})
    return ids


async def dropped(engine: RedisEngine) -> int:
    [stats] = await engine.stats(QUEUE)
    return stats.failed_dropped


async def test_jobs_over_the_cap_are_counted_once(
    settings: Settings, raw_redis: Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    clock = FakeClock()
    async with engine_with(settings, clock, failed_max=5) as engine:
        await fail_jobs(engine, clock, 8)
        assert await dropped(engine) == 0
        assert (await engine.reap(QUEUE, max_stalls=1)).trimmed == 3
        assert await dropped(engine) == 3
        # A reap run again (as redis-py replays a call whose reply was lost) removes nothing
        # more, so it counts nothing more.
        assert (await engine.reap(QUEUE, max_stalls=1)).trimmed == 0
        assert await dropped(engine) == 3
        assert int(await raw_redis.get(engine.keys(QUEUE).dropped) or 0) == 3
        await fail_jobs(engine, clock, 2)
        assert (await engine.reap(QUEUE, max_stalls=1)).trimmed == 2
        [stats] = await engine.stats(QUEUE)
        assert (stats.failed, stats.failed_dropped) == (5, 5), "a running total"
        args = build_parser().parse_args(["stats", "--queue", QUEUE])
        await cli_stats(engine, args)
        assert "\nfailed jobs dropped by retention: retention 5\n" in capsys.readouterr().out


async def test_expired_jobs_are_counted(settings: Settings) -> None:
    clock = FakeClock()
    async with engine_with(settings, clock, failed_ttl_ms=10_000) as engine:
        await fail_jobs(engine, clock, 2)
        assert (await engine.reap(QUEUE, max_stalls=1)).trimmed == 0
        clock.advance(9.5)  # the first failed 10.5 s ago, the second 9.5 s ago
        assert (await engine.reap(QUEUE, max_stalls=1)).trimmed == 1
        assert await dropped(engine) == 1


async def test_a_worker_logs_what_retention_dropped(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    async with engine_with(settings, failed_max=2) as engine:
        await Doomed.dispatch_many([{"i": i} for i in range(5)])
        worker = Worker(engine, [QUEUE], reap_interval=0.05, idle_wait=0.2, telemetry=False, tracing=False)
        with caplog.at_level(logging.WARNING, logger="aiojobs_redis.worker"):
            async with anyio.create_task_group() as tg:
                await tg.start(worker.run)
                await eventually(lambda: dropped(engine), timeout=30, what="a reap dropping failed jobs")
                await eventually(
                    lambda: _total_logged(caplog) == 3, timeout=30, what="every failed job failed and reaped"
                )
                worker.stop()
        assert await dropped(engine) == 3, "the logged counts add up to the stored total"
        [stats] = await engine.stats(QUEUE)
        assert stats.failed == 2


def _total_logged(caplog: pytest.LogCaptureFixture) -> int:
    counts: list[int] = [
        record.args[1]  # type: ignore[index, misc]
        for record in caplog.records
        if "dropped by retention" in record.msg and record.levelno == logging.WARNING
    ]
    return sum(counts)
