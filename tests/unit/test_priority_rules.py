"""Priority levels without Redis: what a level may be (checked at class definition and at
dispatch), the FakeEngine's order (as claim.lua's), SyncEngine taking and ignoring it, and
where a job's level is shown."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest

import aiojobs_redis
from aiojobs_redis import InvalidPriority, Job
from aiojobs_redis.cli_failed import format_job
from aiojobs_redis.records import ClaimedJob, JobInfo
from aiojobs_redis.testing import FakeClock, FakeEngine

pytestmark = pytest.mark.anyio

QUEUE = "prio-rules"
BAD_LEVELS = [11, -11, 100, True, False, 1.0, "1"]


class PrioRulesStep(Job):
    name = "prio_rules.Step"
    queue = QUEUE
    attempts = 3
    ran: ClassVar[list[Any]] = []

    async def handle(self) -> None:
        PrioRulesStep.ran.append(self.payload["tag"])


class PrioRulesUrgent(PrioRulesStep):
    name = "prio_rules.Urgent"
    priority = 10


class PrioRulesLatest(Job):
    name = "prio_rules.Latest"
    queue = QUEUE
    priority = -3
    unique = True
    unique_key = "k"
    on_duplicate = "replace"

    async def handle(self) -> None:
        return None


@pytest.fixture(autouse=True)
def fresh_ledger() -> None:
    PrioRulesStep.ran.clear()


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine(FakeClock())


# -- what a level may be --------------------------------------------------------------------


@pytest.mark.parametrize("level", [*BAD_LEVELS, None])
def test_a_class_with_a_bad_priority_fails_at_definition(level: object) -> None:
    with pytest.raises(InvalidPriority, match=r"PrioRulesBad\.priority must be an int from -10 to 10"):

        class PrioRulesBad(Job):
            priority = level  # type: ignore[assignment]

            async def handle(self) -> None:
                return None


@pytest.mark.parametrize("level", BAD_LEVELS)
async def test_a_bad_priority_at_dispatch_fails_before_anything_is_stored(
    engine: FakeEngine, level: Any
) -> None:
    with pytest.raises(InvalidPriority, match="priority must be an int from -10 to 10"):
        await engine.dispatch(PrioRulesStep({"tag": 0}).set_priority(level))
    with aiojobs_redis.use_engine(engine):
        with pytest.raises(InvalidPriority):
            await PrioRulesStep({"tag": 0}).dispatch(priority=level)
        with pytest.raises(InvalidPriority):
            await PrioRulesStep.dispatch_many([{"tag": 0}], priority=level)
    assert engine.jobs == {}


def test_every_level_from_minus_10_to_10_is_taken_and_the_class_s_is_the_default() -> None:
    assert [PrioRulesStep().set_priority(n).effective_priority for n in range(-10, 11)] == list(
        range(-10, 11)
    )
    assert (PrioRulesStep().effective_priority, PrioRulesUrgent().effective_priority) == (0, 10)
    assert issubclass(InvalidPriority, ValueError) and issubclass(
        InvalidPriority, aiojobs_redis.AiojobsRedisError
    )


# -- the FakeEngine's order -----------------------------------------------------------------


async def claim(engine: FakeEngine, limit: int, request: str, lease_ms: int = 30_000) -> list[ClaimedJob]:
    [got] = await engine.claim_many([(QUEUE, limit, request)], worker_id="w", lease_ms=lease_ms)
    return got.jobs


async def test_the_fake_engine_runs_higher_levels_first_and_fifo_within_each(engine: FakeEngine) -> None:
    with aiojobs_redis.use_engine(engine):
        await PrioRulesStep.dispatch_many([{"tag": f"0:{n}"} for n in range(5)])
        await PrioRulesUrgent.dispatch_many([{"tag": f"10:{n}"} for n in range(2)])
        await PrioRulesStep.dispatch_many([{"tag": f"-5:{n}"} for n in range(2)], priority=-5)
        await PrioRulesStep({"tag": "5:0"}).dispatch(priority=5)
    assert [d.priority for d in engine.dispatched] == [0] * 5 + [10, 10, -5, -5, 5]
    assert await engine.ready_counts([QUEUE]) == [10]
    assert await engine.run_due([QUEUE]) == 10
    assert PrioRulesStep.ran == ["10:0", "10:1", "5:0", *(f"0:{n}" for n in range(5)), "-5:0", "-5:1"]


async def test_the_fake_engine_keeps_a_job_s_level_through_retry_release_reap_and_abort(
    engine: FakeEngine,
) -> None:
    first = await engine.dispatch(PrioRulesStep({"tag": 1}).set_priority(2))
    second = await engine.dispatch(PrioRulesStep({"tag": 2}).set_priority(2))
    plain = await engine.dispatch(PrioRulesStep({"tag": 0}))
    [held] = await claim(engine, 1, "1")
    assert held.id == first and await engine.release(held)
    assert [j.id for j in await claim(engine, 1, "2", lease_ms=1_000)] == [first]
    engine.clock.advance(2)
    assert (await engine.reap(QUEUE, max_stalls=3)).requeued == [first]
    [again] = await claim(engine, 1, "3")
    assert again.id == first
    assert await engine.retry(again, 5_000, {"reason": "error"})
    assert [j.id for j in await claim(engine, 1, "4")] == [second]
    engine.clock.advance(6)
    await engine.promote([QUEUE])
    assert await engine.abort(plain) is True
    assert [j.id for j in await claim(engine, 5, "5")] == [first]


async def test_the_fake_engine_s_replace_successor_waits_at_its_dispatch_s_level(engine: FakeEngine) -> None:
    with aiojobs_redis.use_engine(engine):
        unique = await PrioRulesLatest({"k": 1}).dispatch()
        [run] = await claim(engine, 1, "1")
        assert run.id == unique
        await PrioRulesLatest({"k": 1, "v": 2}).dispatch(priority=4)
        plain = await PrioRulesStep({"tag": 0}).dispatch()
    assert await engine.ack(run)
    [successor] = [j for j in engine.in_state("ready") if j.name == PrioRulesLatest.name]
    assert successor.priority == 4
    assert [j.id for j in await claim(engine, 2, "2")] == [successor.id, plain]


# -- SyncEngine and the views ---------------------------------------------------------------


async def test_the_sync_engine_takes_a_priority_and_runs_the_job_at_once(env_clean: None) -> None:
    async with aiojobs_redis.connect(engine="sync") as engine:
        await PrioRulesUrgent({"tag": "now"}).dispatch()
        await PrioRulesStep({"tag": "low"}).dispatch(priority=-10)
        await PrioRulesStep.dispatch_many([{"tag": "many"}], priority=3)
        with pytest.raises(InvalidPriority):
            await PrioRulesStep({"tag": "bad"}).dispatch(priority=11)
        assert len(engine.completed) == 3
    assert PrioRulesStep.ran == ["now", "low", "many"]


def test_job_show_prints_the_priority_and_the_record_reads_field_o() -> None:
    info = JobInfo.from_hash(QUEUE, "abc", {b"n": b"prio_rules.Step", b"s": b"ready", b"o": b"-4"})
    assert info.priority == -4
    assert "priority   -4 (higher runs sooner" in format_job(info, [], with_payload=False)
    plain = JobInfo.from_hash(QUEUE, "abd", {b"n": b"prio_rules.Step", b"s": b"ready"})
    assert plain.priority == 0
    inline = JobInfo.from_inline(QUEUE, b'!abc prio_rules.Step 2 1000 {"x":1}', priority=7)
    assert inline is not None and inline.priority == 7
