"""The FakeEngine answers as RedisEngine and the Lua scripts do, where a user's test would see it."""

from __future__ import annotations

import inspect

import pytest

from aiojobs_redis import DuplicateJob, Job, RedisEngine
from aiojobs_redis.records import ClaimedJob
from aiojobs_redis.sharding import SEPARATOR
from aiojobs_redis.testing import FakeClock, FakeEngine

pytestmark = pytest.mark.anyio

QUEUE = "parity"


class Noop(Job):
    queue = QUEUE

    async def handle(self) -> None:
        return None


class Spread(Noop):
    shards = 4


class Unique(Noop):
    unique = True
    unique_key = "k"
    attempts = 2


class Strict(Unique):
    on_duplicate = "error"


class Latest(Unique):
    on_duplicate = "replace"


class AtStart(Unique):
    unique_until = "start"


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine(FakeClock())


async def claim(engine: FakeEngine, request: str, limit: int = 1, worker: str = "w") -> list[ClaimedJob]:
    (got,) = await engine.claim_many([(QUEUE, limit, request)], worker_id=worker, lease_ms=1000)
    return got.jobs


async def test_dispatching_one_job_instance_twice_stores_two_jobs(engine: FakeEngine) -> None:
    job = Noop({"n": 1})
    first = await engine.dispatch(job)
    second = await engine.dispatch(job)
    assert first != second and job.id == second
    assert [j.id for j in engine.in_state("ready")] == [first, second]


async def test_a_job_that_succeeds_first_time_has_used_no_attempt(engine: FakeEngine) -> None:
    (job_id,) = await engine.dispatch_many([Noop({})])
    assert await engine.run_due() == 1
    assert (engine.jobs[job_id].state, engine.jobs[job_id].attempts) == ("done", 0)


async def test_a_sharded_queue_s_jobs_go_to_its_shards_in_turn(engine: FakeEngine) -> None:
    await engine.dispatch_many([Spread({"n": n}) for n in range(4)])
    queues = [d.queue for d in engine.dispatched]
    assert sorted(queues) == [f"{QUEUE}{SEPARATOR}{n}" for n in range(4)]
    assert [j.queue for j in engine.jobs.values()] == queues


async def test_dispatch_many_takes_redis_engine_s_keywords(engine: FakeEngine) -> None:
    fake, redis = (inspect.signature(e.dispatch_many).parameters for e in (FakeEngine, RedisEngine))
    assert list(fake) == list(redis)
    ids = await engine.dispatch_many([Noop({"n": n}) for n in range(3)], chunk=2, durable=True)
    assert len(set(ids)) == 3
    with pytest.raises(ValueError):
        await engine.dispatch_many([Noop({})], chunk=0)


async def test_reaped_jobs_go_to_the_head_in_the_order_their_leases_lapsed(engine: FakeEngine) -> None:
    first, second, third, waiting = await engine.dispatch_many([Noop({"n": n}) for n in range(4)])
    for request in "123":  # one at a time: their leases lapse in this order
        await claim(engine, request)
        engine.clock.advance(0.1)
    engine.clock.advance(1)
    reaped = await engine.reap(QUEUE, max_stalls=3)
    assert reaped.requeued == [first, second, third]
    assert [j.id for j in await claim(engine, "4", limit=4)] == [first, second, third, waiting]


async def test_priority_levels_are_claimed_highest_first_and_reaped_jobs_keep_theirs(
    engine: FakeEngine,
) -> None:
    """As claim.lua and reap.lua (tests/integration/test_priorities.py runs the same on Redis)."""
    plain, low, high, high2 = await engine.dispatch_many(
        [
            Noop({"n": 0}),
            Noop({"n": 1}).set_priority(-1),
            Noop({"n": 2}).set_priority(3),
            Noop({"n": 3}).set_priority(3),
        ]
    )
    assert [j.id for j in await claim(engine, "1", limit=2)] == [high, high2]
    engine.clock.advance(2)
    assert (await engine.reap(QUEUE, max_stalls=3)).requeued == [high, high2]
    assert [j.id for j in await claim(engine, "2", limit=4)] == [high, high2, plain, low]


async def test_only_a_worker_s_last_claim_replays_and_only_for_a_lease(engine: FakeEngine) -> None:
    a, b = await engine.dispatch_many([Noop({"n": 1}), Noop({"n": 2})])
    assert [j.id for j in await claim(engine, "1")] == [a]
    assert [j.id for j in await claim(engine, "2")] == [b]
    assert await claim(engine, "1") == [], "an older request is a new claim: nothing is ready"
    assert await claim(engine, "3") == []
    assert [j.id for j in await claim(engine, "2")] == [b], "an empty claim leaves the last receipt"
    assert [j.id for j in await claim(engine, "2", worker="other")] == []
    engine.clock.advance(1)
    assert await claim(engine, "2") == [], "the receipt lasts one lease"


async def test_a_settle_replayed_with_the_same_token_succeeds_again(engine: FakeEngine) -> None:
    await engine.dispatch_many([Noop({}), Noop({})])
    done, released = await claim(engine, "1", limit=2)
    assert await engine.ack(done) and await engine.ack(done)
    assert await engine.release(released) and await engine.release(released)
    assert not await engine.ack(released), "another kind of settle with that token is refused"


async def test_defer_keeps_the_due_time_replays_and_gives_up_as_defer_lua_does(engine: FakeEngine) -> None:
    (job_id,) = await engine.dispatch_many([Noop({})])
    error = {"reason": "unknown_job"}
    [held] = await claim(engine, "1")
    engine.clock.advance(1)
    assert await engine.defer(held, 5_000, error, give_up_after_ms=60_000) == 1
    assert await engine.defer(held, 5_000, error, give_up_after_ms=60_000) == 1, "a replay"
    job = engine.jobs[job_id]
    assert (job.state, job.attempts, job.due_ms - engine.clock.now_ms) == ("delayed", 0, 5_000)
    engine.clock.advance(5)
    assert (await engine.promote([QUEUE]))[0] == 1
    [again] = await claim(engine, "2")
    assert await engine.defer(again, 5_000, error, give_up_after_ms=0) == -1, "given up: no grace"
    engine.clock.advance(54)  # due for 60 s: given up, nothing changes
    assert await engine.defer(again, 5_000, error, give_up_after_ms=60_000) == -1
    assert (job.state, job.token) == ("running", again.token)


async def test_abort_answers_as_abort_lua_does(engine: FakeEngine) -> None:
    """RedisEngine.abort's signature; a running job's late ack refused; a second abort False."""
    assert inspect.signature(FakeEngine.abort) == inspect.signature(RedisEngine.abort)
    waiting, running = await engine.dispatch_many([Noop({"n": 1}), Noop({"n": 2})])
    [run] = await claim(engine, "1")
    assert run.id == waiting
    assert await engine.abort(waiting) is True
    assert await engine.aborted_runs(QUEUE, [(run.id, run.token)]) == [waiting]
    assert await engine.ack(run) is False
    assert await engine.abort(running, QUEUE) is True
    assert await engine.abort(running) is False
    assert await claim(engine, "2") == []
    job = engine.jobs[running]
    assert (job.state, job.attempts, job.error and job.error["reason"]) == ("failed", 0, "aborted")


async def test_a_unique_key_is_held_from_dispatch_to_the_final_state(engine: FakeEngine) -> None:
    first = await engine.dispatch(Unique({"k": 1}))
    job = Unique({"k": 1})
    assert await engine.dispatch(job) == first and job.duplicate
    [held] = await claim(engine, "r1")
    assert await engine.retry(held, 0, {"reason": "error"})
    assert await engine.dispatch(Unique({"k": 1})) == first  # waiting for its retry
    [held] = await claim(engine, "r2")
    assert await engine.fail(held, {"reason": "error"})
    assert await engine.dispatch(Unique({"k": 1})) != first
    with pytest.raises(DuplicateJob):
        await engine.dispatch(Strict({"k": 2}))
        await engine.dispatch(Strict({"k": 2}))


async def test_replace_and_unique_until_start_as_dispatch_ex_lua(engine: FakeEngine) -> None:
    first = await engine.dispatch(Latest({"k": 1, "v": "a"}))
    assert await engine.dispatch(Latest({"k": 1, "v": "b"})) == first
    [held] = await claim(engine, "r1")
    assert held.payload == b'{"k":1,"v":"b"}'
    assert await engine.dispatch(Latest({"k": 1, "v": "c"})) == first  # the pending successor
    assert engine.in_state("ready") == []
    assert await engine.ack(held)
    [successor] = await claim(engine, "r2")
    assert (successor.id != first, successor.payload) == (True, b'{"k":1,"v":"c"}')
    started = await engine.dispatch(AtStart({"k": 9}))
    await claim(engine, "r3")
    assert await engine.dispatch(AtStart({"k": 9})) != started


async def test_an_abort_releases_the_unique_key_as_abort_lua_does(engine: FakeEngine) -> None:
    first = await engine.dispatch(Unique({"k": 77}))
    assert await engine.abort(first) is True
    assert await engine.dispatch(Unique({"k": 77})) != first


async def test_pause_answers_as_queue_ctl_and_claim_lua_do(engine: FakeEngine) -> None:
    """RedisEngine's signatures; a replayed claim still gets its receipt; a paused claim takes
    nothing and says so; a retry of a job running when the pause came waits in the queue."""
    for name in ("pause", "resume", "paused"):
        assert inspect.signature(getattr(FakeEngine, name)) == inspect.signature(getattr(RedisEngine, name))
    first, second = await engine.dispatch_many([Noop({"n": 1}), Noop({"n": 2})])
    [held] = await claim(engine, "1")
    assert await engine.pause(QUEUE) is True and await engine.pause(QUEUE) is False
    assert [j.id for j in await claim(engine, "1")] == [first], "the receipt comes before the pause"
    (paused,) = await engine.claim_many([(QUEUE, 5, "2")], worker_id="w", lease_ms=1000)
    assert (paused.jobs, paused.paused, paused.more, paused.next_due_ms) == ([], True, False, -1)
    assert await engine.retry(held, 0, {"reason": "error"})
    assert await claim(engine, "3") == [] and len(engine.in_state("ready")) == 2
    assert await engine.resume(QUEUE) is True and await engine.resume(QUEUE) is False
    assert [j.id for j in await claim(engine, "4", limit=2)] == [second, first]
