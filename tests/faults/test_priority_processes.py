"""Priority levels with worker processes: a job handed back by a worker that stops (SIGTERM,
its run cancelled after the grace: released) or that dies (kill -9: its lease lapses and it
is reaped) keeps its level and goes back to the head of that level's list, before the jobs
of its level dispatched after it and before every lower level. Each test prints the order."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import anyio
import pytest
from support.faultapp import HangsFirstTime, Record
from support.ledger import read_ledger, starts
from support.wait import wait_until
from support.worker_procs import Workers

from aiojobs_redis import RedisEngine

pytestmark = [pytest.mark.slow, pytest.mark.anyio]

QUEUE = "faults"


async def hold_a_level_5_job(
    engine: RedisEngine, ledger_dir: Path, workers: Workers
) -> tuple[str, list[str], subprocess.Popen[bytes]]:
    """A worker process running a priority-5 job that hangs; then, with the queue paused,
    two more jobs at level 5 and two at level 0 wait. Returns the held id, the waiting ids
    (in the order they should run) and the worker process."""
    ledger = str(ledger_dir)
    held = await HangsFirstTime().dispatch({"ledger": ledger}, priority=5)
    proc = workers.start("--concurrency", "1", "--lease", "1", "--reap-interval", "0.2", "--grace", "0.2")
    await anyio.to_thread.run_sync(
        lambda: wait_until(lambda: starts(read_ledger(ledger_dir))[held] == 1, 15, "the held job to start")
    )
    await engine.pause(QUEUE)
    plain = await Record.dispatch_many([{"ledger": ledger, "n": n} for n in range(2)])
    urgent = await Record.dispatch_many([{"ledger": ledger, "n": n} for n in range(2)], priority=5)
    return held, [*urgent, *plain], proc


async def run_the_rest(engine: RedisEngine, ledger_dir: Path, workers: Workers, expected: list[str]) -> None:
    """Resume the queue and run what waits with one worker: the ledger's next starts."""
    before = len([r for r in read_ledger(ledger_dir) if r.event == "start"])
    await engine.resume(QUEUE)
    workers.start("--concurrency", "1")
    await anyio.to_thread.run_sync(
        lambda: wait_until(
            lambda: len([r for r in read_ledger(ledger_dir) if r.event == "end"]) == len(expected),
            20,
            "the jobs to run",
        )
    )
    order = [r.job_id for r in read_ledger(ledger_dir) if r.event == "start"][before:]
    print(f"\nran in order: {order}")
    assert order == expected


async def test_a_job_released_at_shutdown_keeps_its_level_at_its_head(
    engine: RedisEngine, ledger_dir: Path, workers: Workers
) -> None:
    held, waiting, proc = await hold_a_level_5_job(engine, ledger_dir, workers)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=15) == 0
    assert "handed back" in workers.logs()
    page = await engine.ready_jobs(QUEUE)
    assert [(j.id, j.priority) for j in page.jobs] == [
        (held, 5),
        *((i, 5) for i in waiting[:2]),
        *((i, 0) for i in waiting[2:]),
    ]
    await run_the_rest(engine, ledger_dir, workers, [held, *waiting])


async def test_a_job_reaped_after_kill_9_keeps_its_level_at_its_head(
    engine: RedisEngine, ledger_dir: Path, workers: Workers
) -> None:
    held, waiting, proc = await hold_a_level_5_job(engine, ledger_dir, workers)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=15)
    with anyio.fail_after(15):  # its lease (1 s, Redis's clock) lapses; then the reap
        while held not in (await engine.reap(QUEUE, max_stalls=3)).requeued:
            await anyio.sleep(0.2)
    info = await engine.get_job(QUEUE, held)
    assert info is not None and (info.state, info.priority, info.stalls) == ("ready", 5, 1)
    page = await engine.ready_jobs(QUEUE)
    assert [(j.id, j.priority) for j in page.jobs] == [
        (held, 5),
        *((i, 5) for i in waiting[:2]),
        *((i, 0) for i in waiting[2:]),
    ]
    await run_the_rest(engine, ledger_dir, workers, [held, *waiting])
