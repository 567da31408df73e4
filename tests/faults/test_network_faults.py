"""Network faults between the engine and Redis: rows N1 and N8 of the README's fault table.

Every test runs its own redis-server on loopback with the fault proxy (support/proxy.py) in front;
workers are `python -m aiojobs_redis work --import support.faultapp` processes (N1, N8) or
in-process `Worker`s where a process adds nothing. Runs are recorded in per-process ledger
files that no fault touches. Each test prints the figures it measured (see them with -s).

N1: Redis refused, black-holed, paused (CLIENT PAUSE ALL), all its clients killed again and
again (CLIENT KILL TYPE normal) or every connection reset, for 5 s; the 30 s variants run
only with AIOJOBS_LONG_FAULTS=1 (about three more minutes). Also: one renewal answered
late, after the same worker has re-claimed the job.
N8: each script call's first reply is dropped after Redis ran it (so redis-py replays it),
requests are cut midway and replies arrive one byte at a time, with two worker processes;
then one test per replayed transition (dispatch, claim, ack, renew, retry, fail) that
checks it does not double-apply, a claim whose every reply is lost, and a dispatch replay
that reaches Redis late.

The RESP framing the proxy relies on is unit-tested at the end of this file.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.abc import TaskStatus
from redis.asyncio import Redis
from support.engine_calls import claim_from
from support.faultapp import FailsSlowly, Record
from support.ledger import Run, check, ends, read_ledger, starts
from support.proxy import (
    Command,
    FaultProxy,
    ReplyFramer,
    RequestFramer,
    RespError,
    Rule,
    evalsha,
    named,
    parse_reply,
    parse_request,
)
from support.redis_server import RedisServer
from support.wait import eventually
from support.worker_procs import TESTS

from aiojobs_redis import EngineUnavailable, Job, RedisEngine, Settings, Worker, use_engine
from aiojobs_redis.records import ClaimedJob, parse_inline
from aiojobs_redis.scripts import SCRIPT_NAMES, source

pytestmark = pytest.mark.anyio
slow = pytest.mark.slow

QUEUE = "faults"
PREFIX = "netfaults:"
LONG = os.environ.get("AIOJOBS_LONG_FAULTS") == "1"
LEASE = 2.0
WORKER_ARGS = ("--concurrency", "20", "--lease", str(LEASE), "--reap-interval", "0.5")
SCRIPT_BY_SHA = {hashlib.sha1(source(name).encode()).hexdigest().encode(): name for name in SCRIPT_NAMES}


def sha(script: str) -> str:
    return next(digest.decode() for digest, name in SCRIPT_BY_SHA.items() if name == script)


# -- helpers ----------------------------------------------------------------------------------


class WorkerProcess:
    """One `aiojobs-redis work` process serving the fault queue, its output in a log file."""

    def __init__(self, url: str, log_path: Path, *args: str) -> None:
        env = dict(os.environ, REDIS_URL=url, REDIS_JOB_PREFIX=PREFIX)
        env.pop("JOB_ENGINE", None)
        self.log_path = log_path
        with open(log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "aiojobs_redis",
                    "work",
                    "--import",
                    "support.faultapp",
                    "--queue",
                    QUEUE,
                    *args,
                ],
                cwd=TESTS,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def cpu_seconds(self) -> float:
        """User + system CPU time so far, from /proc/<pid>/stat (NaN once the process is gone)."""
        try:
            stat = Path(f"/proc/{self.pid}/stat").read_text()
        except FileNotFoundError:
            return math.nan
        fields = stat.rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def terminate(self, timeout: float = 30) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)


@pytest.fixture
def ledger_dir(tmp_path: Path) -> Path:
    path = tmp_path / "ledger"
    path.mkdir()
    return path


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    started: list[WorkerProcess] = []

    def start(url: str, *args: str) -> WorkerProcess:
        worker = WorkerProcess(url, tmp_path / f"worker-{len(started)}.log", *args)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.kill()


@asynccontextmanager
async def engines(proxied: Settings, server: RedisServer) -> AsyncIterator[tuple[RedisEngine, RedisEngine]]:
    """The engine under test (through the proxy) and one straight to Redis for inspection.

    The scripts are loaded first, so that a dropped reply is the reply of a call Redis ran
    (not a NOSCRIPT error).
    """
    async with RedisEngine(proxied) as engine, RedisEngine(Settings(url=server.url, prefix=PREFIX)) as direct:
        for name in SCRIPT_NAMES:
            await direct.redis.script_load(source(name))
        with use_engine(engine):
            yield engine, direct


def any_exited(workers: Sequence[WorkerProcess]) -> Callable[[], str | None]:
    """For `eventually(give_up=...)`: stop waiting, with its log, once one of `workers` has exited."""

    def exited() -> str | None:
        for worker in workers:
            if not worker.alive():
                code, log = worker.proc.returncode, worker.log()[-4000:]
                return f"worker {worker.pid} exited with code {code}; its log ends:\n{log}"
        return None

    return exited


async def settled(direct: RedisEngine, timeout: float) -> None:
    """Nothing ready, delayed or running in the fault queue."""
    with anyio.fail_after(timeout):
        while True:
            stats = (await direct.stats(QUEUE))[0]
            if stats.ready == stats.delayed == stats.running == 0:
                return
            await anyio.sleep(0.05)


async def queued_ids(direct: RedisEngine) -> list[str]:
    """The ids in the queue list, head first (an inline record stands for its job's id)."""
    entries: list[bytes] = await direct.redis.lrange(direct.keys(QUEUE).ready, 0, -1)  # type: ignore[assignment]
    return [parsed[0] if (parsed := parse_inline(e)) else e.decode() for e in entries]


async def job_records(direct: RedisEngine) -> set[str]:
    """Ids of the job records in Redis: the job hashes (a finished job's "done" marker is a
    string, not a hash) and the inline records of jobs waiting in the queue list."""
    job_prefix = direct.keys(QUEUE).job_prefix
    found = set()
    async for key in direct.redis.scan_iter(match=f"{job_prefix}*", count=1000):
        if await direct.redis.type(key) == b"hash":
            found.add(key.decode()[len(job_prefix) :])
    entries: list[bytes] = await direct.redis.lrange(direct.keys(QUEUE).ready, 0, -1)  # type: ignore[assignment]
    found.update(parsed[0] for e in entries if (parsed := parse_inline(e)))
    return found


def lapsed_in_logs(*workers: WorkerProcess) -> set[str]:
    """Jobs a reaper reported returning to the queue (a reap whose reply was lost goes unlogged)."""
    return {m for w in workers for m in re.findall(rf"job (\S+) in {QUEUE}: lease lapsed", w.log())}


def unexplained_duplicates(runs: list[Run], lease: float = LEASE) -> list[tuple[str, int, float]]:
    """Runs of the same (job, attempt) that a lapsed lease cannot explain: (job, attempt, gap s).

    A lease given at a claim lapses `lease` seconds later at the earliest, so a second run of
    the same attempt that started sooner than that after the first means two live claims.
    """
    by_claim: dict[tuple[str, int], list[float]] = {}
    for run in runs:
        if run.event == "start":
            by_claim.setdefault((run.job_id, run.attempt), []).append(run.at)
    found = []
    for (job_id, attempt), times in by_claim.items():
        for earlier, later in itertools.pairwise(times):
            if later - earlier < lease - 0.05:
                found.append((job_id, attempt, later - earlier))
    return found


def replays_by_script(proxy: FaultProxy) -> Counter[str]:
    return Counter(
        SCRIPT_BY_SHA.get(e.first_arg, "?") for e in proxy.events("replay") if e.command == "EVALSHA"
    )


# -- N1: Redis unreachable ----------------------------------------------------------------------

FAULTS = ("refused", "black_hole", "paused", "clients_killed", "reset")


@dataclass(frozen=True)
class DispatchAttempt:
    job_id: str | None
    error: str | None
    seconds: float


async def apply_fault(fault: str, seconds: float, proxy: FaultProxy, server: RedisServer) -> float:
    """Hold the fault for `seconds`; return the wall-clock time at which it ended."""
    if fault in ("refused", "black_hole", "reset"):
        {"refused": proxy.refuse, "black_hole": proxy.black_hole, "reset": proxy.reset}[fault]()
        await anyio.sleep(seconds)
        proxy.restore()
        return time.time()
    admin = Redis.from_url(server.url)
    try:
        if fault == "paused":
            ends_at = time.time() + seconds
            await admin.client_pause(round(seconds * 1000), all=True)
            await anyio.sleep(max(0.0, ends_at - time.time()))
            return ends_at
        assert fault == "clients_killed"
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            await admin.client_kill_filter(_type="normal", skipme=True)
            await anyio.sleep(0.1)
        return time.time()
    finally:
        await admin.aclose()


async def dispatch_meanwhile(ledger_dir: Path, until: float, attempts: list[DispatchAttempt]) -> None:
    while time.monotonic() < until:
        started = time.monotonic()
        try:
            job_id = await Record().dispatch({"ledger": str(ledger_dir)})
            attempts.append(DispatchAttempt(job_id, None, time.monotonic() - started))
        except Exception as exc:  # any other type than EngineUnavailable fails the test below
            attempts.append(DispatchAttempt(None, type(exc).__name__, time.monotonic() - started))
        await anyio.sleep(0.4)


async def dispatch_when_back(ledger_dir: Path, timeout: float = 10) -> str:
    with anyio.fail_after(timeout):
        while True:
            try:
                return await Record().dispatch({"ledger": str(ledger_dir)})
            except EngineUnavailable:
                await anyio.sleep(0.1)


async def run_outage(
    fault: str,
    seconds: float,
    server: RedisServer,
    proxy: FaultProxy,
    ledger_dir: Path,
    spawn: Callable[..., WorkerProcess],
) -> None:
    settings = Settings(url=proxy.url, prefix=PREFIX, socket_timeout=1, dispatch_timeout=3)
    worker = spawn(proxy.url, *WORKER_ARGS)
    async with engines(settings, server) as (_, direct):
        warm = {await Record().dispatch({"ledger": str(ledger_dir)}) for _ in range(20)}
        await eventually(
            lambda: warm <= set(ends(read_ledger(ledger_dir))),
            20,
            "the warm-up jobs",
            give_up=any_exited([worker]),
        )
        in_flight = {await Record().dispatch({"ledger": str(ledger_dir), "sleep": 1.5}) for _ in range(10)}
        await eventually(
            lambda: in_flight <= set(starts(read_ledger(ledger_dir))),
            10,
            "jobs in flight",
            give_up=any_exited([worker]),
        )

        attempts: list[DispatchAttempt] = []
        cpu_before, started = worker.cpu_seconds(), time.monotonic()
        fault_started, fault_ended = time.time(), 0.0

        async def fault_task() -> None:
            nonlocal fault_ended
            fault_ended = await apply_fault(fault, seconds, proxy, server)

        async with anyio.create_task_group() as group:
            group.start_soon(fault_task)
            group.start_soon(dispatch_meanwhile, ledger_dir, started + seconds, attempts)
            await anyio.sleep(seconds)
            cpu_percent = 100 * (worker.cpu_seconds() - cpu_before) / (time.monotonic() - started)
            alive_during = worker.alive()

        probes = {await dispatch_when_back(ledger_dir) for _ in range(10)}
        await eventually(
            lambda: probes <= set(ends(read_ledger(ledger_dir))),
            20,
            "jobs dispatched after the fault",
            give_up=any_exited([worker]),
        )
        resumed = max(r.at for r in read_ledger(ledger_dir) if r.job_id in probes and r.event == "end")
        resume_seconds = resumed - fault_ended

        acknowledged = warm | in_flight | probes | {a.job_id for a in attempts if a.job_id}
        await eventually(
            lambda: acknowledged <= set(ends(read_ledger(ledger_dir))),
            20,
            "every acknowledged job",
            give_up=any_exited([worker]),
        )
        await settled(direct, 20)
        stats = (await direct.stats(QUEUE))[0]

    exit_code = worker.terminate()
    runs = read_ledger(ledger_dir)
    report = check(runs, acknowledged)
    log = worker.log()
    backoffs = [float(x) for x in re.findall(r"retrying in (\d+(?:\.\d+)?) s", log)]
    lapsed = lapsed_in_logs(worker)
    unexplained = unexplained_duplicates(runs)
    raised = [a for a in attempts if a.error]
    slowest = max((a.seconds for a in attempts), default=0.0)
    first_start = {r.job_id: r.at for r in reversed(runs) if r.event == "start"}
    first_end = {r.job_id: r.at for r in reversed(runs) if r.event == "end"}
    # A run that was going (or whose ack was due) while Redis was away could not keep its lease.
    exposed = {
        job_id
        for job_id, at in first_start.items()
        if at <= fault_ended and first_end.get(job_id, math.inf) >= fault_started - 1.0
    }
    print(
        f"\nN1 {fault} {seconds:g} s: lost={len(report.lost)} "
        f"duplicate_runs={sum(report.duplicates.values())} (reaper logged {len(lapsed)} lapsed leases; "
        f"re-runs sooner than a lease after the first: {len(unexplained)}) | dispatch during the fault: "
        f"{len(attempts) - len(raised)} ok, "
        f"{len(raised)} raised {sorted({a.error or '' for a in raised})}, slowest {slowest:.2f} s "
        f"(timeout {settings.dispatch_timeout:g} s) | worker cpu {cpu_percent:.2f} % | "
        f"backoffs logged {len(backoffs)}, max {max(backoffs, default=0):.2f} s | "
        f"resume {resume_seconds:.2f} s after the fault | failed={stats.failed}"
    )

    assert alive_during and exit_code == 0, log[-3000:]
    assert "Traceback" not in log, log[-3000:]
    assert report.lost == [], "dispatch() returned ids of jobs that never ran"
    assert not unexplained, f"duplicate runs without a lapsed lease: {unexplained}"
    assert set(report.duplicates) <= exposed, "a job ran twice that was not in flight during the fault"
    assert {a.error for a in raised} <= {"EngineUnavailable"}
    assert slowest <= settings.dispatch_timeout + 0.5, "dispatch() outlived its dispatch_timeout"
    if fault != "clients_killed":  # between kills a dispatch may well get through
        assert raised, "dispatch() never reported the outage"
    assert cpu_percent < 5
    assert max(backoffs, default=0) <= 5.0
    assert resume_seconds <= 6.0
    assert stats.failed == 0


@slow
@pytest.mark.parametrize("fault", FAULTS)
async def test_n1_redis_unreachable_for_5_s(
    fault: str,
    server: RedisServer,
    proxy: FaultProxy,
    ledger_dir: Path,
    spawn: Callable[..., WorkerProcess],
) -> None:
    await run_outage(fault, 5.0, server, proxy, ledger_dir, spawn)


@slow
@pytest.mark.skipif(not LONG, reason="30 s outages run with AIOJOBS_LONG_FAULTS=1")
@pytest.mark.timeout(180)
@pytest.mark.parametrize("fault", FAULTS)
async def test_n1_redis_unreachable_for_30_s(
    fault: str,
    server: RedisServer,
    proxy: FaultProxy,
    ledger_dir: Path,
    spawn: Callable[..., WorkerProcess],
) -> None:
    await run_outage(fault, 30.0, server, proxy, ledger_dir, spawn)


@slow
async def test_n1_a_late_renewal_reply_does_not_cancel_the_run_that_reclaimed_the_job(
    server: RedisServer, proxy: FaultProxy, ledger_dir: Path
) -> None:
    """Redis answers one renewal 1.8 s late (lease 1.5 s): the first run's lease lapses, the
    reaper requeues the job and the same worker claims it again. The late reply says the
    first run's lease is gone; the second run holds a live lease and must run to the end:
    two runs, one accepted completion.
    """
    settings = Settings(url=proxy.url, prefix=PREFIX, socket_timeout=5, dispatch_timeout=6)
    crashes: list[Exception] = []

    async def run(worker: Worker, *, task_status: TaskStatus[None]) -> None:
        try:
            await worker.run(task_status=task_status)
        except Exception as exc:  # recorded and checked below
            crashes.append(exc)

    async with engines(settings, server) as (engine, direct):
        proxy.add_rule(Rule("late", evalsha(sha("renew")), hold=1.8))
        job_id = await direct.dispatch(Record({"ledger": str(ledger_dir), "sleep": 2.5}))
        worker = Worker(engine, [QUEUE], lease=1.5, reap_interval=0.1, idle_wait=1)
        async with anyio.create_task_group() as group:
            await group.start(run, worker)
            with anyio.move_on_after(10):
                while not crashes and not ends(read_ledger(ledger_dir))[job_id] >= 2:
                    await anyio.sleep(0.05)
            await anyio.sleep(0.5)
            worker.stop()
        record = await direct.get_job(QUEUE, job_id)
    runs = read_ledger(ledger_dir)
    print(
        f"\nN1 late renewal reply: the job started {starts(runs)[job_id]} times (2 expected); worker "
        f"{'crashed: ' + repr(crashes[0]) if crashes else 'carried on'}; {worker.counters}"
    )
    assert not crashes
    assert len(proxy.events("late")) == 1
    assert starts(runs)[job_id] == 2, "a stale renewal reply cancelled the run holding the lease"
    assert worker.counters.succeeded == 1 and record is None


# -- N8: replies dropped after Redis ran the call, requests cut, replies sliced -------------------


@slow
async def test_n8_dropped_replies_cut_requests_and_sliced_replies_break_no_invariant(
    server: RedisServer,
    proxy: FaultProxy,
    ledger_dir: Path,
    spawn: Callable[..., WorkerProcess],
) -> None:
    proxy.add_rule(Rule("cut", named(), nth=13, every=True))  # every 13th request, of any kind
    proxy.add_rule(Rule("drop_reply", evalsha(), every=True, fresh_only=True))  # each script call, once
    proxy.slice_replies()
    settings = Settings(url=proxy.url, prefix=PREFIX, socket_timeout=1, dispatch_timeout=3)
    acknowledged: set[str] = set()
    unacknowledged_jobs = 0  # jobs in calls that raised: they may or may not have been stored

    async def dispatch_one(payload: dict[str, Any]) -> None:
        nonlocal unacknowledged_jobs
        try:
            acknowledged.add(await Record().dispatch(payload))
        except EngineUnavailable:
            unacknowledged_jobs += 1

    async def dispatch_round(count: int, payload: dict[str, Any]) -> None:
        async with anyio.create_task_group() as group:  # concurrent calls share script calls
            for _ in range(count):
                group.start_soon(dispatch_one, payload)

    plain = {"ledger": str(ledger_dir)}
    async with engines(settings, server) as (engine, direct):
        # 1. No worker yet: every dispatch replayed, the records counted.
        for _ in range(3):
            await dispatch_round(20, plain)
        for _ in range(2):
            jobs = [Record(plain) for _ in range(50)]
            try:
                acknowledged.update(await engine.dispatch_many(jobs, chunk=25))
            except EngineUnavailable:
                unacknowledged_jobs += 50
        records = await job_records(direct)
        queued = await queued_ids(direct)
        assert len(queued) == len(set(queued)), "a replayed dispatch queued a job twice"
        ready = set(queued)
        dispatch_replays = replays_by_script(proxy)["dispatch"]
        assert acknowledged <= records, "an acknowledged dispatch stored nothing"
        assert len(records) <= len(acknowledged) + unacknowledged_jobs, "a replayed dispatch stored twice"
        assert ready == records
        assert dispatch_replays > 0

        # 2. Two workers through the same faults; jobs that outlast a renewal among them.
        workers = [spawn(proxy.url, *WORKER_ARGS) for _ in range(2)]
        await dispatch_round(30, {"ledger": str(ledger_dir), "sleep": 1.5})
        await dispatch_round(30, plain)
        await eventually(
            lambda: acknowledged <= set(ends(read_ledger(ledger_dir))),
            90,
            "every acknowledged job",
            give_up=any_exited(workers),
        )
        await settled(direct, 30)
        stats = (await direct.stats(QUEUE))[0]
        left = await job_records(direct)
    codes = [w.terminate() for w in workers]

    runs = read_ledger(ledger_dir)
    report = check(runs, acknowledged)
    lapsed = lapsed_in_logs(*workers)
    unexplained = unexplained_duplicates(runs)
    unknown = {r.job_id for r in runs} - acknowledged
    replays = replays_by_script(proxy)
    logs = "".join(w.log() for w in workers)
    false_lost = logs.count("lease no longer held, outcome not recorded")
    print(
        f"\nN8 faults: {len(proxy.events('drop_reply'))} replies dropped, {len(proxy.events('cut'))} "
        f"requests cut, replies one byte at a time; script replays {dict(replays)}"
        f"\nN8 phase 1 (no worker): {len(acknowledged & records)} dispatches acknowledged, "
        f"{unacknowledged_jobs} jobs in calls that raised, {len(records)} job records "
        f"(replayed dispatch calls: {dispatch_replays})"
        f"\nN8 overall: acknowledged={len(acknowledged)} lost={len(report.lost)} "
        f"duplicate_runs={sum(report.duplicates.values())} (reaper logged {len(lapsed)} lapsed leases; "
        f"re-runs sooner than a lease after the first: {len(unexplained)}) "
        f"ran_unacknowledged={len(unknown)} stuck_running={stats.running} "
        f"failed={stats.failed} records_left={len(left)} | worker logs: 'lease no longer held' "
        f"{false_lost} times"
    )
    assert codes == [0, 0], logs[-3000:]
    assert "Traceback" not in logs, logs[-3000:]
    assert report.lost == []
    assert not unexplained, f"a claim ran twice without a lapsed lease: {unexplained}"
    assert len(unknown) <= unacknowledged_jobs
    assert (stats.ready, stats.delayed, stats.running, stats.failed) == (0, 0, 0, 0)
    assert left == set(), "a job record outlived its job"
    for script in ("dispatch", "claim", "ack", "renew"):
        assert replays[script] > 0, f"no {script} call was replayed"
    assert proxy.events("cut")


@slow
async def test_n8_replayed_dispatch_stores_once_and_never_again_after_the_job_ran(
    server: RedisServer, proxy: FaultProxy, ledger_dir: Path
) -> None:
    settings = Settings(url=proxy.url, prefix=PREFIX, socket_timeout=3, dispatch_timeout=6)
    async with engines(settings, server) as (engine, direct):
        # Replayed before any worker saw it: one record, queued once.
        proxy.add_rule(Rule("drop_reply", evalsha(sha("dispatch")), fresh_only=True))
        first = await engine.dispatch(Record({"ledger": str(ledger_dir)}))
        assert replays_by_script(proxy)["dispatch"] == 1, "Redis ran the call, then its replay"
        assert await job_records(direct) == {first}
        assert await queued_ids(direct) == [first]

        # Replayed after a worker ran and acknowledged the job: the replay stores nothing.
        proxy.clear_rules()
        proxy.add_rule(Rule("drop_reply", evalsha(sha("dispatch")), fresh_only=True, hold=1.0))
        worker = Worker(direct, [QUEUE], lease=2, reap_interval=0.5, idle_wait=1)
        async with anyio.create_task_group() as group:
            await group.start(worker.run)
            second = await engine.dispatch(Record({"ledger": str(ledger_dir)}))
            await eventually(lambda: ends(read_ledger(ledger_dir))[second] == 1, 5, "the job to run")
            await anyio.sleep(1.5)  # a job stored again by the replay would run meanwhile
            worker.stop()
        replayed_at = [e.at for e in proxy.events("replay")][-1]
        runs = read_ledger(ledger_dir)
        ended_at = next(r.at for r in runs if r.job_id == second and r.event == "end")
        records = await job_records(direct)
    print(
        f"\nN8 dispatch replay: before any claim -> 1 record; after the job ran -> replay came "
        f"{replayed_at - ended_at:.2f} s after the run ended, runs={starts(runs)[second]}, "
        f"records left={len(records)}"
    )
    assert replayed_at > ended_at, "the replay must come after the run for this check to mean anything"
    assert starts(runs)[first] == starts(runs)[second] == 1
    assert records == set()


class UniqueRecord(Job):
    queue = QUEUE
    unique = True
    unique_key = "order"

    async def handle(self) -> None:  # pragma: no cover - never run here
        return None


@slow
async def test_n8_replayed_unique_dispatch_stores_one_job_and_answers_with_its_id(
    server: RedisServer, proxy: FaultProxy
) -> None:
    settings = Settings(url=proxy.url, prefix=PREFIX, socket_timeout=3, dispatch_timeout=6)
    async with engines(settings, server) as (engine, direct):
        proxy.add_rule(Rule("drop_reply", evalsha(sha("dispatch_ex")), fresh_only=True))
        job = UniqueRecord({"order": 1})
        first = await engine.dispatch(job)
        assert replays_by_script(proxy)["dispatch_ex"] == 1, "Redis ran the call, then its replay"
        records, queued = await job_records(direct), await queued_ids(direct)
        lock = await direct.redis.get(f"{direct.keys(QUEUE).base}:u:UniqueRecord:1")
        again = UniqueRecord({"order": 1})
        second = await engine.dispatch(again)
    print(f"\nN8 unique dispatch replay: records={len(records)} queued={len(queued)} lock={lock!r}")
    assert (records, queued, lock) == ({first}, [first], first.encode())
    assert job.duplicate is False, "the replay's answer is the first one's: stored"
    assert (second, again.duplicate) == (first, True)


@slow
async def test_n8_replayed_claim_returns_the_same_jobs_and_counts_one_run(
    server: RedisServer, proxy: FaultProxy
) -> None:
    settings = Settings(url=proxy.url, prefix=PREFIX, socket_timeout=3, dispatch_timeout=6)
    async with engines(settings, server) as (engine, direct):
        ids = set(await direct.dispatch_many([Record({}) for _ in range(3)]))
        proxy.add_rule(Rule("drop_reply", evalsha(sha("claim")), fresh_only=True))
        claim = await claim_from(engine, QUEUE, 5, worker_id="w1", request_id="1", lease_ms=10_000)
        keys = direct.keys(QUEUE)
        runs = [int(await direct.redis.hget(keys.job(i), "k") or 0) for i in ids]
        running = await direct.redis.zcard(keys.running)
        ready = await direct.redis.llen(keys.ready)
    print(f"\nN8 claim replay: {len(claim.jobs)} jobs returned, runs per job {runs}, running={running}")
    assert replays_by_script(proxy)["claim"] == 1
    assert {j.id for j in claim.jobs} == ids
    assert runs == [1, 1, 1], "the replayed claim counted a second run"
    assert (running, ready) == (3, 0)


@slow
async def test_n8_a_claim_whose_every_reply_is_lost_does_not_strand_its_jobs(
    server: RedisServer, proxy: FaultProxy, ledger_dir: Path
) -> None:
    """redis-py sends a claim four times at most; here Redis runs all four and every reply is
    lost. claim.lua hands a replayed request its jobs again, so the worker's next claim can
    pick them up at once, without waiting for their lease to lapse or counting a stall.
    """
    settings = Settings(url=proxy.url, prefix=PREFIX, socket_timeout=1, dispatch_timeout=3)
    async with engines(settings, server) as (engine, direct):
        job_id = await direct.dispatch(Record({"ledger": str(ledger_dir), "sleep": 1.0}))
        dispatched_at = time.time()
        proxy.add_rule(Rule("drop_reply", evalsha(sha("claim")), every=True, limit=4))
        worker = Worker(engine, [QUEUE], lease=2, reap_interval=0.5, idle_wait=1)
        async with anyio.create_task_group() as group:
            await group.start(worker.run)
            await eventually(lambda: starts(read_ledger(ledger_dir))[job_id] == 1, 10, "the job to start")
            info = await direct.get_job(QUEUE, job_id)
            await eventually(lambda: ends(read_ledger(ledger_dir))[job_id] == 1, 5, "the job to end")
            worker.stop()
    started_at = next(r.at for r in read_ledger(ledger_dir) if r.event == "start")
    print(
        f"\nN8 claim with every reply lost: {len(proxy.events('drop_reply'))} replies dropped; the job "
        f"started {started_at - dispatched_at:.2f} s after dispatch (lease 2 s) with "
        f"{info.stalls if info else '?'} stall(s) counted"
    )
    assert len(proxy.events("drop_reply")) == 4
    assert info is not None and info.stalls == 0, "a job that never ran was counted as stalled"
    assert started_at - dispatched_at < 2.0, "the job waited for a lease nobody used to lapse"


async def claim_one(engine: RedisEngine, worker_id: str, lease_ms: int) -> ClaimedJob:
    claim = await claim_from(
        engine, QUEUE, 1, worker_id=worker_id, request_id=str(time.monotonic_ns()), lease_ms=lease_ms
    )
    assert len(claim.jobs) == 1
    return claim.jobs[0]


@slow
async def test_n8_ack_replayed_after_its_lease_lapsed_does_not_end_the_job_another_worker_holds(
    server: RedisServer, proxy: FaultProxy
) -> None:
    settings = Settings(url=proxy.url, prefix=PREFIX, socket_timeout=5, dispatch_timeout=6)
    async with engines(settings, server) as (engine, direct):
        job_id = await direct.dispatch(Record({}))
        held_by_a = await claim_one(engine, "a", lease_ms=300)
        # A's ack is cut midway; its connection stays silent for 1.5 s, then redis-py replays it.
        proxy.add_rule(Rule("cut", evalsha(sha("ack")), fresh_only=True, hold=1.5))
        acked_by_a: list[bool] = []
        async with anyio.create_task_group() as group:

            async def ack_a() -> None:
                acked_by_a.append(await engine.ack(held_by_a))

            group.start_soon(ack_a)
            await anyio.sleep(0.5)  # A's lease has lapsed
            reaped = await direct.reap(QUEUE, max_stalls=3)
            held_by_b = await claim_one(direct, "b", lease_ms=10_000)
        keys = direct.keys(QUEUE)
        token_after = await direct.redis.hget(keys.job(job_id), "t")
        running_after = await direct.redis.zscore(keys.running, job_id)
        acked_by_b = await direct.ack(held_by_b)
        gone = await direct.get_job(QUEUE, job_id) is None
    print(
        f"\nN8 late ack replay: A's ack -> {acked_by_a}, job then held by {token_after!r}, "
        f"B's ack -> {acked_by_b}, record gone after B: {gone}"
    )
    assert reaped.requeued == [job_id]
    assert replays_by_script(proxy)["ack"] == 1, "A's ack reached Redis (as a replay)"
    assert acked_by_a == [False]
    assert token_after == held_by_b.token.encode() and running_after is not None
    assert acked_by_b and gone


@slow
async def test_n8_replayed_renew_extends_once_and_never_a_lease_it_lost(
    server: RedisServer, proxy: FaultProxy
) -> None:
    settings = Settings(url=proxy.url, prefix=PREFIX, socket_timeout=3, dispatch_timeout=6)
    async with engines(settings, server) as (engine, direct):
        job_id = await direct.dispatch(Record({}))
        keys = direct.keys(QUEUE)
        held_by_a = await claim_one(engine, "a", lease_ms=1000)
        proxy.add_rule(Rule("drop_reply", evalsha(sha("renew")), every=True, fresh_only=True))
        lost = await engine.renew(QUEUE, [(job_id, held_by_a.token)], 1000)
        seconds, micros = await direct.redis.time()
        deadline = await direct.redis.zscore(keys.running, job_id)
        assert deadline is not None
        ahead_ms = deadline - (seconds * 1000 + micros // 1000)
        await anyio.sleep(1.1)
        reaped = await direct.reap(QUEUE, max_stalls=3)
        held_by_b = await claim_one(direct, "b", lease_ms=10_000)
        b_deadline = await direct.redis.zscore(keys.running, job_id)
        lost_later = await engine.renew(QUEUE, [(job_id, held_by_a.token)], 60_000)
        b_deadline_after = await direct.redis.zscore(keys.running, job_id)
        token = await direct.redis.hget(keys.job(job_id), "t")
    print(
        f"\nN8 renew replay: lease ends {ahead_ms:.0f} ms ahead after a replayed renew (lease 1000 ms); "
        f"A's renew after B reclaimed -> lost {lost_later}, B's deadline moved "
        f"{(b_deadline_after or 0) - (b_deadline or 0):.0f} ms"
    )
    assert lost == [] and replays_by_script(proxy)["renew"] == 2
    assert 0 < ahead_ms <= 1000, "a replayed renew stacked its lease"
    assert reaped.requeued == [job_id]
    assert lost_later == [job_id]
    assert b_deadline_after == b_deadline and token == held_by_b.token.encode()


@slow
async def test_n8_replayed_retry_and_fail_use_one_attempt_each(
    server: RedisServer, proxy: FaultProxy
) -> None:
    settings = Settings(url=proxy.url, prefix=PREFIX, socket_timeout=3, dispatch_timeout=6)
    error = {"reason": "error", "type": "ValueError", "message": "boom"}
    async with engines(settings, server) as (engine, direct):
        job_id = await direct.dispatch(FailsSlowly({}))
        keys = direct.keys(QUEUE)
        proxy.add_rule(Rule("drop_reply", evalsha(sha("retry"), sha("fail")), every=True, fresh_only=True))
        first = await claim_one(engine, "a", lease_ms=10_000)
        await engine.retry(first, 0, error)
        attempts_after_retry = await direct.redis.hget(keys.job(job_id), "a")
        queued = job_id in await queued_ids(direct)
        second = await claim_one(engine, "a", lease_ms=10_000)
        await engine.fail(second, error)
        attempts_after_fail = await direct.redis.hget(keys.job(job_id), "a")
        info = await direct.get_job(QUEUE, job_id)
        failed = await direct.redis.zcard(keys.failed)
    print(
        f"\nN8 retry/fail replays: attempts after a replayed retry {attempts_after_retry!r}, "
        f"after a replayed fail {attempts_after_fail!r}; failed set {failed}"
    )
    assert replays_by_script(proxy)["retry"] == replays_by_script(proxy)["fail"] == 1
    assert attempts_after_retry == b"1" and queued and second.attempt == 2
    assert attempts_after_fail == b"2" and info is not None and info.state == "failed" and failed == 1


@slow
@pytest.mark.parametrize("transition", ["ack", "retry", "fail"])
async def test_n8_a_replayed_transition_reports_that_it_was_applied(
    transition: str, server: RedisServer, proxy: FaultProxy
) -> None:
    """Redis ran the call; only its reply was lost. The worker must not be told it lost the lease.

    (A False makes the worker log "lease no longer held, outcome not recorded" and count the
    job as lost, although the outcome was recorded.)
    """
    settings = Settings(url=proxy.url, prefix=PREFIX, socket_timeout=3, dispatch_timeout=6)
    error = {"reason": "error", "type": "ValueError", "message": "boom"}
    async with engines(settings, server) as (engine, direct):
        await direct.dispatch(FailsSlowly({}))
        held = await claim_one(engine, "a", lease_ms=10_000)
        proxy.add_rule(Rule("drop_reply", evalsha(sha(transition)), fresh_only=True))
        calls: dict[str, Callable[[], Awaitable[bool]]] = {
            "ack": lambda: engine.ack(held),
            "retry": lambda: engine.retry(held, 0, error),
            "fail": lambda: engine.fail(held, error),
        }
        reported = await calls[transition]()
    print(f"\nN8 replayed {transition}: reported {reported} (the call was applied once)")
    assert replays_by_script(proxy)[transition] == 1
    assert reported is True


@slow
async def test_n8_dispatch_replay_delivered_late_does_not_run_a_finished_job_again(
    server: RedisServer, proxy: FaultProxy, ledger_dir: Path
) -> None:
    """redis-py replays a dispatch on a new connection; that replay can reach Redis long after
    dispatch() gave up (TCP keeps retransmitting what a closed socket had sent). If the job
    ran meanwhile and its "done" marker has expired, the late replay must not store it again.

    The marker lives replay_guard_ms (here 1 s, the smallest dispatch_timeout allows) after
    the job was created; the replay arrives 2.5 s late.
    """
    settings = Settings(
        url=proxy.url, prefix=PREFIX, socket_timeout=0.5, dispatch_timeout=1, replay_guard_ms=1000
    )
    async with engines(settings, server) as (engine, _):
        await engine.dispatch(Record({"ledger": str(ledger_dir)}))  # registers the queue
        worker_engine = RedisEngine(
            Settings(url=server.url, prefix=PREFIX, dispatch_timeout=1, replay_guard_ms=1000)
        )
        async with worker_engine:
            worker = Worker(worker_engine, [QUEUE], lease=2, reap_interval=0.5, idle_wait=1)
            async with anyio.create_task_group() as group:
                await group.start(worker.run)
                # The first call runs and its reply is lost; the replay is delivered 2.5 s late.
                proxy.add_rule(Rule("drop_reply", evalsha(sha("dispatch")), fresh_only=True))
                proxy.add_rule(Rule("late", evalsha(sha("dispatch")), hold=2.5))
                try:
                    job_id: str | None = await engine.dispatch(Record({"ledger": str(ledger_dir)}))
                except EngineUnavailable:
                    job_id = None
                await anyio.sleep(4)
                worker.stop()
        late = proxy.events("late")
        runs = read_ledger(ledger_dir)
    started = Counter(r.job_id for r in runs if r.event == "start")
    print(
        f"\nN8 late dispatch replay: dispatch() -> {'id' if job_id else 'EngineUnavailable'}, "
        f"late deliveries {len(late)}, runs per job {sorted(started.values())}"
    )
    assert len(late) == 1
    assert max(started.values()) == 1, "a dispatch replayed late ran a finished job a second time"


# -- the proxy's RESP framing ---------------------------------------------------------------------


def encode(*parts: bytes) -> bytes:
    return b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)


def test_requests_are_framed_whatever_the_reads() -> None:
    stream = (
        encode(b"evalsha", b"abc", b"1", b"key", b"va\r\nl")
        + encode(b"PING")
        + b"INFO  server\r\n"
        + encode(b"SET", b"k", b"x" * 100_000)
        + encode()
    )
    expected = [("EVALSHA", (b"abc", b"1", b"key", b"va\r\nl")), ("PING", ()), ("INFO", (b"server",))]
    expected += [("SET", (b"k", b"x" * 100_000)), ("", ())]
    for size in (1, 2, 3, 7, 64, 4096, len(stream)):
        framer = RequestFramer()
        got: list[Command] = []
        for i in range(0, len(stream), size):
            got += framer.feed(stream[i : i + size])
        assert [(c.name, c.args) for c in got] == expected, size
        assert b"".join(c.raw for c in got) == stream
        assert framer.pending == 0


def test_an_incomplete_request_waits_for_the_rest() -> None:
    whole = encode(b"GET", b"key")
    for cut in range(len(whole)):
        assert parse_request(whole[:cut]) is None
    parsed = parse_request(whole + encode(b"PING"))
    assert parsed is not None and parsed[1] == len(whole)


@pytest.mark.parametrize("garbage", [b"*1\r\n:5\r\n", b"*x\r\n", b"*1\r\n$2\r\nabcd\r\n"])
def test_a_malformed_request_is_an_error(garbage: bytes) -> None:
    with pytest.raises(RespError):
        RequestFramer().feed(garbage)


def test_replies_are_framed_whatever_the_reads() -> None:
    replies = [
        b"+OK\r\n",
        b"-ERR payload too large\r\n",
        b":42\r\n",
        b"$-1\r\n",
        b"$5\r\nhe\r\no\r\n",
        b"*-1\r\n",
        b"*3\r\n*2\r\n$1\r\na\r\n:1\r\n*0\r\n:-1\r\n",  # a claim-shaped reply
        b"%1\r\n+k\r\n~2\r\n_\r\n,1.5\r\n",  # RESP3 map, set, null, double
        b"|1\r\n+ttl\r\n:3\r\n$1\r\nv\r\n",  # an attribute travels with its reply
        b"=8\r\ntxt:abcd\r\n",
        b"#t\r\n",
        b"(123456789012345678901234567890\r\n",
    ]
    push = b">3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$1\r\nm\r\n"
    stream = b"".join(replies[:3]) + push + b"".join(replies[3:])
    for size in (1, 2, 5, 4096):
        framer = ReplyFramer()
        got: list[tuple[bytes, bool]] = []
        for i in range(0, len(stream), size):
            got += framer.feed(stream[i : i + size])
        assert [raw for raw, is_push in got if not is_push] == replies, size
        assert [raw for raw, is_push in got if is_push] == [push]
    assert parse_reply(b"*2\r\n:1\r\n") is None
    with pytest.raises(RespError):
        ReplyFramer().feed(b"?what\r\n")


def test_rules_pick_the_nth_match_and_let_replays_through() -> None:
    proxy = FaultProxy(6379)  # never started: rules only record events on it
    call = Command("EVALSHA", (b"d1", b"0"), encode(b"EVALSHA", b"d1", b"0"))
    other = Command("EVALSHA", (b"d2", b"0"), encode(b"EVALSHA", b"d2", b"0"))
    every_other = Rule("cut", named("evalsha"), nth=2, every=True)
    assert [every_other.decide(c, proxy) for c in (call, other, call, other)] == [False, True, False, True]
    once = Rule("drop_reply", evalsha("D1"), fresh_only=True)
    assert [once.decide(c, proxy) for c in (other, call, call, call)] == [False, True, False, False]
    assert [e.kind for e in proxy.events()] == ["replay", "replay"]
    with pytest.raises(ValueError, match="loopback"):
        FaultProxy(6379, upstream_host="10.0.0.1")


# -- abort, replayed -----------------------------------------------------------------------------


async def test_a_replayed_abort_call_aborts_once_and_answers_true(
    server: RedisServer, proxy: FaultProxy, ledger_dir: Path
) -> None:
    """Each abort call's reply is dropped once: redis-py resends it, and the replay is told
    apart from a second abort by the call's abort id."""
    settings = Settings(url=proxy.url, prefix=PREFIX, socket_timeout=1, dispatch_timeout=6)
    async with engines(settings, server) as (engine, direct):
        waiting = await Record().dispatch({"ledger": str(ledger_dir)})  # inline in the list
        running = await Record().dispatch({"ledger": str(ledger_dir)})
        claim = await claim_from(direct, QUEUE, 1, worker_id="w", request_id="1", lease_ms=30_000)
        [run] = claim.jobs
        proxy.add_rule(Rule("drop_reply", evalsha(sha("abort")), every=True, fresh_only=True))
        assert run.id == waiting
        assert await engine.abort(waiting) is True, "running"
        assert await engine.abort(running, QUEUE) is True, "inline"
        replays = replays_by_script(proxy)["abort"]
        proxy.clear_rules()
        print(f"\nabort replayed: {replays} abort call(s) replayed after a dropped reply")
        assert replays == 2
        assert await engine.abort(waiting) is False and await engine.abort(running) is False
        failed = [j.id for j in await direct.failed_list(QUEUE)]
        assert sorted(failed) == sorted([waiting, running]), "each aborted once"
        assert await direct.ack(run) is False
        assert await direct.redis.zcard(direct.keys(QUEUE).aborted) == 1
