"""group max running across worker processes: never two runs of one group at once, and a
killed worker's slot comes back once the reaper takes its job back. Prints its figures."""

from __future__ import annotations

import itertools
import os
import signal
import time
from pathlib import Path

import anyio
import pytest
from support.faultapp import GroupHangsFirstTime, GroupRecord
from support.ledger import read_ledger
from support.wait import wait_until
from support.worker_procs import Workers

from aiojobs_redis import RedisEngine

pytestmark = [pytest.mark.slow, pytest.mark.anyio]

QUEUE = "faults"


def overlaps(spans: list[tuple[float, float]]) -> int:
    """How many runs started before the previous one (by start) ended."""
    spans = sorted(spans)
    return sum(1 for (_, end), (start, _) in itertools.pairwise(spans) if start < end)


async def test_one_run_per_group_at_a_time_across_processes_and_after_a_kill(
    engine: RedisEngine, ledger_dir: Path, workers: Workers
) -> None:
    await engine.set_controls(QUEUE, {"gmaxrun": "1"})
    ledger = str(ledger_dir)
    hanging = await GroupHangsFirstTime.dispatch({"ledger": ledger, "g": "k"})
    behind = await GroupRecord.dispatch({"ledger": ledger, "g": "k"})
    ids = {
        job_id: g
        for g in ("a", "b", "c")
        for job_id in await GroupRecord.dispatch_many([{"ledger": ledger, "g": g, "sleep": 0.1}] * 8)
    }
    args = ("--concurrency", "8", "--lease", "2", "--reap-interval", "0.5")
    first, second = workers.start(*args), workers.start(*args)

    def started(job_id: str) -> list[tuple[int, float]]:
        return [(r.pid, r.at) for r in read_ledger(ledger_dir) if r.job_id == job_id and r.event == "start"]

    wait_until(lambda: started(hanging), 20, "the hanging job to start")
    victim = first if started(hanging)[0][0] == first.pid else second
    time.sleep(1.0)  # its group's other job stays held while the slot is taken
    assert started(behind) == []
    os.kill(victim.pid, signal.SIGKILL)
    killed_at = time.time()
    victim.wait(10)
    wait_until(lambda: len(started(hanging)) == 2 and started(behind), 30, "group k to run again")

    def done() -> bool:
        runs = read_ledger(ledger_dir)
        return sum(1 for r in runs if r.event == "end" and r.job_id in ids) == len(ids)

    wait_until(done, 30, "every job of groups a, b and c")
    with anyio.fail_after(20):
        while (await engine.stats(QUEUE))[0].running:
            await anyio.sleep(0.1)
    runs = read_ledger(ledger_dir)
    spans: dict[str, list[tuple[float, float]]] = {}
    opened: dict[tuple[str, int], float] = {}
    for run in runs:
        if run.event == "start":
            opened[run.job_id, run.pid] = run.at
        elif (run.job_id, run.pid) in opened:
            group = ids.get(run.job_id, "k")
            spans.setdefault(group, []).append((opened.pop((run.job_id, run.pid)), run.at))
    back = min(at for _, at in started(behind)) - killed_at
    print(
        f"\ngmaxrun=1 over 2 processes: overlapping runs per group {[overlaps(spans[g]) for g in 'abc']}; "
        f"the killed worker's group ran again {back:.2f} s after the kill (lease 2 s, reaper 0.5 s)"
    )
    assert all(overlaps(spans[g]) == 0 for g in "abc")
    assert all(len(spans[g]) == 8 for g in "abc")
    assert back < 2 + 0.5 + 5  # the lease, the reaper's interval, and room for a busy machine
    assert await engine.redis.hlen(engine.keys(QUEUE).group_running) == 0
