"""The worker's own rules on the in-memory FakeEngine: no Redis, no sleeps, time from a FakeClock."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, ClassVar

import anyio
import pytest

from aiojobs_redis import Hooks, Job, PermanentFailure, RedisEngine, RetryLater, UnknownJob, Worker, registry
from aiojobs_redis.engine_base import WorkerEngine
from aiojobs_redis.hooks import JobContext
from aiojobs_redis.testing import FakeClock, FakeEngine

pytestmark = pytest.mark.anyio

QUEUE = "fake"
LIMIT = 5  # seconds of real time any test may take: a guard, never a wait


class Probe:
    """What handlers did; `until()` waits for a condition without polling."""

    def __init__(self) -> None:
        self.started: list[int] = []
        self.ended: list[int] = []
        self.cancelled: list[int] = []
        self.gates: dict[int, anyio.Event] = {}
        self.fail_first: set[int] = set()
        self.exhausted: list[BaseException] = []
        self.results: list[str | None] = []  # as the after hooks saw them
        self._changed: anyio.Event | None = None

    def note(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    async def until(self, predicate: Callable[[], bool]) -> None:
        while not predicate():
            if self._changed is None:
                self._changed = anyio.Event()
            await self._changed.wait()

    def after(self, ctx: JobContext) -> None:
        self.results.append(ctx.result)
        self.note()

    def gate(self, n: int) -> anyio.Event:
        return self.gates.setdefault(n, anyio.Event())

    @property
    def running(self) -> int:
        return len(self.started) - len(self.ended) - len(self.cancelled)


class Gated(Job):
    """Runs until the test opens its gate; may fail its first attempt."""

    queue = QUEUE
    attempts = 3
    retry_after = "+30 seconds"
    probe: ClassVar[Probe] = Probe()

    async def handle(self) -> None:
        n = self.payload["n"]
        probe = self.probe
        probe.started.append(n)
        probe.note()
        try:
            if n in probe.gates or self.payload.get("gated", True):
                await probe.gate(n).wait()
        except anyio.get_cancelled_exc_class():
            probe.cancelled.append(n)
            probe.note()
            raise
        probe.ended.append(n)
        probe.note()
        if n in probe.fail_first and self.attempt == 1:
            raise ValueError("first try fails")

    def on_exhausted(self, exc: BaseException) -> None:
        self.probe.exhausted.append(exc)
        raise RuntimeError("a broken callback changes nothing")


class Quick(Gated):
    name = "worker_on_fake_engine.Quick"  # another test module has a job Quick
    queue = QUEUE

    async def handle(self) -> None:
        self.payload.setdefault("gated", False)
        await super().handle()


class Picky(Quick):
    name = "worker_on_fake_engine.Picky"  # another test module has a job Picky
    retry_on = (ConnectionError,)
    fail_on = (PermissionError,)

    async def handle(self) -> None:
        await super().handle()
        raise {"value": ValueError, "conn": ConnectionError, "perm": PermissionError}[self.payload["raise"]]()


class Later(Quick):
    async def handle(self) -> None:
        await super().handle()
        raise RetryLater("+2 minutes")


class Doomed(Quick):
    name = "worker_on_fake_engine.Doomed"  # another test module has a job Doomed

    async def handle(self) -> None:
        await super().handle()
        raise PermanentFailure("no")


@pytest.fixture
def probe() -> Probe:
    Gated.probe = Probe()
    return Gated.probe


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def engine(clock: FakeClock) -> FakeEngine:
    return FakeEngine(clock)


def make_worker(engine: FakeEngine, **options: Any) -> Worker:
    options = {
        "hooks": Hooks(after=[Gated.probe.after]),
        "lease": 3.0,
        "reap_interval": 1000,
        "promote_interval": 1000,
        "idle_wait": 1000,
        **options,
    }
    return Worker(engine, [QUEUE], clock=engine.clock, telemetry=False, tracing=False, **options)


@asynccontextmanager
async def running(worker: Worker) -> AsyncIterator[Worker]:
    with anyio.fail_after(LIMIT):
        async with anyio.create_task_group() as tg:
            await tg.start(worker.run)
            yield worker
            worker.stop()


async def dispatch(engine: FakeEngine, cls: type[Job], *payloads: dict[str, Any]) -> list[str]:
    return await engine.dispatch_many([cls(p) for p in payloads])


def test_both_engines_implement_the_worker_engine_protocol(engine: FakeEngine) -> None:
    implementations: list[WorkerEngine] = [engine]  # checked by mypy, as is the next line
    redis_engine: type[WorkerEngine] = RedisEngine
    assert implementations and redis_engine


async def test_slots_run_at_most_concurrency_and_hand_over_as_one_ends(
    engine: FakeEngine, probe: Probe
) -> None:
    await dispatch(engine, Gated, *({"n": n} for n in range(5)))
    async with running(make_worker(engine, concurrency=2)) as worker:
        await probe.until(lambda: len(probe.started) == 2)
        assert probe.started == [0, 1] and worker.running_count == 2
        probe.gate(0).set()
        await probe.until(lambda: len(probe.started) == 3)
        assert probe.started == [0, 1, 2] and probe.running == 2
        for n in range(5):
            probe.gate(n).set()
        await engine.until(lambda: len(engine.in_state("done")) == 5)
        assert worker._slots.slots <= 2 and worker._slots.waiting == 0
    assert worker.counters.succeeded == 5 and worker.counters.claimed == 5


async def test_burst_ends_once_nothing_is_ready_or_due_and_leaves_later_jobs(
    engine: FakeEngine, probe: Probe
) -> None:
    await dispatch(engine, Quick, {"n": 1}, {"n": 2})
    (later,) = await engine.dispatch_many([Quick({"n": 3}).set_delay("+1 hour")])
    worker = make_worker(engine, burst=True)
    with anyio.fail_after(LIMIT):
        await worker.run()
    assert probe.ended == [1, 2] and worker.counters.succeeded == 2
    assert engine.jobs[later].state == "delayed"


async def test_burst_runs_a_job_made_ready_by_another_task_after_the_claim_looked(
    engine: FakeEngine, probe: Probe
) -> None:
    """The promoter (or reaper) may move a job to ready between an empty claim and the
    burst's own promote, which then moves nothing: the job must still run."""

    class LateArrival(FakeEngine):
        arrived = False

        async def claim_many(self, requests: Any, *, worker_id: str, lease_ms: int) -> Any:
            claims = await super().claim_many(requests, worker_id=worker_id, lease_ms=lease_ms)
            if not self.arrived and not any(claim.jobs for claim in claims):
                self.arrived = True
                await dispatch(self, Quick, {"n": 7})  # as if promoted by the promoter task
            return claims

    late = LateArrival(engine.clock)
    worker = make_worker(late, burst=True)
    with anyio.fail_after(LIMIT):
        await worker.run()
    assert late.arrived and probe.ended == [7] and worker.counters.succeeded == 1


async def test_burst_waits_for_a_job_retried_without_delay(engine: FakeEngine, probe: Probe) -> None:
    class AtOnce(Quick):
        retry_after = "now"

    probe.fail_first.add(1)
    await dispatch(engine, AtOnce, {"n": 1})
    assert await engine.run_due([QUEUE]) == 2
    assert probe.ended == [1, 1] and len(engine.in_state("done")) == 1


async def test_stop_drains_running_jobs_to_their_end(engine: FakeEngine, probe: Probe) -> None:
    await dispatch(engine, Gated, {"n": 1}, {"n": 2})
    with anyio.fail_after(LIMIT):
        async with anyio.create_task_group() as tg:
            worker = make_worker(engine, concurrency=1)
            await tg.start(worker.run)
            await probe.until(lambda: probe.started == [1])
            worker.stop()
            assert worker.stopping
            probe.gate(1).set()
    assert worker.counters.succeeded == 1 and worker.counters.claimed == 1
    assert probe.started == [1], "a draining worker claims nothing more"
    assert [j.state for j in engine.jobs.values()] == ["done", "ready"]


async def test_past_the_grace_period_a_job_is_cancelled_and_released_unused(
    engine: FakeEngine, clock: FakeClock, probe: Probe
) -> None:
    (job_id,) = await dispatch(engine, Gated, {"n": 1})
    with anyio.fail_after(LIMIT):
        async with anyio.create_task_group() as tg:
            worker = make_worker(engine, grace=10)
            await tg.start(worker.run)
            await probe.until(lambda: probe.started == [1])
            worker.stop()
            await clock.wait_for_timer(10)
            clock.advance(10)
    assert probe.cancelled == [1]
    assert worker.counters.released == 1 and worker.counters.lost == 0
    job = engine.jobs[job_id]
    assert (job.state, job.attempts, job.runs) == ("ready", 0, 1)


async def test_max_time_stops_the_worker_on_its_clock(engine: FakeEngine, clock: FakeClock) -> None:
    worker = make_worker(engine, max_time=60)
    with anyio.fail_after(LIMIT):
        async with anyio.create_task_group() as tg:
            await tg.start(worker.run)
            await clock.wait_for_timer(60)
            clock.advance(60)
    assert worker.stopping


async def test_settle_records_success_retry_and_failure(engine: FakeEngine, probe: Probe) -> None:
    probe.fail_first.add(2)
    ok, retried = await dispatch(engine, Quick, {"n": 1}, {"n": 2})
    (later,) = await dispatch(engine, Later, {"n": 3})
    (doomed,) = await dispatch(engine, Doomed, {"n": 4})
    await engine.run_due([QUEUE])
    assert engine.jobs[ok].state == "done"
    delays = {j.id: j.due_ms - engine.clock.now_ms for j in engine.in_state("delayed")}
    assert delays == {retried: 30_000, later: 120_000}
    assert engine.jobs[retried].attempts == 1 and engine.jobs[retried].error is not None
    assert engine.jobs[doomed].state == "failed"
    assert (engine.jobs[doomed].error or {})["reason"] == "permanent"
    assert [type(e) for e in probe.exhausted] == [PermanentFailure]


async def test_a_delayed_retry_runs_when_the_clock_reaches_it(
    engine: FakeEngine, clock: FakeClock, probe: Probe
) -> None:
    probe.fail_first.add(1)
    (job_id,) = await dispatch(engine, Quick, {"n": 1})
    async with running(make_worker(engine, promote_interval=5)) as worker:
        await engine.until(lambda: engine.jobs[job_id].state == "delayed")
        clock.advance(29)
        assert engine.jobs[job_id].state == "delayed"
        clock.advance(1)
        await engine.until(lambda: engine.jobs[job_id].state == "done")
    assert worker.counters.retried == 1 and worker.counters.succeeded == 1
    assert engine.jobs[job_id].attempts == 1, "attempts used: the retry counted, the ack does not"


async def test_retry_on_and_fail_on_decide_per_exception(engine: FakeEngine, probe: Probe) -> None:
    value, conn, perm = await dispatch(
        engine, Picky, {"n": 1, "raise": "value"}, {"n": 2, "raise": "conn"}, {"n": 3, "raise": "perm"}
    )
    await engine.run_due([QUEUE])
    states = {
        job_id: (engine.jobs[job_id].state, engine.jobs[job_id].attempts) for job_id in (value, conn, perm)
    }
    assert states == {value: ("failed", 1), conn: ("delayed", 1), perm: ("failed", 1)}
    assert [type(e) for e in probe.exhausted] == [ValueError, PermissionError]


async def test_the_renewer_extends_the_leases_of_running_jobs(
    engine: FakeEngine, clock: FakeClock, probe: Probe
) -> None:
    (job_id,) = await dispatch(engine, Gated, {"n": 1})
    async with running(make_worker(engine)):
        await probe.until(lambda: probe.started == [1])
        clock.advance(1)  # a third of the 3 s lease
        await engine.until(lambda: engine.calls["renew"] == 1)
        assert engine.jobs[job_id].lease_until_ms == clock.now_ms + 3000
        probe.gate(1).set()
        await engine.until(lambda: engine.jobs[job_id].state == "done")


async def test_a_lost_lease_cancels_the_run_and_discards_its_outcome(
    engine: FakeEngine, clock: FakeClock, probe: Probe
) -> None:
    (job_id,) = await dispatch(engine, Gated, {"n": 1})
    async with running(make_worker(engine)) as worker:
        await probe.until(lambda: probe.started == [1])
        engine.take_lease(job_id)
        clock.advance(1)
        await probe.until(lambda: probe.results == ["lost"])
    assert probe.cancelled == [1]
    assert (worker.counters.lost, worker.counters.released, worker.counters.abandoned) == (1, 0, 0)
    assert engine.jobs[job_id].state == "running", "the other holder's run is left alone"


async def test_a_refused_settle_is_a_lost_lease(engine: FakeEngine, probe: Probe) -> None:
    (job_id,) = await dispatch(engine, Gated, {"n": 1})
    async with running(make_worker(engine)) as worker:
        await probe.until(lambda: probe.started == [1])
        engine.take_lease(job_id)
        probe.gate(1).set()
        await probe.until(lambda: probe.results == ["lost"])
    assert worker.counters.lost == 1
    assert worker.counters.succeeded == 0 and worker.counters.abandoned == 0


async def test_an_outage_during_settle_is_abandoned_at_the_lease_deadline_not_lost(
    engine: FakeEngine, clock: FakeClock, probe: Probe
) -> None:
    (job_id,) = await dispatch(engine, Gated, {"n": 1})
    async with running(make_worker(engine)) as worker:
        await probe.until(lambda: probe.started == [1])
        engine.unavailable = True
        probe.gate(1).set()
        await clock.wait_for_timer(3)  # the settle's deadline: one lease
        clock.advance(3)
        await probe.until(lambda: probe.results == ["abandoned"])
        engine.unavailable = False
    assert (worker.counters.abandoned, worker.counters.lost, worker.counters.succeeded) == (1, 0, 0)
    assert engine.jobs[job_id].state == "running", "the lease lapses; a reaper takes the job back"


async def test_a_short_outage_during_settle_is_ridden_out(
    engine: FakeEngine, clock: FakeClock, probe: Probe
) -> None:
    (job_id,) = await dispatch(engine, Gated, {"n": 1})
    async with running(make_worker(engine)) as worker:
        await probe.until(lambda: probe.started == [1])
        engine.unavailable = True
        probe.gate(1).set()
        await clock.wait_for_timer(3)
        engine.unavailable = False
        clock.advance(0.5)  # past the first backoff (at most 0.1 s)
        await engine.until(lambda: engine.jobs[job_id].state == "done")
    assert worker.counters.succeeded == 1 and worker.counters.abandoned == 0


async def test_the_reaper_returns_a_lapsed_lease_and_this_worker_runs_it(
    engine: FakeEngine, clock: FakeClock, probe: Probe
) -> None:
    (job_id,) = await dispatch(engine, Quick, {"n": 1})
    await engine.claim_many([(QUEUE, 1, "1")], worker_id="gone", lease_ms=1000)
    clock.advance(2)
    async with running(make_worker(engine)) as worker:
        await engine.until(lambda: engine.jobs[job_id].state == "done")
    assert engine.jobs[job_id].stalls == 1 and worker.counters.succeeded == 1


async def test_a_record_that_cannot_become_a_job_fails_without_using_an_attempt(engine: FakeEngine) -> None:
    (job_id,) = await dispatch(engine, Quick, {"n": 1})

    def lookup(name: str) -> type[Job]:
        raise UnknownJob(f"no job {name}")

    # With no grace, an unknown name fails at once (test_unknown_jobs.py: deferred before that).
    worker = make_worker(engine, burst=True, lookup=lookup, unknown_job_grace=0)
    with anyio.fail_after(LIMIT):
        await worker.run()
    job = engine.jobs[job_id]
    assert (job.state, job.attempts, (job.error or {})["reason"]) == ("failed", 0, "unknown_job")
    assert worker.counters.failed == 1


async def test_a_worker_started_in_an_outage_backs_off_on_its_clock_until_the_engine_returns(
    engine: FakeEngine, clock: FakeClock
) -> None:
    engine.unavailable = True
    worker = make_worker(engine)
    with anyio.fail_after(LIMIT):
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker.run)
            await clock.until(lambda: bool(clock.pending()))  # backing off, not calling again
            assert engine.calls["register_queues"] == 0 and len(clock.pending()) == 1
            engine.unavailable = False
            clock.advance(clock.pending()[0])
            await engine.until(lambda: engine.calls["register_queues"] == 1)
            await engine.until(lambda: engine.calls["wait_for_work"] == 1)  # serving
            worker.stop()
    assert engine.queues == {QUEUE}


def test_job_classes_here_are_registered() -> None:
    assert registry.lookup(Gated.name) is Gated


async def test_an_aborted_run_is_cancelled_within_abort_check_and_ends_aborted(
    engine: FakeEngine, clock: FakeClock, probe: Probe
) -> None:
    (job_id,) = await dispatch(engine, Gated, {"n": 1})
    async with running(make_worker(engine, abort_check=0.5)) as worker:
        await probe.until(lambda: probe.started == [1])
        settles = engine.calls["settle"]
        assert await engine.abort(job_id, reason="changed my mind") is True
        clock.advance(0.5)
        await probe.until(lambda: probe.results == ["aborted"])
        assert engine.calls["settle"] == settles, "abort recorded the end: nothing else is sent"
    assert probe.cancelled == [1]
    assert (worker.counters.aborted, worker.counters.lost, worker.counters.released) == (1, 0, 0)
    job = engine.jobs[job_id]
    assert job.state == "failed" and job.error is not None and job.error["reason"] == "aborted"
    assert job.attempts == 0
    assert "1 aborted" in worker.counters.describe()


async def test_a_worker_running_nothing_sends_no_abort_check(engine: FakeEngine, clock: FakeClock) -> None:
    async with running(make_worker(engine, abort_check=0.5)):
        for _ in range(4):
            clock.advance(0.5)
            await anyio.wait_all_tasks_blocked()
    assert engine.calls["aborted_runs"] == 0


async def test_an_aborted_waiting_job_is_never_claimed(engine: FakeEngine, probe: Probe) -> None:
    doomed, _kept = await dispatch(engine, Quick, {"n": 1}, {"n": 2})
    assert await engine.abort(doomed) is True
    assert await engine.abort(doomed) is False
    await engine.run_due()
    assert probe.started == [2]


def test_abort_check_must_be_positive(engine: FakeEngine) -> None:
    with pytest.raises(ValueError, match="abort_check"):
        make_worker(engine, abort_check=0)


async def test_a_renewal_that_finds_the_lease_revoked_by_an_abort_says_aborted_not_lost(
    engine: FakeEngine, clock: FakeClock, probe: Probe
) -> None:
    """The renewer may notice first (a lease of 3 s renews every second, as often as the look
    for aborts with abort_check=5 would not): the run still ends aborted."""
    (job_id,) = await dispatch(engine, Gated, {"n": 1})
    async with running(make_worker(engine, abort_check=5)) as worker:
        await probe.until(lambda: probe.started == [1])
        assert await engine.abort(job_id) is True
        clock.advance(1)  # the renewal, a third of the 3 s lease
        await probe.until(lambda: probe.results == ["aborted"])
    assert (worker.counters.aborted, worker.counters.lost) == (1, 0)


class Stubborn(Job):
    """Swallows its cancellation and returns as if it had succeeded."""

    name = "worker_on_fake_engine.Stubborn"
    queue = QUEUE
    started: ClassVar[anyio.Event | None] = None

    async def handle(self) -> None:
        assert Stubborn.started is not None
        Stubborn.started.set()
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            return None  # does not re-raise


async def test_a_run_that_ignores_its_abort_still_ends_aborted_and_sends_no_ack(
    engine: FakeEngine, clock: FakeClock, probe: Probe
) -> None:
    Stubborn.started = anyio.Event()
    (job_id,) = await dispatch(engine, Stubborn, {})
    async with running(make_worker(engine, abort_check=0.5)) as worker:
        await Stubborn.started.wait()
        settles = engine.calls["settle"]
        assert await engine.abort(job_id) is True
        clock.advance(0.5)
        await probe.until(lambda: probe.results == ["aborted"])
        assert engine.calls["settle"] == settles
    assert engine.jobs[job_id].state == "failed"
    assert (worker.counters.aborted, worker.counters.succeeded, worker.counters.lost) == (1, 0, 0)
