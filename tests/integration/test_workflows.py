"""Workflows on real Redis: chains run step after step, a failure fails what waits on it at
once (and a retry revives it), batches call back exactly once with their counts, and
depends_on finds its prerequisites wherever they stand, or refuses with nothing stored."""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import anyio
import pytest

from aiojobs_redis import (
    InvalidFlow,
    Job,
    PermanentFailure,
    RedisEngine,
    UnknownDependency,
    Worker,
    batch,
    chain,
)
from aiojobs_redis.ids import new_job_id

pytestmark = pytest.mark.anyio

QUEUE = "flows"
ledger: list[tuple[str, Any]] = []


class Step(Job):
    name = "flow_tests.Step"
    queue = QUEUE
    keep_result = "+1 hour"

    async def handle(self) -> Any:
        ledger.append(("step", self.payload["n"]))
        if self.payload.get("fail"):
            raise PermanentFailure("step failed on purpose")
        return self.payload["n"] * 10


class Adder(Job):
    name = "flow_tests.Adder"
    queue = QUEUE

    async def handle(self) -> None:
        before = await self.dependency_result()
        ledger.append(("adder", before + 1))


class Flaky(Job):
    """Fails until told otherwise (the class flag), to test `failed retry`."""

    name = "flow_tests.Flaky"
    queue = QUEUE
    healthy: ClassVar[bool] = False

    async def handle(self) -> None:
        ledger.append(("flaky", self.payload["n"]))
        if not Flaky.healthy:
            raise PermanentFailure("not yet")


class Report(Job):
    name = "flow_tests.Report"
    queue = QUEUE

    async def handle(self) -> None:
        result = await self.batch_result()
        ledger.append(("report", (result.total, result.done, result.failed, sorted(result.failed_ids))))


class ShakyReport(Job):
    """A callback that fails until told otherwise (the class flag)."""

    name = "flow_tests.ShakyReport"
    queue = QUEUE
    healthy: ClassVar[bool] = False

    async def handle(self) -> None:
        if not ShakyReport.healthy:
            raise PermanentFailure("not yet")
        result = await self.batch_result()
        ledger.append(("report", (result.total, result.done, result.failed, sorted(result.failed_ids))))


class Other(Job):
    name = "flow_tests.Other"
    queue = "flows-elsewhere"

    async def handle(self) -> None:
        ledger.append(("other", self.payload.get("n")))


@pytest.fixture(autouse=True)
def fresh_ledger() -> None:
    ledger.clear()
    Flaky.healthy = ShakyReport.healthy = False


async def run_burst(engine: RedisEngine, *queues: str) -> None:
    worker = Worker(engine, list(queues or [QUEUE]), burst=True, telemetry=False, idle_wait=0.05)
    with anyio.fail_after(60):
        await worker.run()


async def state(engine: RedisEngine, job_id: str, queue: str = QUEUE) -> str:
    info = await engine.get_job(queue, job_id)
    return "gone" if info is None else str(info.state)


async def reason(engine: RedisEngine, job_id: str) -> str:
    info = await engine.get_job(QUEUE, job_id)
    assert info is not None and info.error is not None, info
    return str(info.error["reason"])


async def test_a_chain_runs_in_order_and_passes_results(engine: RedisEngine) -> None:
    ids = await chain(Step({"n": 1}), Step({"n": 2}), Adder()).dispatch()
    assert len(ids) == 3
    assert [await state(engine, i) for i in ids] == ["ready", "waiting", "waiting"]
    await run_burst(engine)
    assert ledger == [("step", 1), ("step", 2), ("adder", 21)]
    assert await engine.redis.zcard(engine.keys(QUEUE).waiting) == 0


async def test_a_failed_step_fails_the_rest_at_once_and_a_retry_revives_them(engine: RedisEngine) -> None:
    first, second, third = await chain(Flaky({"n": 1}), Step({"n": 2}), Step({"n": 3})).dispatch()
    await run_burst(engine)
    assert ledger == [("flaky", 1)]
    assert await reason(engine, first) == "permanent"
    assert [await reason(engine, i) for i in (second, third)] == ["dependency_failed", "dependency_failed"]
    assert await engine.redis.zcard(engine.keys(QUEUE).waiting) == 0
    Flaky.healthy = True
    assert await engine.failed_retry([first], queue=QUEUE) == 1
    assert [await state(engine, i) for i in (first, second, third)] == ["ready", "waiting", "waiting"]
    await run_burst(engine)
    assert ledger == [("flaky", 1), ("flaky", 1), ("step", 2), ("step", 3)]


async def test_retrying_a_dependent_whose_prerequisite_still_failed_is_refused(engine: RedisEngine) -> None:
    first, second = await chain(Flaky({"n": 1}), Step({"n": 2})).dispatch()
    await run_burst(engine)
    report = await engine.failed_retry_report([second], queue=QUEUE)
    assert report.requeued == 0 and report.blocked == {second: first}
    assert await state(engine, second) == "failed"


async def test_on_failure_continue_runs_the_next_step(engine: RedisEngine) -> None:
    await chain(Flaky({"n": 1}), Step({"n": 2}), on_failure="continue").dispatch()
    await run_burst(engine)
    assert ledger == [("flaky", 1), ("step", 2)]


async def test_a_step_retried_after_the_next_one_ran_anyway_ends_cleanly(
    engine: RedisEngine, caplog: pytest.LogCaptureFixture
) -> None:
    first, second = await chain(Flaky({"n": 1}), Step({"n": 2}), on_failure="continue").dispatch()
    await run_burst(engine)
    Flaky.healthy = True
    assert await engine.failed_retry([first], queue=QUEUE) == 1
    caplog.clear()
    await run_burst(engine)
    assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING], "acked at once"
    assert ledger == [("flaky", 1), ("step", 2), ("flaky", 1)]
    assert await state(engine, first) in ("done", "gone")
    assert await state(engine, second) in ("done", "gone")


async def test_a_batch_calls_back_once_with_counts(engine: RedisEngine) -> None:
    members = [Step({"n": n, "fail": n % 4 == 0}) for n in range(1, 13)]
    batch_id, ids = await batch(members, on_complete=Report()).dispatch()
    assert len(ids) == 12 and batch_id
    await run_burst(engine)
    failed = sorted(i for i, job in zip(ids, members, strict=True) if job.payload["fail"])
    reports = [entry for entry in ledger if entry[0] == "report"]
    assert reports == [("report", (12, 9, 3, failed))]
    assert ledger[-1][0] == "report", "the callback runs after every member"
    result = await engine.batch_result(QUEUE, batch_id)
    assert (result.pending, result.done, result.failed) == (0, 9, 3)


async def test_an_on_success_callback_fails_at_the_first_failed_member(engine: RedisEngine) -> None:
    callback = Report()
    _, ids = await batch([Flaky({"n": 1}), Step({"n": 2})], on_success=callback).dispatch()
    await run_burst(engine)
    assert callback.id is not None
    assert await reason(engine, callback.id) == "dependency_failed"
    assert not [e for e in ledger if e[0] == "report"]
    Flaky.healthy = True
    assert await engine.failed_retry([ids[0]], queue=QUEUE) == 1
    assert await state(engine, callback.id) == "waiting"
    await run_burst(engine)
    assert [e for e in ledger if e[0] == "report"] == [("report", (2, 2, 0, []))]


async def test_a_callback_retried_after_it_failed_still_reads_its_batch(engine: RedisEngine) -> None:
    callback = ShakyReport()
    await batch([Step({"n": 1}), Step({"n": 2})], on_complete=callback).dispatch()
    await run_burst(engine)
    assert callback.id is not None and await reason(engine, callback.id) == "permanent"
    ShakyReport.healthy = True
    assert await engine.failed_retry([callback.id], queue=QUEUE) == 1
    await run_burst(engine)
    assert [e for e in ledger if e[0] == "report"] == [("report", (2, 2, 0, []))]


async def test_a_callback_aborted_while_it_waited_waits_again_when_retried(engine: RedisEngine) -> None:
    callback = Report()
    batch_id, ids = await batch([Flaky({"n": 1}), Step({"n": 2})], on_complete=callback).dispatch()
    assert callback.id is not None and await engine.abort(callback.id, QUEUE) is True
    assert await engine.failed_retry([callback.id], queue=QUEUE) == 1
    assert await state(engine, callback.id) == "waiting", "its batch is still open"
    await run_burst(engine)
    assert [e for e in ledger if e[0] == "report"] == [("report", (2, 1, 1, [ids[0]]))]
    assert ledger[-1][0] == "report"
    result = await engine.batch_result(QUEUE, batch_id)
    assert (result.pending, result.done, result.failed) == (0, 1, 1)


async def test_an_aborted_on_success_callback_retried_after_a_member_failed_is_refused(
    engine: RedisEngine,
) -> None:
    callback = Report()
    _, ids = await batch([Flaky({"n": 1}), Step({"n": 2})], on_success=callback).dispatch()
    assert callback.id is not None and await engine.abort(callback.id, QUEUE) is True
    await run_burst(engine)
    report = await engine.failed_retry_report([callback.id], queue=QUEUE)
    assert report.requeued == 0 and report.blocked == {callback.id: ids[0]}
    assert not [e for e in ledger if e[0] == "report"]


async def test_depends_on_waits_for_plain_jobs_not_started_yet(engine: RedisEngine) -> None:
    a = await Step({"n": 1}).dispatch()  # inline records: no key of their own yet
    b = await Step({"n": 2}).dispatch(priority=5)
    joined = await Step({"n": 3}).dispatch(depends_on=[a, b])
    assert await state(engine, joined) == "waiting"
    assert await state(engine, a) == "ready" and await state(engine, b) == "ready"
    await run_burst(engine)
    assert ledger == [("step", 2), ("step", 1), ("step", 3)], "b's priority kept its turn"


async def test_depends_on_a_job_already_done_or_failed(engine: RedisEngine) -> None:
    done = await Step({"n": 1}).dispatch()
    failed = await Step({"n": 2, "fail": True}).dispatch()
    await run_burst(engine)
    after_done = await Step({"n": 3}).dispatch(depends_on=[done])
    after_failed = await Step({"n": 4}).dispatch(depends_on=[failed])
    anyway = await Step({"n": 5}).dispatch(depends_on=[failed], on_dependency_failure="run")
    assert await state(engine, after_done) == "ready"
    assert await reason(engine, after_failed) == "dependency_failed"
    assert await state(engine, anyway) == "ready"
    await run_burst(engine)
    assert ("step", 3) in ledger and ("step", 5) in ledger and ("step", 4) not in ledger


async def test_a_run_anyway_job_waits_again_for_a_prerequisite_retried(engine: RedisEngine) -> None:
    flaky = await Flaky({"n": 1}).dispatch()
    later = await Step({"n": 2}).dispatch(delay="+1 hour")
    joined = await Step({"n": 3}).dispatch(depends_on=[flaky, later], on_dependency_failure="run")
    await run_burst(engine)
    assert await state(engine, joined) == "waiting", "the other prerequisite has not ended"
    Flaky.healthy = True
    assert await engine.failed_retry([flaky], queue=QUEUE) == 1
    await run_burst(engine)
    assert ledger == [("flaky", 1), ("flaky", 1)]
    assert await state(engine, joined) == "waiting", "each prerequisite's end counted once"


async def test_an_unknown_dependency_stores_nothing(engine: RedisEngine) -> None:
    await engine.register_queues([QUEUE])  # the queue's name, written by any dispatch
    before = await engine.redis.keys(f"{engine.settings.prefix}*")
    missing = new_job_id()
    with pytest.raises(UnknownDependency) as caught:
        await Step({"n": 1}).dispatch(depends_on=[missing])
    assert caught.value.job_id == missing
    after = await engine.redis.keys(f"{engine.settings.prefix}*")
    assert sorted(after) == sorted(before)


async def test_a_job_of_another_queue_is_an_unknown_dependency(engine: RedisEngine) -> None:
    elsewhere = await Other({"n": 1}).dispatch()
    with pytest.raises(UnknownDependency):
        await Step({"n": 1}).dispatch(depends_on=[elsewhere])


async def test_aborting_a_prerequisite_fails_its_dependents_as_aborted(engine: RedisEngine) -> None:
    first, second, third = await chain(Step({"n": 1}), Step({"n": 2}), Step({"n": 3})).dispatch()
    assert await engine.abort(first, QUEUE) is True
    assert await reason(engine, second) == "dependency_aborted"
    assert await reason(engine, third) == "dependency_failed"
    assert await engine.redis.zcard(engine.keys(QUEUE).waiting) == 0


async def test_aborting_a_waiting_step_fails_the_steps_after_it(engine: RedisEngine) -> None:
    first, second, third = await chain(Step({"n": 1}), Step({"n": 2}), Step({"n": 3})).dispatch()
    assert await engine.abort(second, QUEUE) is True
    assert await reason(engine, third) == "dependency_aborted"
    await run_burst(engine)
    assert ledger == [("step", 1)]
    assert await state(engine, first) in ("done", "gone")


async def test_a_step_aborted_while_it_waited_runs_when_retried(engine: RedisEngine) -> None:
    _, second, _ = await chain(Step({"n": 1}), Step({"n": 2}), Step({"n": 3})).dispatch()
    assert await engine.abort(second, QUEUE) is True
    await run_burst(engine)
    assert await engine.failed_retry([second], queue=QUEUE) == 1
    assert await state(engine, second) == "ready", "its prerequisite's success was counted"
    await run_burst(engine)
    assert ledger == [("step", 1), ("step", 2), ("step", 3)]


async def test_steps_of_other_queues_run_in_the_flows_queue(engine: RedisEngine) -> None:
    ids = await chain(Step({"n": 1}), Other({"n": 2})).dispatch()
    assert await state(engine, ids[1]) == "waiting"
    await run_burst(engine)
    assert ledger == [("step", 1), ("other", 2)]


async def test_bad_flows_are_refused_before_any_io() -> None:
    with pytest.raises(InvalidFlow):
        chain()
    job = Step({"n": 1})
    with pytest.raises(InvalidFlow):
        chain(job, job)
    with pytest.raises(InvalidFlow):
        batch([])
    with pytest.raises(InvalidFlow):
        batch([Step()], on_complete=Report(), on_success=Report())


async def test_finished_flows_leave_no_edges_and_their_batches_expire(engine: RedisEngine) -> None:
    for _ in range(5):
        await chain(Step({"n": 1}), Step({"n": 2}), Step({"n": 3})).dispatch()
    first = await Step({"n": 4}).dispatch()
    await Step({"n": 5}).dispatch(depends_on=[first])
    batch_id, _ = await batch([Step({"n": n}) for n in range(20)], on_complete=Report()).dispatch()
    await run_burst(engine)
    base = engine.keys(QUEUE).base
    edges = [k async for k in engine.redis.scan_iter(match=f"{base}:dep:*", count=1000)]
    assert edges == []
    assert await engine.redis.zcard(engine.keys(QUEUE).waiting) == 0
    batch_key = engine.keys(QUEUE).batch(batch_id)
    for key in (batch_key, f"{batch_key}:ok"):
        assert 0 < await engine.redis.pttl(key) <= engine.settings.failed_ttl_ms


class Sharded(Job):
    name = "flow_tests.Sharded"
    queue = "flows-sharded"
    shards = 4

    async def handle(self) -> None:
        ledger.append(("sharded", self.payload["n"]))


async def test_on_a_sharded_queue_a_flow_stays_in_one_shard(engine: RedisEngine) -> None:
    plain = [await Sharded({"n": n}).dispatch() for n in range(4)]  # one per shard, in turn
    joined = Sharded({"n": 9})
    await joined.dispatch(depends_on=[plain[2]])
    ids = await chain(Sharded({"n": 10}), Sharded({"n": 11})).dispatch()
    await run_burst(engine, "flows-sharded")
    assert ledger.index(("sharded", 9)) > ledger.index(("sharded", 2))
    assert ledger.index(("sharded", 11)) > ledger.index(("sharded", 10))
    assert len(ledger) == 7 and joined.id and ids


async def test_a_run_anyway_dependent_counts_a_prerequisite_once_across_retries(
    engine: RedisEngine,
) -> None:
    flaky = await Flaky({"n": 1}).dispatch(delay="+1 hour")  # its record exists: a delayed hash
    slow = await Step({"n": 2}).dispatch(delay="+1 hour")
    joined = await Step({"n": 3}).dispatch(depends_on=[flaky, slow], on_dependency_failure="run")
    # flaky ends failed: counted; retried and done: not counted again; slow still pending.
    await engine.redis.zadd(engine.keys(QUEUE).delayed, {flaky: 0})
    await engine.promote([QUEUE])
    await run_burst(engine)
    assert await state(engine, joined) == "waiting"
    Flaky.healthy = True
    assert await engine.failed_retry([flaky], queue=QUEUE) == 1
    await run_burst(engine)
    assert await state(engine, joined) == "waiting", "slow has not run yet"
    assert ("step", 3) not in ledger


async def test_a_dependent_of_a_forgotten_failed_prerequisite_is_not_revived(
    engine: RedisEngine,
) -> None:
    first, second = await chain(Flaky({"n": 1}), Step({"n": 2})).dispatch()
    await run_burst(engine)
    assert await engine.failed_forget([first], queue=QUEUE) == 1
    report = await engine.failed_retry_report([second], queue=QUEUE)
    assert report.requeued == 0 and report.blocked == {second: first}, "it would wait for ever"
    assert await reason(engine, second) == "dependency_failed"


async def test_a_dependent_of_two_failed_prerequisites_one_forgotten_is_not_revived(
    engine: RedisEngine,
) -> None:
    p1 = await Flaky({"n": 1}).dispatch()
    p2 = await Flaky({"n": 2}).dispatch()
    joined = await Step({"n": 9}).dispatch(depends_on=[p1, p2])
    await run_burst(engine)
    assert await engine.failed_forget([p2], queue=QUEUE) == 1
    Flaky.healthy = True
    assert (await engine.failed_retry_report([p1], queue=QUEUE)).requeued == 1
    await run_burst(engine)
    assert await state(engine, joined) == "failed", "p2 will never end: it must not wait for it"
    assert await engine.redis.zcard(engine.keys(QUEUE).waiting) == 0
    report = await engine.failed_retry_report([joined], queue=QUEUE)
    assert report.blocked == {joined: p2}


async def test_an_aborted_run_anyway_dependent_counts_each_prerequisite_once(engine: RedisEngine) -> None:
    p = await Flaky({"n": 1}).dispatch()
    q = await Step({"n": 2}).dispatch(delay="+1 hour")
    joined = await Step({"n": 9}).dispatch(depends_on=[p, q], on_dependency_failure="run")
    assert await engine.abort(joined, QUEUE)
    await run_burst(engine)  # p fails for good: counted as an end
    Flaky.healthy = True
    assert await engine.failed_retry([p], queue=QUEUE) == 1  # it waits for p's end again
    await run_burst(engine)  # p succeeds: counted once
    assert await engine.failed_retry([joined], queue=QUEUE) == 1
    assert await state(engine, joined) == "waiting", "q has not ended"
    await run_burst(engine)
    assert ("step", 9) not in ledger


async def test_an_on_success_callback_never_runs_while_a_member_is_failed_past_the_id_cap(
    engine: RedisEngine,
) -> None:
    callback = Report()
    batch_id, ids = await batch([Flaky({"n": n}) for n in range(1_001)], on_success=callback).dispatch()
    await run_burst(engine)
    result = await engine.batch_result(QUEUE, batch_id)
    assert (result.failed, len(result.failed_ids)) == (1_001, 1_000), "the id list is capped"
    [not_listed] = sorted(set(ids) - set(result.failed_ids))
    Flaky.healthy = True
    assert await engine.failed_retry(result.failed_ids, queue=QUEUE) == 1_000
    await run_burst(engine)
    assert callback.id is not None
    report = await engine.failed_retry_report([callback.id], queue=QUEUE)
    assert report.requeued == 0 and callback.id in report.blocked
    assert await state(engine, not_listed) == "failed"
    assert not [e for e in ledger if e[0] == "report"]


@pytest.mark.parametrize("order", [(0, 1, 2), (2, 1, 0)])
async def test_failed_retry_of_a_whole_failed_chain_in_any_order(
    engine: RedisEngine, order: tuple[int, int, int]
) -> None:
    ids = await chain(Flaky({"n": 1}), Step({"n": 2}), Step({"n": 3})).dispatch()
    await run_burst(engine)
    Flaky.healthy = True
    report = await engine.failed_retry_report([ids[i] for i in order], queue=QUEUE)
    assert (report.requeued, report.blocked, report.revived) == (3, {}, 0)
    assert [await state(engine, i) for i in ids] == ["ready", "waiting", "waiting"]


async def test_failed_retry_says_how_many_jobs_of_the_flow_wait_again(engine: RedisEngine) -> None:
    ids = await chain(Flaky({"n": 1}), Step({"n": 2}), Step({"n": 3})).dispatch()
    await run_burst(engine)
    report = await engine.failed_retry_report([ids[0]], queue=QUEUE)
    assert (report.requeued, report.revived) == (1, 2)
