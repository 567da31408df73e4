"""W2: many claimers race over one queue; every job is claimed once and completed once.

In-process: 200 claimers (asyncio tasks over 8 engines, so 8 connection pools, each claimer
its own worker id) take 20,000 jobs in batches of 1-10 and ack what they claim, 5 rounds.
A tenth of the jobs are delayed, so a promoter races the claimers; a reaper races them too
and must find nothing (leases are long). Checked: 0 duplicate claims of a job, of a
(job, run) or of a (job, attempt); every ack accepted; exactly N completed; nothing left
ready, delayed, running or failed; every record gone.
Size: AIOJOBS_W2_JOBS (default 20,000) jobs x AIOJOBS_W2_ROUNDS (default 5) rounds.

With lapsing leases: the same race on short leases where one claim in 50 stalls past its
lease before acking, so the reaper hands its jobs to other claimers: no (job, run) is
claimed twice, a lapse uses no attempt, and each job has exactly one accepted ack.

With processes: 4 x `python -m aiojobs_redis work --import support.faultapp --queue faults --burst
--concurrency 50` race over 4,000 jobs; the ledger shows every job ran exactly once.
"""

from __future__ import annotations

import os
import random
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import pytest
from redis.asyncio import Redis
from support.engine_calls import claim_from
from support.faultapp import Record
from support.ledger import check, ends, read_ledger, starts
from support.worker_procs import Workers

from aiojobs_redis import Job, RedisEngine, Settings
from aiojobs_redis.records import ClaimedJob

pytestmark = pytest.mark.anyio

QUEUE = "w2"
CLAIMERS = 200
ENGINES = 8
JOBS = int(os.environ.get("AIOJOBS_W2_JOBS", "20000"))
ROUNDS = int(os.environ.get("AIOJOBS_W2_ROUNDS", "5"))
DELAYED_SHARE = 10  # one job in this many is dispatched with a delay
LEASE_MS = 60_000  # no lease lapses during a round: every job must be claimed exactly once


class Claimable(Job):
    name = "w2.Claimable"
    queue = QUEUE

    async def handle(self) -> None:
        return None


@dataclass
class Round:
    total: int
    lease_ms: int = LEASE_MS
    stall_every: int = 0  # 0: never; n: one claim in n waits past its lease before acking
    accepted: Counter[str] = field(default_factory=Counter)
    claims: list[tuple[str, int, int, str, str]] = field(default_factory=list)  # id, runs, attempt, token, by
    acked: set[str] = field(default_factory=set)
    rejected_acks: int = 0
    empty_claims: int = 0
    reaped: int = 0
    promoted: int = 0
    done: anyio.Event = field(default_factory=anyio.Event)

    def record(self, worker: str, jobs: list[ClaimedJob]) -> None:
        self.claims += [(j.id, j.runs, j.attempt, j.token, worker) for j in jobs]


@pytest.fixture
async def engines(redis_url: str, prefix: str) -> AsyncIterator[list[RedisEngine]]:
    settings = Settings(url=redis_url, prefix=prefix)
    opened = [RedisEngine(settings) for _ in range(ENGINES)]
    try:
        for engine in opened:
            await engine.ping()
        yield opened
    finally:
        for engine in opened:
            await engine.aclose()
        client = Redis.from_url(redis_url)
        try:
            async for key in client.scan_iter(match=f"{prefix}*", count=1000):
                await client.delete(key)
        finally:
            await client.aclose()


async def claimer(engine: RedisEngine, worker: str, state: Round, seed: int) -> None:
    rng = random.Random(seed)
    request = 0
    while not state.done.is_set():
        request += 1
        claim = await claim_from(
            engine,
            QUEUE,
            rng.randint(1, 10),
            worker_id=worker,
            request_id=str(request),
            lease_ms=state.lease_ms,
        )
        if not claim.jobs:
            state.empty_claims += 1
            await anyio.sleep(rng.uniform(0.001, 0.01))
            continue
        state.record(worker, claim.jobs)
        if state.stall_every and rng.randrange(state.stall_every) == 0:
            await anyio.sleep(2 * state.lease_ms / 1000)  # the lease lapses; the reaper may take it
        results: dict[str, bool] = {}

        async def ack(job: ClaimedJob) -> None:
            results[job.id] = await engine.ack(job)  # noqa: B023 - awaited before the loop moves on

        async with anyio.create_task_group() as tg:
            for job in claim.jobs:
                tg.start_soon(ack, job)
        for job_id, ok in results.items():
            if ok:
                state.acked.add(job_id)
                state.accepted[job_id] += 1
            else:
                state.rejected_acks += 1
        if len(state.acked) >= state.total:
            state.done.set()


async def housekeeper(engine: RedisEngine, state: Round) -> None:
    """Promote delayed jobs and reap lapsed leases while the claimers race."""
    while not state.done.is_set():
        moved, _ = await engine.promote([QUEUE])
        state.promoted += moved
        reaped = await engine.reap(QUEUE, max_stalls=1000)
        state.reaped += len(reaped.requeued) + len(reaped.failed)
        await anyio.sleep(0.02)


async def leftover_records(engine: RedisEngine, ids: list[str]) -> list[str]:
    """Ids whose key still holds a record (a finished job leaves at most a string marker)."""
    left = []
    for start in range(0, len(ids), 5000):
        chunk = ids[start : start + 5000]
        async with engine.redis.pipeline(transaction=False) as pipe:
            for job_id in chunk:
                pipe.type(engine.keys(QUEUE).job(job_id))
            kinds = await pipe.execute()
        left += [
            job_id for job_id, kind in zip(chunk, kinds, strict=True) if kind not in (b"none", b"string")
        ]
    return left


async def run_round(engines: list[RedisEngine], number: int) -> tuple[Round, float]:
    jobs = [Claimable({"round": number, "n": n}) for n in range(JOBS)]
    for n, job in enumerate(jobs):
        if n % DELAYED_SHARE == 0:
            job.set_delay(0.2)
    ids = await engines[0].dispatch_many(jobs)
    assert len(set(ids)) == JOBS
    state = Round(JOBS)
    started = time.monotonic()
    with anyio.fail_after(120):
        async with anyio.create_task_group() as tg:
            tg.start_soon(housekeeper, engines[-1], state)
            for i in range(CLAIMERS):
                tg.start_soon(
                    claimer, engines[i % ENGINES], f"claimer-{number}-{i}", state, number * 1000 + i
                )
    elapsed = time.monotonic() - started

    by_job = Counter(c[0] for c in state.claims)
    by_run = Counter((c[0], c[1]) for c in state.claims)
    by_attempt = Counter((c[0], c[2]) for c in state.claims)
    duplicates = sum(n - 1 for n in by_job.values())
    claimers = len({c[4] for c in state.claims})
    print(
        f"W2 round {number}: {JOBS} jobs, {CLAIMERS} claimers on {ENGINES} engines, "
        f"{len(state.claims)} claims by {claimers} claimers, duplicate claims {duplicates}, "
        f"duplicate (job, run) {sum(n - 1 for n in by_run.values())}, "
        f"duplicate (job, attempt) {sum(n - 1 for n in by_attempt.values())}, "
        f"completed {len(state.acked)}, rejected acks {state.rejected_acks}, promoted {state.promoted}, "
        f"reaped {state.reaped}, empty claims {state.empty_claims}, {elapsed:.1f} s "
        f"({JOBS / elapsed:,.0f} jobs/s)"
    )
    assert duplicates == 0, [job_id for job_id, n in by_job.items() if n > 1][:10]
    assert max(by_run.values()) == 1 and max(by_attempt.values()) == 1
    assert len({c[3] + c[0] for c in state.claims}) == len(state.claims), "a lease token was issued twice"
    assert all(c[1] == 1 and c[2] == 1 for c in state.claims), "a job was claimed on a later run"
    assert state.rejected_acks == 0
    assert state.acked == set(by_job) == set(ids), "exactly the dispatched jobs completed"
    assert state.reaped == 0, "a live lease was reaped"
    assert state.promoted == len(range(0, JOBS, DELAYED_SHARE)), "every delayed job was promoted once"
    stats = (await engines[0].stats(QUEUE))[0]
    assert (stats.ready, stats.delayed, stats.running, stats.failed) == (0, 0, 0, 0)
    assert await leftover_records(engines[0], ids) == []
    return state, elapsed


async def test_w2_concurrent_claimers_claim_each_job_once(engines: list[RedisEngine]) -> None:
    total_claims = 0
    total_time = 0.0
    for number in range(1, ROUNDS + 1):
        state, elapsed = await run_round(engines, number)
        total_claims += len(state.claims)
        total_time += elapsed
    print(
        f"W2: {ROUNDS} rounds x {JOBS} jobs: {total_claims} claims, 0 duplicate (job, attempt) claims, "
        f"exactly {ROUNDS * JOBS} completed, nothing left running ({total_time:.1f} s of racing)"
    )


@pytest.mark.slow
async def test_w2_four_worker_processes_run_each_job_exactly_once(
    redis_url: str, prefix: str, tmp_path: Path
) -> None:
    ledger_dir = tmp_path / "ledger"
    ledger_dir.mkdir()
    total = 4000
    settings = Settings(url=redis_url, prefix=prefix)
    workers = Workers(redis_url, prefix, tmp_path)
    try:
        async with RedisEngine(settings) as engine:
            jobs = [Record({"ledger": str(ledger_dir), "sleep": 0.01}) for _ in range(total)]
            dispatched = set(await engine.dispatch_many(jobs))
            started = time.monotonic()
            procs = [workers.start("--burst", "--concurrency", "50") for _ in range(4)]
            for proc in procs:
                code, log = workers.finish(proc, timeout=90)
                assert code == 0, log[-3000:]
            elapsed = time.monotonic() - started
            runs = read_ledger(ledger_dir)
            report = check(runs, dispatched)
            started_count, ended_count = starts(runs), ends(runs)
            per_pid = Counter(r.pid for r in runs if r.event == "start")
            print(
                f"\nW2 processes: 4 workers x concurrency 50, {total} jobs in {elapsed:.1f} s: "
                f"{report.summary()}, runs per worker {sorted(per_pid.values(), reverse=True)}"
            )
            assert report.lost == []
            assert report.duplicates == {}
            assert set(started_count) == dispatched and set(started_count.values()) == {1}
            assert set(ended_count) == dispatched and set(ended_count.values()) == {1}
            assert len(per_pid) >= 2, "the workers raced"
            stats = (await engine.stats("faults"))[0]
            assert (stats.ready, stats.delayed, stats.running, stats.failed) == (0, 0, 0, 0)
    finally:
        workers.stop_all()
        client = Redis.from_url(redis_url)
        try:
            async for key in client.scan_iter(match=f"{prefix}*", count=1000):
                await client.delete(key)
        finally:
            await client.aclose()


async def test_w2_lapsed_leases_move_jobs_without_duplicate_runs_or_completions(
    engines: list[RedisEngine],
) -> None:
    total = min(JOBS, 5000)
    ids = await engines[0].dispatch_many([Claimable({"n": n}) for n in range(total)])
    state = Round(total, lease_ms=400, stall_every=50)
    started = time.monotonic()
    with anyio.fail_after(120):
        async with anyio.create_task_group() as tg:
            tg.start_soon(housekeeper, engines[-1], state)
            for i in range(CLAIMERS):
                tg.start_soon(claimer, engines[i % ENGINES], f"lapse-{i}", state, 7_000 + i)
    elapsed = time.monotonic() - started
    by_run = Counter((c[0], c[1]) for c in state.claims)
    reclaimed = sum(1 for c in state.claims if c[1] > 1)
    print(
        f"\nW2 lapsing leases: {total} jobs, lease 0.4 s, one claim in 50 stalls 0.8 s: "
        f"{len(state.claims)} claims, {reclaimed} re-claims after a lapse, {state.reaped} reaped, "
        f"duplicate (job, run) {sum(n - 1 for n in by_run.values())}, rejected late acks "
        f"{state.rejected_acks}, accepted acks {sum(state.accepted.values())} for {len(state.accepted)} "
        f"jobs, {elapsed:.1f} s"
    )
    assert max(by_run.values()) == 1, "one run of a job was claimed twice"
    assert all(c[2] == 1 for c in state.claims), "a lapsed lease used an attempt"
    assert set(state.accepted) == set(ids) and set(state.accepted.values()) == {1}
    assert reclaimed > 0 and state.reaped > 0, "the stalls made leases lapse"
    stats = (await engines[0].stats(QUEUE))[0]
    assert (stats.ready, stats.delayed, stats.running, stats.failed) == (0, 0, 0, 0)
    assert await leftover_records(engines[0], ids) == []
