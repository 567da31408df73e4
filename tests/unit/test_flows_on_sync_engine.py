"""Chains, batches and depends_on on the inline engine: a flow runs inside dispatch(), each
job once the jobs it depends on have ended, by the rules of the Redis engine."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from aiojobs_redis import (
    DependencyFailed,
    InvalidFlow,
    Job,
    JobFailed,
    JobNotFound,
    PermanentFailure,
    SyncEngine,
    UnknownDependency,
    batch,
    chain,
    use_engine,
)
from aiojobs_redis.ids import new_job_id
from aiojobs_redis.sync_flows import Recent

pytestmark = pytest.mark.anyio

ledger: list[tuple[str, Any]] = []


class Declined(Exception):
    pass


class Step(Job):
    name = "sync_flows.Step"
    keep_result = "+1 hour"

    async def handle(self) -> Any:
        ledger.append(("step", self.payload["n"]))
        if self.payload.get("fail"):
            raise Declined(f"step {self.payload['n']} declined")
        return self.payload["n"] * 10


class Plain(Job):
    name = "sync_flows.Plain"

    async def handle(self) -> None:
        ledger.append(("plain", self.payload["n"]))


class Adder(Job):
    name = "sync_flows.Adder"

    async def handle(self) -> None:
        try:
            before = await self.dependency_result()
        except (JobNotFound, InvalidFlow) as exc:
            ledger.append(("adder", type(exc).__name__))
            return
        ledger.append(("adder", before + 1))


class Report(Job):
    name = "sync_flows.Report"

    async def handle(self) -> None:
        result = await self.batch_result()
        ledger.append(
            ("report", (result.total, result.pending, result.done, result.failed, sorted(result.failed_ids)))
        )


class Permanent(Job):
    name = "sync_flows.Permanent"
    attempts = 3

    async def handle(self) -> None:
        ledger.append(("permanent", self.attempt))
        raise PermanentFailure("no")


@pytest.fixture(autouse=True)
def fresh_ledger() -> None:
    ledger.clear()


@pytest.fixture
def quiet() -> Iterator[SyncEngine]:
    """Failures are recorded, not raised."""
    engine = SyncEngine(raise_on_failure=False)
    with use_engine(engine):
        yield engine


@pytest.fixture
def raising() -> Iterator[SyncEngine]:
    engine = SyncEngine(raise_on_failure=True)
    with use_engine(engine):
        yield engine


def reasons(engine: SyncEngine) -> dict[str, str]:
    return {f.id: f.reason for f in engine.failed}


def not_run(engine: SyncEngine, job_id: str) -> DependencyFailed:
    """The error recorded for a job of a flow that was not run."""
    failure = next(f for f in engine.failed if f.id == job_id)
    assert isinstance(failure.error, DependencyFailed) and failure.attempts == 0
    return failure.error


async def test_a_chain_runs_its_steps_in_order_inside_dispatch(quiet: SyncEngine) -> None:
    ids = await chain(Step({"n": 1}), Step({"n": 2}), Adder()).dispatch()
    assert ledger == [("step", 1), ("step", 2), ("adder", 21)]
    assert quiet.completed == ids
    assert await quiet.flow_fields("default", ids[2]) == ([ids[1]], "")


async def test_dependency_result_of_a_class_keeping_none_is_not_found(quiet: SyncEngine) -> None:
    await chain(Plain({"n": 1}), Adder()).dispatch()
    assert ledger == [("plain", 1), ("adder", "JobNotFound")]


async def test_a_chain_stops_at_its_first_failed_step(quiet: SyncEngine) -> None:
    first, second, third = await chain(
        Step({"n": 1, "fail": True}), Step({"n": 2}), Step({"n": 3})
    ).dispatch()
    assert ledger == [("step", 1)]
    assert reasons(quiet) == {first: "error", second: "dependency_failed", third: "dependency_failed"}
    assert not_run(quiet, third).job_id == second, "the step before it, failed with the first"
    assert str(not_run(quiet, second)) == f"its prerequisite {first} failed"
    with pytest.raises(JobFailed) as caught:
        await Step.ref(second).result()
    assert caught.value.reason == "dependency_failed"


async def test_a_failed_chain_raises_its_failed_steps_error(raising: SyncEngine) -> None:
    first = Step({"n": 1})
    with pytest.raises(Declined, match="step 2 declined"):
        await chain(first, Step({"n": 2, "fail": True}), Step({"n": 3})).dispatch()
    assert ledger == [("step", 1), ("step", 2)]
    assert first.id is not None and raising.completed == [first.id]
    assert sorted(reasons(raising).values()) == ["dependency_failed", "error"]


async def test_on_failure_continue_runs_every_step_then_raises(raising: SyncEngine) -> None:
    with pytest.raises(Declined, match="step 1 declined"):
        await chain(Step({"n": 1, "fail": True}), Step({"n": 2}), on_failure="continue").dispatch()
    assert ledger == [("step", 1), ("step", 2)]


async def test_a_permanent_failure_uses_one_attempt_in_a_chain(quiet: SyncEngine) -> None:
    await chain(Permanent(), Plain({"n": 1})).dispatch()
    assert ledger == [("permanent", 1)]


async def test_a_batch_runs_every_member_then_its_callback(raising: SyncEngine) -> None:
    members = [Step({"n": n, "fail": n % 4 == 0}) for n in range(1, 9)]
    with pytest.raises(Declined, match="step 4 declined"):
        await batch(members, on_complete=Report()).dispatch()
    failed = sorted(str(job.id) for job in members if job.payload["fail"])
    assert [e[1] for e in ledger if e[0] == "step"] == list(range(1, 9)), "a failure stops no member"
    assert ledger[-1] == ("report", (8, 0, 6, 2, failed)), "the callback runs last, once"


async def test_a_batch_result_is_kept_after_dispatch(quiet: SyncEngine) -> None:
    batch_id, ids = await batch([Plain({"n": 1}), Plain({"n": 2})]).dispatch()
    result = await quiet.batch_result("default", batch_id)
    assert (result.total, result.pending, result.done, result.done_ids) == (2, 0, 2, ids)
    with pytest.raises(JobNotFound):
        await quiet.batch_result("default", new_job_id())


async def test_an_on_success_callback_runs_only_when_every_member_succeeded(quiet: SyncEngine) -> None:
    await batch([Step({"n": 1}), Step({"n": 2})], on_success=Report()).dispatch()
    assert ledger[-1] == ("report", (2, 0, 2, 0, []))
    ledger.clear()
    callback = Report()
    _, ids = await batch([Step({"n": 3, "fail": True}), Step({"n": 4})], on_success=callback).dispatch()
    assert ledger == [("step", 3), ("step", 4)]
    assert callback.id is not None and reasons(quiet)[callback.id] == "dependency_failed"
    assert not_run(quiet, callback.id).job_id == ids[0], "the member that failed"


async def test_depends_on_a_job_that_ran_here(quiet: SyncEngine) -> None:
    done = await Step({"n": 1}).dispatch()
    failed = await Step({"n": 2, "fail": True}).dispatch()
    await Adder().dispatch(depends_on=[done])
    after_failed = await Step({"n": 3}).dispatch(depends_on=[failed])
    await Step({"n": 4}).dispatch(depends_on=[failed], on_dependency_failure="run")
    assert ledger == [("step", 1), ("step", 2), ("adder", 11), ("step", 4)]
    assert reasons(quiet)[after_failed] == "dependency_failed"


async def test_depends_on_a_failed_job_raises_dependency_failed(raising: SyncEngine) -> None:
    with pytest.raises(Declined):
        await Step({"n": 1, "fail": True}).dispatch()
    failed = raising.failed[0].id
    with pytest.raises(DependencyFailed) as caught:
        await Step({"n": 2}).dispatch(depends_on=[failed])
    assert caught.value.job_id == failed
    assert ledger == [("step", 1)]


async def test_an_unknown_dependency_runs_nothing(quiet: SyncEngine) -> None:
    missing = new_job_id()
    with pytest.raises(UnknownDependency) as caught:
        await Step({"n": 1}).dispatch(depends_on=[missing])
    assert caught.value.job_id == missing
    assert ledger == [] and quiet.completed == [] and quiet.failed == []


async def test_a_flow_with_a_bad_payload_runs_nothing(quiet: SyncEngine) -> None:
    with pytest.raises(TypeError):
        await chain(Step({"n": 1}), Step({"n": object()})).dispatch()
    assert ledger == []


def test_records_are_bounded() -> None:
    recent: Recent[str, int] = Recent(3)
    for n in range(5):
        recent[str(n)] = n
    recent["3"] = 33  # an update keeps its place
    assert recent == {"2": 2, "3": 33, "4": 4}
