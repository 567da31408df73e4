"""Abort across processes: a job running in a worker process is cancelled within 2 s and ends
aborted; a worker killed with -9 around an abort leaves the job aborted, never run again."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import anyio
import pytest
from support.faultapp import Record, WaitsToBeAborted
from support.ledger import read_ledger
from support.wait import wait_until
from support.worker_procs import Workers

from aiojobs_redis import RedisEngine

pytestmark = pytest.mark.anyio

QUEUE = "faults"


def events_of(ledger_dir: Path, job_id: str) -> list[str]:
    return [r.event for r in read_ledger(ledger_dir) if r.job_id == job_id]


async def recorded(ledger_dir: Path, job_id: str, event: str) -> None:
    await anyio.to_thread.run_sync(
        lambda: wait_until(lambda: event in events_of(ledger_dir, job_id), 30, f"{job_id}: {event}")
    )


async def assert_aborted(engine: RedisEngine, job_id: str) -> None:
    info = await engine.get_job(QUEUE, job_id)
    assert info is not None and info.state == "failed", info
    assert info.error is not None and info.error["reason"] == "aborted"
    assert info.attempts == 0


async def test_a_job_running_in_another_worker_process_is_cancelled_and_ends_aborted(
    engine: RedisEngine, workers: Workers, ledger_dir: Path
) -> None:
    proc = workers.start("--lease", "30")
    job_id = await WaitsToBeAborted().dispatch({"ledger": str(ledger_dir)})
    await recorded(ledger_dir, job_id, "start")
    asked = time.time()
    assert await engine.abort(job_id, reason="cancelled by the test") is True
    await anyio.to_thread.run_sync(
        lambda: wait_until(
            lambda: "cancelled" in events_of(ledger_dir, job_id), 30, "the handler to be cancelled"
        )
    )
    [cancelled_at] = [r.at for r in read_ledger(ledger_dir) if r.job_id == job_id and r.event == "cancelled"]
    print(f"\nabort: the handler in another process was cancelled {cancelled_at - asked:.2f} s after abort()")
    assert cancelled_at - asked < 2.0
    # The worker carries on: the next job runs there.
    after = await Record().dispatch({"ledger": str(ledger_dir)})
    await anyio.to_thread.run_sync(
        lambda: wait_until(lambda: "end" in events_of(ledger_dir, after), 30, "next job")
    )
    proc.send_signal(signal.SIGTERM)
    code, log = workers.finish(proc)
    assert code == 0, log
    assert events_of(ledger_dir, job_id) == ["start", "cancelled"]
    await assert_aborted(engine, job_id)
    assert f"job {job_id} in {QUEUE}: aborted; cancelling" in log
    assert "1 aborted" in log and "lost" not in log.split("stopped after")[-1]
    assert (await engine.stats(QUEUE))[0].running == 0


@pytest.mark.parametrize("kill_first", [False, True], ids=["abort-then-kill", "kill-then-abort"])
async def test_a_worker_killed_during_an_abort_leaves_the_job_aborted_never_run_again(
    engine: RedisEngine, workers: Workers, ledger_dir: Path, kill_first: bool
) -> None:
    args = ("--lease", "1", "--reap-interval", "0.2")
    victim = workers.start(*args)
    job_id = await WaitsToBeAborted().dispatch({"ledger": str(ledger_dir)})
    await recorded(ledger_dir, job_id, "start")
    if not kill_first:
        assert await engine.abort(job_id) is True
    victim.send_signal(signal.SIGKILL)  # before its next look for aborted runs, most likely
    victim.wait()
    if kill_first:  # the dead worker's lease is still in the running set
        assert await engine.abort(job_id) is True
    workers.start(*args)
    await anyio.sleep(1.5)  # past the dead worker's lease: a reaper would have taken it back
    after = await Record().dispatch({"ledger": str(ledger_dir)})
    await anyio.to_thread.run_sync(
        lambda: wait_until(lambda: "end" in events_of(ledger_dir, after), 30, "next job")
    )
    assert events_of(ledger_dir, job_id).count("start") == 1, "the aborted job never ran again"
    await assert_aborted(engine, job_id)
    stats = (await engine.stats(QUEUE))[0]
    assert (stats.ready, stats.delayed, stats.running) == (0, 0, 0)
