"""A job retried with no delay is claimed again before its first run's task has ended."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from aiojobs_redis import Job, RedisEngine, Worker
from aiojobs_redis.records import ClaimedJob

pytestmark = pytest.mark.anyio


class FailsOnce(Job):
    queue = "race"
    attempts = 2

    async def handle(self) -> None:
        if self.attempt == 1:
            raise RuntimeError("first attempt fails")


async def test_a_job_reclaimed_before_its_last_run_ended(
    engine: RedisEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_retry = engine.retry

    async def slow_retry(job: ClaimedJob, delay_ms: int, error: dict[str, Any]) -> bool:
        done = await real_retry(job, delay_ms, error)
        await anyio.sleep(0.3)  # the reply is read late: the job is already ready again
        return done

    monkeypatch.setattr(engine, "retry", slow_retry)
    await FailsOnce().dispatch({})
    worker = Worker(engine, ["race"], idle_wait=0.2)
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            await tg.start(worker.run)
            while worker.counters.succeeded + worker.counters.failed < 1:
                await anyio.sleep(0.02)
            await anyio.sleep(0.5)  # the first run's task ends meanwhile
            worker.stop()
    assert worker.counters.succeeded == 1
