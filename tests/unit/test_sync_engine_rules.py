"""SyncEngine applies the worker's retry-or-fail decision: retry_on, fail_on, on_exhausted."""

from __future__ import annotations

from typing import ClassVar

import pytest

from aiojobs_redis import Job, PermanentFailure
from aiojobs_redis.sync import SyncEngine

pytestmark = pytest.mark.anyio


class Recorder(Job):
    attempts = 3
    tries: ClassVar[list[int]] = []
    exhausted: ClassVar[list[BaseException]] = []

    async def handle(self) -> None:
        self.tries.append(self.attempt)
        raise {"value": ValueError, "conn": ConnectionError, "perm": PermissionError}[self.payload["raise"]]()

    async def on_exhausted(self, exc: BaseException) -> None:
        self.exhausted.append(exc)


class Picky(Recorder):
    name = "sync_engine_rules.Picky"  # another test module has a job Picky
    retry_on = (ConnectionError,)
    fail_on = (PermissionError,)


@pytest.fixture(autouse=True)
def reset() -> None:
    Recorder.tries, Recorder.exhausted = [], []


@pytest.mark.parametrize(
    ("cls", "raised", "tries"),
    [
        (Recorder, "value", [1, 2, 3]),
        (Picky, "conn", [1, 2, 3]),
        (Picky, "value", [1]),
        (Picky, "perm", [1]),
    ],
)
async def test_retries_follow_retry_on_and_fail_on(
    cls: type[Recorder], raised: str, tries: list[int]
) -> None:
    engine = SyncEngine(raise_on_failure=False)
    job_id = await engine.dispatch(cls({"raise": raised}))
    assert Recorder.tries == tries
    assert [f.id for f in engine.failed] == [job_id] and engine.failed[0].attempts == len(tries)
    assert len(Recorder.exhausted) == 1, "on_exhausted runs once, when the job fails for good"


async def test_an_error_in_on_exhausted_is_logged_and_changes_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Broken(Job):
        def on_exhausted(self, exc: BaseException) -> None:
            raise RuntimeError("callback bug")

        async def handle(self) -> None:
            raise PermanentFailure("no")

    engine = SyncEngine()
    with pytest.raises(PermanentFailure, match="no"):  # the job's own error, not the callback's
        await engine.dispatch(Broken())
    assert len(engine.failed) == 1 and isinstance(engine.failed[0].error, PermanentFailure)
    assert "on_exhausted() raised" in caplog.text


async def test_on_exhausted_is_not_called_for_a_job_that_succeeds_on_retry() -> None:
    class Flaky(Recorder):
        async def handle(self) -> None:
            self.tries.append(self.attempt)
            if self.attempt == 1:
                raise ValueError("once")

    engine = SyncEngine()
    await engine.dispatch(Flaky({}))
    assert Recorder.tries == [1, 2] and Recorder.exhausted == [] and engine.failed == []
