"""The worker supervisor in-process against the real Redis: limits, retries, timeouts, leases."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from contextvars import ContextVar
from typing import Any, ClassVar

import anyio
import pytest
from redis.asyncio import Redis

from aiojobs_redis import (
    EngineUnavailable,
    Job,
    PermanentFailure,
    RedisEngine,
    RetryLater,
    UnknownJob,
    Worker,
    registry,
)
from aiojobs_redis.settle import GAVE_UP

# Also on a Cluster and behind Sentinel: see conftest.py.
pytestmark = [pytest.mark.anyio, pytest.mark.deployments]

QUEUE = "runs"


class Probe:
    """Records what handlers did, and lets a test wait for a count without sleeping."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any, float]] = []
        self._changed = anyio.Event()
        self.running = 0
        self.max_running = 0

    def add(self, kind: str, value: Any = None) -> None:
        self.events.append((kind, value, time.monotonic()))
        self._changed.set()
        self._changed = anyio.Event()

    def count(self, kind: str) -> int:
        return sum(1 for k, _, _ in self.events if k == kind)

    def times(self, kind: str) -> list[float]:
        return [t for k, _, t in self.events if k == kind]

    async def wait_for(self, kind: str, n: int, timeout: float = 10) -> None:
        with anyio.fail_after(timeout):
            while self.count(kind) < n:
                await self._changed.wait()


class ProbedJob(Job):
    queue = QUEUE
    probe: ClassVar[Probe] = Probe()


@asynccontextmanager
async def running_worker(engine: RedisEngine, **options: Any) -> AsyncIterator[Worker]:
    options.setdefault("idle_wait", 1.0)
    worker = Worker(engine, [QUEUE], **options)
    async with anyio.create_task_group() as tg:
        await tg.start(worker.run)
        try:
            yield worker
        finally:
            worker.stop()


@pytest.fixture
def probe() -> Probe:
    ProbedJob.probe = Probe()
    return ProbedJob.probe


class Sleepy(ProbedJob):
    async def handle(self) -> None:
        self.probe.running += 1
        self.probe.max_running = max(self.probe.max_running, self.probe.running)
        self.probe.add("start", self.id)
        await anyio.sleep(self.payload["sleep"])
        self.probe.running -= 1
        self.probe.add("end", self.id)


async def test_concurrency_limit_is_respected(engine: RedisEngine, probe: Probe) -> None:
    for _ in range(30):
        await Sleepy().dispatch({"sleep": 0.05})
    async with running_worker(engine, concurrency=7):
        await probe.wait_for("end", 30)
    assert probe.max_running == 7


async def test_idle_worker_starts_a_dispatched_job_promptly(engine: RedisEngine, probe: Probe) -> None:
    async with running_worker(engine, idle_wait=5.0) as worker:
        await anyio.wait_all_tasks_blocked()
        latencies: list[float] = []
        for _ in range(20):
            sent = time.monotonic()
            await Sleepy().dispatch({"sleep": 0})
            await probe.wait_for("start", len(latencies) + 1)
            latencies.append(probe.times("start")[-1] - sent)
        assert worker.counters.claimed == 20
    latencies.sort()
    print(f"idle dispatch-to-start: median {latencies[10] * 1000:.2f} ms, max {latencies[-1] * 1000:.2f} ms")
    # The idle block is 5 s: a job that waited for it instead of the wake token would show it.
    assert latencies[-1] < 2.5


class FlakyTwice(ProbedJob):
    attempts = 3
    retry_after = 0.2
    backoff = 2.0

    async def handle(self) -> None:
        self.probe.add("start", self.attempt)
        if self.attempt < 3:
            raise ValueError(f"flaky {self.attempt}")


async def test_retries_wait_retry_after_with_backoff(engine: RedisEngine, probe: Probe) -> None:
    job_id = await FlakyTwice().dispatch({})
    async with running_worker(engine) as worker:
        await probe.wait_for("start", 3)
        with anyio.fail_after(5):
            while worker.counters.succeeded < 1:
                await anyio.sleep(0.01)
    first, second, third = probe.times("start")
    assert [v for k, v, _ in probe.events if k == "start"] == [1, 2, 3]
    assert second - first >= 0.19, "first retry waits retry_after"
    assert third - second >= 0.39, "second retry waits retry_after * backoff"
    assert worker.counters.retried == 2
    assert await engine.get_job(QUEUE, job_id) is None


class Permanent(ProbedJob):
    attempts = 5

    async def handle(self) -> None:
        self.probe.add("start")
        raise PermanentFailure("card declined")


async def test_permanent_failure_skips_remaining_attempts(engine: RedisEngine, probe: Probe) -> None:
    job_id = await Permanent().dispatch({})
    async with running_worker(engine) as worker:
        await probe.wait_for("start", 1)
        with anyio.fail_after(5):
            while worker.counters.failed < 1:
                await anyio.sleep(0.01)
    assert probe.count("start") == 1
    info = await engine.get_job(QUEUE, job_id)
    assert info is not None and info.state == "failed" and info.error is not None
    assert info.error["reason"] == "permanent" and info.error["message"] == "card declined"


class TooSlow(ProbedJob):
    attempts = 2
    timeout = 0.1

    async def handle(self) -> None:
        self.probe.add("start")
        try:
            await anyio.sleep(30)
        except anyio.get_cancelled_exc_class():
            self.probe.add("cancelled")
            raise


async def test_timeout_cancels_handle_and_counts_as_a_failed_attempt(
    engine: RedisEngine, probe: Probe
) -> None:
    job_id = await TooSlow().dispatch({})
    async with running_worker(engine) as worker:
        await probe.wait_for("cancelled", 2)
        with anyio.fail_after(5):
            while worker.counters.failed < 1:
                await anyio.sleep(0.01)
    starts, cancels = probe.times("start"), probe.times("cancelled")
    # Cancelled at the timeout, not at the end of the 30 s sleep (with room for a busy machine).
    assert all(0.09 <= c - s < 2 for s, c in zip(starts, cancels, strict=True))
    info = await engine.get_job(QUEUE, job_id)
    assert info is not None and info.error is not None
    assert (info.state, info.attempts, info.error["reason"]) == ("failed", 2, "timeout")


class AsksForRetry(ProbedJob):
    attempts = 2

    async def handle(self) -> None:
        self.probe.add("start")
        if self.attempt == 1:
            raise RetryLater("+1 seconds")


async def test_retry_later_uses_its_own_delay(engine: RedisEngine, probe: Probe) -> None:
    await AsksForRetry().dispatch({})
    async with running_worker(engine):
        await probe.wait_for("start", 2)
    first, second = probe.times("start")
    assert second - first >= 0.99


class LongerThanLease(ProbedJob):
    async def handle(self) -> None:
        self.probe.add("start", self.id)
        await anyio.sleep(3.0)
        self.probe.add("end", self.id)


async def test_lease_is_renewed_while_a_job_runs(engine: RedisEngine, probe: Probe) -> None:
    """A job running 2x its lease is not reaped by a second worker's reaper.

    The lease is long enough that a busy machine (a renewal every 0.5 s, a stall of a second
    before one lapses) does not end it; a worker that never renewed would lose the job."""
    await LongerThanLease().dispatch({})
    async with (
        running_worker(engine, lease=1.5, reap_interval=0.05) as first,
        running_worker(engine, lease=1.5, reap_interval=0.05) as second,
    ):
        await probe.wait_for("end", 1, timeout=20)
        with anyio.fail_after(5):
            while first.counters.succeeded + second.counters.succeeded < 1:
                await anyio.sleep(0.01)
    assert probe.count("start") == 1
    assert first.counters.lost == second.counters.lost == 0


class Blocks(ProbedJob):
    name = "worker_runs.Blocks"  # another test module has a job Blocks

    async def handle(self) -> None:
        self.probe.add("start", self.id)
        await anyio.sleep(30)


async def test_lost_lease_cancels_the_handler(engine: RedisEngine, probe: Probe) -> None:
    job_id = await Blocks().dispatch({})
    async with running_worker(engine, lease=0.3) as worker:
        await probe.wait_for("start", 1)
        # Someone else took the job over: the token no longer matches.
        await engine.redis.hset(engine.keys(QUEUE).job(job_id), "t", "another-worker:9")
        with anyio.fail_after(5):
            while worker.counters.lost < 1:
                await anyio.sleep(0.01)
        assert worker.running_count == 0


class Named(Job):
    queue = QUEUE
    name = "tests.not.registered.in.the.worker"

    async def handle(self) -> None:
        raise AssertionError("never runs")


async def test_unknown_job_name_fails_without_retry_and_imports_nothing(engine: RedisEngine) -> None:
    def lookup(name: str) -> type[Job]:
        if name == Named.name:
            raise UnknownJob(f"no Job class is registered as {name!r}")
        return registry.lookup(name)

    job_id = await Named().dispatch({"x": 1})
    # No grace: failed at once (deferred first otherwise: test_unknown_job_deferral.py).
    worker = Worker(engine, [QUEUE], burst=True, lookup=lookup, unknown_job_grace=0)
    await worker.run()
    info = await engine.get_job(QUEUE, job_id)
    assert info is not None and info.error is not None
    assert (info.state, info.attempts, info.error["reason"]) == ("failed", 0, "unknown_job")


async def test_max_jobs_stops_after_that_many(engine: RedisEngine, probe: Probe) -> None:
    for _ in range(10):
        await Sleepy().dispatch({"sleep": 0})
    worker = Worker(engine, [QUEUE], max_jobs=4, batch_size=100)
    with anyio.fail_after(10):
        await worker.run()
    assert worker.counters.claimed == worker.counters.succeeded == 4
    assert (await engine.stats(QUEUE))[0].ready == 6


async def test_max_time_stops_an_idle_worker(engine: RedisEngine) -> None:
    worker = Worker(engine, [QUEUE], max_time=0.3, idle_wait=5.0)
    started = time.monotonic()
    with anyio.fail_after(10):
        await worker.run()
    assert 0.3 <= time.monotonic() - started < 3


async def test_queues_are_served_in_priority_order(engine: RedisEngine, probe: Probe) -> None:
    class Low(Sleepy):
        queue = "low"

    class High(Sleepy):
        queue = "high"

    low = [await Low().dispatch({"sleep": 0}) for _ in range(5)]
    high = [await High().dispatch({"sleep": 0}) for _ in range(5)]
    worker = Worker(engine, ["high", "low"], concurrency=1, burst=True)
    await worker.run()
    order = [v for k, v, _ in probe.events if k == "start"]
    assert order == high + low


async def test_worker_rejects_bad_options(engine: RedisEngine) -> None:
    bad: list[Callable[[], Worker]] = [
        lambda: Worker(engine, []),
        lambda: Worker(engine, ["a:b"]),
        lambda: Worker(engine, [QUEUE], concurrency=0),
    ]
    for make in bad:
        with pytest.raises(ValueError):
            make()


async def test_several_queues_are_claimed_in_one_round_by_priority(engine: RedisEngine, probe: Probe) -> None:
    class Second(Sleepy):
        queue = "second"

    class First(Sleepy):
        queue = "first"

    firsts = [await First().dispatch({"sleep": 0.2}) for _ in range(3)]
    seconds = [await Second().dispatch({"sleep": 0.2}) for _ in range(5)]
    worker = Worker(engine, ["first", "second"], concurrency=4, burst=True)
    await worker.run()
    started = [v for k, v, _ in probe.events if k == "start"]
    assert started[:4] == firsts + seconds[:1], "the first round takes all of 'first', then fills up"
    assert sorted(started) == sorted(firsts + seconds)
    assert probe.max_running == 4


leaked: ContextVar[str | None] = ContextVar("leaked", default=None)


class SetsAContextVariable(ProbedJob):
    async def handle(self) -> None:
        self.probe.add("saw", leaked.get())
        leaked.set(f"set by {self.payload['n']}")


async def test_a_job_s_context_variables_do_not_reach_the_next_job(engine: RedisEngine, probe: Probe) -> None:
    for n in range(4):
        await SetsAContextVariable().dispatch({"n": n})
    worker = Worker(engine, [QUEUE], concurrency=1, burst=True)  # one slot runs them all in turn
    with anyio.fail_after(10):
        await worker.run()
    assert worker.counters.succeeded == 4
    assert [v for k, v, _ in probe.events if k == "saw"] == [None] * 4


async def test_settling_retries_while_redis_fails_and_gives_up_at_the_deadline(engine: RedisEngine) -> None:
    worker = Worker(engine, [QUEUE])
    calls: list[float] = []

    async def fails_twice() -> str:
        calls.append(time.monotonic())
        if len(calls) <= 2:
            raise EngineUnavailable("away")
        return "done"

    assert await worker._retrying("settle", fails_twice, 10.0) == "done"
    assert len(calls) == 3

    async def always_fails() -> str:
        calls.append(time.monotonic())
        raise EngineUnavailable("away")

    calls.clear()
    started = time.monotonic()
    assert await worker._retrying("settle", always_fails, 0.5) is GAVE_UP
    assert 0.5 <= time.monotonic() - started < 3  # gave up near its deadline, not at 10 s
    assert len(calls) >= 2, "the first failure is retried"


async def test_a_queue_key_of_the_wrong_type_is_reported_as_such_and_the_worker_carries_on(
    engine: RedisEngine, probe: Probe, raw_redis: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    keys = engine.keys(QUEUE)
    await raw_redis.set(keys.ready, "not a list")
    worker = Worker(engine, [QUEUE], burst=True)
    with anyio.fail_after(10):
        await worker.run()
    assert worker.counters.quarantined == 1
    assert f"queue {QUEUE}: its key held another type than a list: renamed to {keys.bad_queue}" in caplog.text
    assert "is malformed" not in caplog.text
    assert await raw_redis.get(keys.bad_queue) == b"not a list"
    await Sleepy().dispatch({"sleep": 0})  # the queue works again
    with anyio.fail_after(10):
        await Worker(engine, [QUEUE], burst=True).run()
    assert probe.count("end") == 1
