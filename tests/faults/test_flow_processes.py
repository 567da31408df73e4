"""Workflows with worker processes: a 200-member batch whose workers are killed with -9 twice
mid-batch still counts every member once and calls back exactly once; a chain whose first
step fails for good fails the rest in the same script call. Each test prints its figures."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest
from support.faultapp import BatchMember, BatchReport, FailsForGood, Record
from support.ledger import Run, check, read_ledger
from support.wait import eventually
from support.worker_procs import Workers

from aiojobs_redis import RedisEngine, batch, chain

pytestmark = [pytest.mark.slow, pytest.mark.anyio]

QUEUE = "faults"
MEMBERS = 200
FAILING = {n for n in range(MEMBERS) if n % 10 == 3}  # 20 members fail for good, by payload
# Short leases and a quick reaper: a killed worker's runs come back within a few seconds.
WORKER_ARGS = ("--concurrency", "4", "--lease", "2", "--reap-interval", "0.3", "--grace", "0.2")


def member_ends(runs: list[Run], members: set[str]) -> set[str]:
    return {r.job_id for r in runs if r.job_id in members and r.event in ("end", "failed")}


def open_runs(runs: list[Run], pid: int) -> int:
    """Runs that process `pid` started and has not ended (yet)."""
    started = sum(1 for r in runs if r.pid == pid and r.event == "start")
    return started - sum(1 for r in runs if r.pid == pid and r.event in ("end", "failed"))


async def kill_one_mid_run(
    workers: Workers, ledger_dir: Path, members: set[str], after: int
) -> subprocess.Popen[bytes]:
    """Once `after` members have ended, kill -9 a worker that is running a member, and start
    another in its place. Returns the killed process."""
    await eventually(
        lambda: len(member_ends(read_ledger(ledger_dir), members)) >= after, 120, f"{after} members to end"
    )
    victim: subprocess.Popen[bytes] | None = None

    def busy_worker() -> bool:
        nonlocal victim
        runs = read_ledger(ledger_dir)
        victim = next((p for p in workers.alive() if open_runs(runs, p.pid) > 0), None)
        return victim is not None

    await eventually(busy_worker, 30, "a worker running a member")
    assert victim is not None
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=10)
    workers.start(*WORKER_ARGS)
    return victim


def callbacks_seen(ledger_dir: Path) -> list[dict[str, Any]]:
    return [orjson.loads(p.read_bytes()) for p in sorted(ledger_dir.glob("callback-*.json"))]


async def test_a_batch_counts_each_member_once_and_calls_back_once_through_two_kill_9s(
    engine: RedisEngine, workers: Workers, ledger_dir: Path
) -> None:
    ledger = str(ledger_dir)
    jobs = [
        BatchMember({"ledger": ledger, "n": n, "sleep": 0.4, "fail": n in FAILING}) for n in range(MEMBERS)
    ]
    callback = BatchReport({"ledger": ledger})
    batch_id, ids = await batch(jobs, on_complete=callback).dispatch()
    assert callback.id is not None
    members = set(ids)
    failing_ids = sorted(ids[n] for n in FAILING)
    started = time.monotonic()
    for _ in range(4):
        workers.start(*WORKER_ARGS)

    killed = [
        await kill_one_mid_run(workers, ledger_dir, members, after=40),
        await kill_one_mid_run(workers, ledger_dir, members, after=110),
    ]
    await eventually(lambda: callbacks_seen(ledger_dir), 180, "the callback to run")
    elapsed = time.monotonic() - started
    await anyio.sleep(3)  # past a lease and a few reaps: a second callback run would show
    runs = read_ledger(ledger_dir)
    keys = engine.keys(QUEUE)

    # The figures.
    by_pid = check(runs, members).unfinished_runs_by_pid
    cut_short = {p.pid: by_pid.get(p.pid, 0) for p in killed}
    member_starts = [r for r in runs if r.job_id in members and r.event == "start"]
    reruns = len(member_starts) - MEMBERS
    last_member_end = max(r.at for r in runs if r.job_id in members and r.event in ("end", "failed"))
    callback_start = min(r.at for r in runs if r.job_id == callback.id and r.event == "start")
    print(
        f"\nbatch of {MEMBERS} through two kill -9: done in {elapsed:.1f} s; runs cut short by the "
        f"kills {cut_short}; members run again {reruns}; callback started "
        f"{(callback_start - last_member_end) * 1000:.0f} ms after the last member ended"
    )

    # The kills landed mid-run, and what they cut short ran again.
    assert all(n > 0 for n in cut_short.values()), cut_short
    assert reruns >= sum(cut_short.values())
    # The callback ran exactly once, after every member, and saw each member counted once.
    assert [r.event for r in runs if r.job_id == callback.id] == ["start", "end"]
    [seen] = callbacks_seen(ledger_dir)
    assert (seen["batch_id"], seen["total"], seen["pending"]) == (batch_id, MEMBERS, 0)
    assert (seen["done"], seen["failed"]) == (MEMBERS - len(FAILING), len(FAILING))
    assert sorted(seen["failed_ids"]) == failing_ids
    assert sorted(seen["done_ids"]) == sorted(members - set(failing_ids))
    assert callback_start >= last_member_end
    # Every member ended done (its kept result) or failed (its record, reason permanent).
    for n, job_id in enumerate(ids):
        info = await engine.get_job(QUEUE, job_id)
        if n in FAILING:
            assert info is not None and info.state == "failed", info
            assert info.error is not None and info.error["reason"] == "permanent", info
        else:
            assert info is None or info.state == "done", info
            assert await engine.redis.exists(keys.result(job_id)) == 1, job_id
    assert await engine.redis.zcard(keys.waiting) == 0
    assert await engine.get_job(QUEUE, callback.id) is None, "the callback is done"
    stats = (await engine.stats(QUEUE))[0]
    assert (stats.ready, stats.delayed, stats.running, stats.failed) == (0, 0, 0, len(FAILING))
    result = await engine.batch_result(QUEUE, batch_id)
    assert (result.total, result.pending, result.done, result.failed) == (MEMBERS, 0, 180, 20)


async def test_a_chain_whose_first_step_fails_for_good_fails_the_rest_in_the_same_call(
    engine: RedisEngine, workers: Workers, ledger_dir: Path
) -> None:
    ledger = str(ledger_dir)
    first, *rest = await chain(
        FailsForGood({"ledger": ledger}), Record({"ledger": ledger}), Record({"ledger": ledger})
    ).dispatch()
    keys = engine.keys(QUEUE)
    assert await engine.redis.zcard(keys.waiting) == 2
    workers.start(*WORKER_ARGS)
    await eventually(lambda: engine.redis.zscore(keys.failed, first), 30, "the first step to fail")
    failed_at = [await engine.redis.hget(keys.job(i), "f") for i in (first, *rest)]
    reasons = []
    for job_id in rest:
        info = await engine.get_job(QUEUE, job_id)
        assert info is not None and info.error is not None, info
        reasons.append((info.state, info.error["reason"]))
    waiting = await engine.redis.zcard(keys.waiting)
    failed_set = {j.id for j in await engine.failed_list(QUEUE)}
    print(f"\nchain: the first step and its dependents failed at {failed_at} (ms; one script call)")
    assert failed_at[0] is not None and len(set(failed_at)) == 1, "the dependents failed with the step"
    assert reasons == [("failed", "dependency_failed")] * 2
    assert waiting == 0 and failed_set == {first, *rest}
    await anyio.sleep(1)  # nothing of the chain runs after its failed step
    assert [r.job_id for r in read_ledger(ledger_dir) if r.event == "start"] == [first]
