"""keep_result, result() and set_progress() on the in-memory FakeEngine, as on Redis."""

from __future__ import annotations

from typing import Any, ClassVar

import anyio
import pytest

from aiojobs_redis import Job, JobFailed, JobNotFound, PermanentFailure, SyncEngine, Worker, use_engine
from aiojobs_redis.testing import FakeClock, FakeEngine

pytestmark = pytest.mark.anyio

QUEUE = "fake-results"


class Total(Job):
    name = "fake_results.Total"
    queue = QUEUE
    keep_result = "+1 minute"

    async def handle(self) -> dict[str, Any]:
        assert await self.set_progress({"half": True})
        return {"total": sum(self.payload["n"])}


class Declined(Job):
    name = "fake_results.Declined"
    queue = QUEUE
    keep_result = "+1 minute"

    async def handle(self) -> None:
        raise PermanentFailure("declined")


class Overtaken(Job):
    """Finds its lease taken over while it runs, then reports progress."""

    name = "fake_results.Overtaken"
    queue = QUEUE
    engine: FakeEngine
    answers: ClassVar[list[bool]] = []

    async def handle(self) -> None:
        self.engine.take_lease(str(self.id))
        self.answers.append(await self.set_progress("halfway"))
        await anyio.sleep_forever()  # cancelled: the worker treats the run as lost


class Opaque(Job):
    name = "fake_results.Opaque"
    queue = QUEUE
    keep_result = "+1 minute"

    async def handle(self) -> object:
        return {1, 2}  # a set: not JSON


@pytest.fixture
def fake() -> FakeEngine:
    return FakeEngine(FakeClock())


async def test_a_kept_result_is_returned_until_its_time_passes(fake: FakeEngine) -> None:
    with use_engine(fake):
        job_id = await Total.dispatch({"n": [1, 2]})
        await fake.run_due()
        assert await Total.ref(job_id).result(timeout=1) == {"total": 3}
        assert await Total.ref(job_id).progress() == {"half": True}
        fake.clock.advance(61)
        with pytest.raises(JobNotFound):
            await Total.ref(job_id).result(timeout=1)


async def test_failures_and_unkeepable_results_raise_job_failed(fake: FakeEngine) -> None:
    with use_engine(fake):
        declined = await Declined.dispatch({})
        opaque = await Opaque.dispatch({})
        await fake.run_due()
        with pytest.raises(JobFailed) as failed:
            await Declined.ref(declined).result()
        with pytest.raises(JobFailed) as bad:
            await Opaque.ref(opaque).result()
    assert (failed.value.reason, failed.value.message) == ("permanent", "declined")
    assert bad.value.reason == "bad_result" and bad.value.type.endswith("BadResult")
    assert fake.jobs[opaque].attempts == 1, "failed for good, with no retry"


async def test_a_wait_times_out_by_the_fake_clock_and_leaves_the_job_alone(fake: FakeEngine) -> None:
    with use_engine(fake):
        job_id = await Total.dispatch({"n": [1]})
    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:

            async def tick() -> None:
                await anyio.sleep(0.01)
                fake.clock.advance(2)

            group.start_soon(tick)
            with pytest.raises(TimeoutError):
                await fake.result(QUEUE, job_id, timeout=1)
    assert fake.jobs[job_id].state == "ready"


async def test_set_progress_of_a_run_that_lost_its_lease_is_refused(fake: FakeEngine) -> None:
    with use_engine(fake):
        job_id = await Total.dispatch({"n": [1]})
    [claim] = await fake.claim_many([(QUEUE, 1, "1")], worker_id="w", lease_ms=1000)
    [claimed] = claim.jobs
    assert await fake.set_progress(claimed, b"1")
    fake.take_lease(job_id)
    assert not await fake.set_progress(claimed, b"2")
    assert await fake.progress(QUEUE, job_id) == 1


async def test_a_worker_cancels_a_run_whose_progress_was_refused(fake: FakeEngine) -> None:
    Overtaken.engine = fake
    with use_engine(fake):
        job_id = await Overtaken.dispatch({})
    worker = Worker(fake, [QUEUE], burst=True, clock=fake.clock, telemetry=False)
    with anyio.fail_after(5):
        await worker.run()
    assert Overtaken.answers == [False]
    assert worker.counters.lost == 1 and worker.counters.succeeded == 0
    assert fake.jobs[job_id].progress is None


async def test_the_sync_engine_keeps_results_as_it_runs_jobs() -> None:
    sync = SyncEngine(raise_on_failure=False)
    with use_engine(sync):
        total = await Total.dispatch({"n": [2, 3]})
        declined = await Declined.dispatch({})
        assert await Total.ref(total).result() == {"total": 5}
        with pytest.raises(JobFailed) as failed:
            await Declined.ref(declined).result()
        with pytest.raises(JobNotFound):
            await Total.ref("unknown").result()
        opaque = await Opaque.dispatch({})
        with pytest.raises(JobFailed) as bad:
            await Opaque.ref(opaque).result()
    assert failed.value.reason == "permanent" and bad.value.reason == "bad_result"
