"""Workflows recovering from an abort or a failure, step by step on real Redis (no worker):
a retried job of a flow waits only while a prerequisite is still to succeed."""

from __future__ import annotations

from typing import Any

import pytest
from support.engine_calls import claim_from

from aiojobs_redis import Job, RedisEngine, batch, chain
from aiojobs_redis.records import ClaimedJob

pytestmark = pytest.mark.anyio

QUEUE = "flow-recovery"
ERROR: dict[str, Any] = {"reason": "permanent", "type": "PermanentFailure", "message": "boom"}


class Step(Job):
    name = "flow_recovery.Step"
    queue = QUEUE

    async def handle(self) -> None:  # pragma: no cover - claimed and acked by the test
        return None


async def state(engine: RedisEngine, job_id: str) -> str:
    info = await engine.get_job(QUEUE, job_id)
    return "gone" if info is None else str(info.state)


async def claim(engine: RedisEngine, request: str) -> ClaimedJob:
    [job] = (await claim_from(engine, QUEUE, 1, worker_id="w", request_id=request, lease_ms=30_000)).jobs
    return job


async def pending(engine: RedisEngine, job_id: str) -> int:
    return int(await engine.redis.hget(engine.keys(QUEUE).job(job_id), "D") or 0)


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


async def test_a_run_anyway_job_counts_a_retried_prerequisite_once(engine: RedisEngine) -> None:
    """It counted its prerequisite's failure as its end; the retry takes that back, so the
    prerequisite's later success does not count a second time and release it early."""
    first = await Step().dispatch()
    other = await Step().dispatch()
    joined = await Step().dispatch(depends_on=[first, other], on_dependency_failure="run")
    failing = await claim(engine, "1")
    assert failing.id == first and await engine.fail(failing, ERROR)
    assert await pending(engine, joined) == 1
    assert await engine.failed_retry([first], queue=QUEUE) == 1
    assert await pending(engine, joined) == 2
    assert (await claim(engine, "2")).id == other  # running, not done
    run = await claim(engine, "3")
    assert run.id == first and await engine.ack(run)
    assert await state(engine, joined) == "waiting", f"{other} has not succeeded yet"
    assert await pending(engine, joined) == 1


async def test_a_batch_callback_aborted_and_retried_before_the_batch_ended_waits_for_it(
    engine: RedisEngine,
) -> None:
    callback = Step()
    batch_id, members = await batch([Step(), Step()], on_complete=callback).dispatch()
    assert callback.id is not None
    assert await engine.abort(callback.id, QUEUE) is True
    assert await engine.failed_retry([callback.id], queue=QUEUE) == 1
    assert await state(engine, callback.id) == "waiting", "its batch has not ended"
    for n, member in enumerate(members):
        run = await claim(engine, f"m{n}")
        assert run.id == member and await engine.ack(run)
    assert await state(engine, callback.id) == "ready", "released once, by the last member's end"
    assert (await claim(engine, "cb")).id == callback.id
    result = await engine.batch_result(QUEUE, batch_id)
    assert (result.pending, result.done) == (0, 2)


async def test_a_batch_callback_that_failed_and_is_retried_still_reads_its_batch(engine: RedisEngine) -> None:
    callback = Step()
    batch_id, members = await batch([Step()], on_complete=callback).dispatch()
    assert callback.id is not None
    member = await claim(engine, "m")
    assert member.id == members[0] and await engine.ack(member)
    failing = await claim(engine, "cb")
    assert failing.id == callback.id and await engine.fail(failing, ERROR)
    assert await engine.failed_retry([callback.id], queue=QUEUE) == 1
    assert await state(engine, callback.id) == "ready"
    assert await engine.flow_fields(QUEUE, callback.id) == ([], batch_id), "still its batch's callback"
    result = await engine.batch_result(QUEUE, batch_id)
    assert (result.total, result.pending, result.done, result.failed) == (1, 0, 1, 0)


async def test_a_failed_step_retried_after_the_next_one_ran_anyway_ends_cleanly(
    engine: RedisEngine,
) -> None:
    """on_failure="continue": the next step ran (and its record went) while the first was
    failed; the first, retried, then succeeds: its ack must not trip over the next step's
    "done" marker."""
    first, second = await chain(Step(), Step(), on_failure="continue").dispatch()
    failing = await claim(engine, "1")
    assert failing.id == first and await engine.fail(failing, ERROR)
    after = await claim(engine, "2")
    assert after.id == second and await engine.ack(after)
    assert await engine.failed_retry([first], queue=QUEUE) == 1
    again = await claim(engine, "3")
    assert again.id == first and await engine.ack(again)
    assert await state(engine, first) == await state(engine, second) == "gone"
    assert await engine.redis.zcard(engine.keys(QUEUE).waiting) == 0
