"""JOB_ENGINE=sync: a job that fails for good raises its own exception in dispatch()'s caller,
unless told not to; delays and retry waits are skipped."""

from __future__ import annotations

from typing import ClassVar

import anyio
import pytest

import aiojobs_redis
from aiojobs_redis import ConfigurationError, Job, PermanentFailure
from aiojobs_redis.config import Settings
from aiojobs_redis.sync import SyncEngine

pytestmark = pytest.mark.anyio


class GatewayDown(Exception):
    pass


class Charge(Job):
    attempts = 3
    delay = "+5 minutes"
    retry_after = "+1 hour"
    runs: ClassVar[list[int]] = []
    exhausted: ClassVar[list[BaseException]] = []

    async def handle(self) -> None:
        self.runs.append(self.attempt)
        if self.payload.get("fail"):
            raise GatewayDown(f"gateway down for {self.payload['order']}")

    async def on_exhausted(self, exc: BaseException) -> None:
        self.exhausted.append(exc)


class Slow(Job):
    timeout = 0.01

    async def handle(self) -> None:
        await anyio.sleep(30)


@pytest.fixture(autouse=True)
def reset() -> None:
    Charge.runs, Charge.exhausted = [], []


async def test_a_job_that_fails_for_good_raises_its_own_exception_after_its_attempts() -> None:
    async with aiojobs_redis.connect(engine="sync") as engine:
        with pytest.raises(GatewayDown, match="gateway down for o-1") as info:
            await Charge({"order": "o-1", "fail": True}).dispatch()
    assert Charge.runs == [1, 2, 3], "delays and retry waits skipped, every attempt used"
    assert isinstance(engine, SyncEngine)
    assert [f.error for f in engine.failed] == [info.value], "recorded before raising"
    assert Charge.exhausted == [info.value], "on_exhausted ran before raising"


async def test_permanent_failure_and_timeouts_raise_too() -> None:
    class Declined(Job):
        attempts = 5

        async def handle(self) -> None:
            raise PermanentFailure("declined")

    engine = SyncEngine()
    with pytest.raises(PermanentFailure, match="declined"):
        await engine.dispatch(Declined())
    with pytest.raises(TimeoutError, match="past its timeout"):
        await engine.dispatch(Slow())
    assert len(engine.failed) == 2


async def test_a_job_that_succeeds_on_a_retry_does_not_raise() -> None:
    class Flaky(Charge):
        async def handle(self) -> None:
            self.runs.append(self.attempt)
            if self.attempt < 3:
                raise GatewayDown("not yet")

    engine = SyncEngine()
    await engine.dispatch(Flaky())
    assert Charge.runs == [1, 2, 3] and engine.failed == [] and len(engine.completed) == 1


async def test_dispatch_many_stops_at_the_first_job_that_fails_for_good() -> None:
    engine = SyncEngine()
    jobs = [Charge({"order": "a"}), Charge({"order": "b", "fail": True}), Charge({"order": "c"})]
    with pytest.raises(GatewayDown, match="for b"):
        await engine.dispatch_many(jobs)
    assert Charge.runs == [1, 1, 2, 3] and len(engine.completed) == 1


async def test_raise_on_failure_false_only_logs_and_records() -> None:
    engine = SyncEngine(raise_on_failure=False)
    job_id = await engine.dispatch(Charge({"order": "o-2", "fail": True}))
    assert [(f.id, f.attempts) for f in engine.failed] == [(job_id, 3)]


async def test_the_setting_and_the_environment_turn_raising_off() -> None:
    async with aiojobs_redis.connect(engine="sync", sync_raise_on_failure=False) as engine:
        await Charge({"order": "o-3", "fail": True}).dispatch()
    assert isinstance(engine, SyncEngine) and len(engine.failed) == 1
    assert Settings.from_env({"JOB_SYNC_RAISE_ON_FAILURE": "0"}).sync_raise_on_failure is False
    assert Settings.from_env({"JOB_SYNC_RAISE_ON_FAILURE": "true"}).sync_raise_on_failure is True
    assert Settings.from_env({}).sync_raise_on_failure is True
    with pytest.raises(ConfigurationError, match="JOB_SYNC_RAISE_ON_FAILURE"):
        Settings.from_env({"JOB_SYNC_RAISE_ON_FAILURE": "maybe"})
    # The constructor's argument wins over the setting.
    engine = SyncEngine(Settings(engine="sync", sync_raise_on_failure=False), raise_on_failure=True)
    with pytest.raises(GatewayDown):
        await engine.dispatch(Charge({"order": "o-4", "fail": True}))
