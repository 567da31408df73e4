"""Token fencing: a worker whose lease lapsed cannot end or extend a job another worker now holds.

Worker A claims a job, its lease lapses, the reaper hands the job back and worker B claims
it. A's late ack, retry, fail, release, defer, renew and replayed claim are each refused and change
no key; B's lease still works afterwards. Each of these tests fails when the token check
is taken out of the one script it is about.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from redis.asyncio import Redis
from support.clock import FakeClock
from support.engine_calls import claim_from
from support.keystate import key_state

from aiojobs_redis import Job, RedisEngine
from aiojobs_redis.records import ClaimedJob

QUEUE = "stale-tokens"
LEASE_MS = 30_000  # the claim receipt expires on Redis's own clock: long enough for a test
ERROR: dict[str, Any] = {"reason": "error", "type": "ValueError", "message": "late"}


class Mail(Job):
    name = "stale_tokens.Mail"  # another test module has a job Mail
    queue = QUEUE
    attempts = 3

    async def handle(self) -> None:
        return None


@dataclass
class Handover:
    stale: ClaimedJob  # worker A's lease, lapsed and reaped
    current: ClaimedJob  # worker B's lease on the same job
    request_a: str  # the request id of A's claim


async def hand_over(engine: RedisEngine, clock: FakeClock) -> Handover:
    await Mail({"n": 1}).dispatch()
    first = await claim_from(engine, QUEUE, 1, worker_id="worker-a", request_id="a-1", lease_ms=LEASE_MS)
    clock.advance(LEASE_MS / 1000 + 0.001)
    assert (await engine.reap(QUEUE, max_stalls=3)).requeued == [first.jobs[0].id]
    second = await claim_from(engine, QUEUE, 1, worker_id="worker-b", request_id="b-1", lease_ms=LEASE_MS)
    [stale], [current] = first.jobs, second.jobs
    assert stale.id == current.id and stale.token != current.token
    return Handover(stale, current, "a-1")


async def state(raw: Redis, prefix: str) -> dict[bytes, Any]:
    return await key_state(raw, prefix)


Step = Callable[[RedisEngine, Handover], Awaitable[Any]]

# Each late step, and what the engine answers when it is refused.
LATE_STEPS: dict[str, tuple[Step, Callable[[Handover], Any]]] = {
    "ack": (lambda e, h: e.ack(h.stale), lambda h: False),
    "retry-now": (lambda e, h: e.retry(h.stale, 0, ERROR), lambda h: False),
    "retry-later": (lambda e, h: e.retry(h.stale, 5_000, ERROR), lambda h: False),
    "fail": (lambda e, h: e.fail(h.stale, ERROR), lambda h: False),
    "fail-uncounted": (lambda e, h: e.fail(h.stale, ERROR, count_attempt=False), lambda h: False),
    "release": (lambda e, h: e.release(h.stale), lambda h: False),
    "defer": (lambda e, h: e.defer(h.stale, 5_000, ERROR, give_up_after_ms=3_600_000), lambda h: 0),
    "renew": (
        lambda e, h: e.renew(QUEUE, [(h.stale.id, h.stale.token)], LEASE_MS),
        lambda h: [h.stale.id],  # the ids whose lease is lost
    ),
}


@pytest.mark.anyio
@pytest.mark.parametrize("step", list(LATE_STEPS))
async def test_a_stale_worker_changes_nothing_while_another_holds_the_job(
    step: str, clocked_engine: RedisEngine, raw_redis: Redis, clock: FakeClock, prefix: str
) -> None:
    handover = await hand_over(clocked_engine, clock)
    clock.advance(1)
    before = await state(raw_redis, prefix)

    late, refused = LATE_STEPS[step]
    assert await late(clocked_engine, handover) == refused(handover)
    assert await state(raw_redis, prefix) == before, f"a stale {step} changed the data"

    # B's lease is whole: it renews, and its ack ends the job.
    assert await clocked_engine.renew(QUEUE, [(handover.current.id, handover.current.token)], LEASE_MS) == []
    assert await clocked_engine.ack(handover.current) is True
    stats = (await clocked_engine.stats(QUEUE))[0]
    assert (stats.ready, stats.delayed, stats.running, stats.failed) == (0, 0, 0, 0)


@pytest.mark.anyio
async def test_a_stale_replayed_claim_returns_no_job_another_worker_holds(
    clocked_engine: RedisEngine, raw_redis: Redis, clock: FakeClock, prefix: str
) -> None:
    """A's claim receipt still names the job; replayed, it hands back only leases A holds."""
    handover = await hand_over(clocked_engine, clock)
    before = await state(raw_redis, prefix)

    replay = await claim_from(
        clocked_engine, QUEUE, 1, worker_id="worker-a", request_id=handover.request_a, lease_ms=LEASE_MS
    )
    assert replay.jobs == []
    assert await state(raw_redis, prefix) == before
    assert await clocked_engine.ack(handover.current) is True
