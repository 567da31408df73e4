"""The scheduler side task's rules on a FakeClock, with an in-memory stand-in for fire.lua."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import pytest

from aiojobs_redis import Every, Job
from aiojobs_redis.clock import FakeClock
from aiojobs_redis.schedule_store import Fire, Fired
from aiojobs_redis.scheduler import Scheduler
from aiojobs_redis.schedules import of_class

pytestmark = pytest.mark.anyio


class Minutely(Job):
    name = "sched_rules.Minutely"
    queue = "sched-rules"
    schedule = tuple(Every("+1 minute", id=f"m{n}") for n in range(10))

    async def handle(self) -> None: ...


class FireTable:
    """fire.lua's decisions, kept in memory; the store's clock runs `offset_ms` from the worker's."""

    def __init__(self, clock: FakeClock, offset_ms: int = 0) -> None:
        self.clock, self.offset_ms = clock, offset_ms
        self.last: dict[str, int] = {}
        self.calls: list[Fire] = []

    async def declare_schedules(self, schedules: Sequence[object]) -> None: ...

    async def fire_schedules(self, calls: Sequence[Fire]) -> list[Fired]:
        now = self.clock() + self.offset_ms
        replies = []
        for call in calls:
            self.calls.append(call)
            if call.schedule is None:
                replies.append(Fired("seen", now, ""))
            elif call.tick_ms > now:
                replies.append(Fired("early", now, ""))
            elif self.last.get(call.schedule.id, -1) >= call.tick_ms:
                replies.append(Fired("already", now, ""))
            else:
                self.last[call.schedule.id] = call.tick_ms
                replies.append(Fired("fired", now, call.schedule.job_id(call.tick_ms)))
        return replies


async def run_for(scheduler: Scheduler, clock: FakeClock, seconds: float) -> None:
    end = clock.now_ms + seconds * 1000
    while clock.now_ms < end:
        clock.advance(await scheduler.step())


async def test_ten_minutely_schedules_cost_one_call_per_schedule_and_tick() -> None:
    clock = FakeClock()
    table = FireTable(clock)
    scheduler = Scheduler(table, of_class(Minutely), clock)
    await run_for(scheduler, clock, 60)  # settle: the first look and the first ticks
    before = len(table.calls)
    await run_for(scheduler, clock, 600)
    window = table.calls[before:]
    assert all(c.schedule is not None for c in window)  # no looks while ticks come each minute
    sent = [(c.schedule.id, c.tick_ms) for c in window if c.schedule is not None]
    assert len(sent) == len(set(sent)) == 10 * len({tick for _, tick in sent})
    assert len({tick for _, tick in sent}) in (10, 11)  # ten minutes: 10 ticks, or 11 at the edges


@pytest.mark.parametrize("offset_s", [120, -120])
async def test_a_skewed_clock_is_corrected_from_the_replies(offset_s: int) -> None:
    clock = FakeClock()
    table = FireTable(clock, offset_ms=offset_s * 1000)
    [schedule] = of_class(Minutely)[:1]
    scheduler = Scheduler(table, [schedule], clock)
    await run_for(scheduler, clock, 300)
    ticks = [c.tick_ms for c in table.calls if c.schedule is not None]
    # Each minute once, in order, never ahead of the store's clock.
    assert len(ticks) >= 5 and all(b - a == 60_000 for a, b in itertools.pairwise(ticks))
    assert scheduler.outcomes.get("early", 0) == 0 and scheduler.outcomes["fired"] == len(ticks)


async def test_an_early_answer_makes_it_try_again_soon() -> None:
    clock = FakeClock()
    table = FireTable(clock)
    [schedule] = of_class(Minutely)[:1]
    scheduler = Scheduler(table, [schedule], clock)
    await scheduler.step()
    table.offset_ms = -5_000  # the store's clock now seems 5 s behind
    clock.advance(60 - clock.now_ms % 60_000 / 1000)  # on the next tick by the worker's reckoning
    wait = await scheduler.step()
    assert scheduler.outcomes["early"] == 1 and wait < 0.1
