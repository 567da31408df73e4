"""Unique jobs against the real Redis: the lock from dispatch to the final state.

Driven by direct engine calls (claim, ack, retry, fail, release, reap), with time moved by
the FakeClock, so each state a job can be in is reached exactly.
"""

from __future__ import annotations

from typing import Any

import pytest
from redis.asyncio import Redis
from support.clock import FakeClock
from support.engine_calls import claim_from, fail_new_jobs

from aiojobs_redis import DuplicateJob, Job, RedisEngine, admin
from aiojobs_redis.keys import QueueKeys
from aiojobs_redis.records import ClaimedJob

# also on a Cluster and behind Sentinel: see conftest.py
pytestmark = [pytest.mark.anyio, pytest.mark.deployments]

QUEUE = "unique-it"
LEASE = 30_000
ERROR: dict[str, Any] = {"reason": "error", "type": "ValueError", "message": "boom"}


class SyncAccount(Job):
    queue = QUEUE
    attempts = 3
    unique = True
    unique_key = "account_id"

    async def handle(self) -> None:
        return None


class StrictSync(Job):
    queue = QUEUE
    unique = True
    unique_key = ("account_id", "region")
    on_duplicate = "error"

    async def handle(self) -> None:
        return None


class WholePayload(Job):
    queue = QUEUE
    unique = True

    async def handle(self) -> None:
        return None


class ByMethod(Job):
    queue = QUEUE
    unique = True

    def unique_key(self) -> str:
        return str(self.payload["n"] % 2)

    async def handle(self) -> None:
        return None


class UntilStart(Job):
    queue = QUEUE
    unique = True
    unique_key = "k"
    unique_until = "start"

    async def handle(self) -> None:
        return None


class Debounced(Job):
    queue = QUEUE
    unique = True
    unique_key = "k"
    on_duplicate = "replace"

    async def handle(self) -> None:
        return None


class Plain(Job):
    queue = QUEUE

    async def handle(self) -> None:
        return None


async def claim_one(engine: RedisEngine, request: str = "r1", worker: str = "w1") -> ClaimedJob:
    claim = await claim_from(engine, QUEUE, 1, worker_id=worker, request_id=request, lease_ms=LEASE)
    [job] = claim.jobs
    return job


async def lock_keys(raw_redis: Redis, keys: QueueKeys) -> list[bytes]:
    return [k async for k in raw_redis.scan_iter(match=f"{keys.base}:u*", count=1000)]


async def test_a_live_key_returns_the_live_job_id(clocked_engine: RedisEngine) -> None:
    job = SyncAccount({"account_id": 42})
    first = await job.dispatch()
    assert job.duplicate is False
    again = SyncAccount({"account_id": 42, "extra": 1})
    assert await again.dispatch() == first
    assert again.duplicate is True
    assert await SyncAccount.dispatch({"account_id": 43}) != first
    [stats] = await clocked_engine.stats(QUEUE)
    assert stats.ready == 2


async def test_the_key_is_free_again_after_ack(clocked_engine: RedisEngine) -> None:
    first = await SyncAccount.dispatch({"account_id": 1})
    running = await claim_one(clocked_engine)
    assert await SyncAccount.dispatch({"account_id": 1}) == first  # while running
    assert await clocked_engine.ack(running)
    second = await SyncAccount.dispatch({"account_id": 1})
    assert second != first


async def test_the_key_holds_through_retries_and_is_free_after_the_final_failure(
    clocked_engine: RedisEngine, clock: FakeClock
) -> None:
    first = await SyncAccount.dispatch({"account_id": 7})
    for attempt in range(1, 3):
        running = await claim_one(clocked_engine, request=f"r{attempt}")
        assert await clocked_engine.retry(running, 5_000, ERROR)
        assert await SyncAccount.dispatch({"account_id": 7}) == first  # waiting out retry_after
        clock.advance(6)
        assert (await clocked_engine.promote([QUEUE]))[0] == 1
    running = await claim_one(clocked_engine, request="r3")
    assert await clocked_engine.fail(running, ERROR)
    assert await SyncAccount.dispatch({"account_id": 7}) != first
    assert [j.id for j in await clocked_engine.failed_list(QUEUE)] == [first]


async def test_the_key_holds_through_a_lapsed_lease_and_a_release(
    clocked_engine: RedisEngine, clock: FakeClock
) -> None:
    first = await SyncAccount.dispatch({"account_id": 9})
    await claim_one(clocked_engine, request="dead", worker="dead-worker")  # never renewed
    clock.advance(LEASE / 1000 + 1)
    reaped = await clocked_engine.reap(QUEUE, max_stalls=5)
    assert reaped.requeued == [first]
    assert await SyncAccount.dispatch({"account_id": 9}) == first
    running = await claim_one(clocked_engine, request="again")
    assert await clocked_engine.release(running)  # shutdown
    assert await SyncAccount.dispatch({"account_id": 9}) == first
    running = await claim_one(clocked_engine, request="third")
    assert await clocked_engine.ack(running)
    assert await SyncAccount.dispatch({"account_id": 9}) != first


async def test_a_job_failed_by_the_reaper_lets_its_key_go(
    clocked_engine: RedisEngine, clock: FakeClock, raw_redis: Redis
) -> None:
    first = await SyncAccount.dispatch({"account_id": 11})
    await claim_one(clocked_engine, request="dead", worker="dead-worker")
    clock.advance(LEASE / 1000 + 1)
    reaped = await clocked_engine.reap(QUEUE, max_stalls=0)
    assert reaped.failed == [first]
    assert await lock_keys(raw_redis, clocked_engine.keys(QUEUE)) == []
    assert await SyncAccount.dispatch({"account_id": 11}) != first


async def test_on_duplicate_error_raises_and_stores_nothing(clocked_engine: RedisEngine) -> None:
    first = await StrictSync.dispatch({"account_id": 1, "region": "eu"})
    with pytest.raises(DuplicateJob) as raised:
        await StrictSync.dispatch({"account_id": 1, "region": "eu", "x": 2})
    assert raised.value.existing_id == first
    assert await StrictSync.dispatch({"account_id": 1, "region": "us"}) != first
    assert (await clocked_engine.stats(QUEUE))[0].ready == 2


async def test_the_default_key_is_the_whole_payload_and_a_method_may_give_it(
    clocked_engine: RedisEngine,
) -> None:
    a = await WholePayload.dispatch({"x": 1, "y": 2})
    assert await WholePayload.dispatch({"y": 2, "x": 1}) == a  # key order does not matter
    assert await WholePayload.dispatch({"x": 2, "y": 2}) != a
    odd = await ByMethod.dispatch({"n": 1})
    assert await ByMethod.dispatch({"n": 3}) == odd
    assert await ByMethod.dispatch({"n": 2}) != odd


async def test_classes_with_the_same_key_do_not_collide(clocked_engine: RedisEngine) -> None:
    a = await UntilStart.dispatch({"k": "same"})
    b = await Debounced.dispatch({"k": "same"})
    assert a != b


async def test_unique_until_start_frees_the_key_when_the_job_runs(clocked_engine: RedisEngine) -> None:
    first = await UntilStart.dispatch({"k": 1})
    assert await UntilStart.dispatch({"k": 1}) == first
    running = await claim_one(clocked_engine)
    assert running.id == first
    second = await UntilStart.dispatch({"k": 1})
    assert second != first
    assert await UntilStart.dispatch({"k": 1}) == second
    assert await clocked_engine.ack(running)  # the first's end leaves the second's lock alone
    assert await UntilStart.dispatch({"k": 1}) == second


async def test_replace_gives_a_waiting_job_the_newest_payload_and_due_time(
    clocked_engine: RedisEngine, clock: FakeClock
) -> None:
    first = await Debounced().dispatch({"k": 1, "v": "a"}, delay=10)
    clock.advance(5)
    job = Debounced()
    assert await job.dispatch({"k": 1, "v": "b"}, delay=10) == first
    assert job.duplicate is True
    clock.advance(6)  # the first due time has passed, the new one not
    assert (await clocked_engine.promote([QUEUE]))[0] == 0
    clock.advance(5)
    assert (await clocked_engine.promote([QUEUE]))[0] == 1
    running = await claim_one(clocked_engine)
    assert (running.id, running.payload) == (first, b'{"k":1,"v":"b"}')


async def test_replace_while_running_keeps_one_successor_run_after_it(
    clocked_engine: RedisEngine, raw_redis: Redis
) -> None:
    first = await Debounced.dispatch({"k": 1, "v": "a"})
    running = await claim_one(clocked_engine)
    assert await Debounced.dispatch({"k": 1, "v": "b"}) == first
    assert await Debounced.dispatch({"k": 1, "v": "c"}) == first
    assert (await clocked_engine.stats(QUEUE))[0].ready == 0
    assert await clocked_engine.ack(running)
    successor = await claim_one(clocked_engine, request="r2")
    assert successor.id != first
    assert successor.payload == b'{"k":1,"v":"c"}'
    assert await Debounced.dispatch({"k": 1, "v": "d"}) == successor.id  # it holds the key
    assert await clocked_engine.ack(successor)
    last = await claim_one(clocked_engine, request="r3")
    assert last.payload == b'{"k":1,"v":"d"}'
    assert await clocked_engine.ack(last)
    assert await lock_keys(raw_redis, clocked_engine.keys(QUEUE)) == []


async def test_failed_retry_is_skipped_while_another_job_holds_the_key(
    clocked_engine: RedisEngine, raw_redis: Redis
) -> None:
    failed = await StrictSync.dispatch({"account_id": 5, "region": "eu"})
    assert await clocked_engine.fail(await claim_one(clocked_engine), ERROR)
    live = await StrictSync.dispatch({"account_id": 5, "region": "eu"})
    assert await clocked_engine.failed_retry([failed], queue=QUEUE) == 0
    assert [j.id for j in await clocked_engine.failed_list(QUEUE)] == [failed]
    running = await claim_one(clocked_engine, request="r2")
    assert running.id == live
    assert await clocked_engine.ack(running)
    assert await clocked_engine.failed_retry([failed], queue=QUEUE) == 1
    with pytest.raises(DuplicateJob) as raised:  # the requeued job holds the key again
        await StrictSync.dispatch({"account_id": 5, "region": "eu"})
    assert raised.value.existing_id == failed


class ShardedSync(Job):
    queue = "unique-it-sharded"
    shards = 4
    unique = True
    unique_key = "account_id"

    async def handle(self) -> None:
        return None


async def test_a_sharded_queue_sends_every_duplicate_to_the_shard_of_its_key(
    clocked_engine: RedisEngine,
) -> None:
    ids = [await ShardedSync.dispatch({"account_id": 3}) for _ in range(8)]
    assert len(set(ids)) == 1
    assert sum(s.ready for s in await clocked_engine.stats() if s.queue.startswith(ShardedSync.queue)) == 1


async def test_a_quarantined_unique_job_lets_its_key_go(
    clocked_engine: RedisEngine, raw_redis: Redis
) -> None:
    first = await SyncAccount.dispatch({"account_id": 13})
    keys = clocked_engine.keys(QUEUE)
    await raw_redis.hdel(keys.job(first), "p")  # damaged: it cannot run
    claim = await claim_from(clocked_engine, QUEUE, 1, worker_id="w1", request_id="r1", lease_ms=LEASE)
    assert claim.jobs == [] and [q.job_id for q in claim.quarantined] == [first]
    assert await lock_keys(raw_redis, keys) == []
    assert await SyncAccount.dispatch({"account_id": 13}) != first


async def test_a_unique_dispatch_that_reaches_redis_after_its_deadline_stores_nothing(
    clocked_engine: RedisEngine, clock: FakeClock, raw_redis: Redis
) -> None:
    keys = clocked_engine.keys(QUEUE)
    args = [keys.base, QUEUE, 1000, clock(), SyncAccount.name, 3, 0, clock() - 1, 0, ""]
    args += ["late-1", b'{"account_id":1}', f"{SyncAccount.name}:1", "u", "keep"]
    reply = await clocked_engine.scripts.dispatch_ex(keys=[keys.ready, keys.delayed, keys.wake], args=args)
    assert reply == -1
    assert await lock_keys(raw_redis, keys) == []
    assert await raw_redis.exists(keys.job("late-1")) == 0


async def test_failed_retry_all_gets_past_more_skipped_unique_jobs_than_a_batch(
    clocked_engine: RedisEngine, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    def tick() -> None:
        clock.advance(0.001)

    monkeypatch.setattr(admin, "BATCH", 5)  # ids per requeue call
    accounts = [{"account_id": n} for n in range(admin.BATCH + 1)]
    held = await fail_new_jobs(clocked_engine, SyncAccount, accounts, lambda _: ERROR, between=tick)
    [plain] = await fail_new_jobs(clocked_engine, Plain, [{"n": 1}], lambda _: ERROR, between=tick)
    live = await SyncAccount.dispatch_many(accounts)
    report = await clocked_engine.failed_retry_report(queue=QUEUE)
    assert report.requeued == 1  # the plain job, failed after all the others
    assert report.held == dict(zip(held, live, strict=True))
    assert plain not in {j.id for j in await clocked_engine.failed_list(QUEUE, limit=1000)}


async def test_an_abort_releases_the_unique_key(clocked_engine: RedisEngine) -> None:
    """Abort is a final state: finish() lets the key go in the same step, waiting or running."""
    waiting = await SyncAccount.dispatch({"account_id": 501})
    assert await clocked_engine.abort(waiting) is True
    running = await SyncAccount.dispatch({"account_id": 501})
    assert running != waiting
    held = await claim_one(clocked_engine)
    assert held.id == running
    assert await clocked_engine.abort(running) is True
    base = QueueKeys.of(clocked_engine.settings.prefix, QUEUE).base
    assert [k async for k in clocked_engine.redis.scan_iter(match=f"{base}:u:*")] == [], "the lock is gone"
    assert await SyncAccount.dispatch({"account_id": 501}) not in (waiting, running)
