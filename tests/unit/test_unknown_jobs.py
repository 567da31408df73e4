"""A job whose name the worker does not know: deferred with backoff, no attempt used, warned
about once a minute per name, failed as unknown_job only after the grace period."""

from __future__ import annotations

import logging
from typing import Any

import anyio
import pytest

from aiojobs_redis import Job, UnknownJob, Worker, registry
from aiojobs_redis.settle import unknown_retry_delay_ms
from aiojobs_redis.testing import FakeClock, FakeEngine

pytestmark = pytest.mark.anyio

QUEUE = "unknown-jobs"
LIMIT = 5  # seconds of real time any test may take: a guard, never a wait


class Unheard(Job):
    """Known to the test, and to a worker only when the test says so."""

    queue = QUEUE
    attempts = 3
    ran: list[tuple[Any, int]] = []  # noqa: RUF012 - the test's record

    async def handle(self) -> None:
        Unheard.ran.append((self.payload, self.attempt))


def nothing_known(name: str) -> type[Job]:
    raise UnknownJob(f"no Job class is registered as {name!r}")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def engine(clock: FakeClock) -> FakeEngine:
    Unheard.ran = []
    return FakeEngine(clock)


async def run_due(engine: FakeEngine, **options: Any) -> int:
    with anyio.fail_after(LIMIT):
        return await engine.run_due([QUEUE], **{"lookup": nothing_known, **options})


def test_the_wait_starts_at_5_s_and_doubles_up_to_a_minute() -> None:
    assert [unknown_retry_delay_ms(runs) for runs in range(1, 7)] == [
        5_000,
        10_000,
        20_000,
        40_000,
        60_000,
        60_000,
    ]
    assert unknown_retry_delay_ms(10_000) == 60_000


async def test_an_unknown_job_is_put_back_with_backoff_using_no_attempt_until_the_grace_ends(
    engine: FakeEngine, clock: FakeClock
) -> None:
    [job_id] = await engine.dispatch_many([Unheard({"n": 1})])
    job = engine.jobs[job_id]
    waits = []
    for _ in range(4):  # due since 0 s: deferred at 0, 5, 15 and 35 s
        assert await run_due(engine, unknown_job_grace=60) == 1
        assert (job.state, job.attempts, (job.error or {}).get("reason")) == ("delayed", 0, "unknown_job")
        waits.append(job.due_ms - clock.now_ms)
        clock.advance(waits[-1] / 1000)
    assert waits == [5_000, 10_000, 20_000, 40_000]

    assert await run_due(engine, unknown_job_grace=60) == 1  # at 75 s, due for over 60 s
    assert (job.state, job.attempts, (job.error or {})["reason"]) == ("failed", 0, "unknown_job")
    assert "'Unheard'" in (job.error or {})["message"]
    assert Unheard.ran == []


async def test_the_grace_counts_from_when_a_delayed_job_was_due_not_from_its_dispatch(
    engine: FakeEngine, clock: FakeClock
) -> None:
    [job_id] = await engine.dispatch_many([Unheard({"n": 1}).set_delay("+2 hours")])
    clock.advance(2 * 3600)
    assert await run_due(engine, unknown_job_grace=60) == 1
    assert engine.jobs[job_id].state == "delayed"  # due for 0 s, not dispatched 2 h ago


async def test_a_deferred_job_runs_once_a_worker_knows_its_name_with_all_its_attempts(
    engine: FakeEngine, clock: FakeClock
) -> None:
    [job_id] = await engine.dispatch_many([Unheard({"n": 7})])
    assert await run_due(engine) == 1
    assert engine.jobs[job_id].state == "delayed"

    clock.advance(5)
    assert await run_due(engine, lookup=registry.lookup) == 1
    assert Unheard.ran == [({"n": 7}, 1)]  # attempt 1: deferring used none
    assert engine.jobs[job_id].state == "done"


async def test_a_grace_of_zero_fails_it_at_once(engine: FakeEngine) -> None:
    [job_id] = await engine.dispatch_many([Unheard({"n": 1})])
    assert await run_due(engine, unknown_job_grace=0) == 1
    job = engine.jobs[job_id]
    assert (job.state, job.attempts, (job.error or {})["reason"]) == ("failed", 0, "unknown_job")


async def test_the_warning_is_said_once_a_minute_per_name_not_per_job(
    engine: FakeEngine, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    class Other(Job):
        queue = QUEUE

        async def handle(self) -> None:
            return None

    await engine.dispatch_many([Unheard({"n": n}) for n in range(5)] + [Other()])
    # One worker for the whole test (run_due makes one per call): the warnings are its own.
    runner = Worker(
        engine,
        [QUEUE],
        lookup=nothing_known,
        clock=clock,
        telemetry=False,
        promote_interval=1,  # the fake has no wake tokens: the promoter looks each second
        reap_interval=1000,
        idle_wait=1000,
    )

    def warnings() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]

    caplog.set_level(logging.DEBUG, "aiojobs_redis")
    with anyio.fail_after(LIMIT):
        async with anyio.create_task_group() as tg:
            tg.start_soon(runner.run)
            await engine.until(lambda: runner.counters.deferred == 6)
            said = warnings()
            assert len(said) == 2, said  # one per name
            assert sum("'Unheard'" in w for w in said) == 1
            assert all("unknown_job_grace" in w for w in said)

            await clock.wait_for_timer(1)  # the promoter waits
            clock.advance(20)  # all 6 are claimed again at 20 s: no new warning yet
            await engine.until(lambda: runner.counters.deferred == 12)
            assert len(warnings()) == 2

            await clock.wait_for_timer(1)
            clock.advance(41)  # claimed again at 61 s, a minute after the first warnings
            await engine.until(lambda: runner.counters.deferred == 18)
            assert len(warnings()) == 4
            runner.stop()
    assert runner.counters.failed == 0 and runner.counters.claimed == 18
