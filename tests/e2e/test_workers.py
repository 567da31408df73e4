"""Worker processes under real signals: racing, kill -9, SIGTERM drain, failures, bad data."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
from redis.asyncio import Redis
from support.faultapp import AlwaysFails, Chain, HangsFirstTime, Record
from support.ledger import ends, read_ledger, starts
from support.wait import wait_until
from support.worker_procs import Workers

from aiojobs_redis import RedisEngine

# Also on a Cluster and behind Sentinel: see conftest.py.
pytestmark = [pytest.mark.slow, pytest.mark.anyio, pytest.mark.deployments]

HERE = Path(__file__).parent
QUEUE = "faults"


async def test_two_workers_racing_never_run_one_attempt_twice(
    engine: RedisEngine, ledger_dir: Path, workers: Workers
) -> None:
    total = 2000
    ids = [await Record().dispatch({"ledger": str(ledger_dir)}) for _ in range(total)]
    procs = [workers.start("--burst", "--concurrency", "50") for _ in range(2)]
    for proc in procs:
        code, err = workers.finish(proc, timeout=60)
        assert code == 0, err
    runs = read_ledger(ledger_dir)
    started = starts(runs)
    assert set(started) == set(ids)
    assert max(started.values()) == 1, "a job ran twice"
    assert sum(ends(runs).values()) == total
    pids = {r.pid for r in runs}
    assert len(pids) == 2, "both workers took part"
    stats = await engine.stats(QUEUE)
    assert (stats[0].ready, stats[0].running, stats[0].failed) == (0, 0, 0)


async def test_kill_9_mid_job_loses_nothing(engine: RedisEngine, ledger_dir: Path, workers: Workers) -> None:
    job_id = await HangsFirstTime().dispatch({"ledger": str(ledger_dir)})
    first = workers.start("--lease", "1", "--reap-interval", "0.2")
    wait_until(lambda: starts(read_ledger(ledger_dir))[job_id] == 1, what="first run")
    # The second worker is up before the kill: the recovery time is then the lease and the
    # reaper's, not also a process start (seconds, on a busy machine).
    second = workers.start("--lease", "1", "--reap-interval", "0.2")
    wait_until(lambda: "serving" in workers.log_of(second), what="the second worker to start")
    killed_at = time.time()
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    info = await engine.get_job(QUEUE, job_id)
    assert info is not None and info.state == "running", "the dead worker's job is still leased"

    wait_until(lambda: ends(read_ledger(ledger_dir))[job_id] == 1, what="the re-run to finish")
    rerun = [r for r in read_ledger(ledger_dir) if r.event == "start"][-1]
    recovery = rerun.at - killed_at
    print(f"kill -9 recovery: job re-ran {recovery:.2f} s after the kill (lease 1 s, reaper 0.2 s)")
    assert recovery < 1 + 0.2 + 2.0
    assert rerun.pid == second.pid
    assert rerun.attempt == 1, "a lapsed lease does not use an attempt"
    second.send_signal(signal.SIGTERM)
    code, err = workers.finish(second)
    assert code == 0, err
    assert await engine.get_job(QUEUE, job_id) is None, "the job finished and its record is gone"
    stats = (await engine.stats(QUEUE))[0]
    assert (stats.ready, stats.running, stats.failed) == (0, 0, 0)


async def test_sigterm_lets_running_jobs_finish_and_claims_nothing_more(
    engine: RedisEngine, ledger_dir: Path, workers: Workers
) -> None:
    running = [await Record().dispatch({"ledger": str(ledger_dir), "sleep": 1.0}) for _ in range(5)]
    waiting = [await Record().dispatch({"ledger": str(ledger_dir)}) for _ in range(20)]
    proc = workers.start("--concurrency", "5", "--grace", "10")
    wait_until(lambda: len(starts(read_ledger(ledger_dir))) == 5, what="five jobs to start")
    signalled_at = time.time()
    proc.send_signal(signal.SIGTERM)
    code, err = workers.finish(proc)
    assert code == 0, err
    runs = read_ledger(ledger_dir)
    assert set(ends(runs)) == set(running), "in-flight jobs finished within the grace period"
    assert not [r for r in runs if r.event == "start" and r.at > signalled_at], "claimed after SIGTERM"
    stats = (await engine.stats(QUEUE))[0]
    assert (stats.ready, stats.running) == (len(waiting), 0)


async def test_sigterm_past_grace_hands_jobs_back_without_using_an_attempt(
    engine: RedisEngine, ledger_dir: Path, workers: Workers
) -> None:
    ids = [await Record().dispatch({"ledger": str(ledger_dir), "sleep": 3600}) for _ in range(3)]
    proc = workers.start("--grace", "0.3")
    wait_until(lambda: len(starts(read_ledger(ledger_dir))) == 3, what="three jobs to start")
    signalled = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    code, err = workers.finish(proc)
    assert code == 0, err
    assert time.monotonic() - signalled < 5
    for job_id in ids:
        info = await engine.get_job(QUEUE, job_id)
        assert info is not None
        assert (info.state, info.attempts, info.stalls) == ("ready", 0, 0)
    stats = (await engine.stats(QUEUE))[0]
    assert (stats.ready, stats.running) == (3, 0)


async def test_always_failing_job_runs_exactly_attempts_times(
    engine: RedisEngine, ledger_dir: Path, workers: Workers
) -> None:
    job_id = await AlwaysFails().dispatch({"ledger": str(ledger_dir)})
    code, err = workers.finish(workers.start("--burst"))
    assert code == 0, err
    runs = [r for r in read_ledger(ledger_dir) if r.event == "start"]
    assert [r.attempt for r in runs] == [1, 2, 3]
    failed = await engine.failed_list(QUEUE)
    assert [j.id for j in failed] == [job_id]
    assert failed[0].attempts == 3 and failed[0].error is not None
    assert failed[0].error["type"] == "builtins.RuntimeError"
    assert "this job always fails" in failed[0].error["message"]
    assert "Traceback" in failed[0].error["traceback"]


async def test_malformed_records_are_moved_aside_and_good_jobs_still_run(
    engine: RedisEngine,
    raw_redis: Redis,
    ledger_dir: Path,
    workers: Workers,
) -> None:
    keys = engine.keys(QUEUE)
    good = [await Record().dispatch({"ledger": str(ledger_dir)}) for _ in range(10)]
    await raw_redis.hset(keys.job("nopayload"), mapping={"n": "faultapp.Record", "m": 1})
    await raw_redis.hset(keys.job("badjson"), mapping={"n": "faultapp.Record", "p": "{nope", "m": 1})
    await raw_redis.hset(keys.job("badname"), mapping={"n": b"\xff\xfe", "p": "{}", "m": 1})
    await raw_redis.set(keys.job("astring"), "not a hash")
    for bad in ("nopayload", "badjson", "badname", "astring", "dangling"):
        await raw_redis.lpush(keys.ready, bad)
    await raw_redis.lpush(keys.ready, b"bad id\n\xff")
    await raw_redis.lpush(keys.ready, b"!unreadable 1 2")  # an inline record without its fields
    code, err = workers.finish(workers.start("--burst"))
    assert code == 0, err
    assert set(ends(read_ledger(ledger_dir))) == set(good)
    failed = {j.id: j for j in await engine.failed_list(QUEUE)}
    reasons = {job_id: (info.error or {}).get("reason") for job_id, info in failed.items()}
    assert reasons.pop("bad id\n\ufffd") == "bad_id"
    assert reasons == {
        "nopayload": "missing_field",
        "badjson": "malformed",
        "badname": "malformed",
        "astring": "wrong_type",
        "dangling": "dangling",
        "unreadable": "bad_record",
    }
    assert await raw_redis.get(f"{keys.base}:bad:astring") == b"not a hash"
    for bad in reasons:
        assert err.count(f"job {bad} ") == 1, f"{bad} is logged exactly once"


async def test_a_handler_can_dispatch_follow_up_jobs(
    engine: RedisEngine, ledger_dir: Path, workers: Workers
) -> None:
    await Chain().dispatch({"ledger": str(ledger_dir)})
    code, err = workers.finish(workers.start("--burst"))
    assert code == 0, err
    assert len(ends(read_ledger(ledger_dir))) == 1, "the follow-up job ran in the same burst"
    assert (await engine.stats(QUEUE))[0].failed == 0
