"""runner.run_handler: one handle() call turned into an Outcome."""

from __future__ import annotations

import anyio
import pytest

from aiojobs_redis.errors import PermanentFailure, RetryLater
from aiojobs_redis.job import Job
from aiojobs_redis.runner import TRACEBACK_LIMIT, Outcome, run_handler

pytestmark = pytest.mark.anyio


class Succeeds(Job):
    async def handle(self) -> None:
        self.payload["ran"] = True


class Raises(Job):
    async def handle(self) -> None:
        raise ValueError(self.payload.get("message", "boom"))


class Permanent(Job):
    name = "runner.Permanent"  # another test module has a job Permanent

    async def handle(self) -> None:
        raise PermanentFailure("card declined")


class SleepsPastTimeout(Job):
    timeout = 0.05

    async def handle(self) -> None:
        await anyio.sleep(30)
        self.payload["finished"] = True


class FastWithinTimeout(Job):
    timeout = "+30 seconds"

    async def handle(self) -> None:
        await anyio.lowlevel.checkpoint()
        self.payload["ran"] = True


class RaisesWithinTimeout(Job):
    timeout = "+30 seconds"

    async def handle(self) -> None:
        await anyio.lowlevel.checkpoint()
        raise KeyError("missing")


class AsksToRetry(Job):
    async def handle(self) -> None:
        raise RetryLater(self.payload.get("delay"))


class SleepsForever(Job):
    async def handle(self) -> None:
        await anyio.sleep_forever()


class SleepsForeverWithTimeout(Job):
    timeout = "+30 seconds"

    async def handle(self) -> None:
        await anyio.sleep_forever()


async def test_success() -> None:
    job = Succeeds()
    outcome = await run_handler(job)
    assert outcome == Outcome()
    assert outcome.error is None
    assert not outcome.permanent
    assert not outcome.timed_out
    assert outcome.summary == "ok"
    assert job.payload == {"ran": True}


async def test_success_within_a_timeout() -> None:
    job = FastWithinTimeout()
    outcome = await run_handler(job)
    assert outcome.error is None
    assert not outcome.timed_out
    assert job.payload == {"ran": True}


async def test_exception() -> None:
    outcome = await run_handler(Raises())
    assert isinstance(outcome.error, ValueError)
    assert str(outcome.error) == "boom"
    assert not outcome.permanent
    assert not outcome.timed_out
    assert outcome.summary == "ValueError: boom"
    record = outcome.error_record()
    assert set(record) == {"reason", "type", "message", "traceback"}
    assert record["reason"] == "error"
    assert record["type"] == "builtins.ValueError"
    assert record["message"] == "boom"
    assert record["traceback"].startswith("Traceback (most recent call last):")
    assert "in handle" in record["traceback"]
    assert record["traceback"].rstrip().endswith("ValueError: boom")


async def test_exception_within_a_timeout_is_an_error_not_a_timeout() -> None:
    outcome = await run_handler(RaisesWithinTimeout())
    assert isinstance(outcome.error, KeyError)
    assert not outcome.timed_out
    assert outcome.error_record()["reason"] == "error"


async def test_long_traceback_and_message_are_cut() -> None:
    outcome = await run_handler(Raises({"message": "x" * 20_000 + "END"}))
    record = outcome.error_record()
    assert len(record["message"]) == 2_000
    assert record["message"] == "x" * 2_000
    tb = record["traceback"]
    assert len(tb) <= TRACEBACK_LIMIT + len("...\n")
    assert len(tb) > TRACEBACK_LIMIT - 100
    assert tb.startswith("...\n")
    assert tb.rstrip().endswith("END")  # the end of the traceback is the part kept


async def test_permanent_failure() -> None:
    outcome = await run_handler(Permanent())
    assert isinstance(outcome.error, PermanentFailure)
    assert outcome.permanent
    assert not outcome.timed_out
    record = outcome.error_record()
    assert record["reason"] == "permanent"
    assert record["type"] == "aiojobs_redis.errors.PermanentFailure"
    assert record["message"] == "card declined"


async def test_timeout() -> None:
    job = SleepsPastTimeout()
    assert job.timeout_ms == 50
    with anyio.fail_after(5):
        outcome = await run_handler(job)
    assert outcome.timed_out
    assert not outcome.permanent
    assert isinstance(outcome.error, TimeoutError)
    assert "0.05 s" in str(outcome.error)
    assert "finished" not in job.payload
    record = outcome.error_record()
    assert record["reason"] == "timeout"
    assert record["type"] == "builtins.TimeoutError"


async def test_retry_later_carries_its_delay() -> None:
    outcome = await run_handler(AsksToRetry({"delay": "+5 seconds"}))
    assert isinstance(outcome.error, RetryLater)
    assert outcome.error.delay == "+5 seconds"
    assert not outcome.permanent
    assert not outcome.timed_out
    assert outcome.error_record()["reason"] == "error"


async def test_retry_later_without_a_delay() -> None:
    outcome = await run_handler(AsksToRetry())
    assert isinstance(outcome.error, RetryLater)
    assert outcome.error.delay is None
    assert str(outcome.error) == "retry requested"


async def test_error_record_reason_can_be_given() -> None:
    outcome = await run_handler(Raises())
    assert outcome.error_record("stalled")["reason"] == "stalled"
    assert Outcome().error_record("dangling") == {"reason": "dangling"}


async def test_cancellation_from_outside_propagates() -> None:
    job = SleepsForever()
    with anyio.CancelScope() as scope:
        scope.cancel()
        await run_handler(job)
        raise AssertionError("run_handler returned instead of being cancelled")
    assert scope.cancelled_caught


async def test_cancellation_from_outside_is_not_mistaken_for_a_timeout() -> None:
    job = SleepsForeverWithTimeout()
    with anyio.CancelScope() as scope:
        scope.cancel()
        await run_handler(job)
        raise AssertionError("run_handler returned instead of being cancelled")
    assert scope.cancelled_caught
