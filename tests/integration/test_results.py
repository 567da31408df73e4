"""Results and progress on the real Redis: keep_result, waiting on a job's end, set_progress."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from support.engine_calls import engine_with
from support.faultapp import Record  # noqa: F401 - registered for the worker processes' queue
from support.proxy import FaultProxy, Rule, evalsha
from support.redis_server import RedisServer
from support.resultapp import QUEUE, Briefly, Plain, Refuses, Sum, Unkeepable
from support.wait import eventually
from support.worker_procs import Workers

from aiojobs_redis import JobAborted, JobFailed, JobNotFound, RedisEngine, Settings, Worker, use_engine
from aiojobs_redis.batching import PendingAck
from aiojobs_redis.records import ClaimedJob
from aiojobs_redis.scripts import SCRIPT_NAMES, source

pytestmark = pytest.mark.anyio


@asynccontextmanager
async def running_worker(engine: RedisEngine, **options: Any) -> AsyncIterator[Worker]:
    worker = Worker(engine, [QUEUE], idle_wait=1, telemetry=False, **options)
    async with anyio.create_task_group() as group:
        await group.start(worker.run)
        yield worker
        worker.stop()


@pytest.fixture
def server(tmp_path: Path) -> Any:
    """A private server: its command counts are this test's alone."""
    with RedisServer(tmp_path / "redis", aof=False) as started:
        yield started


@asynccontextmanager
async def private_engine(url: str, **options: Any) -> AsyncIterator[RedisEngine]:
    async with RedisEngine(Settings(url=url, prefix="r:", **options)) as engine:
        with use_engine(engine):
            yield engine


async def command_counts(engine: RedisEngine) -> dict[str, int]:
    stats = await engine.redis.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(row["calls"]) for name, row in stats.items()}


def delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    changed = {name: after[name] - before.get(name, 0) for name in after}
    return {name: n for name, n in changed.items() if n and name != "info"}


# -- across processes ----------------------------------------------------------------------------


async def test_a_result_kept_by_a_worker_process_reaches_a_waiter_in_this_one(
    engine: RedisEngine, workers: Workers
) -> None:
    workers.start("--import", "support.resultapp", "--queue", QUEUE)
    job_id = await Sum.dispatch({"numbers": [1, 2, 3], "sleep": 1.0})
    ref = Sum.ref(job_id)
    await eventually(lambda: ref.progress(), 20, "the job to report progress")
    assert await ref.progress() == {"done": 0}
    value = await ref.result(timeout=30)
    assert value == {"sum": 6}
    # Kept: a later waiter gets it at once, as often as asked.
    assert await Sum.ref(job_id).result(timeout=0) == {"sum": 6}
    assert await engine.redis.pttl(engine.keys(QUEUE).result(job_id)) > 3_500_000

    failing = await Refuses.dispatch({})
    with pytest.raises(JobFailed) as failed:
        await Refuses.ref(failing).result(timeout=30)
    assert (failed.value.reason, failed.value.message) == ("permanent", "no such account")
    assert failed.value.type.endswith("PermanentFailure")

    unkeepable = await Unkeepable.dispatch({})
    with pytest.raises(JobFailed) as bad:
        await Unkeepable.ref(unkeepable).result(timeout=30)
    assert bad.value.reason == "bad_result" and "object" in bad.value.message
    info = await engine.get_job(QUEUE, unkeepable)
    assert info is not None and info.state == "failed"


# -- in this process ---------------------------------------------------------------------------


async def test_not_found_for_an_unknown_id_a_plain_job_and_a_result_past_its_time(
    engine: RedisEngine,
) -> None:
    with pytest.raises(JobNotFound):
        await engine.result(QUEUE, "no-such-job", timeout=5)
    async with running_worker(engine):
        brief = await Briefly.dispatch({})
        assert await Briefly.ref(brief).result(timeout=20) == "soon gone"
        plain = await Plain.dispatch({})
        with pytest.raises(JobNotFound):
            await Plain.ref(plain).result(timeout=20)
    await anyio.sleep(0.4)  # keep_result is 0.3 s
    with pytest.raises(JobNotFound):
        await Briefly.ref(brief).result(timeout=5)


async def test_a_wait_that_times_out_leaves_the_job_untouched_and_barely_talks_to_redis(
    server: RedisServer,
) -> None:
    async with private_engine(server.url) as engine:
        job_id = await Sum.dispatch({"numbers": [1]})
        before = await command_counts(engine)
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await Sum.ref(job_id).result(timeout=2)
        waited = time.monotonic() - started
        sent = delta(before, await command_counts(engine))
        info = await engine.get_job(QUEUE, job_id)
        stats = (await engine.stats(QUEUE))[0]
    total = sum(sent.values())
    print(f"\nresults: a 2 s wait on a queued job sent {total} commands in {waited:.2f} s: {sent}")
    assert 1.9 <= waited < 10
    assert total <= 30, sent
    assert sent.get("xread", 0) <= 3
    assert info is not None and info.state == "ready" and stats.ready == 1


@pytest.mark.deployments  # also on a Cluster and behind Sentinel: see conftest.py
async def test_a_waiter_wakes_when_the_job_ends_not_at_its_next_slice(engine: RedisEngine) -> None:
    job_id = await Sum.dispatch({"numbers": [4, 5], "sleep": 0.5})
    async with running_worker(engine):
        started = time.monotonic()
        assert await Sum.ref(job_id).result(timeout=30) == {"sum": 9}
        waited = time.monotonic() - started
    print(f"\nresults: the waiter had the result {waited:.2f} s after it began (the job slept 0.5 s)")
    entries = await engine.redis.xlen(engine.keys(QUEUE).ended(job_id))
    assert entries == 1


@pytest.mark.deployments
async def test_many_waiters_of_one_job_all_wake(engine: RedisEngine) -> None:
    job_id = await Sum.dispatch({"numbers": [2], "sleep": 0.3})
    got: list[Any] = []

    async def wait() -> None:
        got.append(await Sum.ref(job_id).result(timeout=30))

    async with running_worker(engine), anyio.create_task_group() as group:
        for _ in range(20):
            group.start_soon(wait)
    assert got == [{"sum": 2}] * 20


async def test_a_replayed_ack_keeps_one_result(server: RedisServer) -> None:
    with FaultProxy(server.port) as proxy:
        async with private_engine(proxy.url, socket_timeout=3) as engine:
            for name in SCRIPT_NAMES:
                await engine.redis.script_load(source(name))
            rule = proxy.add_rule(Rule("drop_reply", evalsha(engine.scripts.ack.sha), fresh_only=True))
            job_id = await Sum.dispatch({"numbers": [7, 8]})
            async with running_worker(engine) as worker:
                assert await Sum.ref(job_id).result(timeout=30) == {"sum": 15}
            keys = engine.keys(QUEUE)
            notices = await engine.redis.xlen(keys.ended(job_id))
            kept = await engine.redis.get(keys.result(job_id))
    print(f"\nresults: ack reply dropped {rule.fired} time(s); notices {notices}, result {kept!r}")
    assert rule.fired == 1, "the ack's reply was dropped and the call replayed"
    assert notices == 1 and kept == b'{"sum":15}'
    assert worker.counters.succeeded == 1 and worker.counters.lost == 0


async def test_set_progress_of_a_stale_run_is_refused(engine: RedisEngine) -> None:
    job_id = await Sum.dispatch({"numbers": [1]})
    keys = engine.keys(QUEUE)

    async def claim(worker_id: str, lease_ms: int) -> ClaimedJob:
        [claim] = await engine.claim_many([(QUEUE, 1, "1")], worker_id=worker_id, lease_ms=lease_ms)
        [claimed] = claim.jobs
        return claimed

    stale = await claim("w-a", 50)
    assert await engine.set_progress(stale, b'{"step":1}')
    await anyio.sleep(0.2)  # the lease lapses
    reaped = await engine.reap(QUEUE, max_stalls=3)
    assert reaped.requeued == [job_id]
    fresh = await claim("w-b", 30_000)
    assert await engine.set_progress(fresh, b'{"step":"b1"}')

    refused: list[ClaimedJob] = []

    class Holder:  # what a Worker is to the job it runs
        def __init__(self) -> None:
            self.engine = engine

        def lease_refused(self, claimed: ClaimedJob) -> None:
            refused.append(claimed)

    job = Sum({"numbers": [1]})
    job._lease = (Holder(), stale)
    assert await job.set_progress({"step": 2}) is False
    assert refused == [stale], "the run is told its lease is gone"
    assert await engine.set_progress(stale, b'{"step":3}') is False
    assert await engine.progress(QUEUE, job_id) == {"step": "b1"}
    assert await engine.redis.hget(keys.job(job_id), "t") == fresh.token.encode()


# -- what plain jobs pay -----------------------------------------------------------------------

# The commands Redis ran for the acks of 10 plain jobs (one EVALSHA of ack.lua): as many as
# before results existed (the read of `c` became one HMGET of c, F and u for unique jobs).
PLAIN_ACKS = {"evalsha": 1, "time": 1, "hget": 10, "hmget": 10, "zrem": 10, "del": 10, "set": 10}


async def test_plain_jobs_pay_nothing_on_the_ack_path_and_kept_results_pay_three_commands(
    server: RedisServer,
) -> None:
    async with private_engine(server.url, multiplex=False) as engine:
        await Plain.dispatch_many([{}] * 10)
        await Sum.dispatch_many([{"numbers": [n]} for n in range(10)])
        [claim] = await engine.claim_many([(QUEUE, 20, "1")], worker_id="w", lease_ms=30_000)
        for name in SCRIPT_NAMES:
            await engine.redis.script_load(source(name))
        plain = [job for job in claim.jobs if job.name == b"resultapp.Plain"]
        kept = [job for job in claim.jobs if job.name == b"resultapp.Sum"]
        # One ack call each, as the worker's concurrent acks make (batching.py).
        before = await command_counts(engine)
        await engine._send_acks([PendingAck(queue=QUEUE, job_id=j.id, token=j.token) for j in plain])
        after_plain = await command_counts(engine)
        pending = [
            PendingAck(queue=QUEUE, job_id=j.id, token=j.token, result=b"1", keep_ms=60_000) for j in kept
        ]
        await engine._send_acks(pending)
        after_kept = await command_counts(engine)
    assert all(p.acked for p in pending)
    plain_cost = delta(before, after_plain)
    kept_cost = delta(after_plain, after_kept)
    print(f"\nresults: commands for 10 plain acks {plain_cost}; for 10 acks keeping a result {kept_cost}")
    assert plain_cost == {k: v for k, v in PLAIN_ACKS.items() if v}
    extra = {k: kept_cost.get(k, 0) - PLAIN_ACKS.get(k, 0) for k in kept_cost}
    assert {k: v for k, v in extra.items() if v} == {"set": 10, "xadd": 10, "pexpire": 10}


# -- ends that send no notice: seen at the waiter's next look -------------------------------------


async def test_a_waiter_sees_an_abort_and_a_reaped_stall_within_a_slice(engine: RedisEngine) -> None:
    aborted_id = await Sum.dispatch({"numbers": [1]})
    stalled_id = await Sum.dispatch({"numbers": [2]})
    [claim] = await engine.claim_many([(QUEUE, 2, "1")], worker_id="w", lease_ms=100)
    assert len(claim.jobs) == 2
    keys = engine.keys(QUEUE)
    caught: dict[str, BaseException] = {}

    async def wait(job_id: str) -> None:
        try:
            await Sum.ref(job_id).result(timeout=30)
        except Exception as exc:
            caught[job_id] = exc

    started = time.monotonic()
    async with anyio.create_task_group() as group:
        group.start_soon(wait, aborted_id)
        group.start_soon(wait, stalled_id)
        await anyio.sleep(0.3)
        # As an abort leaves a running job: final, state "aborted", with its reason.
        await engine.redis.zrem(keys.running, aborted_id)
        await engine.redis.hset(keys.job(aborted_id), mapping={"s": "aborted", "X": "user cancelled"})
        await engine.redis.hdel(keys.job(aborted_id), "t")
        reaped = await engine.reap(QUEUE, max_stalls=0)  # its lease lapsed: failed as stalled
        assert reaped.failed == [stalled_id]
    waited = time.monotonic() - started
    print(f"\nresults: an abort and a stall, neither notified, seen after {waited:.2f} s")
    aborted, stalled = caught[aborted_id], caught[stalled_id]
    assert isinstance(aborted, JobAborted) and aborted.reason == "user cancelled"
    assert isinstance(stalled, JobFailed) and stalled.reason == "stalled"
    assert waited < 10


async def test_more_waiters_than_connections_take_turns_and_all_get_their_result(settings: Settings) -> None:
    async with engine_with(settings, max_connections=2) as engine:
        ids = await Sum.dispatch_many([{"numbers": [n], "sleep": 0.3} for n in range(8)])
        got: dict[str, Any] = {}

        async def wait(job_id: str) -> None:
            got[job_id] = await Sum.ref(job_id).result(timeout=60)

        started = time.monotonic()
        async with running_worker(engine), anyio.create_task_group() as group:
            for job_id in ids:
                group.start_soon(wait, job_id)
        waited = time.monotonic() - started
    print(f"\nresults: 8 waiters on 2 connections had their results after {waited:.2f} s")
    assert got == {job_id: {"sum": n} for n, job_id in enumerate(ids)}
