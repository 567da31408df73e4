"""Workflows recovering from an abort or a failure, step by step on real Redis (no worker):
a retried job of a flow waits only while a prerequisite is still to succeed."""

from __future__ import annotations

import pytest
from support.engine_calls import claim_from

from aiojobs_redis import Job, RedisEngine, chain

pytestmark = pytest.mark.anyio

QUEUE = "flow-recovery"


class Step(Job):
    name = "flow_recovery.Step"
    queue = QUEUE

    async def handle(self) -> None:  # pragma: no cover - claimed and acked by the test
        return None


async def state(engine: RedisEngine, job_id: str) -> str:
    info = await engine.get_job(QUEUE, job_id)
    return "gone" if info is None else str(info.state)


async def test_a_step_aborted_while_waiting_and_retried_after_its_prerequisite_succeeded_is_ready(
    engine: RedisEngine,
) -> None:
    first, second = await chain(Step(), Step()).dispatch()
    assert await engine.abort(second, QUEUE) is True
    [claim] = (await claim_from(engine, QUEUE, 1, worker_id="w", request_id="1", lease_ms=30_000)).jobs
    assert claim.id == first and await engine.ack(claim)
    assert await engine.failed_retry([second], queue=QUEUE) == 1
    assert await state(engine, second) == "ready", "its prerequisite is done: nothing to wait for"
    assert await engine.redis.zcard(engine.keys(QUEUE).waiting) == 0


async def test_a_step_aborted_while_waiting_and_retried_before_its_prerequisite_waits_for_it(
    engine: RedisEngine,
) -> None:
    first, second = await chain(Step(), Step()).dispatch()
    assert await engine.abort(second, QUEUE) is True
    assert await engine.failed_retry([second], queue=QUEUE) == 1
    assert await state(engine, second) == "waiting"
    [claim] = (await claim_from(engine, QUEUE, 1, worker_id="w", request_id="1", lease_ms=30_000)).jobs
    assert claim.id == first and await engine.ack(claim)
    assert await state(engine, second) == "ready", "released once, by its prerequisite's success"
    assert await engine.redis.hget(engine.keys(QUEUE).job(second), "D") == b"0"
