"""A job that fails for good: one ERROR record that error trackers group (a constant message,
the exception attached, the details as attributes), and a stored error that says why."""

from __future__ import annotations

import logging
from typing import Any

import anyio
import pytest

from aiojobs_redis import Job, RetryLater, Worker
from aiojobs_redis.retry import Fail, decide
from aiojobs_redis.runner import FAILED_FOR_GOOD, Outcome
from aiojobs_redis.sync import SyncEngine
from aiojobs_redis.testing import FakeClock, FakeEngine

pytestmark = pytest.mark.anyio

QUEUE = "reports"
LIMIT = 5  # seconds of real time any test may take: a guard, never a wait


class Charge(Job):
    queue = QUEUE
    attempts = 2
    name = "tests.reports.Charge"

    async def handle(self) -> None:
        raise RuntimeError(f"gateway down for {self.payload['order']}")


class AskToRetry(Job):
    queue = QUEUE
    name = "tests.reports.AskToRetry"  # attempts = 1, the default

    async def handle(self) -> None:
        raise RetryLater("+1 second")


async def run_burst(engine: FakeEngine) -> Worker:
    worker = Worker(
        engine, [QUEUE], clock=engine.clock, telemetry=False, tracing=False, burst=True, idle_wait=1000
    )
    with anyio.fail_after(LIMIT):
        await worker.run()
    return worker


def failed_for_good(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.msg == FAILED_FOR_GOOD]


def assert_groupable(record: logging.LogRecord, job_id: str, attempt: int, max_attempts: int) -> None:
    assert record.levelno == logging.ERROR
    assert record.msg == FAILED_FOR_GOOD, "one template for every failure: the events group"
    assert record.getMessage() == (
        f"job {Charge.name} {job_id} failed for good after attempt {attempt}/{max_attempts} "
        f"(error): RuntimeError: {record.exc_info and record.exc_info[1]}"
    )
    assert record.exc_info is not None and isinstance(record.exc_info[1], RuntimeError)
    assert record.exc_info[2] is not None, "the traceback comes along for the error tracker"
    details: dict[str, Any] = record.__dict__
    assert details["job_id"] == job_id and details["job_queue"] == QUEUE
    assert (details["job_attempt"], details["job_max_attempts"]) == (attempt, max_attempts)
    assert details["job_failure_reason"] == "error"


async def test_the_worker_logs_a_failure_for_good_with_its_exception_and_a_constant_message(
    caplog: pytest.LogCaptureFixture,
) -> None:
    engine = FakeEngine(FakeClock())
    ids = await engine.dispatch_many([Charge({"order": "o-1"}), Charge({"order": "o-2"})])
    with caplog.at_level(logging.ERROR):
        await run_burst(engine)
    records = failed_for_good(caplog)
    assert sorted(r.__dict__["job_id"] for r in records) == sorted(ids)
    for record in records:
        assert_groupable(record, record.__dict__["job_id"], 2, 2)
    assert {r.getMessage().split(" ")[1] for r in records} == {Charge.name}


async def test_the_sync_engine_logs_it_the_same_way(caplog: pytest.LogCaptureFixture) -> None:
    engine = SyncEngine(raise_on_failure=False)
    with caplog.at_level(logging.ERROR):
        job_id = await engine.dispatch(Charge({"order": "o-3"}))
    (record,) = failed_for_good(caplog)
    assert_groupable(record, job_id, 2, 2)


def test_retry_later_with_no_attempts_left_says_why() -> None:
    error = RetryLater("+1 second")
    assert decide(AskToRetry(), Outcome(error), 1, 1) == Fail("error")
    message = Outcome(error).error_record("error")["message"]
    assert message.startswith("retry requested\n")
    assert "RetryLater was raised but no attempts are left (attempts = 1, the default)" in message
    assert "set attempts on the job class" in message
    decide(AskToRetry(), Outcome(error), 1, 1)
    assert len(error.__notes__) == 1, "said once, however often it is decided"


def test_retry_later_on_the_last_of_several_attempts_says_so() -> None:
    error = RetryLater()
    decide(AskToRetry(), Outcome(error), 3, 3)
    assert error.__notes__ == ["RetryLater was raised on the last of 3 attempts: no attempts are left"]


async def test_the_worker_stores_why_a_retry_later_failed_the_job() -> None:
    engine = FakeEngine(FakeClock())
    job_id = await engine.dispatch(AskToRetry())
    await run_burst(engine)
    job = engine.jobs[job_id]
    assert job.state == "failed" and job.error is not None
    assert "no attempts are left (attempts = 1, the default)" in job.error["message"]
    assert "no attempts are left" in job.error["traceback"]


async def test_the_sync_engine_raises_the_retry_later_with_the_reason_attached() -> None:
    with pytest.raises(RetryLater) as info:
        await SyncEngine().dispatch(AskToRetry())
    assert "set attempts on the job class" in "".join(info.value.__notes__)
