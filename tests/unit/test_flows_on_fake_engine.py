"""Chains, batches and depends_on on the in-memory FakeEngine, run by a real Worker: the same
rules as on Redis (tests/integration/test_workflows.py), with no Redis and no sleeps."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

import anyio
import pytest

from aiojobs_redis import (
    InvalidFlow,
    Job,
    JobNotFound,
    PayloadError,
    PermanentFailure,
    UnknownDependency,
    Worker,
    batch,
    chain,
    use_engine,
)
from aiojobs_redis.ids import new_job_id
from aiojobs_redis.testing import FakeClock, FakeEngine

pytestmark = pytest.mark.anyio

QUEUE = "fake-flows"
LIMIT = 30  # seconds of real time any test may take: a guard, never a wait
ledger: list[tuple[str, Any]] = []


class Step(Job):
    name = "fake_flows.Step"
    queue = QUEUE
    keep_result = "+1 hour"

    async def handle(self) -> Any:
        ledger.append(("step", self.payload["n"]))
        if self.payload.get("fail"):
            raise PermanentFailure("step failed on purpose")
        return self.payload["n"] * 10


class Plain(Job):
    """Keeps no result."""

    name = "fake_flows.Plain"
    queue = QUEUE

    async def handle(self) -> None:
        ledger.append(("plain", self.payload["n"]))


class Adder(Job):
    name = "fake_flows.Adder"
    queue = QUEUE

    async def handle(self) -> None:
        try:
            before = await self.dependency_result()
        except (JobNotFound, InvalidFlow) as exc:
            ledger.append(("adder", type(exc).__name__))
            return
        ledger.append(("adder", before + 1))


class Flaky(Job):
    """Fails until told otherwise (the class flag), to test failed_retry()."""

    name = "fake_flows.Flaky"
    queue = QUEUE
    healthy: ClassVar[bool] = False

    async def handle(self) -> None:
        ledger.append(("flaky", self.payload["n"]))
        if not Flaky.healthy:
            raise PermanentFailure("not yet")


class Report(Job):
    name = "fake_flows.Report"
    queue = QUEUE

    async def handle(self) -> None:
        result = await self.batch_result()
        ledger.append(("report", (result.total, result.done, result.failed, sorted(result.failed_ids))))


class ShakyReport(Job):
    """A callback that fails until told otherwise (the class flag)."""

    name = "fake_flows.ShakyReport"
    queue = QUEUE
    healthy: ClassVar[bool] = False

    async def handle(self) -> None:
        if not ShakyReport.healthy:
            raise PermanentFailure("not yet")
        result = await self.batch_result()
        ledger.append(("report", (result.total, result.done, result.failed, sorted(result.failed_ids))))


class Other(Job):
    name = "fake_flows.Other"
    queue = "fake-flows-elsewhere"

    async def handle(self) -> None:
        ledger.append(("other", self.payload.get("n")))


@pytest.fixture(autouse=True)
def fresh_ledger() -> None:
    ledger.clear()
    Flaky.healthy = ShakyReport.healthy = False


@pytest.fixture
def fake() -> Iterator[FakeEngine]:
    engine = FakeEngine(FakeClock())
    with use_engine(engine):
        yield engine


async def run(fake: FakeEngine, *queues: str) -> int:
    with anyio.fail_after(LIMIT):
        return await fake.run_due(list(queues or [QUEUE]))


def states(fake: FakeEngine, *ids: str) -> list[str]:
    return [fake.jobs[i].state for i in ids]


def reasons(fake: FakeEngine, *ids: str) -> list[str]:
    return [str((fake.jobs[i].error or {}).get("reason")) for i in ids]


def reports() -> list[tuple[str, Any]]:
    return [entry for entry in ledger if entry[0] == "report"]


async def test_a_chain_runs_in_order_and_passes_results(fake: FakeEngine) -> None:
    ids = await chain(Step({"n": 1}), Step({"n": 2}), Adder()).dispatch()
    assert states(fake, *ids) == ["ready", "waiting", "waiting"]
    assert fake.dispatched_payloads(Step) == [{"n": 1}, {"n": 2}]
    assert await run(fake) == 3
    assert ledger == [("step", 1), ("step", 2), ("adder", 21)]
    assert states(fake, *ids) == ["done", "done", "done"]
    assert await fake.flow_fields(QUEUE, ids[2]) == ([ids[1]], "")


async def test_dependency_result_of_a_class_keeping_none_is_not_found(fake: FakeEngine) -> None:
    await chain(Plain({"n": 1}), Adder()).dispatch()
    await run(fake)
    assert ledger == [("plain", 1), ("adder", "JobNotFound")]


async def test_a_released_step_waits_its_own_delay(fake: FakeEngine) -> None:
    _, second = await chain(Step({"n": 1}), Step({"n": 2}).set_delay(60)).dispatch()
    await run(fake)
    assert ledger == [("step", 1)]
    assert states(fake, second) == ["delayed"]
    fake.clock.advance(60)
    await run(fake)
    assert ledger == [("step", 1), ("step", 2)]


async def test_a_waiting_step_is_released_to_a_running_worker(fake: FakeEngine) -> None:
    ids = await chain(Step({"n": 1}), Step({"n": 2}), Step({"n": 3})).dispatch()
    worker = Worker(fake, [QUEUE], clock=fake.clock, telemetry=False)
    with anyio.fail_after(LIMIT):
        async with anyio.create_task_group() as tg:
            await tg.start(worker.run)
            await fake.until(lambda: states(fake, *ids) == ["done"] * 3)
            worker.stop()
    assert ledger == [("step", 1), ("step", 2), ("step", 3)]


async def test_a_failed_step_fails_the_rest_at_once_and_a_retry_revives_them(fake: FakeEngine) -> None:
    first, second, third = await chain(Flaky({"n": 1}), Step({"n": 2}), Step({"n": 3})).dispatch()
    await run(fake)
    assert ledger == [("flaky", 1)]
    assert reasons(fake, first, second, third) == ["permanent", "dependency_failed", "dependency_failed"]
    assert fake.jobs[second].error == {
        "reason": "dependency_failed",
        "type": "DependencyFailed",
        "message": f"its prerequisite {first} failed",
    }
    assert fake.in_state("waiting") == []
    Flaky.healthy = True
    assert await fake.failed_retry([first], queue=QUEUE) == 1
    assert states(fake, first, second, third) == ["ready", "waiting", "waiting"]
    await run(fake)
    assert ledger == [("flaky", 1), ("flaky", 1), ("step", 2), ("step", 3)]


async def test_retrying_every_failed_job_revives_the_flow_once(fake: FakeEngine) -> None:
    await chain(Flaky({"n": 1}), Step({"n": 2})).dispatch()
    await run(fake)
    Flaky.healthy = True
    report = await fake.failed_retry_report()
    assert (report.requeued, report.blocked) == (1, {})
    await run(fake)
    assert ledger == [("flaky", 1), ("flaky", 1), ("step", 2)]


async def test_retrying_a_dependent_whose_prerequisite_still_failed_is_refused(fake: FakeEngine) -> None:
    first, second = await chain(Flaky({"n": 1}), Step({"n": 2})).dispatch()
    await run(fake)
    report = await fake.failed_retry_report([second], queue=QUEUE)
    assert report.requeued == 0 and report.blocked == {second: first}
    assert states(fake, second) == ["failed"]


async def test_on_failure_continue_runs_the_next_step(fake: FakeEngine) -> None:
    await chain(Flaky({"n": 1}), Step({"n": 2}), on_failure="continue").dispatch()
    await run(fake)
    assert ledger == [("flaky", 1), ("step", 2)]


async def test_a_batch_calls_back_once_with_counts(fake: FakeEngine) -> None:
    members = [Step({"n": n, "fail": n % 4 == 0}) for n in range(1, 13)]
    callback = Report()
    batch_id, ids = await batch(members, on_complete=callback).dispatch()
    assert len(ids) == 12 and batch_id
    assert callback.id is not None and states(fake, callback.id) == ["waiting"]
    await run(fake)
    failed = sorted(i for i, job in zip(ids, members, strict=True) if job.payload["fail"])
    assert reports() == [("report", (12, 9, 3, failed))]
    assert ledger[-1][0] == "report", "the callback runs after every member"
    result = await fake.batch_result(QUEUE, batch_id)
    assert (result.total, result.pending, result.done, result.failed) == (12, 0, 9, 3)
    assert sorted(result.done_ids) == sorted(set(ids) - set(failed))


async def test_a_batch_keeps_at_most_a_thousand_ids_of_each_kind(fake: FakeEngine) -> None:
    batch_id, ids = await batch([Plain({"n": n}) for n in range(1_003)]).dispatch()
    await run(fake)
    result = await fake.batch_result(QUEUE, batch_id)
    assert (result.total, result.pending, result.done) == (1_003, 0, 1_003)
    assert result.done_ids == ids[:1_000]


async def test_an_on_success_callback_fails_at_the_first_failed_member(fake: FakeEngine) -> None:
    callback = Report()
    _, ids = await batch([Flaky({"n": 1}), Step({"n": 2})], on_success=callback).dispatch()
    await run(fake)
    assert callback.id is not None
    assert reasons(fake, callback.id) == ["dependency_failed"]
    assert reports() == []
    Flaky.healthy = True
    assert await fake.failed_retry([ids[0]], queue=QUEUE) == 1
    assert states(fake, callback.id) == ["waiting"]
    await run(fake)
    assert reports() == [("report", (2, 2, 0, []))]


async def test_a_member_retried_after_its_batch_closed_runs_on_its_own(fake: FakeEngine) -> None:
    batch_id, ids = await batch([Flaky({"n": 1}), Step({"n": 2})], on_complete=Report()).dispatch()
    await run(fake)
    assert reports() == [("report", (2, 1, 1, [ids[0]]))]
    Flaky.healthy = True
    assert await fake.failed_retry([ids[0]]) == 1
    await run(fake)
    assert reports() == [("report", (2, 1, 1, [ids[0]]))], "called back once only"
    assert await fake.flow_fields(QUEUE, ids[0]) == ([], "")
    assert (await fake.batch_result(QUEUE, batch_id)).failed == 1


async def test_a_callback_retried_after_it_failed_still_reads_its_batch(fake: FakeEngine) -> None:
    callback = ShakyReport()
    await batch([Step({"n": 1}), Step({"n": 2})], on_complete=callback).dispatch()
    await run(fake)
    assert callback.id is not None and reasons(fake, callback.id) == ["permanent"]
    ShakyReport.healthy = True
    assert await fake.failed_retry([callback.id], queue=QUEUE) == 1
    await run(fake)
    assert reports() == [("report", (2, 2, 0, []))]


async def test_a_callback_aborted_while_it_waited_waits_again_when_retried(fake: FakeEngine) -> None:
    callback = Report()
    batch_id, ids = await batch([Flaky({"n": 1}), Step({"n": 2})], on_complete=callback).dispatch()
    assert callback.id is not None and await fake.abort(callback.id, QUEUE) is True
    assert await fake.failed_retry([callback.id], queue=QUEUE) == 1
    assert states(fake, callback.id) == ["waiting"], "its batch is still open"
    await run(fake)
    assert reports() == [("report", (2, 1, 1, [ids[0]]))]
    assert ledger[-1][0] == "report"
    result = await fake.batch_result(QUEUE, batch_id)
    assert (result.pending, result.done, result.failed) == (0, 1, 1)


async def test_an_aborted_on_success_callback_retried_after_a_member_failed_is_refused(
    fake: FakeEngine,
) -> None:
    callback = Report()
    _, ids = await batch([Flaky({"n": 1}), Step({"n": 2})], on_success=callback).dispatch()
    assert callback.id is not None and await fake.abort(callback.id, QUEUE) is True
    await run(fake)
    report = await fake.failed_retry_report([callback.id], queue=QUEUE)
    assert report.requeued == 0 and report.blocked == {callback.id: ids[0]}
    assert reports() == []


async def test_depends_on_waits_for_jobs_not_started_yet(fake: FakeEngine) -> None:
    a = await Step({"n": 1}).dispatch()
    b = await Step({"n": 2}).dispatch(priority=5)
    joined = await Adder().dispatch(depends_on=[a, b])
    assert states(fake, joined, a, b) == ["waiting", "ready", "ready"]
    await run(fake)
    assert ledger[:2] == [("step", 2), ("step", 1)], "b's priority kept its turn"
    assert ledger[2] == ("adder", "InvalidFlow"), "two prerequisites: dependency_result() needs an id"


async def test_depends_on_a_job_already_done_or_failed(fake: FakeEngine) -> None:
    done = await Step({"n": 1}).dispatch()
    failed = await Flaky({"n": 2}).dispatch()
    await run(fake)
    after_done = await Step({"n": 3}).dispatch(depends_on=[done])
    after_failed = await Step({"n": 4}).dispatch(depends_on=[failed])
    anyway = await Step({"n": 5}).dispatch(depends_on=[failed], on_dependency_failure="run")
    assert states(fake, after_done, anyway) == ["ready", "ready"]
    assert reasons(fake, after_failed) == ["dependency_failed"]
    await run(fake)
    assert ("step", 3) in ledger and ("step", 5) in ledger and ("step", 4) not in ledger
    # Its prerequisite retried and done, the job failed with it runs too.
    ledger.clear()
    Flaky.healthy = True
    assert await fake.failed_retry([failed]) == 1
    assert states(fake, after_failed) == ["waiting"]
    await run(fake)
    assert ledger == [("flaky", 2), ("step", 4)]


async def test_a_run_anyway_job_waits_again_for_a_prerequisite_retried(fake: FakeEngine) -> None:
    flaky = await Flaky({"n": 1}).dispatch()
    later = await Step({"n": 2}).dispatch(delay="+1 hour")
    joined = await Step({"n": 3}).dispatch(depends_on=[flaky, later], on_dependency_failure="run")
    await run(fake)
    assert states(fake, joined) == ["waiting"], "the other prerequisite has not ended"
    Flaky.healthy = True
    assert await fake.failed_retry([flaky], queue=QUEUE) == 1
    await run(fake)
    assert ledger == [("flaky", 1), ("flaky", 1)]
    assert states(fake, joined) == ["waiting"], "each prerequisite's end counted once"
    fake.clock.advance(3600)
    await run(fake)
    assert ledger[2:] == [("step", 2), ("step", 3)]


async def test_an_unknown_dependency_stores_nothing(fake: FakeEngine) -> None:
    elsewhere = await Other({"n": 1}).dispatch()
    before = dict(fake.jobs)
    for missing in (new_job_id(), elsewhere):
        with pytest.raises(UnknownDependency) as caught:
            await Step({"n": 1}).dispatch(depends_on=[missing])
        assert caught.value.job_id == missing
    assert fake.jobs == before
    assert len(fake.dispatched) == 1


async def test_aborting_a_prerequisite_fails_its_dependents_as_aborted(fake: FakeEngine) -> None:
    first, second, third = await chain(Step({"n": 1}), Step({"n": 2}), Step({"n": 3})).dispatch()
    assert await fake.abort(first, QUEUE) is True
    assert reasons(fake, second, third) == ["dependency_aborted", "dependency_failed"]
    assert fake.jobs[third].error == {
        "reason": "dependency_failed",
        "type": "DependencyFailed",
        "message": f"its prerequisite {second} failed",
    }
    assert fake.in_state("waiting") == []


async def test_aborting_a_waiting_step_fails_the_steps_after_it(fake: FakeEngine) -> None:
    first, second, third = await chain(Step({"n": 1}), Step({"n": 2}), Step({"n": 3})).dispatch()
    assert await fake.abort(second, QUEUE) is True
    assert reasons(fake, second, third) == ["aborted", "dependency_aborted"]
    await run(fake)
    assert ledger == [("step", 1)]
    assert states(fake, first) == ["done"]
    # A retry of the aborted step makes it wait no more (its prerequisite is done).
    assert await fake.failed_retry([second]) == 1
    await run(fake)
    assert ledger == [("step", 1), ("step", 2), ("step", 3)]


async def test_steps_of_other_queues_run_in_the_flows_queue(fake: FakeEngine) -> None:
    ids = await chain(Step({"n": 1}), Other({"n": 2})).dispatch()
    assert [fake.jobs[i].queue for i in ids] == [QUEUE, QUEUE]
    await run(fake)
    assert ledger == [("step", 1), ("other", 2)]


async def test_a_flow_with_a_bad_payload_stores_nothing(fake: FakeEngine) -> None:
    with pytest.raises(PayloadError):
        await chain(Step({"n": 1}), Step({"n": object()})).dispatch()
    assert fake.jobs == {} and fake.dispatched == []
