"""Pause and resume on the real Redis: what a paused queue still accepts and does, sharded
queues, the stats flag, and a pause that outlives a Redis restart on its AOF.

Worker processes (starts held back, resume latency, a worker of two queues, the cost of an
idle paused worker) are in tests/faults/test_pause_workers.py; the worker's rules on the
FakeEngine in tests/unit/test_pause_on_fake_engine.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import anyio
import pytest
from support.clock import FakeClock
from support.engine_calls import claim_from
from support.redis_server import RedisServer

import aiojobs_redis
from aiojobs_redis import Job, RedisEngine, Settings, ShardedQueue, Worker, use_engine

pytestmark = pytest.mark.anyio

QUEUE = "pause-it"
LEASE_MS = 30_000
ERROR: dict[str, Any] = {"reason": "error", "type": "ValueError", "message": "once"}
SHARDED = ShardedQueue("pause-it-sharded", shards=4)


class Held(Job):
    name = "pause_tests.Held"
    queue = QUEUE
    attempts = 3
    ran: ClassVar[list[Any]] = []

    async def handle(self) -> None:
        Held.ran.append(self.payload["n"])


class HeldSharded(Held):
    name = "pause_tests.HeldSharded"
    queue = SHARDED.name


@pytest.fixture(autouse=True)
def fresh_ledger() -> None:
    Held.ran.clear()


async def run_burst(engine: RedisEngine, queues: list[str]) -> Worker:
    worker = Worker(engine, queues, burst=True, telemetry=False, idle_wait=0.2)
    with anyio.fail_after(30):
        await worker.run()
    return worker


async def test_a_paused_queue_takes_dispatches_and_its_claims_take_nothing(engine: RedisEngine) -> None:
    assert await engine.pause(QUEUE) is True
    assert await engine.pause(QUEUE) is False, "paused already: nothing changed"
    ids = await Held.dispatch_many([{"n": n} for n in range(5)])
    assert len(ids) == 5, "dispatch is accepted while paused"
    claim = await claim_from(engine, QUEUE, 10, worker_id="w1", request_id="1", lease_ms=LEASE_MS)
    assert (claim.jobs, claim.paused) == ([], True)
    [stats] = await engine.stats(QUEUE)
    assert (stats.ready, stats.paused) == (5, True)
    assert (await run_burst(engine, [QUEUE])).counters.claimed == 0
    assert await engine.resume(QUEUE) is True
    assert await engine.resume(QUEUE) is False, "not paused: nothing changed"
    assert (await engine.stats(QUEUE))[0].paused is False
    await run_burst(engine, [QUEUE])
    assert Held.ran == [0, 1, 2, 3, 4], "in order, once resumed"


async def test_a_claim_replayed_after_the_pause_still_gets_what_it_took(engine: RedisEngine) -> None:
    # Its reply was lost on the wire: the worker asks again with the same request id.
    [first] = await Held.dispatch_many([{"n": 1}])
    taken = await claim_from(engine, QUEUE, 1, worker_id="w1", request_id="7", lease_ms=LEASE_MS)
    await engine.pause(QUEUE)
    again = await claim_from(engine, QUEUE, 1, worker_id="w1", request_id="7", lease_ms=LEASE_MS)
    assert [j.id for j in again.jobs] == [j.id for j in taken.jobs] == [first]
    assert again.paused is False, "the receipt is answered before the pause is looked at"


async def test_resume_wakes_an_idle_worker_and_pause_does_not(engine: RedisEngine) -> None:
    wake = engine.keys(QUEUE).wake
    await engine.pause(QUEUE)
    assert await engine.redis.llen(wake) == 0, "a pause wakes nobody"
    await engine.resume(QUEUE)
    assert await engine.redis.llen(wake) == 1, "a resume leaves a wake token"
    assert await engine.wait_for_work([QUEUE], 0.5) is True


async def test_delayed_jobs_are_promoted_while_paused_and_wait(
    clocked_engine: RedisEngine, clock: FakeClock
) -> None:
    engine = clocked_engine
    await engine.pause(QUEUE)
    await Held().set_delay(5).dispatch({"n": 1})
    clock.advance(6)
    assert (await engine.promote([QUEUE]))[0] == 1, "promoted while paused"
    [stats] = await engine.stats(QUEUE)
    assert (stats.ready, stats.delayed, stats.paused) == (1, 0, True)
    claim = await claim_from(engine, QUEUE, 10, worker_id="w1", request_id="1", lease_ms=LEASE_MS)
    assert (claim.jobs, claim.paused) == ([], True), "and it waits"


async def test_a_running_job_s_retry_goes_back_to_the_paused_queue_and_waits(
    clocked_engine: RedisEngine, clock: FakeClock
) -> None:
    engine = clocked_engine
    await Held.dispatch_many([{"n": 1}, {"n": 2}])
    claim = await claim_from(engine, QUEUE, 1, worker_id="w1", request_id="1", lease_ms=LEASE_MS)
    [running] = claim.jobs
    await engine.pause(QUEUE)
    assert await engine.renew(QUEUE, [(running.id, running.token)], LEASE_MS) == [], "its lease holds"
    assert await engine.retry(running, 0, ERROR) is True, "a running job settles as usual while paused"
    [stats] = await engine.stats(QUEUE)
    assert (stats.ready, stats.running) == (2, 0)
    claim = await claim_from(engine, QUEUE, 10, worker_id="w1", request_id="2", lease_ms=LEASE_MS)
    assert (claim.jobs, claim.paused) == ([], True), "the retry waits in the paused queue"
    # A retry with a delay is promoted into the paused queue when due, and waits there too.
    await engine.resume(QUEUE)
    claim = await claim_from(engine, QUEUE, 1, worker_id="w1", request_id="3", lease_ms=LEASE_MS)
    await engine.pause(QUEUE)
    assert await engine.retry(claim.jobs[0], 2_000, ERROR) is True
    clock.advance(3)
    assert (await engine.promote([QUEUE]))[0] == 1
    assert (await engine.stats(QUEUE))[0].ready == 2
    claim = await claim_from(engine, QUEUE, 10, worker_id="w1", request_id="4", lease_ms=LEASE_MS)
    assert (claim.jobs, claim.paused) == ([], True)


async def test_a_sharded_queue_pauses_and_resumes_with_every_shard(engine: RedisEngine) -> None:
    await HeldSharded.dispatch_many([{"n": n} for n in range(8)])
    everything = [SHARDED.name, *SHARDED.names]
    assert await aiojobs_redis.pause(SHARDED.name) is True
    assert await engine.paused(everything) == [True] * 5
    assert [s.paused for s in await engine.stats(SHARDED.name)] == [True] * 5
    for shard in SHARDED.names:
        claim = await claim_from(engine, shard, 10, worker_id="w1", request_id="1", lease_ms=LEASE_MS)
        assert (claim.jobs, claim.paused) == ([], True), shard
    assert (await run_burst(engine, [SHARDED.name])).counters.claimed == 0
    assert await aiojobs_redis.resume(SHARDED.name) is True
    assert await engine.paused(everything) == [False] * 5
    await run_burst(engine, [SHARDED.name])
    assert sorted(Held.ran) == list(range(8))


async def test_shards_this_process_does_not_declare_are_found_in_redis(engine: RedisEngine) -> None:
    # As the command line and the dashboard see a sharded queue: they import no Job class.
    shards = [f"pause-it-undeclared#{n}" for n in range(3)]
    await engine.register_queues(shards)
    assert await engine.pause("pause-it-undeclared") is True
    assert await engine.paused(["pause-it-undeclared", *shards]) == [True] * 4
    assert await engine.pause("pause-it-undeclared#1") is False, "a shard alone, paused already"
    assert await engine.resume("pause-it-undeclared") is True
    assert await engine.paused(shards) == [False] * 3


async def test_a_pause_outlives_a_redis_shutdown_and_restart_on_its_aof(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis", aof=True)
    server.start()
    try:
        settings = Settings(url=server.url, prefix="pause-aof:")
        async with RedisEngine(settings) as engine:
            with use_engine(engine):
                await Held.dispatch_many([{"n": n} for n in range(3)])
                await engine.pause(QUEUE)
            await engine.redis.shutdown()  # SHUTDOWN: writes and syncs the AOF, then exits
        assert server.proc is not None and server.proc.wait(timeout=10) == 0
        assert not server.answers()
        server.start()  # the same port and directory: Redis loads its AOF
        async with RedisEngine(settings) as engine:
            [stats] = await engine.stats(QUEUE)
            assert (stats.ready, stats.paused) == (3, True), "the pause and the jobs came back"
            assert (await run_burst(engine, [QUEUE])).counters.claimed == 0, "a worker claims nothing"
            await engine.resume(QUEUE)
            await run_burst(engine, [QUEUE])
        assert Held.ran == [0, 1, 2]
    finally:
        server.kill()
