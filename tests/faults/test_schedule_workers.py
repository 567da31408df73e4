"""Schedules fired by several worker processes: each tick runs once, never early by Redis's clock.

* Exactly once: a 1-second schedule served by several workers, one of them killed with
  kill -9 and restarted every few seconds. Every tick from the first to the last runs, and
  none runs twice (a second run would carry the same job id: the id names the tick). The
  schedule allows overlap, so that a run held by a killed worker (returned by the reaper
  after its lease) does not make later ticks skip: this checks the firing, not the overlap rule.
* Clock skew: workers 120 s fast and 120 s slow (libfaketime, as test_clock_skew.py does)
  never start a run before its tick by Redis's clock, and fire each tick once.

This module is also the job module the workers import (`--import test_schedule_workers`).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import pytest
from support.wait import wait_until
from support.worker_procs import TESTS

from aiojobs_redis import Every, Job, RedisEngine, current_engine
from aiojobs_redis.schedules import tick_of_job_id

HERE = Path(__file__).parent
QUEUE = "sched-procs"
LEASE_S = 2.0


class EverySecond(Job):
    """Writes its tick, Redis's time at its start and the local time to a ledger per process."""

    name = "sched_procs.EverySecond"
    queue = QUEUE
    schedule = Every("+1 second", overlap=True)

    async def handle(self) -> None:
        engine = current_engine()
        assert isinstance(engine, RedisEngine)
        seconds, micros = await engine.redis.time()
        now = int(seconds) * 1000 + int(micros) // 1000
        line = f"{self.id} {os.getpid()} {now} {round(time.time() * 1000)}\n"
        with open(Path(os.environ["SCHED_LEDGER"]) / f"{os.getpid()}.log", "a") as f:
            f.write(line)


@dataclass(frozen=True)
class Run:
    job_id: str
    tick: int
    pid: int
    redis_ms: int
    local_ms: int


def read_runs(ledger: Path) -> list[Run]:
    runs = []
    for path in ledger.glob("*.log"):
        for line in path.read_text().splitlines():
            job_id, pid, now, local = line.split()
            tick = tick_of_job_id(job_id)
            assert tick is not None, line
            runs.append(Run(job_id, tick, int(pid), int(now), int(local)))
    return sorted(runs, key=lambda r: r.tick)


class SchedWorkers:
    """`aiojobs-redis work --import test_schedule_workers` processes, optionally under faketime."""

    def __init__(self, url: str, prefix: str, tmp: Path) -> None:
        self.ledger = tmp / "ledger"
        self.ledger.mkdir()
        path = os.pathsep.join(p for p in (str(TESTS), os.environ.get("PYTHONPATH", "")) if p)
        self.env = dict(os.environ, REDIS_URL=url, REDIS_JOB_PREFIX=prefix, PYTHONPATH=path)
        self.env["SCHED_LEDGER"] = str(self.ledger)
        self.env.pop("JOB_ENGINE", None)
        self.tmp = tmp
        self.procs: list[tuple[subprocess.Popen[bytes], Path]] = []

    def start(self, skew: str | None = None) -> subprocess.Popen[bytes]:
        env = dict(self.env)
        if skew is not None:
            from test_clock_skew import libfaketime

            preload = " ".join(p for p in (libfaketime(), os.environ.get("LD_PRELOAD", "")) if p)
            env.update(LD_PRELOAD=preload, FAKETIME=skew)
        path = self.tmp / f"worker-{len(self.procs)}.log"
        argv = ["-m", "aiojobs_redis", "work", "--import", "test_schedule_workers", "--queue", QUEUE]
        argv += ["--lease", str(LEASE_S), "--reap-interval", "0.5"]
        with open(path, "wb") as log:
            proc = subprocess.Popen(
                [sys.executable, *argv], cwd=HERE, env=env, stdout=log, stderr=subprocess.STDOUT
            )
        self.procs.append((proc, path))
        return proc

    def wait_serving(self, proc: subprocess.Popen[bytes]) -> None:
        path = next(p for q, p in self.procs if q is proc)
        wait_until(lambda: b"fires 1 schedule" in path.read_bytes(), 30, "a worker to start its scheduler")

    def logs(self) -> str:
        return "".join(path.read_text(errors="replace") for _, path in self.procs)

    def stop_all(self) -> None:
        for proc, _ in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)


pytestmark = pytest.mark.anyio


@pytest.fixture
def workers(redis_url: str, prefix: str, tmp_path: Path) -> Iterator[SchedWorkers]:
    procs = SchedWorkers(redis_url, prefix, tmp_path)
    try:
        yield procs
    finally:
        procs.stop_all()


def assert_each_tick_once(runs: list[Run], logs: str) -> None:
    counts = Counter(r.tick for r in runs)
    twice = sorted(t for t, n in counts.items() if n > 1)
    assert not twice, f"ticks run more than once: {twice}\n{logs[-3000:]}"
    ticks = sorted(counts)
    missing = sorted(set(range(ticks[0], ticks[-1] + 1, 1000)) - set(ticks))
    assert not missing, f"ticks never run: {missing}\n{logs[-3000:]}"
    early = [r for r in runs if r.redis_ms < r.tick]
    assert not early, f"runs started before their tick by Redis's clock: {early}"
    lateness = sorted(r.redis_ms - r.tick for r in runs)
    print(f"{len(runs)} ticks, each run once; start after tick: median {lateness[len(lateness) // 2]} ms")


async def run_with_kills(workers: SchedWorkers, processes: int, seconds: float, every: float) -> list[Run]:
    """Keep `processes` workers up for `seconds`, killing (-9) and restarting one every `every` s."""
    started = [workers.start() for _ in range(processes)]
    for proc in started:
        workers.wait_serving(proc)
    live = list(started)
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        await anyio.sleep(every)
        victim = live.pop(0)
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=10)
        live.append(workers.start())
    for proc in live[-1:]:
        workers.wait_serving(proc)
    # Runs held by a killed worker come back after their lease: let the survivors finish them.
    await anyio.sleep(LEASE_S + 2.5)
    last_tick = max(r.tick for r in read_runs(workers.ledger))
    await anyio.sleep(1.5)  # ... and the last tick then, if it was the one held
    runs = [r for r in read_runs(workers.ledger) if r.tick <= last_tick]
    return runs


@pytest.mark.timeout(180)
async def test_each_tick_runs_once_across_workers_with_kill_9(workers: SchedWorkers) -> None:
    runs = await run_with_kills(workers, processes=3, seconds=8, every=3)
    assert_each_tick_once(runs, workers.logs())
    assert len(runs) >= 8


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_each_tick_runs_once_with_four_workers_and_a_kill_9_every_5_s_for_30_s(
    workers: SchedWorkers,
) -> None:
    runs = await run_with_kills(workers, processes=4, seconds=30, every=5)
    assert_each_tick_once(runs, workers.logs())
    assert len(runs) >= 30


@pytest.mark.slow
@pytest.mark.timeout(180)
async def test_workers_with_skewed_clocks_never_fire_early(workers: SchedWorkers) -> None:
    fast, slow = workers.start("+120s"), workers.start("-120s")
    workers.wait_serving(fast)
    workers.wait_serving(slow)
    await anyio.sleep(6)
    runs = read_runs(workers.ledger)
    assert_each_tick_once(runs, workers.logs())
    assert len(runs) >= 5
    skews = {r.pid: (r.local_ms - r.redis_ms) / 1000 for r in runs}
    assert any(s > 100 for s in skews.values()) or any(s < -100 for s in skews.values()), skews
