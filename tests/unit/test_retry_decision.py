"""retry.decide(): the one retry-or-fail decision, and the Job attributes it reads."""

from __future__ import annotations

from datetime import timedelta

import pytest

from aiojobs_redis import InvalidDelay, Job, PermanentFailure, RetryLater
from aiojobs_redis.retry import SUCCEEDED, Backoff, Fail, Retry, decide
from aiojobs_redis.runner import Outcome


class Plain(Job):
    attempts = 3
    retry_after = "+10 seconds"
    backoff = 2.0


class Picky(Job):
    attempts = 3
    retry_on = (ConnectionError, TimeoutError)
    fail_on = (ConnectionRefusedError,)  # a ConnectionError that is not worth retrying


class PerError(Job):
    attempts = 5

    def retry_delay(self, exc: BaseException, attempt: int) -> float | str | timedelta:
        return timedelta(minutes=attempt) if isinstance(exc, ConnectionError) else "+1 seconds"


class BrokenDelay(Job):
    attempts = 2
    retry_after = "+3 seconds"

    def retry_delay(self, exc: BaseException, attempt: int) -> float | str | timedelta:
        return -1


def test_success_is_succeeded() -> None:
    assert decide(Plain(), Outcome(), 1, 3) is SUCCEEDED


@pytest.mark.parametrize(("attempt", "delay_ms"), [(1, 10_000), (2, 20_000)])
def test_an_error_with_attempts_left_retries_after_the_policy_s_delay(attempt: int, delay_ms: int) -> None:
    assert decide(Plain(), Outcome(ValueError()), attempt, 3) == Retry(delay_ms)


def test_the_last_attempt_fails_with_reason_error_or_timeout() -> None:
    assert decide(Plain(), Outcome(ValueError()), 3, 3) == Fail("error")
    assert decide(Plain(), Outcome(TimeoutError(), timed_out=True), 3, 3) == Fail("timeout")


def test_permanent_failure_fails_at_once() -> None:
    assert decide(Plain(), Outcome(PermanentFailure(), permanent=True), 1, 3) == Fail("permanent")


def test_retry_later_s_delay_wins_and_uses_an_attempt() -> None:
    assert decide(Plain(), Outcome(RetryLater("+2 minutes")), 1, 3) == Retry(120_000)
    assert decide(Plain(), Outcome(RetryLater()), 2, 3) == Retry(20_000)
    assert decide(Plain(), Outcome(RetryLater(5)), 3, 3) == Fail("error")


def test_retry_later_checks_its_delay_where_it_is_raised() -> None:
    with pytest.raises(InvalidDelay, match="RetryLater delay"):
        RetryLater("soon")
    assert RetryLater(timedelta(seconds=1.5)).delay_ms == 1500


def test_retry_on_limits_what_retries_and_fail_on_wins() -> None:
    job = Picky()
    assert isinstance(decide(job, Outcome(ConnectionResetError()), 1, 3), Retry)
    assert decide(job, Outcome(ValueError()), 1, 3) == Fail("permanent")
    assert decide(job, Outcome(ConnectionRefusedError()), 1, 3) == Fail("permanent")
    assert decide(job, Outcome(TimeoutError(), timed_out=True), 1, 3) == Retry(0)
    assert isinstance(decide(job, Outcome(RetryLater()), 1, 3), Retry), "asked for explicitly"


def test_a_timeout_outside_retry_on_fails_with_reason_timeout() -> None:
    class NoTimeouts(Job):
        attempts = 3
        fail_on = (TimeoutError,)

    assert decide(NoTimeouts(), Outcome(TimeoutError(), timed_out=True), 1, 3) == Fail("timeout")


def test_retry_delay_override_sees_the_exception_and_attempt() -> None:
    assert decide(PerError(), Outcome(ConnectionError()), 2, 5) == Retry(120_000)
    assert decide(PerError(), Outcome(ValueError()), 2, 5) == Retry(1_000)


def test_a_broken_retry_delay_falls_back_to_the_policy(caplog: pytest.LogCaptureFixture) -> None:
    assert decide(BrokenDelay(), Outcome(ValueError()), 1, 2) == Retry(3_000)
    assert "retry_delay() failed" in caplog.text


@pytest.mark.parametrize("attr", ["retry_on", "fail_on"])
@pytest.mark.parametrize("value", [ValueError, [ValueError], (ValueError, "x")])
def test_retry_on_and_fail_on_must_be_tuples_of_exception_types(attr: str, value: object) -> None:
    with pytest.raises(ValueError, match=attr):
        type("Bad", (Job,), {attr: value})


def test_shards_is_a_declared_job_attribute() -> None:
    assert Job.shards == 1


def test_backoff_grows_to_its_cap_and_resets() -> None:
    backoff = Backoff(first=1.0, cap=4.0)
    delays = [backoff.next_delay() for _ in range(5)]
    assert all(0.5 * cap <= d <= cap for d, cap in zip(delays, [1, 2, 4, 4, 4], strict=True))
    backoff.reset()
    assert backoff.next_delay() <= 1.0
