"""Queue-wide limits across worker processes (declared in support/limitsapp.py).

* Rate: 50/second with a burst of 5, four workers of concurrency 50, 1,500 queued jobs, 20 s:
  in every sliding 1-s window of start times at most 55 starts, on average at least 45/s;
  every job runs once, on its first attempt (limiting uses none).
* max_running=3 across four workers: never more than 3 runs overlap; a worker killed with -9
  while holding jobs holds their slots until the reaper takes them back (lease + reap
  interval), and then every job finishes.
* Replay: every claim's reply dropped once (the fault proxy): the replayed claims spend no
  allowance twice, so the starts stay within rate * W + burst and the rate is still reached.

Start times are the claim times (field b of the job hash, Redis TIME), ends Redis TIME.
"""

from __future__ import annotations

import bisect
import hashlib
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import anyio
import pytest
from support.ledger import Run, ends, read_ledger, starts
from support.limitsapp import (
    BURST,
    MAX_RUNNING,
    RATE,
    RATE_QUEUE,
    REPLAY_BURST,
    REPLAY_QUEUE,
    REPLAY_RATE,
    RUNNING_QUEUE,
    RateLimitedRecord,
    ReplayLimitedRecord,
    RunningLimitedRecord,
)
from support.proxy import FaultProxy, Rule, evalsha
from support.redis_server import RedisServer
from support.wait import eventually
from support.worker_procs import TESTS, Workers

from aiojobs_redis import RedisEngine, Settings, use_engine
from aiojobs_redis.scripts import source

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

LEASE, REAP_INTERVAL = 2.0, 0.5
LIMITED = ("--import", "support.limitsapp")


def start_times(runs: list[Run]) -> list[float]:
    return sorted(r.at for r in runs if r.event == "start")


def max_in_window(times: list[float], width: float) -> int:
    """The most of `times` (sorted) in any half-open window [t, t + width)."""
    return max((bisect.bisect_left(times, t + width) - i for i, t in enumerate(times)), default=0)


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    """The most intervals (start, end) open at one instant."""
    edges = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])  # an end first at a tie
    most = now = 0
    for _, step in edges:
        now += step
        most = max(most, now)
    return most


async def redis_now(engine: RedisEngine) -> float:
    seconds, micros = await engine.redis.time()
    return seconds + micros / 1e6


async def all_ended(ledger_dir: Path, ids: list[str], timeout: float, workers: Workers | None = None) -> None:
    def check() -> bool:
        if workers is not None and not workers.alive():
            raise AssertionError(f"every worker exited:\n{workers.logs()[-3000:]}")
        return set(ids) <= set(ends(read_ledger(ledger_dir)))

    await eventually(check, timeout, f"all {len(ids)} jobs to end")


async def test_starts_stay_within_the_rate_across_four_worker_processes(
    engine: RedisEngine, workers: Workers, ledger_dir: Path
) -> None:
    payload = {"ledger": str(ledger_dir)}
    ids = await RateLimitedRecord.dispatch_many([payload] * 1500)
    for _ in range(4):
        workers.start(*LIMITED, "--queue", RATE_QUEUE, "--concurrency", "50")
    await eventually(lambda: read_ledger(ledger_dir), 30, "the first start")
    first = start_times(read_ledger(ledger_dir))[0]
    while await redis_now(engine) < first + 20:
        await anyio.sleep(0.25)
    assert (await engine.stats(RATE_QUEUE))[0].ready > 0, "the backlog lasted the whole 20 s"
    # The starts before this were limited. Starts are whole ms (claim.lua's clock): the ms of
    # the lift itself may hold starts made after it, so it is left out.
    lifted = math.floor(await redis_now(engine) * 1000) / 1000
    await engine.set_controls(RATE_QUEUE, {"o:rate": "0"})  # lift it: the rest run at once
    await all_ended(ledger_dir, ids, 60, workers)
    await engine.set_controls(RATE_QUEUE, {"o:rate": None})

    runs = read_ledger(ledger_dir)
    limited = [t for t in start_times(runs) if t < lifted]
    widest = max_in_window(limited, 1.0)
    average = (len(limited) - BURST) / (limited[-1] - limited[0])
    pids = {r.pid for r in runs}
    print(
        f"\nrate {RATE}/s burst {BURST}, 4 workers x 50: {len(limited)} starts in "
        f"{limited[-1] - limited[0]:.2f} s while limited; the most in a 1-s window {widest}; "
        f"average {len(limited) / (limited[-1] - limited[0]):.2f}/s ({average:.2f}/s past the burst); "
        f"workers that started jobs: {len(pids)}; all {len(ids)} done"
    )
    assert widest <= RATE + BURST
    assert len(limited) / (limited[-1] - limited[0]) >= 45
    assert max_in_window(limited, 5.0) <= 5 * RATE + BURST
    assert starts(runs) == dict.fromkeys(ids, 1), "each job ran once"
    assert {r.attempt for r in runs} == {1}, "limiting used no attempt"
    stats = (await engine.stats(RATE_QUEUE))[0]
    assert (stats.ready, stats.running, stats.failed) == (0, 0, 0)
    assert len(pids) == 4


async def test_max_running_holds_across_workers_and_a_killed_workers_slots_come_back(
    engine: RedisEngine, workers: Workers, ledger_dir: Path
) -> None:
    args = (*LIMITED, "--queue", RUNNING_QUEUE, "--lease", str(LEASE), "--reap-interval", str(REAP_INTERVAL))
    procs = [workers.start(*args) for _ in range(4)]
    quick = await RunningLimitedRecord.dispatch_many([{"ledger": str(ledger_dir), "sleep": 0.2}] * 45)
    await all_ended(ledger_dir, quick, 60, workers)
    runs = read_ledger(ledger_dir)
    spans = _spans(runs, {})
    phase1 = max_overlap(spans)
    pids1 = {r.pid for r in runs}

    # Three jobs that hang on their first run take every slot; their workers are killed.
    hangs = await RunningLimitedRecord.dispatch_many([{"ledger": str(ledger_dir), "hang": True}] * 3)
    await eventually(
        lambda: set(hangs) <= set(starts(read_ledger(ledger_dir))), 30, "the hanging jobs to start"
    )
    holders = {r.pid for r in read_ledger(ledger_dir) if r.job_id in hangs}
    for proc in procs:
        if proc.pid in holders:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
    killed_at = await redis_now(engine)
    after = await RunningLimitedRecord.dispatch_many([{"ledger": str(ledger_dir), "sleep": 0.05}] * 30)
    await all_ended(ledger_dir, [*hangs, *after], 60, workers)

    runs = read_ledger(ledger_dir)
    back = min(r.at for r in runs if r.event == "start" and r.at > killed_at) - killed_at
    overall = max_overlap(_spans(runs, dict.fromkeys(holders, killed_at)))
    print(
        f"\nmax_running {MAX_RUNNING}, 4 workers: the most overlapping runs {phase1} over {len(quick)} "
        f"jobs of 0.2 s on {len(pids1)} workers; after kill -9 of {len(holders)} worker(s) holding "
        f"the 3 slots, the first start came {back:.2f} s later (lease {LEASE} s + reap interval "
        f"{REAP_INTERVAL} s); the most overlapping over the whole run {overall}; all jobs done"
    )
    assert phase1 == MAX_RUNNING and overall == MAX_RUNNING
    assert len(pids1) >= 2, "the runs were spread over several workers"
    assert 1.0 <= back <= LEASE + REAP_INTERVAL + 1.5  # the dead worker's jobs held their slots till reaped
    stats = (await engine.stats(RUNNING_QUEUE))[0]
    assert (stats.ready, stats.running, stats.failed) == (0, 0, 0)


def _spans(runs: list[Run], killed: dict[int, float]) -> list[tuple[float, float]]:
    """(start, end) of each run; a run of a killed process ends when it was killed.

    A start is its claim's time in whole ms (Redis TIME in claim.lua), so each end is taken
    in whole ms too: a claim that a run's end let through may come in the same ms as that
    end (an end sorts before a start at the same instant), never in an earlier one.
    """
    opened: dict[tuple[str, int], float] = {}
    spans = []
    for run in runs:
        key = (run.job_id, run.pid)
        if run.event == "start":
            opened[key] = run.at
        else:
            spans.append((opened.pop(key), math.floor(run.at * 1000) / 1000))
    for (_, pid), started in opened.items():
        assert pid in killed, f"a run in process {pid} never ended"
        spans.append((started, killed[pid]))
    return spans


# -- replay: claim replies dropped ------------------------------------------------------------


async def test_replayed_claims_spend_no_allowance_twice(
    server: RedisServer, proxy: FaultProxy, ledger_dir: Path, tmp_path: Path
) -> None:
    prefix = "limits-replay:"
    claim_sha = hashlib.sha1(source("claim").encode()).hexdigest()
    async with RedisEngine(Settings(url=server.url, prefix=prefix)) as direct:
        await direct.redis.script_load(source("claim"))  # a dropped reply is one of a call that ran
        with use_engine(direct):
            ids = await ReplayLimitedRecord.dispatch_many([{"ledger": str(ledger_dir)}] * 400)
        proxy.add_rule(Rule("drop_reply", evalsha(claim_sha), every=True, fresh_only=True))
        env = dict(os.environ, REDIS_URL=proxy.url, REDIS_JOB_PREFIX=prefix)
        env.pop("JOB_ENGINE", None)
        procs = []
        for i in range(2):
            with open(tmp_path / f"replay-worker-{i}.log", "wb") as log:
                command = [sys.executable, "-m", "aiojobs_redis", "work", *LIMITED, "--queue", REPLAY_QUEUE]
                procs.append(
                    subprocess.Popen(
                        [*command, "--concurrency", "50"],
                        cwd=TESTS,
                        env=env,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
                )
        try:
            await eventually(lambda: read_ledger(ledger_dir), 30, "the first start")
            first = start_times(read_ledger(ledger_dir))[0]
            while await redis_now(direct) < first + 10:
                await anyio.sleep(0.25)
            lifted = math.floor(await redis_now(direct) * 1000) / 1000  # as above
            await direct.set_controls(REPLAY_QUEUE, {"o:rate": "0"})
            await all_ended(ledger_dir, ids, 60)
        finally:
            for proc in procs:
                proc.kill()
                proc.wait()
    runs = read_ledger(ledger_dir)
    limited = [t for t in start_times(runs) if t < lifted]
    span = limited[-1] - limited[0]
    replays = sum(1 for e in proxy.events("replay") if e.command == "EVALSHA")
    dropped = len(proxy.events("drop_reply"))
    widest = max_in_window(limited, 1.0)
    print(
        f"\nreplay: {dropped} claim replies dropped, {replays} replayed; rate {REPLAY_RATE}/s burst "
        f"{REPLAY_BURST}: {len(limited)} starts in {span:.2f} s ({len(limited) / span:.2f}/s), "
        f"the most in a 1-s window {widest}"
    )
    assert dropped >= 20 and replays >= 20
    assert widest <= REPLAY_RATE + REPLAY_BURST
    assert len(limited) <= REPLAY_RATE * span + REPLAY_BURST + 1
    # A replay that spent the allowance again would leave each dropped claim's jobs unstarted
    # allowance: the rate would fall far short.
    assert len(limited) / span >= 0.85 * REPLAY_RATE
    assert starts(runs) == dict.fromkeys(ids, 1) and {r.attempt for r in runs} == {1}
