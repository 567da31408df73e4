"""Pause and resume with worker processes: starts held back while running jobs finish, how
soon a resume starts the first job, a worker of two queues with one paused, a busy worker
picking up a resumed queue, and what an idle worker on a paused queue costs Redis.

Each test prints the figures it measured; the assertions leave wide margins (a loaded
2-core machine), the figures are the result.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from redis.asyncio import Redis
from support.ledger import Run, read_ledger
from support.pauseapp import QUEUE_A, QUEUE_B, SleepA, SleepB, start_worker
from support.redis_server import RedisServer
from support.wait import eventually

from aiojobs_redis import RedisEngine, Settings, use_engine
from aiojobs_redis.worker import PAUSED_RECHECK

pytestmark = [pytest.mark.slow, pytest.mark.anyio]

COST_WINDOW = 12.0  # seconds of commandstats per idle worker


class Procs:
    """Worker processes of one test, their logs in its directory; stopped after it."""

    def __init__(self, url: str, prefix: str, log_dir: Path) -> None:
        self.url, self.prefix, self.log_dir = url, prefix, log_dir
        self.procs: list[tuple[subprocess.Popen[bytes], Path]] = []

    async def start(self, *args: str) -> subprocess.Popen[bytes]:
        """A worker process, returned once it serves its queues."""
        log = self.log_dir / f"worker-{len(self.procs)}.log"
        proc = start_worker(self.url, self.prefix, log, *args)
        self.procs.append((proc, log))
        await eventually(
            lambda: " serving " in log.read_text(errors="replace"),
            30,
            "the worker to start",
            give_up=lambda: None if proc.poll() is None else f"it exited: {log.read_text(errors='replace')}",
        )
        return proc

    def stop(self, proc: subprocess.Popen[bytes]) -> int:
        proc.send_signal(signal.SIGTERM)
        return proc.wait(timeout=30)

    def logs(self) -> str:
        return "".join(log.read_text(errors="replace") for _, log in self.procs)

    def stop_all(self) -> None:
        for proc, _ in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)


@pytest.fixture
def procs(redis_url: str, prefix: str, tmp_path: Path) -> Iterator[Procs]:
    started = Procs(redis_url, prefix, tmp_path)
    yield started
    started.stop_all()


def events(ledger_dir: Path, event: str, ids: set[str] | None = None) -> list[Run]:
    return [r for r in read_ledger(ledger_dir) if r.event == event and (ids is None or r.job_id in ids)]


async def test_a_paused_queue_starts_nothing_while_its_running_jobs_finish_and_resume_starts_at_once(
    engine: RedisEngine, procs: Procs, ledger_dir: Path
) -> None:
    ledger = str(ledger_dir)
    worker = await procs.start("--queue", QUEUE_A, "--concurrency", "20")
    long_ids = set(await SleepA.dispatch_many([{"ledger": ledger, "sleep": 1.5} for _ in range(10)]))
    await eventually(lambda: len(events(ledger_dir, "start")) == 10, 20, "the 10 long jobs to start")

    paused_at = time.monotonic()
    await engine.pause(QUEUE_A)
    waiting = set(await SleepA.dispatch_many([{"ledger": ledger} for _ in range(100)]))
    await eventually(lambda: len(events(ledger_dir, "end")) == 10, 20, "the running jobs to finish")
    await anyio.sleep(max(0.0, paused_at + 2.0 - time.monotonic()))  # 2 s paused at least
    assert {r.job_id for r in events(ledger_dir, "end")} == long_ids, "the running jobs finished"
    assert not events(ledger_dir, "start", waiting), "no job of the paused queue started in 2 s"
    [stats] = await engine.stats(QUEUE_A)
    assert (stats.ready, stats.running, stats.paused) == (100, 0, True)

    resumed_at = time.time()
    await engine.resume(QUEUE_A)
    await eventually(lambda: len(events(ledger_dir, "end", waiting)) == 100, 30, "the 100 jobs to run")
    first = min(r.at for r in events(ledger_dir, "start", waiting)) - resumed_at
    print(
        f"\npause: 10 running jobs finished, 0 of 100 started in 2 s; "
        f"resume -> first start {first * 1000:.1f} ms"
    )
    assert first < 1.0, "an idle worker is woken by the resume"
    assert procs.stop(worker) == 0
    assert "Traceback" not in procs.logs()


async def test_a_worker_of_two_queues_drains_the_other_while_one_is_paused(
    engine: RedisEngine, procs: Procs, ledger_dir: Path
) -> None:
    ledger = str(ledger_dir)
    # A first (strict order), at the default concurrency and claim size: a round asks A for
    # as many jobs as it holds.
    await procs.start("--queue", QUEUE_A, "--queue", QUEUE_B)

    async def drain_b() -> float:
        started = time.monotonic()
        ids = set(await SleepB.dispatch_many([{"ledger": ledger} for _ in range(500)]))
        await eventually(lambda: len(events(ledger_dir, "end", ids)) == 500, 30, "B to drain")
        return time.monotonic() - started

    alone = await drain_b()
    await engine.pause(QUEUE_A)
    waiting = set(await SleepA.dispatch_many([{"ledger": ledger} for _ in range(100)]))
    beside_paused = await drain_b()
    print(
        f"\npause: 500 jobs of B drained in {alone:.2f} s with A empty, "
        f"{beside_paused:.2f} s with A paused (100 jobs)"
    )
    assert not events(ledger_dir, "start", waiting)
    assert (await engine.stats(QUEUE_A))[0].ready == 100
    assert beside_paused < 3 * alone + 2.0, "B is served at about its usual pace"


async def test_a_busy_worker_picks_up_a_resumed_queue_within_the_recheck(
    engine: RedisEngine, procs: Procs, ledger_dir: Path
) -> None:
    ledger = str(ledger_dir)
    await engine.pause(QUEUE_A)
    [held] = await SleepA.dispatch_many([{"ledger": ledger}])
    busy = set(await SleepB.dispatch_many([{"ledger": ledger, "sleep": 0.02} for _ in range(1500)]))
    await procs.start("--queue", QUEUE_A, "--queue", QUEUE_B, "--concurrency", "4")
    await eventually(lambda: len(events(ledger_dir, "end", busy)) >= 50, 30, "the worker to be busy with B")

    resumed_at = time.time()
    await engine.resume(QUEUE_A)
    await eventually(lambda: events(ledger_dir, "start", {held}), 10, "the resumed queue's job to start")
    picked = events(ledger_dir, "start", {held})[0].at - resumed_at
    b_left = (await engine.stats(QUEUE_B))[0].ready
    print(
        f"\npause: a worker busy with B started the resumed queue's job {picked * 1000:.0f} ms after resume "
        f"(PAUSED_RECHECK {PAUSED_RECHECK:g} s; {b_left} jobs of B still waiting)"
    )
    assert b_left > 0, "the worker was still busy with B"
    assert picked < PAUSED_RECHECK + 2.0


async def command_rate(redis: Redis, seconds: float) -> tuple[float, dict[str, int]]:
    """Commands per second Redis ran in the next `seconds` (INFO commandstats), and by command."""
    await redis.config_resetstat()
    await anyio.sleep(seconds)
    stats = await redis.info("commandstats")
    calls = {name.removeprefix("cmdstat_"): int(row["calls"]) for name, row in stats.items()}
    calls = {name: n for name, n in calls.items() if not name.startswith("config")}  # its RESETSTAT
    return sum(calls.values()) / seconds, calls


async def test_an_idle_worker_on_a_paused_queue_costs_redis_no_more_than_an_idle_one(
    tmp_path: Path, ledger_dir: Path
) -> None:
    with RedisServer(tmp_path / "redis", aof=False) as server:
        procs = Procs(server.url, "cost:", tmp_path)
        try:
            async with RedisEngine(Settings(url=server.url, prefix="cost:")) as engine:
                worker = await procs.start("--queue", QUEUE_A)
                await anyio.sleep(2)  # past its first rounds
                idle, idle_calls = await command_rate(engine.redis, COST_WINDOW)
                assert procs.stop(worker) == 0

                with use_engine(engine):
                    await SleepA.dispatch_many([{"ledger": str(ledger_dir)} for _ in range(100)])
                await engine.pause(QUEUE_A)
                await procs.start("--queue", QUEUE_A)
                await anyio.sleep(2)
                paused, paused_calls = await command_rate(engine.redis, COST_WINDOW)
                assert (await engine.stats(QUEUE_A))[0].ready == 100
        finally:
            procs.stop_all()
    print(
        f"\npause: idle worker {idle:.2f} commands/s {sorted(idle_calls.items())}; "
        f"idle worker on a paused queue of 100 jobs {paused:.2f} commands/s {sorted(paused_calls.items())}"
    )
    assert not events(ledger_dir, "start")
    assert paused <= idle * 1.5 + 0.5, "no busy loop on a paused queue"
