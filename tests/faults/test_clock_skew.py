"""N7: workers whose clocks are 120 s fast or slow neither start jobs early nor reclaim live leases.

Worker processes run under libfaketime (LD_PRELOAD with FAKETIME="+120s" / "-120s"), the build
that the `libfaketime` distribution of the dev extra bundles, so no system package is needed. Every time
that matters is judged by Redis TIME: the jobs below read it when they start (through the
worker's own engine) along with their record's due time, and write both, and the skewed
local time, to a ledger file per process.

* Early starts: delayed jobs (1-3 s) dispatched by this process and by a dispatcher running
  120 s slow are run by a fast and a slow worker; every start is at or after the due time
  by Redis's clock, and not late either.
* False reclaims: a slow and a fast worker each run a job three times longer than the lease
  while the other one's reaper runs every 0.2 s: each job runs once, by the worker that
  claimed it, and its lease (by Redis's clock) never lapses.

This module is also the job module the workers import (`--import test_clock_skew`).
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import pytest
from anyio import to_thread
from redis.asyncio import Redis
from support.wait import wait_until
from support.worker_procs import TESTS

from aiojobs_redis import Job, RedisEngine, Settings, current_engine

HERE = Path(__file__).parent
QUEUE = "skew"
SKEW_S = 120
LEASE_S = 2.0


async def redis_ms(client: Redis) -> int:
    seconds, micros = await client.time()
    return int(seconds) * 1000 + int(micros) // 1000


class SkewProbe(Job):
    """Records Redis TIME, its due time and the local (skewed) time at start; then sleeps."""

    name = "skew.Probe"
    queue = QUEUE

    async def handle(self) -> None:
        engine = current_engine()
        assert isinstance(engine, RedisEngine)
        local_ms = round(time.time() * 1000)
        now = await redis_ms(engine.redis)
        info = await engine.get_job(QUEUE, str(self.id))
        due = info.scheduled_ms if info is not None and info.scheduled_ms is not None else -1
        self._write("start", now, due, local_ms)
        await anyio.sleep(float(self.payload.get("sleep", 0)))
        self._write("end", await redis_ms(engine.redis), due, round(time.time() * 1000))

    def _write(self, event: str, now: int, due: int, local_ms: int) -> None:
        line = f"{self.id} {self.attempt} {os.getpid()} {event} {now} {due} {local_ms}\n"
        with open(Path(self.payload["ledger"]) / f"{os.getpid()}.log", "a") as f:
            f.write(line)


def dispatch_from_cli() -> None:
    """Entry point of the skewed dispatcher process: argv count, delay s, ledger dir."""
    count, delay, ledger = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]

    async def main() -> list[str]:
        async with RedisEngine(Settings.from_env()) as engine:
            dispatched = await redis_ms(engine.redis)
            payload = {"ledger": ledger, "dispatched_ms": dispatched, "delay_ms": round(delay * 1000)}
            jobs = [SkewProbe(dict(payload, n=n)).set_delay(delay) for n in range(count)]
            return await engine.dispatch_many(jobs)

    print(json.dumps({"ids": asyncio.run(main()), "local_ms": round(time.time() * 1000)}))


def step_dispatch_from_cli() -> None:
    """Entry point of a dispatcher whose wall clock steps: argv timestamp file, new offset.

    Dispatches a job, steps this process's wall clock (libfaketime re-reads the file; the
    monotonic clock is left alone, as an NTP step leaves it), dispatches another.
    """
    stamp_file, step = Path(sys.argv[1]), sys.argv[2]

    async def main() -> dict[str, object]:
        result: dict[str, object] = {}
        async with RedisEngine(Settings.from_env()) as engine:
            result["first"] = await engine.dispatch(SkewProbe({"n": 1}))
            before = time.time()
            with open(stamp_file, "w") as f:
                f.write(f"{step}\n")
            result["stepped_s"] = round(time.time() - before)
            try:
                result["second"] = await engine.dispatch(SkewProbe({"n": 2}))
            except Exception as exc:
                result["second_error"] = f"{type(exc).__name__}: {exc}"
        return result

    print(json.dumps(asyncio.run(main())))


# -- the test side ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    job_id: str
    attempt: int
    pid: int
    event: str
    redis_ms: int
    due_ms: int
    local_ms: int


def read_events(ledger: Path) -> list[Event]:
    events = []
    for path in ledger.glob("*.log"):
        for line in path.read_text().splitlines():
            job_id, attempt, pid, event, now, due, local = line.split()
            events.append(Event(job_id, int(attempt), int(pid), event, int(now), int(due), int(local)))
    return sorted(events, key=lambda e: e.redis_ms)


def libfaketime() -> str:
    """The libfaketime library bundled by the `libfaketime` distribution, or a failed test saying so."""
    try:
        from libfaketime import get_reload_information
    except ImportError:
        pytest.fail(
            "N7 skews worker clocks with libfaketime: install the dev extra (pip install -e '.[dev]'), "
            "which brings the `libfaketime` distribution and the library it bundles",
            pytrace=False,
        )
    _, additions = get_reload_information()  # the environment its own re-exec would set
    return os.path.join(additions["LD_LIBRARY_PATH"], "libfaketime.so.1")


class SkewedWorkers:
    """`aiojobs-redis work --import test_clock_skew` processes, each under its own faketime."""

    def __init__(self, url: str, prefix: str, log_dir: Path) -> None:
        self.library = libfaketime()
        # This module is the workers' job module; it imports support.wait from the tests directory.
        path = os.pathsep.join(p for p in (str(TESTS), os.environ.get("PYTHONPATH", "")) if p)
        self.env = dict(os.environ, REDIS_URL=url, REDIS_JOB_PREFIX=prefix, PYTHONPATH=path)
        self.env.pop("JOB_ENGINE", None)
        self.log_dir = log_dir
        self.procs: list[tuple[subprocess.Popen[bytes], Path]] = []

    def skewed_env(self, skew: str) -> dict[str, str]:
        """This process's clocks moved by `skew` ("+120s"); the pid stays that of the process."""
        preload = " ".join(p for p in (self.library, os.environ.get("LD_PRELOAD", "")) if p)
        return dict(self.env, LD_PRELOAD=preload, FAKETIME=skew)

    def start(self, skew: str, *args: str) -> subprocess.Popen[bytes]:
        path = self.log_dir / f"worker-{len(self.procs)}{skew}.log"
        argv = ["-m", "aiojobs_redis", "work", "--import", "test_clock_skew", "--queue", QUEUE]
        with open(path, "wb") as log:
            proc = subprocess.Popen(
                [sys.executable, *argv, *args],
                cwd=HERE,
                env=self.skewed_env(skew),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.procs.append((proc, path))
        wait_until(lambda: b"serving" in path.read_bytes(), 20, f"the {skew} worker to start")
        return proc

    def dispatch(self, skew: str, count: int, delay: float, ledger: Path) -> tuple[list[str], int]:
        """Dispatch from a process with a skewed clock; the ids and its local time (ms)."""
        code = "import test_clock_skew; test_clock_skew.dispatch_from_cli()"
        argv = [sys.executable, "-c", code, str(count), str(delay), str(ledger)]
        env = self.skewed_env(skew)
        done = subprocess.run(argv, cwd=HERE, env=env, capture_output=True, timeout=30, check=False)
        assert done.returncode == 0, done.stderr.decode(errors="replace")
        reply = json.loads(done.stdout)
        return list(reply["ids"]), int(reply["local_ms"])

    def logs(self) -> str:
        return "".join(path.read_text(errors="replace") for _, path in self.procs)

    def stop_all(self) -> None:
        for proc, _ in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc, _ in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


pytestmark = [pytest.mark.slow, pytest.mark.anyio]


@pytest.fixture
def ledger(tmp_path: Path) -> Path:
    path = tmp_path / "ledger"
    path.mkdir()
    return path


@pytest.fixture
def workers(redis_url: str, prefix: str, tmp_path: Path) -> Iterator[SkewedWorkers]:
    procs = SkewedWorkers(redis_url, prefix, tmp_path)
    try:
        yield procs
    finally:
        procs.stop_all()


def clock_offsets(events: list[Event], pids: list[int]) -> dict[int, float]:
    """How far each worker's local clock was from Redis's (s), from the jobs it ran."""
    offsets = {}
    for pid in pids:
        mine = [e.local_ms - e.redis_ms for e in events if e.pid == pid]
        offsets[pid] = statistics.median(mine) / 1000 if mine else float("nan")
    return offsets


def assert_skewed(offsets: dict[int, float], skews: dict[int, int]) -> None:
    """Each worker ran jobs and its clock really was off by its skew (libfaketime took effect)."""
    for pid, skew in skews.items():
        assert abs(offsets[pid] - skew) < 5, (
            f"worker {pid}: local clock off by {offsets[pid]:.1f} s, not {skew}"
        )


async def test_n7_skewed_workers_never_start_a_job_before_it_is_due(
    engine: RedisEngine, workers: SkewedWorkers, ledger: Path
) -> None:
    args = ("--concurrency", "5", "--lease", str(LEASE_S), "--reap-interval", "0.2")
    fast = workers.start(f"+{SKEW_S}s", *args)
    slow = workers.start(f"-{SKEW_S}s", *args)
    expected: dict[str, int] = {}  # id -> earliest allowed start (Redis ms): dispatch time + delay
    for delay in (1.0, 2.0, 3.0):
        dispatched = await redis_ms(engine.redis)
        payload = {"ledger": str(ledger), "sleep": 0.2, "dispatched_ms": dispatched}
        jobs = [SkewProbe(dict(payload, n=n)).set_delay(delay) for n in range(20)]
        for job_id in await engine.dispatch_many(jobs):
            expected[job_id] = dispatched + round(delay * 1000)
    before = await redis_ms(engine.redis)
    skewed_ids, dispatcher_local = workers.dispatch(f"-{SKEW_S}s", 20, 3.0, ledger)
    expected.update(dict.fromkeys(skewed_ids, before + 3000))
    dispatcher_offset = (dispatcher_local - await redis_ms(engine.redis)) / 1000

    def all_ended() -> bool:
        return len({e.job_id for e in read_events(ledger) if e.event == "end"}) >= len(expected)

    wait_until(all_ended, 30, "every delayed job to run")
    events = read_events(ledger)
    started = [e for e in events if e.event == "start"]
    early = [e for e in started if e.redis_ms < e.due_ms or e.redis_ms < expected[e.job_id]]
    late_ms = max(e.redis_ms - e.due_ms for e in started)
    per_worker = {pid: sum(1 for e in started if e.pid == pid) for pid in (fast.pid, slow.pid)}
    offsets = clock_offsets(started, [fast.pid, slow.pid])
    print(
        f"\nN7 early starts: {len(started)} starts of {len(expected)} delayed jobs (20 dispatched from a "
        f"process {dispatcher_offset:+.0f} s off) by workers {offsets[fast.pid]:+.1f} s and "
        f"{offsets[slow.pid]:+.1f} s off Redis time: early starts {len(early)}, latest start "
        f"{late_ms} ms after due, runs per worker {sorted(per_worker.values())}"
    )
    assert early == [], early[:5]
    assert abs(dispatcher_offset + SKEW_S) < 5, "the dispatcher's clock was skewed"
    assert_skewed(offsets, {fast.pid: SKEW_S, slow.pid: -SKEW_S})
    assert sorted(e.job_id for e in started) == sorted(expected), "each job ran exactly once"
    # The due time is the dispatch time by Redis's clock plus the delay (a dispatcher process
    # takes a few seconds to start, never 120).
    assert all(0 <= e.due_ms - expected[e.job_id] < 10_000 for e in started), "due = dispatch + delay"
    assert late_ms < 2000, "a skewed worker started a due job late"
    assert "lease lapsed" not in workers.logs()


async def watch_leases(engine: RedisEngine, ids: list[str], stop: anyio.Event) -> dict[str, int]:
    """The least time left on each job's lease, by Redis's clock, while it was running."""
    least: dict[str, int] = {}
    running = engine.keys(QUEUE).running
    while not stop.is_set():
        now = await redis_ms(engine.redis)
        for job_id in ids:
            deadline = await engine.redis.zscore(running, job_id)
            if deadline is not None:
                least[job_id] = min(least.get(job_id, 10**9), int(deadline) - now)
        await anyio.sleep(0.05)
    return least


async def test_n7_skewed_workers_never_reclaim_a_live_lease(
    engine: RedisEngine, workers: SkewedWorkers, ledger: Path
) -> None:
    job_s = 3 * LEASE_S
    args = ("--concurrency", "1", "--lease", str(LEASE_S), "--reap-interval", "0.2")
    slow = workers.start(f"-{SKEW_S}s", *args)
    on_slow = await SkewProbe({"ledger": str(ledger), "sleep": job_s}).dispatch()
    wait_until(lambda: any(e.job_id == on_slow for e in read_events(ledger)), 20, "the slow worker's job")
    fast = workers.start(f"+{SKEW_S}s", *args)
    on_fast = await SkewProbe({"ledger": str(ledger), "sleep": job_s}).dispatch()
    wait_until(lambda: any(e.job_id == on_fast for e in read_events(ledger)), 20, "the fast worker's job")
    stop = anyio.Event()
    least: dict[str, int] = {}

    async def watch() -> None:
        least.update(await watch_leases(engine, [on_slow, on_fast], stop))

    async with anyio.create_task_group() as tg:
        tg.start_soon(watch)
        await to_thread.run_sync(
            wait_until,
            lambda: {e.job_id for e in read_events(ledger) if e.event == "end"} >= {on_slow, on_fast},
            3 * job_s + 10,
            "both long jobs to end",
        )
        stop.set()
    events = read_events(ledger)
    starts = [e for e in events if e.event == "start"]
    offsets = clock_offsets(events, [slow.pid, fast.pid])
    held = {job_id: sorted({e.pid for e in starts if e.job_id == job_id}) for job_id in (on_slow, on_fast)}
    reclaims = sum(1 for e in starts if e.job_id in held) - 2
    print(
        f"\nN7 false reclaims: two {job_s:.0f} s jobs on a {LEASE_S:.0f} s lease, held by workers "
        f"{offsets[slow.pid]:+.1f} s and {offsets[fast.pid]:+.1f} s off Redis time, each reaping every "
        f"0.2 s: reclaims {reclaims}, least lease left (Redis time) "
        f"{min(least.values(), default=-1)} ms"
    )
    assert reclaims == 0, starts
    assert held == {on_slow: [slow.pid], on_fast: [fast.pid]}
    assert_skewed(offsets, {slow.pid: -SKEW_S, fast.pid: SKEW_S})
    assert set(least) == {on_slow, on_fast} and min(least.values()) > 0, least
    assert "lease lapsed" not in workers.logs() and "lease lost" not in workers.logs()
    stats = (await engine.stats(QUEUE))[0]
    assert (stats.ready, stats.running, stats.failed) == (0, 0, 0)


async def test_n7_a_dispatcher_whose_wall_clock_steps_back_keeps_dispatching(
    engine: RedisEngine, workers: SkewedWorkers, tmp_path: Path
) -> None:
    """An NTP step of the dispatcher's clock must not turn dispatches into errors: due times
    and deadlines are Redis's business, and the local clock may only measure intervals."""
    stamp = tmp_path / "faketime"
    stamp.write_text("+0s\n")
    env = dict(
        workers.env,
        LD_PRELOAD=workers.library,
        FAKETIME_TIMESTAMP_FILE=str(stamp),
        FAKETIME_NO_CACHE="1",
        FAKETIME_DONT_FAKE_MONOTONIC="1",
    )
    code = "import test_clock_skew; test_clock_skew.step_dispatch_from_cli()"
    argv = [sys.executable, "-c", code, str(stamp), f"-{SKEW_S}s"]
    done = subprocess.run(argv, cwd=HERE, env=env, capture_output=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    result = json.loads(done.stdout)
    print(f"\nN7 clock step: the dispatcher's wall clock stepped {result['stepped_s']} s: {result}")
    assert result["stepped_s"] == -SKEW_S, "libfaketime stepped the clock"
    assert "second_error" not in result, result.get("second_error")
    stats = (await engine.stats(QUEUE))[0]
    assert stats.ready == 2
