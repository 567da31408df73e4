"""RateLimited raised in handle(): no attempt used up to max_throttles, then a counted
attempt with reason rate_limited; on the FakeEngine (worker rules) and the SyncEngine."""

from __future__ import annotations

import anyio
import pytest

from aiojobs_redis import InvalidDelay, InvalidGroupKey, Job, RateLimited, SyncEngine, use_engine
from aiojobs_redis.retry import Fail, Retry, decide
from aiojobs_redis.runner import Outcome
from aiojobs_redis.testing import FakeClock, FakeEngine

pytestmark = pytest.mark.anyio

QUEUE = "rate-limited-unit"
LIMIT = 5  # seconds of real time any test may take: a guard, never a wait


class PartnerSaysWait(Job):
    """Rate limited on its first run, fine after."""

    queue = QUEUE
    runs: list[int] = []  # noqa: RUF012 - the test's record

    async def handle(self) -> None:
        PartnerSaysWait.runs.append(self.attempt)
        if len(PartnerSaysWait.runs) == 1:
            raise RateLimited("+2 seconds")


class PartnerAlwaysBusy(Job):
    queue = QUEUE
    attempts = 2
    max_throttles = 2
    group = "{tenant}"
    runs: list[int] = []  # noqa: RUF012 - the test's record

    async def handle(self) -> None:
        PartnerAlwaysBusy.runs.append(self.attempt)
        raise RateLimited(1)


@pytest.fixture(autouse=True)
def _forget_runs() -> None:
    PartnerSaysWait.runs = []
    PartnerAlwaysBusy.runs = []


def test_retry_after_is_checked_where_it_is_written() -> None:
    assert RateLimited("+2 seconds").retry_after_ms == 2000
    assert RateLimited(0.5).retry_after_ms == 500
    with pytest.raises(InvalidDelay):
        RateLimited("soon")


def test_retry_after_takes_the_digits_of_a_retry_after_header_as_seconds() -> None:
    assert RateLimited("30").retry_after_ms == 30_000
    assert RateLimited(" 5 ").retry_after_ms == 5_000
    assert RateLimited(2).retry_after_ms == 2_000
    assert RateLimited().retry_after_ms == 1_000
    with pytest.raises(InvalidDelay):
        RateLimited("30 seconds")  # words need the "+N unit" form


def test_max_throttles_must_be_a_count() -> None:
    with pytest.raises(ValueError, match="max_throttles"):

        class NegativeThrottles(Job):
            queue = QUEUE
            max_throttles = -1

            async def handle(self) -> None:
                return None


def test_a_rate_limited_that_reaches_decide_is_a_rate_limited_attempt() -> None:
    job = PartnerAlwaysBusy({"tenant": "a"})
    outcome = Outcome(RateLimited("+3 seconds"))
    assert decide(job, outcome, 1, 2) == Retry(3000)
    assert decide(job, outcome, 2, 2) == Fail("rate_limited")


async def test_fake_engine_puts_the_job_back_using_no_attempt() -> None:
    clock = FakeClock()
    engine = FakeEngine(clock)
    with use_engine(engine):
        job_id = await PartnerSaysWait.dispatch({})
    with anyio.fail_after(LIMIT):
        await engine.run_due([QUEUE])
        held = engine.jobs[job_id]
        assert (held.state, held.attempts, held.throttles) == ("delayed", 0, 1)
        clock.advance(2)
        await engine.run_due([QUEUE])
    assert PartnerSaysWait.runs == [1, 1]  # the same attempt, run twice
    assert (held.state, held.attempts) == ("done", 0)


async def test_after_max_throttles_each_throttle_is_a_counted_attempt() -> None:
    clock = FakeClock()
    engine = FakeEngine(clock)
    with use_engine(engine):
        job_id = await PartnerAlwaysBusy.dispatch({"tenant": "a"})
    held = engine.jobs[job_id]
    with anyio.fail_after(LIMIT):
        for _ in range(5):
            await engine.run_due([QUEUE])
            clock.advance(1)
    # Two throttles free, then attempt 1 fails (retried after 1 s), then attempt 2 fails for good.
    assert PartnerAlwaysBusy.runs == [1, 1, 1, 2]
    assert (held.state, held.attempts, held.throttles) == ("failed", 2, 2)
    assert held.error is not None and held.error["reason"] == "rate_limited"


async def test_fake_engine_checks_group_keys() -> None:
    engine = FakeEngine(FakeClock())
    with use_engine(engine), pytest.raises(InvalidGroupKey):
        await PartnerAlwaysBusy.dispatch({"no_tenant": 1})
    assert engine.jobs == {}


async def test_sync_engine_runs_a_rate_limited_job_again_at_once() -> None:
    engine = SyncEngine()
    with use_engine(engine):
        await PartnerSaysWait.dispatch({})
    assert PartnerSaysWait.runs == [1, 1]
    assert len(engine.completed) == 1 and engine.failed == []


async def test_sync_engine_counts_throttles_past_max_as_attempts() -> None:
    engine = SyncEngine(raise_on_failure=False)
    with use_engine(engine):
        await PartnerAlwaysBusy.dispatch({"tenant": "b"})
    assert PartnerAlwaysBusy.runs == [1, 1, 1, 2]
    [failure] = engine.failed
    assert (failure.attempts, failure.reason) == (2, "rate_limited")


def test_payload_errors_say_which_field() -> None:
    from aiojobs_redis.groups import group_of

    with pytest.raises(InvalidGroupKey, match="no field 'tenant'"):
        group_of(PartnerAlwaysBusy({}), b"{}")


def test_a_group_template_that_can_never_make_a_key_is_refused_at_class_definition() -> None:
    with pytest.raises(ValueError, match="is not a format string"):

        class UnbalancedGroup(Job):
            group = "{tenant"

            async def handle(self) -> None: ...

    with pytest.raises(ValueError, match=r"UnusableGroup\.group 'bad key!'"):

        class UnusableGroup(Job):
            group = "bad key!"

            async def handle(self) -> None: ...
